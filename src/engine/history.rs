//! The history of finished tasks (Flower's task list, bull-board's completed and failed jobs):
//! each partition keeps the tasks that finished lately in a capped stream (`history.lua` writes
//! it as a task succeeds, dies or is cancelled), read here newest first across partitions, with
//! filters and a cursor.

use serde::Serialize;

use super::{Engine, EngineError, Lane, TaskState, format_ms, parse_entry_id};
use crate::redis::reply::parse_entries;

/// Entries read from a partition's history a round trip.
const CHUNK: usize = 500;
/// Entries one page reads from a partition at most; past it the page ends early with a cursor
/// (a narrow filter over a long history answers in bounded time, and the next page goes on).
const SCAN_BOUND: usize = 20_000;

/// Which finished tasks to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryFilter {
    /// SUCCESS, FAILURE or REVOKED.
    pub state: Option<TaskState>,
    /// The kind: a name, or a pattern with `*` at its start, its end or both (`diag.*`).
    pub kind: Option<String>,
    pub lane: Option<Lane>,
    /// Only tasks that finished at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
}

impl HistoryFilter {
    /// The filter the words of a query or a command line say (empty words say nothing):
    /// `state` one of SUCCESS, FAILURE, REVOKED (any case); `since` an RFC 3339 time or a
    /// duration back from `now_ms` (`15m`). The error says what is wrong, for a 400.
    pub fn parse(
        state: Option<&str>,
        kind: Option<&str>,
        lane: Option<&str>,
        since: Option<&str>,
        now_ms: u64,
    ) -> Result<HistoryFilter, String> {
        fn word(w: Option<&str>) -> Option<&str> {
            w.map(str::trim).filter(|w| !w.is_empty())
        }
        let state = match word(state) {
            None => None,
            Some(w) => match TaskState::parse(w).filter(|s| s.is_finished()) {
                Some(s) => Some(s),
                None => {
                    return Err(format!(
                        "`state` must be SUCCESS, FAILURE or REVOKED (the history holds finished tasks), not `{w}`"
                    ));
                }
            },
        };
        let lane = match word(lane) {
            None => None,
            Some(w) => Some(Lane::parse(w).ok_or_else(|| format!("unknown lane `{w}`"))?),
        };
        let since_ms = match word(since) {
            None => None,
            Some(w) => Some(if let Some(d) = crate::config::parse_duration_str(w) {
                now_ms.saturating_sub(d.as_millis() as u64)
            } else {
                let t = humantime::parse_rfc3339_weak(w).map_err(|_| {
                    format!("`since` must be an RFC 3339 time such as 2026-12-24T18:00:00Z or a duration back from now such as 15m, not `{w}`")
                })?;
                t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
            }),
        };
        Ok(HistoryFilter { state, kind: word(kind).map(str::to_string), lane, since_ms })
    }

    fn matches(&self, t: &FinishedTask) -> bool {
        self.state.is_none_or(|s| s == t.state)
            && self.lane.is_none_or(|l| t.lane == Some(l))
            && self.kind.as_deref().is_none_or(|k| kind_matches(k, &t.kind))
    }
}

/// `pattern` is a kind, or one with `*` at its start and/or end standing for any text.
pub(crate) fn kind_matches(pattern: &str, kind: &str) -> bool {
    match (pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
        (Some(rest), _) if rest.ends_with('*') => kind.contains(&rest[..rest.len() - 1]),
        (Some(rest), _) => kind.ends_with(rest),
        (None, Some(head)) => kind.starts_with(head),
        (None, None) => kind == pattern,
    }
}

/// A task that finished, as the history keeps it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FinishedTask {
    pub task_id: String,
    pub kind: String,
    pub lane: Option<Lane>,
    /// How it finished (its state now may differ: a dead task redriven since runs again).
    pub state: TaskState,
    pub finished_at: String,
    /// How long its last attempt ran (ms); `None` when it never ran (cancelled while queued).
    pub run_ms: Option<u64>,
    #[serde(skip)]
    pub at: Position,
}

/// Where an entry is in the merged history: (finished ms, sequence, partition), newest largest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    ms: u64,
    seq: u64,
    part: usize,
}

impl Position {
    /// The cursor a client passes back: `<ms>-<seq>-<partition>`.
    pub fn cursor(&self) -> String {
        format!("{}-{}-{}", self.ms, self.seq, self.part)
    }

    /// The cursor a client passed back, if any; the error says what is wrong, for a 400.
    pub fn after(cursor: Option<&str>) -> Result<Option<Position>, String> {
        match cursor.map(str::trim).filter(|a| !a.is_empty()) {
            None => Ok(None),
            Some(a) => Position::parse(a)
                .map(Some)
                .ok_or_else(|| format!("`after` must be the `next` of an earlier page, not `{a}`")),
        }
    }

    pub fn parse(cursor: &str) -> Option<Position> {
        let (entry, part) = cursor.rsplit_once('-')?;
        let (ms, seq) = parse_entry_id(entry)?;
        Some(Position { ms, seq, part: part.parse().ok()? })
    }
}

/// One page of the history, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPage {
    pub tasks: Vec<FinishedTask>,
    /// Pass as `after` for the next page; `None` when there is no more.
    pub next: Option<String>,
}

/// What one partition found for a page: its matches, newest first, and how far down it read
/// (`None` when it read to the end of what the page asks for).
struct PartPage {
    found: Vec<FinishedTask>,
    floor: Option<Position>,
}

impl Engine {
    /// Entries each partition's history keeps: its share of `TASK_HISTORY`.
    pub(crate) fn history_cap(&self) -> u64 {
        self.config().task_history.div_ceil(self.partitions() as u64)
    }

