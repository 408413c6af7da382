//! The `switchyard` binary itself: `serve` on a Redis, the CLI against it, and a clean stop on
//! SIGTERM that finishes the work in hand.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::Value;
use switchyard::engine::TaskState;

fn cli(url: &str, prefix: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env("SWITCHYARD_REDIS_URL", url)
        .env("SWITCHYARD_KEY_PREFIX", prefix)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run switchyard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `serve` child, killed if the test ends before it stopped by itself.
pub(crate) struct Serve(std::process::Child);

impl Serve {
    /// `switchyard serve --roles <roles>` on the test's deployment, with the admin token the
    /// tests use, its output dropped; `adjust` adds settings and redirects output.
    pub(crate) fn start(env: &TestEnv, roles: &str, adjust: impl FnOnce(&mut Command) -> &mut Command) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(["serve", "--roles", roles])
            .env("SWITCHYARD_REDIS_URL", &env.url)
            .env("SWITCHYARD_KEY_PREFIX", &env.prefix)
            .env("SWITCHYARD_ADMIN_TOKEN", "cli-token-0123456789")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        adjust(&mut cmd);
        Serve(cmd.spawn().expect("start switchyard serve"))
    }

    pub(crate) fn sigterm(&self) {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit by itself.
    pub(crate) async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "serve did not stop after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_tasks_from_the_cli_and_drains_on_sigterm() {
    let env = TestEnv::new("binary").await;
    let port = free_port();
    let mut serve = Serve::start(&env, "api,worker", |c| {
        c.env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("SWITCHYARD_SHUTDOWN_GRACE", "20s")
            .env("SWITCHYARD_SHUTDOWN_DELAY", "5s")
    });

    let (ok, out, err) = cli(&env.url, &env.prefix, &["check"]);
    assert!(ok, "check failed: {out}{err}");
    assert!(out.contains("groups: present"), "{out}");

    let (ok, out, err) =
        cli(&env.url, &env.prefix, &["tasks", "enqueue", "diag.sleep", "--payload", r#"{"ms": 1500}"#]);
    assert!(ok, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["task_id"].as_str().unwrap().to_string();
    env.wait_state(&id, TaskState::Started).await;

    // SIGTERM while the task runs: the process finishes it within the grace period, then exits.
    // Meanwhile load balancers are told to send no more, while the listener still answers.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let ready = http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready before the signal");
    serve.sigterm();
    wait_until("readyz answers 503 after SIGTERM", async || {
        let r = http.get(format!("http://127.0.0.1:{port}/readyz")).send().await.unwrap();
        r.status() == 503 && r.text().await.unwrap().contains("shutting down")
    })
    .await;
    let health = http.get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200), "the listener still serves during the delay");
    let exit = serve.exited().await;
    assert!(exit.success(), "serve exited with {exit}");
    let s = env.status(&id).await;
    assert_eq!(s.status, TaskState::Success, "the running task was finished before exit: {s:?}");

    let (ok, out, _) = cli(&env.url, &env.prefix, &["tasks", "status", &id]);
    assert!(ok && out.contains("\"SUCCESS\""), "{out}");
    let (ok, _, err) = cli(&env.url, &env.prefix, &["tasks", "status", "01NOSUCHTASK0000000000000"]);
    assert!(!ok && err.contains("no task"), "{err}");
    let (ok, _, err) = cli(&env.url, &env.prefix, &["tasks", "enqueue", "no.such.kind"]);
    assert!(!ok && err.contains("unknown task kind"), "{err}");

    // The history of finished tasks, and the tasks queued for later.
    let (ok, out, err) = cli(&env.url, &env.prefix, &["tasks", "list", "--state", "success", "--kind", "diag.*"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["count"], 1, "{out}");
    assert_eq!(listed["tasks"][0]["task_id"], id.as_str());
    assert_eq!(listed["tasks"][0]["state"], "SUCCESS");
    assert!(listed["tasks"][0]["run_ms"].as_u64().unwrap() >= 1500, "{out}");
    let (ok, _, err) = cli(&env.url, &env.prefix, &["tasks", "list", "--state", "PENDING"]);
    assert!(!ok && err.contains("SUCCESS, FAILURE or REVOKED"), "{err}");
    let (ok, out, err) = cli(&env.url, &env.prefix, &["tasks", "enqueue", "diag.noop", "--delay", "1h"]);
    assert!(ok, "{err}");
    let later = serde_json::from_str::<Value>(&out).unwrap()["task_id"].as_str().unwrap().to_string();
    let (ok, out, err) = cli(&env.url, &env.prefix, &["tasks", "scheduled"]);
    assert!(ok, "{err}");
    let scheduled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(scheduled["scheduled"][0]["task_id"], later.as_str(), "{out}");
    let (ok, out, err) = cli(&env.url, &env.prefix, &["tasks", "run-now", &later]);
    assert!(ok && out.contains("PENDING"), "{out}{err}");
    let (ok, out, _) = cli(&env.url, &env.prefix, &["tasks", "scheduled"]);
    let due = serde_json::from_str::<Value>(&out).unwrap()["scheduled"][0]["run_at"].clone();
    assert!(ok && due.as_str() < scheduled["scheduled"][0]["run_at"].as_str(), "due now, not in an hour: {out}");
}

#[test]
fn a_bad_setting_stops_start_up_with_one_clear_line() {
    for (name, value, named) in [
        ("SWITCHYARD_VISIBILITY_TIMEOUT", "soon", "SWITCHYARD_VISIBILITY_TIMEOUT"),
        ("SWITCHYARD_GRAPH_URL", "graph.facebook.com/v24.0", "GRAPH_URL"),
        ("SWITCHYARD_LLM_URL", "http://", "LLM_URL"),
        ("SWITCHYARD_RBM_URL", "ftp://rbm.example", "RBM_URL"),
        ("SWITCHYARD_GOOGLE_JWKS", "not a url", "GOOGLE_JWKS"),
        ("SWITCHYARD_BODY_BYTES_IN_FLIGHT", "1024", "BODY_BYTES_IN_FLIGHT"),
        ("SWITCHYARD_HEADER_READ_TIMEOUT", "0s", "HEADER_READ_TIMEOUT"),
        ("SWITCHYARD_MAX_CONNECTIONS", "many", "SWITCHYARD_MAX_CONNECTIONS"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchyard")).args(["check"]).env(name, value).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(named) && err.contains(value), "{name}={value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_variable_that_names_no_setting_is_warned_about() {
    let env = TestEnv::new("binary-typo").await;
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check"])
        .env("SWITCHYARD_REDIS_URL", &env.url)
        .env("SWITCHYARD_KEY_PREFIX", &env.prefix)
        .env("SWITCHYARD_FACEBOOK_APP_SECERT", "s3cret")
        .env("SWITCHYARD_TEST_ANYTHING", "tests' own")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("SWITCHYARD_FACEBOOK_APP_SECERT names no setting")
            && err.contains("did you mean SWITCHYARD_FACEBOOK_APP_SECRET?"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "the value is not logged: {err}");
    assert!(!err.contains('\u{1b}'), "no colour codes when stderr is not a terminal: {err}");
    assert!(!err.contains("SWITCHYARD_TEST_ANYTHING"), "{err}");
}

/// `LOG_FORMAT=json`: every line stderr gets is one JSON object, without colour codes, and a line
/// about a task (here its handler's panic) names the task: id, kind, lane and attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_naming_the_task() {
    let env = TestEnv::new("binary-json-logs").await;
    let log_path = std::env::temp_dir().join(format!("{}.log", env.prefix));
    let log_file = std::fs::File::create(&log_path).unwrap();
    let mut serve = Serve::start(&env, "worker", |c| {
        c.env("SWITCHYARD_SHUTDOWN_DELAY", "0s")
            .env("SWITCHYARD_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stderr(log_file)
    });
    let (ok, out, err) = cli(&env.url, &env.prefix, &["tasks", "enqueue", "diag.panic", "--max-attempts", "1"]);
    assert!(ok, "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["task_id"].as_str().unwrap().to_string();
    env.wait_state(&id, TaskState::Failure).await;
    serve.sigterm();
    serve.exited().await;

    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(!text.contains('\u{1b}'), "no colour codes in a file: {text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["message"] == "worker started"), "{text}");
    let panic = lines.iter().find(|l| l["message"] == "panicked").unwrap_or_else(|| panic!("no panic line: {text}"));
    assert_eq!(
        (
            &panic["level"],
            &panic["span"]["task_id"],
            &panic["span"]["kind"],
            &panic["span"]["lane"],
            &panic["span"]["attempt"]
        ),
        (
            &Value::from("ERROR"),
            &Value::from(id.as_str()),
            &Value::from("diag.panic"),
            &Value::from("analytics"),
            &Value::from(1)
        ),
        "{panic}"
    );
    let dead = lines
        .iter()
        .find(|l| l["message"] == "task failed for good; moved to the dead-letter queue")
        .unwrap_or_else(|| panic!("no dead-letter line: {text}"));
    assert_eq!(
        (&dead["task_id"], &dead["kind"], &dead["lane"]),
        (&Value::from(id.as_str()), &Value::from("diag.panic"), &Value::from("analytics")),
        "{dead}"
    );
}

/// Counters and histograms whose labels are known in advance are exported at zero from the
/// first scrape, so panels and alert rules see 0 rather than no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_scrape_has_the_known_series_at_zero() {
    let env = TestEnv::new("binary-zero-metrics").await;
    let port = free_port();
    let _serve = Serve::start(&env, "api", |c| c.env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}")));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let text = wait_for("the first scrape", async || http.get(&url).send().await.ok()?.text().await.ok()).await;
    for series in [
        r#"switchyard_webhooks_received_total{platform="whatsapp",outcome="duplicate"} 0"#,
        r#"switchyard_webhooks_received_total{platform="facebook",outcome="rejected"} 0"#,
        r#"switchyard_deliveries_total{platform="rbm",outcome="failed"} 0"#,
        r#"switchyard_replies_total{platform="instagram",responder="llm"} 0"#,
        r#"switchyard_llm_fallbacks_total 0"#,
        r#"switchyard_tasks_enqueued_total{lane="webhooks",kind="delivery.send"} 0"#,
        r#"switchyard_tasks_finished_total{lane="conversations",kind="conversation.process_message",outcome="failure"} 0"#,
        r#"switchyard_task_run_seconds_count{lane="analytics",kind="diag.noop"} 0"#,
        r#"switchyard_task_wait_seconds_count{lane="conversations"} 0"#,
        r#"switchyard_reply_latency_seconds_count{platform="messenger"} 0"#,
        r#"switchyard_http_refused_total{reason="body_memory"} 0"#,
        r#"switchyard_http_timeouts_total{phase="header"} 0"#,
        r#"switchyard_auth_failures_total{surface="login"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == series), "the first scrape lacks `{series}`:\n{text}");
    }
}
