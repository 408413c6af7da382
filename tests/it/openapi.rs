//! The OpenAPI document at `GET /openapi.json`: valid by a real validator
//! (`openapi-spec-validator`, which `scripts/tools.sh` installs into a venv), and true to the
//! router: every operation it lists is a route that answers one of the statuses it lists for it,
//! with a body its schema accepts (checked with `jsonschema`, by `tests/openapi_check.py`).

use std::path::PathBuf;
use std::process::Command;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use switchyard::engine::TaskState;
use tower::ServiceExt;

use crate::common::*;

/// The validator's path, installed on first use by the project's script.
fn validator() -> PathBuf {
    let out = Command::new("scripts/tools.sh").arg("openapi-spec-validator").output().expect("scripts/tools.sh runs");
    assert!(out.status.success(), "scripts/tools.sh openapi-spec-validator: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn temp_file(name: &str, content: &Value) -> PathBuf {
    let path = std::env::temp_dir().join(format!("switchyard-{name}-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec_pretty(content).unwrap()).unwrap();
    path
}

async fn document(router: &Router) -> Value {
    let r = http(router, "GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert!(r.json.is_object(), "not JSON: {}", r.text);
    r.json
}

#[tokio::test]
async fn the_document_is_valid_openapi_3_1() {
    let env = TestEnv::new("openapi_valid").await;
    let (router, _) = env.router();
    let doc = document(&router).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "Switchyard");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let path = temp_file("openapi", &doc);
    let out = Command::new(validator()).arg(&path).output().expect("the validator runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success() && text.contains("OK"), "openapi-spec-validator: {text}");
}

#[tokio::test]
async fn the_document_names_what_clients_rely_on() {
    let env = TestEnv::new("openapi_named").await;
    let (router, _) = env.router();
    let doc = document(&router).await;
    let schemas = &doc["components"]["schemas"];

    // The error shape, and the 409 that carries the first task's id.
    let error = &schemas["ErrorBody"];
    assert_eq!(error["required"], json!(["error"]), "{error}");
    assert!(error["properties"]["task_id"].is_object(), "{error}");
    let detail = &schemas["ErrorDetail"];
    assert_eq!(detail["required"], json!(["code", "message"]), "{detail}");

    // POST /tasks: a TaskSpec in, 202 with the task's id out, 409 and 503 documented.
    let post = &doc["paths"]["/tasks"]["post"];
    assert_eq!(post["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/TaskSpec");
    let accepted = &post["responses"]["202"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(accepted, "#/components/schemas/TaskQueued");
    assert!(schemas["TaskQueued"]["required"].as_array().unwrap().contains(&json!("task_id")));
    for status in ["400", "401", "409", "413", "429", "503"] {
        assert!(post["responses"][status].is_object(), "POST /tasks documents no {status}");
    }
    assert!(post["responses"]["503"]["headers"]["Retry-After"].is_object(), "{}", post["responses"]["503"]);
    // Every operation lists what any route may answer: the listener's and the layers'.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for status in ["400", "408", "503"] {
                assert!(op["responses"][status].is_object(), "{method} {path} documents no {status}");
            }
            // (`/readyz` documents its own 503, with its readiness body.)
            let busy = &op["responses"]["503"];
            if busy["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorBody" {
                assert!(busy["headers"]["Retry-After"].is_object(), "{method} {path}: {busy}");
            }
        }
    }
    assert_eq!(schemas["TaskState"]["enum"], json!(["PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED"]));

    // The admin token: a bearer scheme, required on the admin routes, not on health or webhooks.
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"],
        json!({"type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["admin_token"]["description"]})
    );
    assert_eq!(post["security"], json!([{"admin_token": []}]));
    for (path, method) in [("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"), ("/openapi.json", "get")] {
        assert!(doc["paths"][path][method]["security"].is_null(), "{path} needs no token");
    }

    // The webhooks, each with its platform's verification instead of the token.
    for (path, methods) in [
        ("/webhooks/facebook", &["get", "post"][..]),
        ("/webhooks/google/pubsub", &["post"]),
        ("/webhooks/google/rbm", &["get", "post"]),
        ("/webhooks/generic/{source}", &["post"]),
    ] {
        for method in methods {
            let op = &doc["paths"][path][*method];
            assert!(op.is_object(), "{method} {path} is not documented");
            assert!(op["security"].is_null(), "{method} {path} takes no admin token");
            assert_eq!(op["tags"], json!(["webhooks"]));
        }
    }
    let accepted = &doc["paths"]["/webhooks/generic/{source}"]["post"]["responses"]["200"];
    assert_eq!(accepted["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/WebhookAccepted");

    // Every route of docs/http-api.md's table of routes is in the document.
    let text = std::fs::read_to_string("docs/http-api.md").unwrap();
    let listed = text.split("\n## Routes\n").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut seen = 0;
    for row in
        listed.lines().filter(|l| l.starts_with("| `GET") || l.starts_with("| `POST") || l.starts_with("| `DELETE"))
    {
        let cell = row.split('|').nth(1).unwrap().trim();
        // "`GET`, `POST /webhooks/facebook`", "`POST /lanes/{lane}/pause`, `POST /lanes/{lane}/resume`"
        let words: Vec<&str> = cell.split('`').filter(|w| !w.trim().is_empty() && w.trim() != ",").collect();
        let path = words.iter().rev().find_map(|w| w.split_once(' ').map(|(_, p)| p)).unwrap();
        for w in &words {
            let method = w.split(' ').next().unwrap().to_lowercase();
            let path = w.split_once(' ').map(|(_, p)| p).unwrap_or(path);
            let path = path.replace("/pause", "/{action}").replace("/resume", "/{action}");
            assert!(
                doc["paths"][&path][&method].is_object(),
                "docs/http-api.md lists {method} {path}; the document does not"
            );
            seen += 1;
        }
    }
    assert!(seen >= 30, "read only {seen} routes from docs/http-api.md");
}

/// One call's answer: the status, the content type, and the body as JSON (`Null` when it is
/// not JSON, or a stream left unread).
async fn call(
    router: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: Option<Vec<u8>>,
) -> (StatusCode, String, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let resp =
        router.clone().oneshot(req.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap()).await.unwrap();
    let status = resp.status();
    let content_type = resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if content_type.starts_with("text/event-stream") {
        // A live stream: its head is the answer; the body may not end.
        return (status, content_type, Value::Null);
    }
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = if content_type.starts_with("application/json") {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {uri}: a JSON answer that is not JSON ({e})"))
    } else {
        Value::Null
    };
    (status, content_type, json)
}

#[tokio::test]
async fn every_documented_operation_is_served_as_documented() {
    let env = TestEnv::with("openapi_served", &redis_url(), |c| {
        c.generic_secrets.insert("crm".into(), "k1".into());
    })
    .await;
    let (router, _) = env.router();
    let doc = document(&router).await;

    // A worker, so that answers have something to show: finished tasks, a dead letter, a
    // conversation with a reply.
    let _worker = env.start_worker();
    // Things for the path parameters to name: a task done, one queued for later, a dead one.
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop"}"#)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let task = r.json["task_id"].as_str().unwrap().to_string();
    env.wait_state(&task, TaskState::Success).await;
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.noop", "delay": "1h"}"#)).await;
    let later = r.json["task_id"].as_str().unwrap().to_string();
    let r = admin(&router, "POST", "/tasks", Some(r#"{"kind": "diag.fail", "payload": {"permanent": true}}"#)).await;
    let dead = r.json["task_id"].as_str().unwrap().to_string();
    env.wait_state(&dead, TaskState::Failure).await;
    wait_until("the dead letter", async || {
        admin(&router, "GET", &format!("/dlq/{dead}"), None).await.status == StatusCode::OK
    })
    .await;
    let conversation = "api:api:openapi";

    let generic_body = br#"{"id":"evt-openapi","text":"hello"}"#.to_vec();
    let mut answers = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // Reads before writes: a letter is shown before it is deleted.
        let mut ops: Vec<(&String, &Value)> = item.as_object().unwrap().iter().collect();
        ops.sort_by_key(|(method, _)| *method == "delete");
        for (method, op) in ops {
            let id = match path.as_str() {
                "/tasks/{id}/run" => &later,
                p if p.starts_with("/dlq/") => &dead,
                p if p.starts_with("/conversations/{id}") => conversation,
                _ => &task,
            };
            let uri = path
                .replace("{id}", id)
                .replace("{lane}", "analytics")
                .replace("{action}", "resume")
                .replace("{name}", "no-such-schedule")
                .replace("{source}", "crm");
            let mut headers = Vec::new();
            if op["security"].is_array() {
                headers.push(("authorization", format!("Bearer {TOKEN}")));
            }
            let body = match (method.as_str(), path.as_str()) {
                ("post", "/tasks") => Some(br#"{"kind": "diag.noop", "payload": {"n": 1}}"#.to_vec()),
                ("post", "/conversations/message") => Some(br#"{"message": "hello", "user_id": "openapi"}"#.to_vec()),
                ("post", "/conversations/webhook-interaction") => Some(br#"{"message": "hello"}"#.to_vec()),
                ("post", "/dlq/redrive") => Some(br#"{"all": true, "dry_run": true}"#.to_vec()),
                ("post", "/webhooks/generic/{source}") => {
                    headers.push(("x-signature-256", meta_sign("k1", &generic_body)));
                    Some(generic_body.clone())
                }
                ("post", _) if op["requestBody"].is_object() => Some(b"{}".to_vec()),
                _ => None,
            };
            let (status, content_type, body) = call(&router, &method.to_uppercase(), &uri, &headers, body).await;
            assert_ne!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}: the document lists it, the router has no such method"
            );
            assert!(
                !(status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route"),
                "{method} {uri}: the document lists it, the router has no such route"
            );
            answers.push(json!({"path": path, "method": method, "status": status.as_u16(), "content_type": content_type, "body": body}));
        }
    }
    assert!(answers.len() >= 34, "only {} operations documented", answers.len());
    // Some answers that show the calls did what they meant to.
    let status_of =
        |p: &str, m: &str| answers.iter().find(|a| a["path"] == p && a["method"] == m).unwrap()["status"].clone();
    assert_eq!(status_of("/tasks", "post"), 202);
    assert_eq!(status_of("/tasks/{id}", "get"), 200);
    assert_eq!(status_of("/tasks/{id}/run", "post"), 200);
    assert_eq!(status_of("/dlq/{id}", "get"), 200);
    assert_eq!(status_of("/dlq/{id}", "delete"), 200);
    assert_eq!(status_of("/conversations/{id}", "get"), 200);
    assert_eq!(status_of("/conversations/{id}/continue", "post"), 202);
    assert_eq!(status_of("/webhooks/generic/{source}", "post"), 200);
    let message = answers.iter().find(|a| a["path"] == "/conversations/message").unwrap();
    assert_eq!(message["status"], 200);
    assert_eq!(message["body"]["status"], "completed", "{message}");

    let doc_path = temp_file("openapi-doc", &doc);
    let answers_path = temp_file("openapi-answers", &Value::Array(answers));
    let python = validator().with_file_name("python");
    let out = Command::new(python)
        .arg("tests/openapi_check.py")
        .arg(&doc_path)
        .arg(&answers_path)
        .output()
        .expect("python runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_file(&doc_path);
    let _ = std::fs::remove_file(&answers_path);
    assert!(out.status.success(), "answers that differ from the document:\n{text}");
}
