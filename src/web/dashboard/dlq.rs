//! Dead letters grouped by error: inspect, redrive, delete.

use super::*;

struct LetterRow {
    id: String,
    task_id: String,
    kind: String,
    lane: String,
    failed_at: String,
    attempts: usize,
}

struct LetterGroup {
    error: String,
    letters: Vec<LetterRow>,
}

#[derive(Template)]
#[template(path = "dlq.html")]
struct DlqPage {
    csrf: String,
    nav: &'static str,
    notice: Option<String>,
    groups: Vec<LetterGroup>,
}

/// Dead letters grouped by their error's first line (the newest thousand).
async fn dlq_page(engine: &Engine, csrf: String, notice: Option<String>) -> Page {
    let letters = engine.dlq_list(&Default::default(), 1000).await.map_err(failed)?;
    let mut groups: BTreeMap<String, Vec<LetterRow>> = BTreeMap::new();
    for d in letters {
        let first: String = d.error.lines().next().unwrap_or_default().chars().take(160).collect();
        groups.entry(first).or_default().push(LetterRow {
            id: d.id.clone(),
            task_id: d.task_id.clone(),
            kind: d.kind.clone(),
            lane: d.lane.map(|l| l.as_str().to_string()).unwrap_or_default(),
            failed_at: d.failed_at.clone().unwrap_or_default(),
            attempts: d.attempts.len(),
        });
    }
    let mut groups: Vec<LetterGroup> =
        groups.into_iter().map(|(error, letters)| LetterGroup { error, letters }).collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.letters.len()));
    Ok(render(DlqPage { csrf, nav: "dlq", notice, groups }))
}

pub(super) async fn dlq(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let s = require(&state, &headers).await?;
    dlq_page(&state.engine, s.csrf, None).await
}

pub(super) async fn dlq_redrive(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Page {
    let form = Form::parse(&body);
    let s = require_post(&state, &headers, &form).await?;
    let ids = form.all("ids");
    if ids.is_empty() {
        return dlq_page(&state.engine, s.csrf, Some("Nothing selected.".into())).await;
    }
    let dry_run = form.one("dry_run").is_some();
    let r = state.engine.dlq_redrive(&ids, &Default::default(), false, dry_run, |_| {}).await.map_err(failed)?;
    let notice = if dry_run {
        format!("Dry run: {} would go back to their lanes.", r.matched)
    } else {
        format!("{} sent back to their lanes.", r.redriven)
    };
    dlq_page(&state.engine, s.csrf, Some(notice)).await
}

pub(super) async fn dlq_delete(State(state): State<AppState>, headers: HeaderMap, RawBody(body): RawBody) -> Page {
    let form = Form::parse(&body);
    let s = require_post(&state, &headers, &form).await?;
    let n = state.engine.dlq_delete(&form.all("ids")).await.map_err(failed)?;
    dlq_page(&state.engine, s.csrf, Some(format!("{n} dead letters deleted."))).await
}
