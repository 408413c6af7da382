//! Logging in with the admin token, and out.

use super::*;
use crate::web::auth::{COOKIE, Client, SESSION_SECONDS, admit, open_session};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
}

pub(super) async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Ok(Some(_)) = session(&state, &headers).await {
        return Redirect::to("/ui/").into_response();
    }
    render(LoginPage { error: None })
}

pub(super) async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    let form = Form::parse(&body);
    let given = form.one("token").unwrap_or_default().trim().to_string();
    let refused = |status: StatusCode, error: String| {
        let mut r = render(LoginPage { error: Some(error) });
        *r.status_mut() = status;
        r
    };
    match admit(&state, client, &given, "login") {
        Ok(true) => {}
        Ok(false) => return refused(StatusCode::UNAUTHORIZED, "That is not the admin token.".into()),
        Err(wait) => {
            let secs = wait.as_secs() + 1;
            let mut r = refused(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many wrong tokens from this address: try again in {secs} s."),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
    }
    let id = match open_session(&state).await {
        Ok(id) => id,
        Err(e) => return failed(e),
    };
    // Behind a TLS-terminating proxy the cookie is for HTTPS only.
    let secure = if headers.get("x-forwarded-proto").is_some_and(|v| v == "https") { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}{secure}");
    let mut r = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Page {
    let s = require_post(&state, &headers, &Form::parse(&body)).await?;
    if let Err(e) = state.engine.close_session(&s.id).await {
        tracing::warn!(error = %e, "a session could not be closed; it ends when it expires");
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sy_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    Ok(r)
}
