//! The workers' heartbeats.

use super::*;

struct WorkerRow {
    name: String,
    host: String,
    pid: u64,
    lanes: String,
    /// The partitions it reads new entries from: `all`, or its share.
    partitions: String,
    concurrency: u64,
    in_flight: u64,
    completed: u64,
    last_seen: String,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    csrf: String,
    nav: &'static str,
    workers: Vec<WorkerRow>,
}

pub(super) async fn workers(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    let workers = state
        .engine
        .workers()
        .await
        .map_err(failed)?
        .into_iter()
        .map(|b| WorkerRow {
            lanes: b.lanes.iter().map(|l| l.as_str()).collect::<Vec<_>>().join(", "),
            partitions: match &b.partitions {
                None => "all".to_string(),
                Some(p) => p.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
            },
            name: b.name,
            host: b.host,
            pid: b.pid,
            concurrency: b.concurrency,
            in_flight: b.in_flight,
            completed: b.completed,
            last_seen: format_ms(b.last_seen),
        })
        .collect();
    Ok(render(WorkersPage { csrf: s.csrf, nav: "workers", workers }))
}