    /// The tasks that finished lately, newest first, that match `filter`: at most `limit`,
    /// after the cursor `after` (a page's `next`).
    pub async fn finished_tasks(
        &self,
        filter: &HistoryFilter,
        limit: usize,
        after: Option<Position>,
    ) -> Result<HistoryPage, EngineError> {
        let limit = limit.max(1);
        let pages = futures_util::future::try_join_all(
            (0..self.partitions()).map(|p| self.part_history(p, filter, limit, after)),
        )
        .await?;
        // Everything newer than the deepest point a partition stopped at has been read
        // everywhere: the page holds no task older than that.
        let floor = pages.iter().filter_map(|p| p.floor).max();
        let mut tasks: Vec<FinishedTask> = pages.into_iter().flat_map(|p| p.found).collect();
        tasks.sort_by_key(|t| std::cmp::Reverse(t.at));
        if let Some(floor) = floor {
            tasks.retain(|t| t.at >= floor);
        }
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        let next = if more || (floor.is_some() && tasks.len() == limit) { tasks.last().map(|t| t.at) } else { floor };
        Ok(HistoryPage { tasks, next: next.map(|p| p.cursor()) })
    }

    async fn part_history(
        &self,
        part: usize,
        filter: &HistoryFilter,
        limit: usize,
        after: Option<Position>,
    ) -> Result<PartPage, EngineError> {
        let key = self.part(part).history();
        // Below the cursor: its own entry is left out in its partition and in those that come
        // before it at the same time (ties order by partition).
        let mut end = match after {
            None => "+".to_string(),
            Some(c) if part < c.part => format!("{}-{}", c.ms, c.seq),
            Some(c) => format!("({}-{}", c.ms, c.seq),
        };
        let start = filter.since_ms.map_or_else(|| "-".to_string(), |ms| ms.to_string());
        let mut con = self.conn();
        let mut found = Vec::new();
        let mut scanned = 0;
        loop {
            let v: redis::Value = redis::cmd("XREVRANGE")
                .arg(&key)
                .arg(&end)
                .arg(&start)
                .arg("COUNT")
                .arg(CHUNK)
                .query_async(&mut con)
                .await?;
            let entries = parse_entries(&v);
            let short = entries.len() < CHUNK;
            let mut last = None;
            for (entry, fields) in entries {
                scanned += 1;
                let Some(t) = finished_task(part, &entry, &fields) else { continue };
                last = Some(t.at);
                if filter.matches(&t) {
                    found.push(t);
                    if found.len() >= limit {
                        let floor = found.last().map(|t| t.at);
                        return Ok(PartPage { found, floor });
                    }
                }
            }
            let Some(last) = last else { return Ok(PartPage { found, floor: None }) };
            if short {
                return Ok(PartPage { found, floor: None });
            }
            if scanned >= SCAN_BOUND {
                return Ok(PartPage { found, floor: Some(last) });
            }
            end = format!("({}-{}", last.ms, last.seq);
        }
    }
}

/// A history entry read back (`history.lua` writes its fields).
fn finished_task(part: usize, entry: &str, fields: &[(String, String)]) -> Option<FinishedTask> {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let (ms, seq) = parse_entry_id(entry)?;
    Some(FinishedTask {
        task_id: get("id")?.to_string(),
        kind: get("kind").unwrap_or_default().to_string(),
        lane: get("lane").and_then(Lane::parse),
        state: TaskState::parse(get("state")?)?,
        finished_at: format_ms(ms),
        run_ms: get("run").and_then(|r| r.parse().ok()),
        at: Position { ms, seq, part },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_as_written() {
        let p = Position { ms: 1796181455301, seq: 7, part: 11 };
        assert_eq!(Position::parse(&p.cursor()), Some(p));
        for bad in ["", "17-3", "x-1-2", "1-2-x", "1--2", "-1-2"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_read_from_words() {
        let now = 1_800_000_000_000;
        let f = HistoryFilter::parse(Some("failure"), Some(" diag.* "), Some("analytics"), Some("15m"), now).unwrap();
        assert_eq!(
            f,
            HistoryFilter {
                state: Some(TaskState::Failure),
                kind: Some("diag.*".into()),
                lane: Some(Lane::Analytics),
                since_ms: Some(now - 900_000),
            }
        );
        assert_eq!(HistoryFilter::parse(Some(""), None, Some(" "), None, now).unwrap(), HistoryFilter::default());
        let at = HistoryFilter::parse(None, None, None, Some("2027-01-15T08:00:00Z"), now).unwrap();
        assert_eq!(at.since_ms, Some(1_800_000_000_000));
        for (state, lane, since) in
            [(Some("PENDING"), None, None), (None, Some("email"), None), (None, None, Some("yesterday"))]
        {
            assert!(HistoryFilter::parse(state, None, lane, since, now).is_err());
        }
    }

    #[test]
    fn kind_patterns() {
        assert!(kind_matches("diag.noop", "diag.noop"));
        assert!(!kind_matches("diag.noop", "diag.noop2"));
        assert!(kind_matches("diag.*", "diag.fail"));
        assert!(!kind_matches("diag.*", "conversation.process_message"));
        assert!(kind_matches("*.process_message", "conversation.process_message"));
        assert!(kind_matches("*process*", "conversation.process_message"));
        assert!(!kind_matches("*report*", "conversation.process_message"));
        assert!(kind_matches("*", "anything"));
    }

    #[test]
    fn positions_order_newest_largest_ties_by_partition() {
        let a = Position { ms: 5, seq: 0, part: 1 };
        let b = Position { ms: 5, seq: 0, part: 0 };
        let c = Position { ms: 4, seq: 9, part: 3 };
        assert!(a > b && b > c);
    }
}
