//! The dead-letter queue: inspect, redrive and delete. Nothing leaves it but by an operator.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Attempt, Engine, EngineError, Lane, format_ms, now_ms};

/// One dead task, with everything needed to understand and replay it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The dead letter's own id: its DLQ stream entry, followed by `@` and its partition when
    /// that is not the first ([`letter_id`]).
    pub id: String,
    pub task_id: String,
    pub kind: String,
    pub lane: Option<Lane>,
    pub payload: Value,
    pub error: String,
    pub attempts: Vec<Attempt>,
    pub failed_at: Option<String>,
    pub created_at: Option<String>,
    #[serde(skip)]
    failed_ms: u64,
    /// Its partition and entry in that partition's DLQ stream.
    #[serde(skip)]
    part: usize,
    #[serde(skip)]
    entry: String,
}

/// A dead letter's id: the entry of partition 0 as it is (the ids from before partitions),
/// another partition's as `<entry>@<partition>`.
pub fn letter_id(part: usize, entry: &str) -> String {
    if part == 0 { entry.to_string() } else { format!("{entry}@{part}") }
}

/// Dead letters grouped by partition (a script call may not span partitions).
fn by_part(letters: &[DeadLetter]) -> std::collections::BTreeMap<usize, Vec<&DeadLetter>> {
    let mut groups: std::collections::BTreeMap<usize, Vec<&DeadLetter>> = std::collections::BTreeMap::new();
    for d in letters {
        groups.entry(d.part).or_default().push(d);
    }
    groups
}

/// The partition and entry a dead letter's id names, when it names one.
fn parse_letter_id(id: &str) -> Option<(usize, &str)> {
    let (entry, part) = match id.split_once('@') {
        Some((entry, part)) => (entry, part.parse().ok()?),
        None => (id, 0),
    };
    super::parse_entry_id(entry).map(|_| (part, entry))
}

/// Which dead letters an operation applies to. Empty filters match everything.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DlqFilter {
    #[serde(default)]
    pub kind: Option<String>,
    /// Matches when the error contains this text (case-insensitive).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub lane: Option<Lane>,
    /// Only letters that died at least this long ago (`older_than=1h`).
    #[serde(default, deserialize_with = "de_duration")]
    pub older_than: Option<Duration>,
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => crate::config::parse_duration_str(s)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a duration such as 30s, 10m or 24h"))),
    }
}

impl DlqFilter {
    pub fn is_empty(&self) -> bool {
        self.kind.is_none() && self.error.is_none() && self.lane.is_none() && self.older_than.is_none()
    }

    fn matches(&self, d: &DeadLetter, now: u64) -> bool {
        self.kind.as_deref().is_none_or(|k| d.kind == k)
            && self.lane.is_none_or(|l| d.lane == Some(l))
            && self.error.as_deref().is_none_or(|e| d.error.to_lowercase().contains(&e.to_lowercase()))
            && self.older_than.is_none_or(|age| now.saturating_sub(d.failed_ms) >= age.as_millis() as u64)
    }
}

/// What a redrive did (or, with a dry run, would do).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct RedriveReport {
    pub matched: u64,
    pub redriven: u64,
    pub dry_run: bool,
    /// The first hundred task ids concerned.
    pub task_ids: Vec<String>,
}

/// Dead letters read per round trip while scanning.
const SCAN_CHUNK: usize = 500;

fn parse_letter(part: usize, entry: String, fields: Vec<(String, String)>) -> DeadLetter {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let failed_ms = get("failed_at").and_then(|v| v.parse().ok()).unwrap_or(0);
    DeadLetter {
        id: letter_id(part, &entry),
        part,
        entry,
        task_id: get("task_id").unwrap_or_default().to_string(),
        kind: get("kind").unwrap_or_default().to_string(),
        lane: get("lane").and_then(Lane::parse),
        payload: get("payload").and_then(|p| serde_json::from_str(p).ok()).unwrap_or(Value::Null),
        error: get("error").unwrap_or_default().to_string(),
        attempts: get("attempts").and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default(),
        failed_at: (failed_ms > 0).then(|| format_ms(failed_ms)),
        created_at: get("created_at").and_then(|v| v.parse().ok()).map(format_ms),
        failed_ms,
    }
}

impl Engine {
    pub async fn dlq_depth(&self) -> Result<u64, EngineError> {
        let mut depth = 0;
        for part in 0..self.partitions() {
            let mut con = self.conn();
            let n: u64 = redis::cmd("XLEN").arg(self.part(part).dlq()).query_async(&mut con).await?;
            depth += n;
        }
        Ok(depth)
    }

    /// Read one chunk of partition `part`'s dead letters after (or, newest first, before) the
    /// entry `cursor`.
    async fn dlq_chunk(
        &self,
        part: usize,
        cursor: Option<&str>,
        newest_first: bool,
    ) -> Result<Vec<DeadLetter>, EngineError> {
        let mut con = self.conn();
        let (cmd, start, end) = match (newest_first, cursor) {
            (true, None) => ("XREVRANGE", "+".to_string(), "-".to_string()),
            (true, Some(c)) => ("XREVRANGE", format!("({c}"), "-".to_string()),
            (false, None) => ("XRANGE", "-".to_string(), "+".to_string()),
            (false, Some(c)) => ("XRANGE", format!("({c}"), "+".to_string()),
        };
        let v: redis::Value = redis::cmd(cmd)
            .arg(self.part(part).dlq())
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(SCAN_CHUNK)
            .query_async(&mut con)
            .await?;
        Ok(crate::redis::reply::parse_entries(&v).into_iter().map(|(id, f)| parse_letter(part, id, f)).collect())
    }

