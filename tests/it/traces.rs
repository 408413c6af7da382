//! OpenTelemetry traces: `switchyard serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` set exports its
//! spans over OTLP/HTTP to a local receiver started here, which decodes them as a collector
//! would. One message's spans must form one trace: the webhook's request, the enqueue, each
//! attempt (a retry its own span), the LLM call, the delivery's enqueue, attempts and sends; and
//! a `traceparent` sent with `POST /tasks` is the parent of everything the task does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::json;

use crate::binary::Serve;
use crate::common::*;
use crate::flow::{SECRET, llm_server, messenger_body};

/// One span as the collector got it.
#[derive(Clone, Debug)]
struct Got {
    name: String,
    trace: String,
    id: String,
    /// Empty for a root span.
    parent: String,
    /// SPAN_KIND_*: 2 server, 3 client, 4 producer, 5 consumer.
    kind: i32,
    /// The status code: 2 error.
    status: i32,
    service: String,
}

/// A local OTLP/HTTP receiver: `POST /v1/traces`, protobuf, every span kept.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Got>>>);

impl Collector {
    async fn start(&self) -> String {
        let spans = self.0.clone();
        let app = Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let spans = spans.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
                    let mut got = spans.lock().unwrap();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                            got.push(Got {
                                name: s.name,
                                trace: hex::encode(&s.trace_id),
                                id: hex::encode(&s.span_id),
                                parent: hex::encode(&s.parent_span_id),
                                kind: s.kind,
                                status: s.status.map_or(0, |st| st.code),
                                service: service.clone(),
                            });
                        }
                    }
                    ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Got> {
        self.0.lock().unwrap().clone()
    }

    fn named(&self, name: &str) -> Vec<Got> {
        self.spans().into_iter().filter(|s| s.name == name).collect()
    }

    fn by_id(&self, id: &str) -> Got {
        self.spans().into_iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no span {id}: {:#?}", self.spans()))
    }
}

