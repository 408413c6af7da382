//! The overview: the lanes' figures (a live part), Redis's memory, and the last half hour's graphs.

use super::*;

struct LaneRow {
    name: &'static str,
    /// Paused by an operator: workers read nothing new from it.
    paused: bool,
    depth: u64,
    lag: u64,
    pending: u64,
    active: u64,
    retrying: u64,
    consumers: u64,
    dead: i64,
    throughput: String,
    failures: String,
    run_p99: String,
}

struct QueuesView {
    dlq_depth: u64,
    /// Redis's memory: in use, of the limit, and how long until the mark at the last quarter
    /// hour's growth.
    memory: String,
    memory_limit: String,
    memory_outlook: String,
}

/// `1.5 MB`, `12 GB`: bytes as an operator reads them.
fn human_bytes(b: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", units[i]) }
}

fn memory_view(t: &crate::engine::MemoryTrend) -> (String, String, String) {
    let limit = match t.max {
        0 => "no limit (maxmemory unset)".to_string(),
        max => format!("of {} ({:.0} %)", human_bytes(max), t.used as f64 * 100.0 / max as f64),
    };
    let outlook = match (t.until_mark_s, t.per_s) {
        _ if t.max > 0 && t.used >= t.mark => "at the high-water mark: new work is refused".to_string(),
        (Some(s), _) => format!(
            "high-water mark in {} at the last quarter hour's growth",
            humantime::format_duration(std::time::Duration::from_secs((s as u64 / 60).max(1) * 60))
        ),
        (None, Some(g)) if g <= 0.0 => "not growing over the last quarter hour".into(),
        (None, Some(_)) => "growing; no limit to reach".into(),
        (None, None) => "growth: not enough history yet".into(),
    };
    (human_bytes(t.used), limit, outlook)
}

#[derive(Template)]
#[template(path = "lanes.html")]
struct LanesPart {
    csrf: String,
    q: QueuesView,
    workers: u64,
    lanes: Vec<LaneRow>,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    csrf: String,
    nav: &'static str,
    q: QueuesView,
    workers: u64,
    lanes: Vec<LaneRow>,
}

async fn lanes_data(engine: &Engine) -> Result<(QueuesView, u64, Vec<LaneRow>), EngineError> {
    let q = engine.queues_status().await?;
    let workers = engine.worker_count().await?;
    // The last 60 s of every worker's figures (bounded: two hashes, one per minute).
    let last = crate::analytics::report::last_minute(engine).await?;
    let rows = Lane::ALL
        .iter()
        .map(|l| {
            let s = q.queues.get(l.as_str());
            let fig = last.get(l.as_str()).copied().unwrap_or_default();
            LaneRow {
                name: l.as_str(),
                paused: s.is_some_and(|s| s.paused),
                depth: s.map_or(0, |s| s.depth),
                lag: s.map_or(0, |s| s.lag),
                pending: s.map_or(0, |s| s.pending),
                active: s.map_or(0, |s| s.active),
                retrying: s.map_or(0, |s| s.retrying),
                consumers: s.map_or(0, |s| s.consumers),
                dead: s.map_or(0, |s| s.dead),
                throughput: format!("{:.1}", fig.done_per_s),
                failures: format!("{:.2}", fig.failed_per_s),
                run_p99: fig.run_p99_ms.map_or("—".into(), |ms| format!("{ms:.1} ms")),
            }
        })
        .collect();
    let (memory, memory_limit, memory_outlook) = memory_view(&engine.memory_trend().await?);
    Ok((QueuesView { dlq_depth: q.dlq_depth, memory, memory_limit, memory_outlook }, workers, rows))
}

pub(super) async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    let (q, workers, lanes) = lanes_data(&state.engine).await.map_err(failed)?;
    if is_htmx(&headers) {
        return Ok(render(LanesPart { csrf: s.csrf, q, workers, lanes }));
    }
    Ok(render(OverviewPage { csrf: s.csrf, nav: "overview", q, workers, lanes }))
}

/// The live part of the overview (htmx polls it).
pub(super) async fn lanes(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    let (q, workers, lanes) = lanes_data(&state.engine).await.map_err(failed)?;
    Ok(render(LanesPart { csrf: s.csrf, q, workers, lanes }))
}

/// Pause or resume a lane (`POST /ui/lanes/{lane}/pause|resume`, the form's CSRF token checked),
/// then back to the overview.
pub(super) async fn lane_pause(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> Page {
    require_post(&state, &headers, &Form::parse(&body)).await?;
    let Some(lane) = Lane::parse(&name) else {
        return Ok((StatusCode::NOT_FOUND, Html("<p>No such lane.</p>")).into_response());
    };
    let done = match action.as_str() {
        "pause" => state.engine.pause_lane(lane).await,
        "resume" => state.engine.resume_lane(lane).await,
        _ => return Ok((StatusCode::NOT_FOUND, Html("<p>A lane is paused or resumed.</p>")).into_response()),
    };
    done.map_err(failed)?;
    Ok(Redirect::to("/ui/").into_response())
}

/// One lane's line in a graph.
struct Series {
    lane: &'static str,
    color: &'static str,
    points: String,
    last: String,
}

struct Graph {
    title: &'static str,
    max: String,
    series: Vec<Series>,
}

#[derive(Template)]
#[template(path = "graphs.html")]
struct GraphsPart {
    graphs: Vec<Graph>,
}

const GRAPH_MINUTES: u64 = 30;

const COLORS: [&str; 3] = ["#2156d9", "#067647", "#b54708"];

/// A graph of one figure per lane and minute: points scaled into a 300×80 box.
fn graph(title: &'static str, unit: &str, values: &[[f64; 3]]) -> Graph {
    let max = values.iter().flat_map(|v| v.iter().copied()).fold(0.0_f64, f64::max);
    let scale = if max > 0.0 { 76.0 / max } else { 0.0 };
    let step = 300.0 / (values.len().max(2) - 1) as f64;
    let series = Lane::ALL
        .iter()
        .map(|l| {
            let i = l.index();
            let points = values
                .iter()
                .enumerate()
                .map(|(x, v)| format!("{:.1},{:.1}", x as f64 * step, 78.0 - v[i] * scale))
                .collect::<Vec<_>>()
                .join(" ");
            let last = values.last().map(|v| format!("{:.2}{unit}", v[i])).unwrap_or_default();
            Series { lane: l.as_str(), color: COLORS[i], points, last }
        })
        .collect();
    Graph { title, max: format!("{max:.2}{unit}"), series }
}

pub(super) async fn graphs(State(state): State<AppState>, headers: HeaderMap) -> Page {
    require(&state, &headers).await?;
    let minutes = crate::analytics::report::per_minute(&state.engine, GRAPH_MINUTES).await.map_err(failed)?;
    let figure = |f: &dyn Fn(&crate::engine::stats::KindStats) -> f64| -> Vec<[f64; 3]> {
        minutes.iter().map(|(_, lanes)| Lane::ALL.map(|l| lanes.get(l.as_str()).map_or(0.0, f))).collect()
    };
    let done = figure(&|s| s.succeeded as f64 / 60.0);
    let failed_ = figure(&|s| (s.failed + s.retried) as f64 / 60.0);
    let p99 = figure(&|s| if s.run_us.is_empty() { 0.0 } else { s.run_us.value_at_quantile(0.99) as f64 / 1e3 });
    Ok(render(GraphsPart {
        graphs: vec![
            graph("Done per second", "/s", &done),
            graph("Failed or retried per second", "/s", &failed_),
            graph("Run time p99", " ms", &p99),
        ],
    }))
}
