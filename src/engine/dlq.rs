//! The dead-letter queue: inspect, redrive and delete. Nothing leaves it but by an operator.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Attempt, Engine, EngineError, Lane, format_ms, now_ms};

/// One dead task, with everything needed to understand and replay it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The dead letter's own id (its DLQ stream entry).
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
#[derive(Debug, Clone, Default, Serialize)]
pub struct RedriveReport {
    pub matched: u64,
    pub redriven: u64,
    pub dry_run: bool,
    /// The first hundred task ids concerned.
    pub task_ids: Vec<String>,
}

/// Dead letters read per round trip while scanning.
const SCAN_CHUNK: usize = 500;

fn parse_letter(id: String, fields: Vec<(String, String)>) -> DeadLetter {
    let get = |k: &str| fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str());
    let failed_ms = get("failed_at").and_then(|v| v.parse().ok()).unwrap_or(0);
    DeadLetter {
        id,
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
        let mut con = self.conn();
        Ok(redis::cmd("XLEN").arg(self.keys().dlq()).query_async(&mut con).await?)
    }

    /// Read one chunk of dead letters after (or, newest first, before) `cursor`.
    async fn dlq_chunk(&self, cursor: Option<&str>, newest_first: bool) -> Result<Vec<DeadLetter>, EngineError> {
        let mut con = self.conn();
        let (cmd, start, end) = match (newest_first, cursor) {
            (true, None) => ("XREVRANGE", "+".to_string(), "-".to_string()),
            (true, Some(c)) => ("XREVRANGE", format!("({c}"), "-".to_string()),
            (false, None) => ("XRANGE", "-".to_string(), "+".to_string()),
            (false, Some(c)) => ("XRANGE", format!("({c}"), "+".to_string()),
        };
        let v: redis::Value = redis::cmd(cmd)
            .arg(self.keys().dlq())
            .arg(start)
            .arg(end)
            .arg("COUNT")
            .arg(SCAN_CHUNK)
            .query_async(&mut con)
            .await?;
        Ok(crate::redis::reply::parse_entries(&v).into_iter().map(|(id, f)| parse_letter(id, f)).collect())
    }

    /// Dead letters matching the filter, newest first, at most `limit`.
    pub async fn dlq_list(&self, filter: &DlqFilter, limit: usize) -> Result<Vec<DeadLetter>, EngineError> {
        let now = now_ms();
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let chunk = self.dlq_chunk(cursor.as_deref(), true).await?;
            let Some(last) = chunk.last() else { break };
            cursor = Some(last.id.clone());
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
        let mut entry = id.to_string();
        // A stream entry's id is `<ms>-<seq>`; anything else is a task's id (UUIDs have dashes too).
        if super::parse_entry_id(id).is_none() {
            let dead: Option<String> =
                redis::cmd("HGET").arg(self.keys().task(id)).arg("dead_letter").query_async(&mut con).await?;
            match dead {
                Some(d) => entry = d,
                None => return Ok(None),
            }
        }
        let v: redis::RedisResult<redis::Value> =
            redis::cmd("XRANGE").arg(self.keys().dlq()).arg(&entry).arg(&entry).query_async(&mut con).await;
        let v = match v {
            Ok(v) => v,
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(crate::redis::reply::parse_entries(&v).into_iter().next().map(|(id, f)| parse_letter(id, f)))
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
        let mut cursor: Option<String> = None;
        loop {
            let chunk = self.dlq_chunk(cursor.as_deref(), false).await?;
            let Some(last) = chunk.last() else { break };
            cursor = Some(last.id.clone());
            let short = chunk.len() < SCAN_CHUNK;
            let letters: Vec<DeadLetter> = chunk.into_iter().filter(|d| filter.matches(d, now)).collect();
            self.redrive_letters(letters, dry_run, &mut report).await?;
            progress(report.matched);
            if short {
                break;
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
        let mut inv = self.scripts().redrive.prepare_invoke();
        inv.key(self.keys().dlq()).key(self.keys().dlq_lanes()).arg(self.keys().root()).arg(now_ms());
        for d in &letters {
            inv.arg(&d.id);
        }
        let mut con = self.conn();
        let sent: Vec<String> = inv.invoke_async(&mut con).await?;
        report.redriven += sent.len() as u64;
        let room = 100usize.saturating_sub(report.task_ids.len());
        report.task_ids.extend(sent.into_iter().take(room));
        Ok(())
    }

    /// Delete dead letters by id (or task id); returns how many were deleted.
    pub async fn dlq_delete(&self, ids: &[String]) -> Result<u64, EngineError> {
        let mut entries = Vec::new();
        for id in ids {
            if let Some(d) = self.dlq_get(id).await? {
                entries.push(d.id);
            }
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let mut inv = self.scripts().dlq_delete.prepare_invoke();
        inv.key(self.keys().dlq())
            .key(self.keys().dlq_lanes())
            .arg(self.keys().root())
            .arg(self.config().task_retention.as_millis() as u64);
        for e in &entries {
            inv.arg(e);
        }
        let mut con = self.conn();
        Ok(inv.invoke_async(&mut con).await?)
    }
}
