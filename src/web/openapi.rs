//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json`.
//!
//! It is made from the routes themselves ([`super::api_routes`]): every route of the JSON API,
//! the webhooks, health, readiness and metrics is registered with its handler's
//! `#[utoipa::path]`, whose parameters, bodies and answers name the types the handler reads and
//! writes. The admin token's security and its answers (401, 429) are written here, on every
//! route the token check is layered on.
//!
//! The dashboard (`/`, `/login`, `/logout`, `/ui/...`, `/static/...`) is left out: its pages
//! and forms are HTML for a browser with a session and a CSRF token, not an API for programs;
//! docs/http-api.md lists them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::IntoResponses;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr};

use super::error::ErrorBody;

/// The name of the admin token's security scheme.
pub const ADMIN_TOKEN: &str = "admin_token";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Customer-conversation webhooks onto Redis Streams, with a task engine. \
            Errors are `ErrorBody`; every 503 carries `Retry-After`. See docs/http-api.md.",
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document"),
        (name = "tasks", description = "The task engine"),
        (name = "events", description = "Task events as Server-Sent Events"),
        (name = "lanes", description = "Lanes' figures, pausing and resuming"),
        (name = "dlq", description = "The dead-letter queue"),
        (name = "conversations", description = "Conversations"),
        (name = "analytics", description = "Performance reports"),
        (name = "schedules", description = "Scheduled tasks"),
        (name = "webhooks", description = "Platforms' webhooks (docs/webhooks.md)"),
    )
)]
struct Base;

/// The document: built once from the routes.
pub fn openapi() -> OpenApi {
    let routes = super::api_routes();
    let mut admin = routes.admin.into_openapi();
    admin_only(&mut admin);
    let mut doc = <Base as utoipa::OpenApi>::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.merge(routes.public.into_openapi());
    doc.merge(admin);
    doc.merge(routes.webhooks.into_openapi());
    any_route(&mut doc);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        ADMIN_TOKEN,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "`Authorization: Bearer <ADMIN_TOKEN>`. A `GET` may instead carry a dashboard \
                     session's cookie.",
                ))
                .build(),
        ),
    );
    doc
}

/// Add to every operation of `doc` the answers any route may give (the listener's and the
/// layers around every handler), where the operation does not name them itself.
fn any_route(doc: &mut OpenApi) {
    let answers = FrontErrors::responses();
    for op in operations(doc) {
        add_unnamed(op, &answers);
    }
}

/// Mark every operation of `doc` as needing the admin token, with the answers its check gives.
fn admin_only(doc: &mut OpenApi) {
    let answers = AdminErrors::responses();
    for op in operations(doc) {
        op.security = Some(vec![SecurityRequirement::new::<_, [&str; 0], &str>(ADMIN_TOKEN, [])]);
        add_unnamed(op, &answers);
    }
}

/// Every operation of `doc`, whatever its method.
fn operations(doc: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head]
            .into_iter()
            .flatten()
    })
}

/// Add `answers` to `op`, each where `op` names no answer of its status itself.
fn add_unnamed(op: &mut Operation, answers: &BTreeMap<String, RefOr<utoipa::openapi::Response>>) {
    for (status, answer) in answers {
        op.responses.responses.entry(status.clone()).or_insert_with(|| answer.clone());
    }
}

/// The document as served, serialized once.
fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| openapi().to_json().expect("the OpenAPI document serializes"))
}

/// This document: the OpenAPI 3.1 description of every route of the API, the webhooks, health
/// and metrics.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses(
    (status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object),
))]
pub(super) async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

// Answers many routes share, each named once.

/// The answers of the admin token's check, on every admin route.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum AdminErrors {
    /// Missing or wrong admin token (`unauthorized`).
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Too many wrong admin tokens from this address (`too_many_requests`); see `Retry-After`.
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds until the address may try again")))]
    Throttled(ErrorBody),
}

/// The answers any route may give, whatever its handler does.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum FrontErrors {
    /// The request carries both `Content-Length` and `Transfer-Encoding` (`bad_request`); the
    /// connection closes.
    #[response(status = 400)]
    Ambiguous(ErrorBody),
    /// No answer within `HANDLER_TIMEOUT` (`request_timeout`); the work done so far stays done.
    #[response(status = 408)]
    OutOfTime(ErrorBody),
    /// Too many open connections, in all or from this client address, or too many request
    /// bodies being received at once (`unavailable`); the connection closes.
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))]
    Busy(ErrorBody),
}

/// The answers of any route that reads or writes Redis.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum StoreErrors {
    /// An unexpected failure (`internal`); the message says only "internal error; see the
    /// server log".
    #[response(status = 500)]
    Internal(ErrorBody),
    /// Redis is unreachable or out of memory, a lane is over its depth limit, Redis memory is
    /// past its high-water mark, or no replica confirmed the write; or the listener is past its
    /// connection or body budget (`unavailable`).
    #[response(status = 503, headers(("Retry-After" = u64, description = "Seconds to wait before trying again")))]
    Unavailable(ErrorBody),
}

/// The answers a synchronous conversation request adds to its own.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum SyncErrors {
    /// Synchronous: the message's task ended `FAILURE` or `REVOKED` (`task_failed`).
    #[response(status = 502)]
    TaskFailed(ErrorBody),
    /// Synchronous: no reply in time; the task goes on (`timeout`).
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// The answers of any route that reads a request body.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum BodyErrors {
    /// The body is empty where one is needed, not JSON, or not of the expected shape
    /// (`bad_request`).
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body did not arrive within `BODY_READ_TIMEOUT`, or no answer within
    /// `HANDLER_TIMEOUT` (`request_timeout`).
    #[response(status = 408)]
    RequestTimeout(ErrorBody),
    /// The body is over 1 MiB (`too_large`).
    #[response(status = 413)]
    TooLarge(ErrorBody),
}
