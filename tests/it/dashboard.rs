//! The dashboard's pages and actions: a session required everywhere, login into an HttpOnly,
//! SameSite=Strict cookie, CSRF-checked POSTs, htmx fragments versus full pages, and what each
//! page shows of real work.

use crate::common::*;
use axum::Router;
use axum::http::StatusCode;
use serde_json::json;
use switchyard::engine::{Lane, TaskSpec, TaskState};

const PAGES: [&str; 8] =
    ["/ui/", "/ui/lanes", "/ui/tasks", "/ui/active", "/ui/dlq", "/ui/workers", "/ui/conversations", "/ui/schedules"];

/// Log in with the admin token; the session cookie (`name=value`) and the page's CSRF token.
async fn log_in(router: &Router) -> (String, String) {
    let r = http_with(
        router,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        format!("token={TOKEN}").into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let set = r.headers.get("set-cookie").expect("a session cookie").to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let page = get(router, "/ui/", &cookie).await;
    let csrf = page
        .text
        .split("\"X-CSRF-Token\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page's CSRF token");
    (cookie, csrf.to_string())
}

async fn get(router: &Router, path: &str, cookie: &str) -> Resp {
    http_with(router, "GET", path, &[("cookie", cookie)], Vec::new()).await
}

async fn post_form(router: &Router, path: &str, cookie: &str, form: &str) -> Resp {
    http_with(
        router,
        "POST",
        path,
        &[("cookie", cookie), ("content-type", "application/x-www-form-urlencoded"), ("sec-fetch-site", "same-origin")],
        form.as_bytes().to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_needs_a_session_and_login_opens_one() {
    let env = TestEnv::new("ui-auth").await;
    let (router, _) = env.router();
    for page in PAGES {
        let r = http(&router, "GET", page, None, None).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{page} without a session");
        assert_eq!(r.headers.get("location").unwrap(), "/login", "{page}");
        let r = http_with(&router, "GET", page, &[("hx-request", "true")], Vec::new()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{page} fragment without a session");
        assert_eq!(r.headers.get("hx-redirect").unwrap(), "/login");
        let r = get(&router, page, "sy_session=0000000000000000000000000000000000000000000000000000000000000000").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{page} with a made-up session");
    }
    let r = http(&router, "GET", "/login", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Admin token"));
    let r = http_with(
        &router,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"token=wrong".to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("not the admin token"), "{}", r.text);
    assert!(r.headers.get("set-cookie").is_none());

    let (cookie, csrf) = log_in(&router).await;
    for page in PAGES {
        let r = get(&router, page, &cookie).await;
        assert_eq!(r.status, StatusCode::OK, "{page}: {}", r.text);
    }
    // The API reads with the session too; writes still need the token.
    assert_eq!(get(&router, "/conversations/tasks/queues/status", &cookie).await.status, StatusCode::OK);
    let r = http_with(
        &router,
        "POST",
        "/tasks",
        &[("cookie", &cookie), ("content-type", "application/json")],
        br#"{"kind":"diag.noop"}"#.to_vec(),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Logging out closes the session.
    let r = post_form(&router, "/logout", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(get(&router, "/ui/", &cookie).await.status, StatusCode::SEE_OTHER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_for_htmx_and_full_pages_otherwise() {
    let env = TestEnv::new("ui-htmx").await;
    let (router, _) = env.router();
    let (cookie, _) = log_in(&router).await;
    env.engine.enqueue_batch((0..7).map(|_| TaskSpec::new("diag.noop", json!({}))).collect()).await.unwrap();

    let full = get(&router, "/ui/", &cookie).await;
    assert!(full.text.contains("<html") && full.text.contains("hx-get=\"/ui/lanes\""), "{}", full.text);
    let part = http_with(&router, "GET", "/ui/", &[("cookie", &cookie), ("hx-request", "true")], Vec::new()).await;
    assert!(!part.text.contains("<html"), "a fragment, not a page: {}", part.text);
    assert!(part.text.contains("data-lane=\"analytics\""));
    let depth = part.text.split("data-lane=\"analytics\"").nth(1).unwrap();
    assert!(depth.contains("<td class=\"num depth\">7</td>"), "the lane's depth: {depth}");

    // Tasks in the lanes, searchable by kind.
    env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 1}))).await.unwrap();
    let all = get(&router, "/ui/tasks", &cookie).await;
    assert_eq!(all.text.matches("<td>diag.noop</td>").count(), 7, "{}", all.text);
    let found = get(&router, "/ui/tasks?kind=sleep", &cookie).await;
    assert!(found.text.contains("<td>diag.sleep</td>") && !found.text.contains("<td>diag.noop</td>"), "{}", found.text);
    assert!(found.text.contains("PENDING"));
    let none = get(&router, "/ui/tasks?state=RETRY", &cookie).await;
    assert!(!none.text.contains("<td>diag.noop</td>") && none.text.contains("is in a lane"), "{}", none.text);

    let full = get(&router, "/ui/active", &cookie).await;
    assert!(full.text.contains("<html"));
    let part =
        http_with(&router, "GET", "/ui/active", &[("cookie", &cookie), ("hx-request", "true")], Vec::new()).await;
    assert!(!part.text.contains("<html") && part.text.contains("Nothing is running"), "{}", part.text);
    // Read by a worker and not started yet (no record until the start): still PENDING. One
    // acknowledged whose record is gone is finished, not in the lane: not listed.
    env.read_as(Lane::Analytics, "reader", 3).await;
    let first = env.lane_entries(Lane::Analytics).await[0].0.clone();
    assert_eq!(env.ack_entry(&first).await, 1);
    let all = get(&router, "/ui/tasks?kind=noop", &cookie).await;
    let in_lanes = all.text.split("id=\"recent\"").nth(1).unwrap_or_default();
    assert_eq!(in_lanes.matches("<td class=\"state\">PENDING</td>").count(), 6, "{}", all.text);
    assert_eq!(in_lanes.matches("<tr><td>").count(), 6, "{}", all.text);
    let css = http(&router, "GET", "/static/switchyard.css", None, None).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(http(&router, "GET", "/static/htmx.min.js", None, None).await.text.contains("htmx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_csrf_token_and_do_what_they_say() {
    let env = TestEnv::new("ui-actions").await;
    let (router, _) = env.router();
    let (cookie, csrf) = log_in(&router).await;
    let _w = env.start_worker();
    let dead = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true}))).await.unwrap();
    env.wait_state(&dead, TaskState::Failure).await;
    let letter = env.engine.dlq_get(&dead).await.unwrap().unwrap().id;

    let page = get(&router, "/ui/dlq", &cookie).await;
    assert!(page.text.contains(&dead) && page.text.contains("permanent"), "{}", page.text);

    // Without the token, with a wrong one, or from another site: refused, nothing changes.
    let form = format!("ids={letter}");
    assert_eq!(post_form(&router, "/ui/dlq/redrive", &cookie, &form).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        post_form(&router, "/ui/dlq/redrive", &cookie, &format!("{form}&csrf=nope")).await.status,
        StatusCode::FORBIDDEN
    );
    let cross = http_with(
        &router,
        "POST",
        "/ui/dlq/redrive",
        &[("cookie", &cookie), ("content-type", "application/x-www-form-urlencoded"), ("sec-fetch-site", "cross-site")],
        format!("{form}&csrf={csrf}").into_bytes(),
    )
    .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let no_session = post_form(&router, "/ui/dlq/redrive", "sy_session=x", &format!("{form}&csrf={csrf}")).await;
    assert_eq!(no_session.status, StatusCode::SEE_OTHER);
    assert!(env.engine.dlq_get(&dead).await.unwrap().is_some(), "still dead");

    // A dry run says what would happen and changes nothing.
    let r = post_form(&router, "/ui/dlq/redrive", &cookie, &format!("{form}&dry_run=1&csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Dry run: 1 would go back"), "{}", r.text);
    assert!(env.engine.dlq_get(&dead).await.unwrap().is_some());

    // With the token (as htmx sends it, in a header): redriven, and gone from the page.
    let r = http_with(
        &router,
        "POST",
        "/ui/dlq/redrive",
        &[("cookie", &cookie), ("content-type", "application/x-www-form-urlencoded"), ("x-csrf-token", &csrf)],
        form.into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("1 sent back"), "{}", r.text);
    // (The task fails again at once — it fails on purpose — as a new dead letter: the old one is gone.)
    assert!(!r.text.contains(&letter), "the letter left the page");
    assert!(env.engine.dlq_get(&letter).await.unwrap().is_none());

    // Task page: the attempt timeline; cancel from the page.
    let t = get(&router, &format!("/ui/tasks?id={dead}"), &cookie).await;
    assert!(t.text.contains("diag.fail") && t.text.contains("class=\"failure\""), "{}", t.text);
    let slow = env.engine.enqueue(TaskSpec::new("diag.sleep", json!({"ms": 60000}))).await.unwrap();
    env.wait_state(&slow, TaskState::Started).await;
    let r = post_form(&router, &format!("/ui/tasks/{slow}/cancel"), &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    env.wait_state(&slow, TaskState::Revoked).await;

    // Delete a dead letter; run a schedule now; workers show their heartbeat.
    let dead2 = env.engine.enqueue(TaskSpec::new("diag.fail", json!({"permanent": true}))).await.unwrap();
    env.wait_state(&dead2, TaskState::Failure).await;
    // Retry from the task's page: it runs again (and, failing on purpose, dies again).
    let r = post_form(&router, &format!("/ui/tasks/{dead2}/retry"), &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    wait_until("the retried task ran again", async || {
        let s = env.status(&dead2).await;
        s.attempts == 2 && s.status == TaskState::Failure
    })
    .await;
    let r = post_form(&router, "/ui/dlq/delete", &cookie, &format!("ids={dead2}&csrf={csrf}")).await;
    assert!(r.text.contains("1 dead letters deleted"), "{}", r.text);
    let r = post_form(&router, "/ui/schedules/cleanup/run", &cookie, &format!("csrf={csrf}")).await;
    assert!(r.text.contains("cleanup queued as task"), "{}", r.text);
    wait_until("the worker's heartbeat is listed", async || {
        get(&router, "/ui/workers", &cookie).await.text.contains(&_w.name())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_shows_its_transcript() {
    let env = TestEnv::new("ui-conv").await;
    let (router, _) = env.router();
    let (cookie, _) = log_in(&router).await;
    let _w = env.start_worker();
    let r = admin(&router, "POST", "/conversations/message", Some(r#"{"message": "<b>hello</b>", "user_id": "ui-1"}"#))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let page = get(&router, "/ui/conversations?id=ui-1", &cookie).await;
    assert!(page.text.contains("api:api:ui-1"), "{}", page.text);
    assert!(page.text.contains("hello") && !page.text.contains("<b>hello"), "customer text is escaped: {}", page.text);
    assert!(page.text.contains("turn-agent"));
    let list = get(&router, "/ui/conversations", &cookie).await;
    assert!(list.text.contains("/ui/conversations?id=api%3Aapi%3Aui-1"), "the latest conversations: {}", list.text);
    let missing = get(&router, "/ui/conversations?id=nobody", &cookie).await;
    assert!(missing.text.contains("No conversation"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_graphs_the_last_half_hour() {
    let env = TestEnv::new("ui-graphs").await;
    let (router, _) = env.router();
    let (cookie, _) = log_in(&router).await;
    let overview = get(&router, "/ui/", &cookie).await;
    assert!(overview.text.contains("hx-get=\"/ui/graphs\""), "{}", overview.text);
    let _w = env.start_worker();
    let ids = env.engine.enqueue_batch((0..6).map(|_| TaskSpec::new("diag.noop", json!({}))).collect()).await.unwrap();
    for id in &ids {
        env.wait_state(id, TaskState::Success).await;
    }
    // Six tasks done this minute (0.10 per second; less if the minute turned meanwhile), drawn as
    // the analytics line's last point of the first graph.
    let part = wait_for("the graphs show the work", async || {
        let r =
            http_with(&router, "GET", "/ui/graphs", &[("cookie", &cookie), ("hx-request", "true")], Vec::new()).await;
        let rate: f64 = r.text.split("analytics ").nth(1)?.split("/s").next()?.parse().ok()?;
        (rate > 0.0 && rate <= 0.1).then_some(r.text)
    })
    .await;
    assert!(!part.contains("<html") && part.matches("<svg").count() == 3, "{part}");
    assert_eq!(part.matches("<polyline").count(), 9, "three lanes on each of three graphs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_with_the_token_and_pages_are_not_framed_or_cached() {
    let env = TestEnv::new("ui-token").await;
    let (router, _) = env.router();
    let (cookie, csrf) = log_in(&router).await;
    let page = get(&router, "/ui/", &cookie).await;
    assert_eq!(page.headers.get("x-frame-options").unwrap(), "DENY");
    assert_eq!(page.headers.get("cache-control").unwrap(), "no-store");
    assert_eq!(page.headers.get("x-content-type-options").unwrap(), "nosniff");

    // A same-site (not same-origin) request is refused too.
    let r = http_with(
        &router,
        "POST",
        "/ui/schedules/cleanup/run",
        &[("cookie", &cookie), ("content-type", "application/x-www-form-urlencoded"), ("sec-fetch-site", "same-site")],
        format!("csrf={csrf}").into_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // The operator rotates the admin token: sessions opened with the old one are over.
    let rotated = switchyard::web::router(switchyard::web::AppState {
        engine: env.engine.clone(),
        admin_token: std::sync::Arc::new("a-new-token-0123456789".into()),
        ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        draining: std::sync::Arc::default(),
        prometheus: switchyard::telemetry::prometheus(),
        jwks: None,
        auth_throttle: std::sync::Arc::new(switchyard::web::throttle::AuthThrottle::from_config(&env.config)),
    });
    assert_eq!(get(&rotated, "/ui/", &cookie).await.status, StatusCode::SEE_OTHER);
    assert_eq!(get(&router, "/ui/", &cookie).await.status, StatusCode::OK, "still valid where the token is unchanged");

    // Behind a TLS-terminating proxy the cookie is marked Secure.
    let r = http_with(
        &router,
        "POST",
        "/login",
        &[("content-type", "application/x-www-form-urlencoded"), ("x-forwarded-proto", "https")],
        format!("token={TOKEN}").into_bytes(),
    )
    .await;
    assert!(r.headers.get("set-cookie").unwrap().to_str().unwrap().ends_with("; Secure"));
}

/// The overview tells an operator how much memory Redis uses, of what limit, and when the
/// high-water mark comes at the last quarter hour's growth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_redis_memory_and_when_it_fills() {
    let server = RedisProcess::start_on_free_port();
    let env = TestEnv::with("ui-memory", &server.url(), |_| {}).await;
    let (router, _) = env.router();
    let (cookie, _) = log_in(&router).await;
    let part = get(&router, "/ui/lanes", &cookie).await;
    assert!(part.text.contains("no limit (maxmemory unset)"), "{}", part.text);

    // A limit, and ten minutes of growth: a megabyte a minute.
    let mut con = env.engine.conn();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1_000_000_000u64).query_async(&mut con).await.unwrap();
    let now_min = switchyard::engine::now_ms() / 60_000;
    for m in 0..=10u64 {
        let at = 100_000_000 + m * 1_000_000;
        let _: () = redis::cmd("HSET")
            .arg(env.engine.keys().memory_samples())
            .arg(now_min - 10 + m)
            .arg(at)
            .query_async(&mut con)
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await; // a fresh reading of the limit
    let part = get(&router, "/ui/lanes", &cookie).await;
    assert!(part.text.contains("of 1.0 GB"), "{}", part.text);
    // (900 MB less the megabyte or so in use, at 1 MB a minute: some fifteen hours.)
    let outlook = part.text.split("id=\"memory-outlook\">").nth(1).unwrap_or("").split('<').next().unwrap_or("");
    assert!(
        outlook.starts_with("high-water mark in 14h") || outlook.starts_with("high-water mark in 15h"),
        "{outlook}"
    );
    drop(server);
}

/// An id taken from the path goes back into the task page's address as a query's text: `&`, `#`,
/// CR and LF neither split the query nor break the `Location` header (a 500 before).
#[tokio::test]
async fn a_task_id_with_any_characters_comes_back_encoded() {
    let env = TestEnv::new("ui-ids").await;
    let (router, _) = env.router();
    let (cookie, csrf) = log_in(&router).await;
    for (path_id, id) in [("a%26b%23c", "a&b#c"), ("x%0D%0ASet-Cookie:%20y", "x\r\nSet-Cookie: y")] {
        let r = post_form(&router, &format!("/ui/tasks/{path_id}/run"), &cookie, &format!("csrf={csrf}")).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{id:?}: {}", r.text);
        let location = r.headers.get("location").unwrap().to_str().unwrap().to_string();
        let query = location.strip_prefix("/ui/tasks?").expect("the task page");
        let back: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        assert_eq!(back, [("id".to_string(), id.to_string())], "{location}");
        assert!(r.headers.get("set-cookie").is_none());
    }
}
