//! The dashboard in a real headless Chromium (Debian's `chromium`, installed by
//! `scripts/setup.sh chromium`), driven over the DevTools protocol: log in, watch a lane's depth
//! change without a reload, redrive a dead letter and see it leave — with no console errors.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchyard::engine::{Lane, TaskSpec, TaskState};
use tokio_tungstenite::tungstenite::Message;

/// A headless Chromium, killed when dropped.
struct Browser {
    child: Child,
    port: u16,
    _profile: TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium() -> String {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output()
            && out.status.success()
        {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
    }
    panic!("no chromium on PATH: `make test` installs it (scripts/setup.sh chromium), or apt-get install chromium");
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let profile = std::env::temp_dir().join(format!("switchyard-chromium-{}-{port}", std::process::id()));
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                &format!("--remote-debugging-port={port}"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        Browser { child, port, _profile: TempDir(profile) }
    }

    /// The DevTools socket of the first page.
    async fn page_socket(&self) -> String {
        let url = format!("http://127.0.0.1:{}/json/list", self.port);
        let client = switchyard::http_client::client().unwrap();
        wait_for("chromium's DevTools endpoint", async || {
            let targets: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_string)
        })
        .await
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools session on one page: commands, and the console errors seen so far.
struct Page {
    ws: Socket,
    next: u64,
    errors: Vec<String>,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws.send(Message::text(json!({"id": id, "method": method, "params": params}).to_string())).await.unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer"))
                .expect("the DevTools socket is open")
                .unwrap();
            let Ok(text) = msg.into_text() else { continue };
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    /// Keep console errors, uncaught exceptions and failed loads.
    fn note(&mut self, event: &Value) {
        let p = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!("exception: {}", p["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", p["entry"]["text"]))
            }
            _ => {}
        }
    }

