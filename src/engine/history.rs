//! The history of finished tasks (Flower's task list, bull-board's completed and failed jobs):
//! each partition keeps the tasks that finished lately in a capped stream (`history.lua` writes
//! it as a task succeeds, dies or is cancelled), read here newest first across partitions, with
//! filters and a cursor.

use serde::Serialize;

use super::{Engine, EngineError, Lane, TaskState, format_ms, parse_entry_id};
use crate::redis::reply::parse_entries;

/// Entries read from a partition's history a round trip (each holds the tasks one call settled:
/// one, or a worker's whole batch).
const CHUNK: usize = 50;
/// Tasks one page reads from a partition at most; past it the page ends early with a cursor
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
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
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

/// Where a task is in the merged history: its entry (finished ms, sequence), partition, and
/// place in the entry; newest largest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    ms: u64,
    seq: u64,
    part: usize,
    place: usize,
}

impl Position {
    /// The cursor a client passes back: `<ms>-<seq>-<partition>-<place>`.
    pub fn cursor(&self) -> String {
        format!("{}-{}-{}-{}", self.ms, self.seq, self.part, self.place)
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
        let (rest, place) = cursor.rsplit_once('-')?;
        let (entry, part) = rest.rsplit_once('-')?;
        let (ms, seq) = parse_entry_id(entry)?;
        let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok()).flatten();
        Some(Position { ms, seq, part: number(part)?, place: number(place)? })
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
    /// The tasks the history holds now, over every partition.
    pub async fn history_len(&self) -> Result<u64, EngineError> {
        let mut held = 0;
        for p in 0..self.partitions() {
            let sizes = self.part(p).history_sizes();
            let (first, last): (Option<String>, Option<String>) = redis::pipe()
                .cmd("LINDEX")
                .arg(&sizes)
                .arg(0)
                .cmd("LINDEX")
                .arg(&sizes)
                .arg(-1)
                .query_async(&mut self.conn())
                .await?;
            // `<entry> <tasks> <tasks noted ever>`: all from the oldest entry's to the newest's
            let read = |item: &Option<String>| {
                let mut w = item.as_deref().unwrap_or("").split(' ').skip(1).map(|n| n.parse::<u64>().unwrap_or(0));
                (w.next().unwrap_or(0), w.next().unwrap_or(0))
            };
            let ((count, first_ever), (_, last_ever)) = (read(&first), read(&last));
            held += (last_ever + count).saturating_sub(first_ever);
        }
        Ok(held)
    }

    /// Tasks each partition's history keeps: its share of `TASK_HISTORY`.
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
        // Up to the cursor: its own entry is read again in its partition (the tasks of it past
        // the cursor's place are left), and in those that come before it at the same time (ties
        // order by partition); in the others it is left out.
        let mut end = match after {
            None => "+".to_string(),
            Some(c) if part <= c.part => format!("{}-{}", c.ms, c.seq),
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
            for (entry, fields) in &entries {
                // the tasks of an entry in the order they settled: the latest last
                for t in entry_tasks(part, entry, fields).into_iter().rev() {
                    if after.is_some_and(|c| t.at >= c) {
                        continue;
                    }
                    scanned += 1;
                    last = Some(t.at);
                    if filter.matches(&t) {
                        found.push(t);
                        if found.len() >= limit {
                            let floor = found.last().map(|t| t.at);
                            return Ok(PartPage { found, floor });
                        }
                    }
                }
            }
            let Some((entry, _)) = entries.last() else { return Ok(PartPage { found, floor: None }) };
            if short {
                return Ok(PartPage { found, floor: None });
            }
            if scanned >= SCAN_BOUND
                && let Some(last) = last
            {
                return Ok(PartPage { found, floor: Some(last) });
            }
            end = format!("({entry}");
        }
    }
}

/// The tasks of a history entry (`history.lua` writes it), in the order they settled.
fn entry_tasks(part: usize, entry: &str, fields: &[(String, String)]) -> Vec<FinishedTask> {
    let Some((ms, seq)) = parse_entry_id(entry) else { return Vec::new() };
    fields
        .iter()
        .enumerate()
        .filter_map(|(place, (id, line))| {
            let mut parts = line.split('\t');
            let (kind, lane, state, run) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(FinishedTask {
                task_id: id.clone(),
                kind: kind.to_string(),
                lane: Lane::parse(lane),
                state: TaskState::parse(state)?,
                finished_at: format_ms(ms),
                run_ms: run.parse().ok(),
                at: Position { ms, seq, part, place },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_back_as_written() {
        let p = Position { ms: 1796181455301, seq: 7, part: 11, place: 3 };
        assert_eq!(Position::parse(&p.cursor()), Some(p));
        for bad in ["", "17-3", "17-3-1", "x-1-2-0", "1-2-x-0", "1-2-0-x", "1--2-0", "-1-2-0", "1-2-+3-0"] {
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
        let a = Position { ms: 5, seq: 0, part: 1, place: 0 };
        let b = Position { ms: 5, seq: 0, part: 0, place: 7 };
        let c = Position { ms: 5, seq: 0, part: 0, place: 6 };
        let d = Position { ms: 4, seq: 9, part: 3, place: 9 };
        assert!(a > b && b > c && c > d);
    }
}
