//! The schedules: when each fires next, what it last queued; run one now.

use super::*;

struct ScheduleRow {
    name: String,
    cron: String,
    kind: String,
    next_run: String,
    last_run: String,
    last_result: String,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    csrf: String,
    nav: &'static str,
    notice: Option<String>,
    leader: String,
    schedules: Vec<ScheduleRow>,
}

async fn schedules_page(engine: &Engine, csrf: String, notice: Option<String>) -> Page {
    let defs = crate::schedule::from_config(engine.config());
    let list = crate::schedule::list(engine, &defs).await.map_err(failed)?;
    let text = |v: Option<String>| v.unwrap_or_else(|| "—".into());
    let schedules = list
        .schedules
        .into_iter()
        .map(|s| ScheduleRow {
            name: s.name,
            cron: s.cron,
            kind: s.kind,
            next_run: text(s.next_run),
            last_run: text(s.last_run),
            last_result: match &s.last_result {
                Value::Null => "—".into(),
                r => text(r["status"].as_str().map(str::to_string)),
            },
        })
        .collect();
    let leader = list.leader.unwrap_or_else(|| "no process (no scheduler running)".into());
    Ok(render(SchedulesPage { csrf, nav: "schedules", notice, leader, schedules }))
}

pub(super) async fn schedules(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    schedules_page(&state.engine, s.csrf, None).await
}

pub(super) async fn schedule_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Page {
    let s = require_post(&state, &headers, &Form::parse(&body)).await?;
    let defs = crate::schedule::from_config(state.engine.config());
    match crate::schedule::run_now(&state.engine, &defs, &name).await {
        Ok(task) => schedules_page(&state.engine, s.csrf, Some(format!("{name} queued as task {task}."))).await,
        Err(e @ EngineError::NoSchedule(_)) => {
            Ok((StatusCode::NOT_FOUND, Html(html_escape(&e.to_string()))).into_response())
        }
        Err(e) => Err(failed(e)),
    }
}