    /// Evaluate an expression in the page; its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}))
            .await;
        r["result"]["value"].clone()
    }

    async fn wait_true(&mut self, what: &str, expr: &str) {
        for _ in 0..300 {
            if self.eval(expr).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed: {what} ({expr})");
    }

    async fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url})).await;
        self.wait_true("the page loaded", "document.readyState === 'complete'").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_logs_in_watches_a_lane_redrives_a_dead_letter_pauses_a_lane_and_runs_a_scheduled_task() {
    let env = TestEnv::new("browser").await;
    let base = format!("http://{}", env.serve().await);

    let browser = Browser::start();
    let (ws, _) = tokio_tungstenite::connect_async(browser.page_socket().await).await.expect("DevTools socket");
    let mut page = Page { ws, next: 0, errors: Vec::new() };
    for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
        page.call(domain, json!({})).await;
    }

    // Log in.
    page.open(&format!("{base}/login")).await;
    page.eval(&format!(
        "document.querySelector('#token').value = '{TOKEN}'; document.querySelector('form').submit(); true"
    ))
    .await;
    page.wait_true(
        "the overview after logging in",
        "location.pathname === '/ui/' && !!document.querySelector('#lane-table')",
    )
    .await;
    assert_eq!(page.eval("document.querySelector('tr[data-lane=\"analytics\"] .depth').textContent").await, "0");
    // Redis's memory, with its limit (or the lack of one) and where it is going.
    let memory = page.eval("document.querySelector('#redis-memory b').textContent").await;
    assert!(memory.as_str().is_some_and(|m| m.ends_with('B') && m.len() > 2), "{memory}");
    let card = page.eval("document.querySelector('#redis-memory').textContent").await;
    assert!(card.as_str().is_some_and(|c| c.contains("maxmemory unset") || c.contains('%')), "{card}");

    // Work arrives: the depth changes on the page without a reload.
    page.eval("window.__sameDocument = true").await;
    env.engine.enqueue_batch((0..5).map(|_| TaskSpec::new("diag.noop", json!({}))).collect()).await.unwrap();
    page.wait_true(
        "the analytics lane's depth at 5",
        "document.querySelector('tr[data-lane=\"analytics\"] .depth').textContent === '5'",
    )
    .await;
    assert_eq!(page.eval("window.__sameDocument === true").await, json!(true), "the page was reloaded");

    // A task that dies once (no retries), then succeeds when redriven.
    let w = env.start_worker();
    let task = env
        .engine
        .enqueue(TaskSpec::new("diag.fail", json!({"times": 1})).on_lane(Lane::Analytics).max_attempts(1))
        .await
        .unwrap();
    env.wait_state(&task, TaskState::Failure).await;
    page.open(&format!("{base}/ui/dlq")).await;
    let row = format!("tr.dead-letter[data-task=\"{task}\"]");
    page.wait_true("the dead letter listed", &format!("!!document.querySelector('{row}')")).await;
    page.eval(&format!("document.querySelector('{row} button.redrive-one').click(); true")).await;
    page.wait_true(
        "the dead letter gone and the redrive reported",
        &format!("document.readyState === 'complete' && !document.querySelector('{row}') && (document.querySelector('#notice') || {{}}).textContent === '1 sent back to their lanes.'"),
    )
    .await;
    env.wait_state(&task, TaskState::Success).await;

    // Pause a lane from the overview: asked first (saying no changes nothing), then paused,
    // shown so, and resumed.
    page.open(&format!("{base}/ui/")).await;
    let state = "document.querySelector('tr[data-lane=\"analytics\"] .lane-state').textContent";
    let click = |button: &str, answer: bool| {
        format!(
            "window.confirm = m => {{ window.__asked = m; return {answer}; }}; \
             document.querySelector('tr[data-lane=\"analytics\"] button.{button}').click(); true"
        )
    };
    page.eval(&click("lane-pause", false)).await;
    let asked = page.eval("window.__asked").await;
    assert!(asked.as_str().is_some_and(|a| a.contains("Pause the analytics lane")), "{asked}");
    assert!(env.engine.paused_lanes().await.unwrap().is_empty(), "declined, so not paused");
    page.eval(&click("lane-pause", true)).await;
    page.wait_true(
        "the lane shown paused",
        &format!("document.readyState === 'complete' && {state}.includes('paused')"),
    )
    .await;
    assert_eq!(env.engine.paused_lanes().await.unwrap(), [Lane::Analytics]);
    page.eval(&click("lane-resume", true)).await;
    page.wait_true(
        "the lane shown running",
        &format!("document.readyState === 'complete' && {state}.includes('running')"),
    )
    .await;
    assert!(env.engine.paused_lanes().await.unwrap().is_empty());

    // Tasks queued for later are listed on the Tasks page, the first due first; one is run now,
    // the other cancelled, each asked first.
    let later = |n: u64| TaskSpec::new("diag.noop", json!({"n": n})).delayed(std::time::Duration::from_secs(3600 * n));
    let hurry = env.engine.enqueue(later(1)).await.unwrap();
    let dropped = env.engine.enqueue(later(2)).await.unwrap();
    page.open(&format!("{base}/ui/tasks")).await;
    let rows = page.eval("[...document.querySelectorAll('#scheduled tr.later')].map(r => r.dataset.task)").await;
    assert_eq!(rows, json!([hurry, dropped]), "the first due first");
    let press = |id: &str, button: &str, answer: bool| {
        format!(
            "window.confirm = m => {{ window.__asked = m; return {answer}; }}; \
             document.querySelector('#scheduled tr[data-task=\"{id}\"] button.{button}').click(); true"
        )
    };
    page.eval(&press(&hurry, "run-now", false)).await;
    assert_eq!(page.eval("window.__asked").await, "Run this task now?");
    assert!(env.status(&hurry).await.run_at.is_some(), "declined, so still waiting");
    page.eval(&press(&hurry, "run-now", true)).await;
    env.wait_state(&hurry, TaskState::Success).await;
    page.open(&format!("{base}/ui/tasks")).await;
    page.eval(&press(&dropped, "cancel-later", true)).await;
    page.wait_true(
        "the cancelled task's page",
        "document.readyState === 'complete' && location.search.startsWith('?id=') && document.querySelector('h2 .state').textContent === 'REVOKED'",
    )
    .await;
    assert_eq!(env.status(&dropped).await.status, TaskState::Revoked);
    page.open(&format!("{base}/ui/tasks")).await;
    assert_eq!(page.eval("document.querySelectorAll('#scheduled tr.later').length").await, json!(0));

    // Finished tasks, newest first: filtered from the search form, then a page at a time.
    let finished = "[...document.querySelectorAll('#finished tbody tr')].map(r => r.dataset.task)";
    let rows = page.eval(finished).await;
    assert_eq!(rows[0], json!(dropped), "the latest first: {rows}");
    assert!(rows.as_array().unwrap().contains(&json!(hurry)), "{rows}");
    page.eval(
        "document.querySelector('#filter select[name=state]').value = 'REVOKED'; \
         document.querySelector('#filter').submit(); true",
    )
    .await;
    page.wait_true(
        "the finished tasks filtered by state",
        "document.readyState === 'complete' && location.search.includes('state=REVOKED')",
    )
    .await;
    assert_eq!(page.eval(finished).await, json!([dropped]));
    let many =
        env.engine.enqueue_batch((0..55).map(|_| TaskSpec::new("diag.noop", json!({}))).collect()).await.unwrap();
    for id in &many {
        env.wait_state(id, TaskState::Success).await;
    }
    page.open(&format!("{base}/ui/tasks?state=SUCCESS")).await;
    let first = page.eval(finished).await;
    assert_eq!(first.as_array().unwrap().len(), 50, "a page of 50");
    let newest: Vec<Value> = many.iter().map(|id| json!(id)).collect();
    assert!(first.as_array().unwrap().iter().all(|id| newest.contains(id)), "the latest first: {first}");
    page.eval("document.querySelector('#older').click(); true").await;
    page.wait_true(
        "the next page of finished tasks",
        "document.readyState === 'complete' && location.search.includes('after=') && !!document.querySelector('#newest')",
    )
    .await;
    let second = page.eval(finished).await;
    // 55 + the 5 from the start + the one redriven + the one run now, less the first page
    assert_eq!(second.as_array().unwrap().len(), 12, "{second}");
    assert!(second.as_array().unwrap().iter().all(|id| !first.as_array().unwrap().contains(id)), "no task twice");
    assert_eq!(page.eval("!!document.querySelector('#older')").await, json!(false), "the last page");

    // A running task's page follows it live: its progress moves without a reload, and once it
    // has finished the page shows its result.
    let live = env.engine.enqueue(TaskSpec::new("diag.progress", json!({"steps": 10, "ms": 400}))).await.unwrap();
    env.wait_state(&live, TaskState::Started).await;
    page.open(&format!("{base}/ui/tasks?id={live}")).await;
    page.eval("window.__sameDocument = true").await;
    let shown = page.eval("document.querySelector('#progress').textContent").await;
    page.wait_true(
        "the progress moving on the page",
        &format!("window.__sameDocument === true && document.querySelector('#progress').textContent !== {shown}"),
    )
    .await;
    assert_eq!(page.eval("document.querySelector('#task-state').textContent").await, "STARTED");
    page.wait_true(
        "the finished task's page",
        "document.readyState === 'complete' && document.querySelector('#task-state').textContent === 'SUCCESS'",
    )
    .await;
    let result = page.eval("document.querySelector('pre:last-of-type').textContent").await;
    assert!(result.as_str().is_some_and(|r| r.contains("\"steps\": 10")), "{result}");
    w.stop().await;

    // On a phone's screen every page fits its width (wide tables scroll inside themselves).
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    )
    .await;
    for path in ["/ui/", "/ui/tasks", "/ui/dlq", "/ui/workers", "/ui/schedules"] {
        page.open(&format!("{base}{path}")).await;
        let fits = page.eval("document.documentElement.scrollWidth <= screen.width + 1").await;
        assert_eq!(fits, json!(true), "{path} is wider than a phone's screen");
    }

    // Drain events that arrived after the last command, then: no console errors.
    page.eval("true").await;
    assert!(page.errors.is_empty(), "console errors: {:?}", page.errors);
}