    /// Dead letters matching the filter, newest first, at most `limit`: of every partition.
    pub async fn dlq_list(&self, filter: &DlqFilter, limit: usize) -> Result<Vec<DeadLetter>, EngineError> {
        let mut out = Vec::new();
        for part in 0..self.partitions() {
            out.extend(self.dlq_list_part(part, filter, limit).await?);
        }
        if self.partitions() > 1 {
            out.sort_by(|a, b| {
                let at = |d: &DeadLetter| (d.failed_ms, super::parse_entry_id(&d.entry).unwrap_or_default());
                at(b).cmp(&at(a))
            });
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn dlq_list_part(
        &self,
        part: usize,
        filter: &DlqFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, EngineError> {
        let now = now_ms();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let chunk = self.dlq_chunk(part, cursor.as_deref(), true).await?;
            let Some(last) = chunk.last() else { break };
            cursor = Some(last.entry.clone());
            let short = chunk.len() < SCAN_CHUNK;
            out.extend(chunk.into_iter().filter(|d| filter.matches(d, now)));
            if out.len() >= limit || short {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    /// One dead letter by its id, or by its task's id.
    pub async fn dlq_get(&self, id: &str) -> Result<Option<DeadLetter>, EngineError> {
        let mut con = self.conn();
        // A letter's id is a stream entry's, `<ms>-<seq>` (and its partition); anything else is
        // a task's id (UUIDs have dashes too).
        let (part, entry) = match parse_letter_id(id) {
            Some((part, entry)) if part < self.partitions() => (part, entry.to_string()),
            Some(_) => return Ok(None),
            None => {
                let part = self.part_of_task(id);
                let dead: Option<String> =
                    redis::cmd("HGET").arg(self.part(part).task(id)).arg("dead_letter").query_async(&mut con).await?;
                match dead {
                    Some(d) => (part, d),
                    None => return Ok(None),
                }
            }
        };
        let v: redis::RedisResult<redis::Value> =
            redis::cmd("XRANGE").arg(self.part(part).dlq()).arg(&entry).arg(&entry).query_async(&mut con).await;
        let v = match v {
            Ok(v) => v,
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(crate::redis::reply::parse_entries(&v).into_iter().next().map(|(id, f)| parse_letter(part, id, f)))
    }

    /// Send dead letters back to their lanes: the given ids, or every letter the filter matches
    /// (`all` must be set to redrive with an empty filter). `progress` hears the running count.
    pub async fn dlq_redrive(
        &self,
        ids: &[String],
        filter: &DlqFilter,
        all: bool,
        dry_run: bool,
        mut progress: impl FnMut(u64),
    ) -> Result<RedriveReport, EngineError> {
        if ids.is_empty() && filter.is_empty() && !all {
            return Err(EngineError::BadInput("name dead letters by ids, a filter, or all=true".into()));
        }
        let mut report = RedriveReport { dry_run, ..Default::default() };
        if !ids.is_empty() {
            let mut letters = Vec::new();
            for id in ids {
                if let Some(d) = self.dlq_get(id).await? {
                    letters.push(d);
                }
            }
            self.redrive_letters(letters, dry_run, &mut report).await?;
            progress(report.matched);
            return Ok(report);
        }
        let now = now_ms();
        for part in 0..self.partitions() {
            let mut cursor: Option<String> = None;
            loop {
                let chunk = self.dlq_chunk(part, cursor.as_deref(), false).await?;
                let Some(last) = chunk.last() else { break };
                cursor = Some(last.entry.clone());
                let short = chunk.len() < SCAN_CHUNK;
                let letters: Vec<DeadLetter> = chunk.into_iter().filter(|d| filter.matches(d, now)).collect();
                self.redrive_letters(letters, dry_run, &mut report).await?;
                progress(report.matched);
                if short {
                    break;
                }
            }
        }
        Ok(report)
    }

    async fn redrive_letters(
        &self,
        letters: Vec<DeadLetter>,
        dry_run: bool,
        report: &mut RedriveReport,
    ) -> Result<(), EngineError> {
        if letters.is_empty() {
            return Ok(());
        }
        report.matched += letters.len() as u64;
        if dry_run {
            report
                .task_ids
                .extend(letters.iter().take(100usize.saturating_sub(report.task_ids.len())).map(|d| d.task_id.clone()));
            return Ok(());
        }
        for (part, mine) in by_part(&letters) {
            let keys = self.part(part);
            let mut inv = self.scripts().redrive.prepare_invoke();
            inv.key(keys.dlq()).key(keys.dlq_lanes()).arg(keys.root()).arg(now_ms());
            for d in mine {
                inv.arg(&d.entry);
            }
            let mut con = self.conn();
            let sent: Vec<String> = inv.invoke_async(&mut con).await?;
            report.redriven += sent.len() as u64;
            let room = 100usize.saturating_sub(report.task_ids.len());
            report.task_ids.extend(sent.into_iter().take(room));
        }
        Ok(())
    }

    /// Delete dead letters by id (or task id); returns how many were deleted.
    pub async fn dlq_delete(&self, ids: &[String]) -> Result<u64, EngineError> {
        let mut letters = Vec::new();
        for id in ids {
            if let Some(d) = self.dlq_get(id).await? {
                letters.push(d);
            }
        }
        let mut deleted = 0;
        for (part, mine) in by_part(&letters) {
            let keys = self.part(part);
            let mut inv = self.scripts().dlq_delete.prepare_invoke();
            inv.key(keys.dlq())
                .key(keys.dlq_lanes())
                .arg(keys.root())
                .arg(self.config().task_retention.as_millis() as u64);
            for d in mine {
                inv.arg(&d.entry);
            }
            let mut con = self.conn();
            let n: u64 = inv.invoke_async(&mut con).await?;
            deleted += n;
        }
        Ok(deleted)
    }
}