/// An HTTP client for the calls to `serve` (plain HTTP; the TLS provider is chosen as the
/// crate's own client chooses it).
fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// `switchyard serve` exporting to `collector`, wired to a local platform and LLM.
async fn serve_traced(
    env: &TestEnv,
    collector: &str,
    platform: &str,
    llm: &str,
    port: u16,
    adjust: impl FnOnce(&mut std::process::Command) -> &mut std::process::Command,
) -> Serve {
    let serve = Serve::start(env, "api,worker", |c| {
        adjust(c)
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("SWITCHYARD_FACEBOOK_APP_SECRET", SECRET)
            .env("SWITCHYARD_FACEBOOK_PAGE_TOKEN", "PAGE_TOKEN")
            .env("SWITCHYARD_GRAPH_URL", format!("{platform}/v24.0"))
            .env("SWITCHYARD_LLM_URL", llm)
            .env("SWITCHYARD_LLM_MODEL", "test-model")
            .env("SWITCHYARD_RETRY_BASE", "100ms")
            .env("SWITCHYARD_RETRY_CAP", "200ms")
    });
    let client = client();
    wait_until("serve answers /readyz", async || {
        client.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    serve
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_one_trace_from_its_webhook_to_its_reply() {
    let env = TestEnv::new("traces-flow").await;
    let collector = Collector::default();
    let collector_url = collector.start().await;
    let platform = FakePlatform::default();
    // The first send fails: its attempt and the retry are spans of their own.
    platform.then(500, None, json!({"error": {"message": "try again", "code": 2}}));
    let platform_url = platform.start().await;
    let (llm, _asked) = llm_server("Your order ships today.", Duration::ZERO).await;
    let port = free_port();
    let _serve = serve_traced(&env, &collector_url, &platform_url, &llm, port, |c| c).await;

    let body = messenger_body("PAGE1", "PSID1", &[("m_trace_1", "where is my order?")]);
    let answer = client()
        .post(format!("http://127.0.0.1:{port}/webhooks/facebook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", meta_sign(SECRET, &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    wait_until("the reply was sent", async || platform.accepted().len() == 1).await;
    wait_until("both sends' spans were exported", async || collector.named("send messenger").len() == 2).await;
    wait_until("both delivery attempts' spans were exported", async || collector.named("run delivery.send").len() == 2)
        .await;

    // The webhook's request is the root.
    let request = collector.named("POST /webhooks/facebook");
    assert_eq!(request.len(), 1, "{:#?}", collector.spans());
    let request = &request[0];
    assert_eq!((request.parent.as_str(), request.kind), ("", 2), "a root server span: {request:?}");
    assert!(request.service.contains("switchyard"), "service.name: {}", request.service);
    let trace = &request.trace;
    assert!(collector.spans().iter().filter(|s| s.trace == *trace).count() >= 9, "{:#?}", collector.spans());

    // request → enqueue → the message's attempt → the LLM call
    let attempt = collector.named("run conversation.process_message");
    assert_eq!(attempt.len(), 1, "{:#?}", collector.spans());
    let attempt = &attempt[0];
    assert_eq!((&attempt.trace, attempt.kind), (trace, 5));
    let enqueue = collector.by_id(&attempt.parent);
    assert_eq!((enqueue.name.as_str(), enqueue.kind, &enqueue.parent), ("enqueue", 4, &request.id));
    let llm_call = collector.named("chat test-model");
    assert_eq!(llm_call.len(), 1, "{:#?}", collector.spans());
    assert_eq!((&llm_call[0].parent, llm_call[0].kind), (&attempt.id, 3));

    // the attempt → the reply's enqueue → two delivery attempts (a failed one, its retry),
    // each with its send
    let deliveries = collector.named("run delivery.send");
    let queued = collector.by_id(&deliveries[0].parent);
    assert_eq!((queued.name.as_str(), &queued.parent, &queued.trace), ("enqueue", &attempt.id, trace));
    assert_eq!(deliveries[1].parent, queued.id, "the retry is a child of the same enqueue");
    assert_ne!(deliveries[0].id, deliveries[1].id);
    let mut statuses: Vec<i32> = deliveries.iter().map(|d| d.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses[1], 2, "the failed attempt's span says so: {deliveries:#?}");
    assert_ne!(statuses[0], 2, "the retry succeeded: {deliveries:#?}");
    for send in collector.named("send messenger") {
        assert_eq!(send.kind, 3);
        assert!(deliveries.iter().any(|d| d.id == send.parent), "a send belongs to an attempt: {send:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traceparent_sent_with_a_task_is_the_parent_of_its_work() {
    let env = TestEnv::new("traces-api").await;
    let collector = Collector::default();
    let collector_url = collector.start().await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("{}.log", env.prefix));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut serve = serve_traced(&env, &collector_url, "http://127.0.0.1:9", "http://127.0.0.1:9/v1", port, |c| {
        c.env("SWITCHYARD_LOG_FORMAT", "json").env("RUST_LOG", "info").stderr(log_file)
    })
    .await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let answer = client()
        .post(format!("http://127.0.0.1:{port}/tasks"))
        .bearer_auth("cli-token-0123456789")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"kind": "diag.noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    wait_until("the task's attempt span was exported", async || !collector.named("run diag.noop").is_empty()).await;

    let attempt = &collector.named("run diag.noop")[0];
    assert_eq!(attempt.trace, trace, "the task joins the caller's trace");
    let enqueue = collector.by_id(&attempt.parent);
    assert_eq!(enqueue.name, "enqueue");
    let request = collector.by_id(&enqueue.parent);
    assert_eq!((request.name.as_str(), request.kind), ("POST /tasks", 2));
    assert_eq!(request.parent, caller, "the request's parent is the caller's span");

    // A task queued for later keeps the context until it is due.
    let answer = client()
        .post(format!("http://127.0.0.1:{port}/tasks"))
        .bearer_auth("cli-token-0123456789")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"kind": "diag.noop", "delay": "1s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    wait_until("the later task's attempt span was exported", async || collector.named("run diag.noop").len() == 2)
        .await;
    let later = &collector.named("run diag.noop")[1];
    assert_eq!(later.trace, trace, "{later:?}");
    let enqueue = collector.by_id(&later.parent);
    assert_eq!((enqueue.name.as_str(), collector.by_id(&enqueue.parent).parent.as_str()), ("enqueue", caller));

    // The task's log lines name the trace.
    let answer = client()
        .post(format!("http://127.0.0.1:{port}/tasks"))
        .bearer_auth("cli-token-0123456789")
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .json(&json!({"kind": "diag.panic", "max_attempts": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let id = answer.json::<serde_json::Value>().await.unwrap()["task_id"].as_str().unwrap().to_string();
    env.wait_state(&id, switchyard::engine::TaskState::Failure).await;
    serve.sigterm();
    serve.exited().await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let lines: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let panic = lines.iter().find(|l| l["message"] == "panicked").unwrap_or_else(|| panic!("no panic line: {text}"));
    assert_eq!((&panic["span"]["task_id"], &panic["span"]["trace_id"]), (&json!(id), &json!(trace)), "{panic}");
    // A line about the task outside its attempt names the trace itself.
    let dead = lines
        .iter()
        .find(|l| l["message"] == "task failed for good; moved to the dead-letter queue")
        .unwrap_or_else(|| panic!("no dead-letter line: {text}"));
    assert_eq!((&dead["task_id"], &dead["trace_id"]), (&json!(id), &json!(trace)), "{dead}");
}
