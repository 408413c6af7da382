//! The admin token cannot be guessed for free: an address that gives wrong ones too often is
//! answered 429 with `Retry-After` — on the API and on the dashboard's login — before the token
//! is compared, while other addresses are not held up; both are counted in metrics.

use std::net::SocketAddr;

use crate::common::*;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// A request from `from`, as the server sees its peer; (status, Retry-After, body).
async fn from(router: &axum::Router, from: &str, req: Request<Body>) -> (StatusCode, Option<String>, String) {
    let mut req = req;
    req.extensions_mut().insert(ConnectInfo(format!("{from}:40000").parse::<SocketAddr>().unwrap()));
    let resp = router.clone().oneshot(req).await.unwrap();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let status = resp.status();
    let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (status, retry, body)
}

fn api(token: &str) -> Request<Body> {
    Request::get("/conversations/tasks/queues/status")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

fn login(token: &str) -> Request<Body> {
    Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap()
}

#[tokio::test]
async fn wrong_tokens_from_one_address_are_throttled_on_the_api_and_the_login() {
    let env = TestEnv::with("auth", &redis_url(), |c| c.auth_failures_per_minute = 3).await;
    let (router, _) = env.router();
    for _ in 0..3 {
        assert_eq!(from(&router, "203.0.113.7", api("guess-guess-guess")).await.0, StatusCode::UNAUTHORIZED);
    }
    let (status, retry, body) = from(&router, "203.0.113.7", api("guess-guess-guess")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=20).contains(&secs), "{secs}");
    assert!(body.contains("\"too_many_requests\""), "{body}");
    // Refused before the token is compared: the right one waits too.
    assert_eq!(from(&router, "203.0.113.7", api(TOKEN)).await.0, StatusCode::TOO_MANY_REQUESTS);
    // Another address is not held up.
    assert_eq!(from(&router, "198.51.100.4", api(TOKEN)).await.0, StatusCode::OK);
    assert_eq!(from(&router, "198.51.100.4", api("guess-guess-guess")).await.0, StatusCode::UNAUTHORIZED);

    for _ in 0..3 {
        let (status, _, page) = from(&router, "203.0.113.9", login("guess")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(page.contains("That is not the admin token."), "{page}");
    }
    let (status, retry, page) = from(&router, "203.0.113.9", login(TOKEN)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some() && page.contains("Too many wrong tokens from this address"), "{page}");
    let (status, _, _) = from(&router, "198.51.100.5", login(TOKEN)).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the right token from elsewhere logs in");

    let metrics = http(&router, "GET", "/metrics", None, None).await.text;
    for line in [
        "switchyard_auth_failures_total{surface=\"api\"}",
        "switchyard_auth_failures_total{surface=\"login\"}",
        "switchyard_auth_throttled_total{surface=\"api\"}",
        "switchyard_auth_throttled_total{surface=\"login\"}",
    ] {
        assert!(metrics.contains(line), "{line} in /metrics");
    }
}
