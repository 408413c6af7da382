//! The task model: lanes, states, what a producer asks for and what a status lookup returns.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A lane is a stream with its own consumer group and concurrency limit. Listed in priority
/// order: a worker with free capacity takes conversations before webhooks before analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    Conversations,
    Webhooks,
    Analytics,
}

impl Lane {
    /// Every lane, highest priority first.
    pub const ALL: [Lane; 3] = [Lane::Conversations, Lane::Webhooks, Lane::Analytics];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Conversations => "conversations",
            Lane::Webhooks => "webhooks",
            Lane::Analytics => "analytics",
        }
    }

    /// Position in [`Lane::ALL`]: 0 is the highest priority.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// A comma-separated list such as `conversations,webhooks`.
    pub fn parse_list(s: &str) -> Result<Vec<Lane>, String> {
        let mut lanes = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let lane = Lane::parse(name)
                .ok_or_else(|| format!("unknown lane `{name}` (lanes: conversations, webhooks, analytics)"))?;
            if !lanes.contains(&lane) {
                lanes.push(lane);
            }
        }
        if lanes.is_empty() {
            return Err("no lane given".into());
        }
        lanes.sort();
        Ok(lanes)
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Task states, with Celery's names so the seed's clients keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum TaskState {
    Pending,
    Started,
    Retry,
    Success,
    Failure,
    Revoked,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Started => "STARTED",
            TaskState::Retry => "RETRY",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        [
            TaskState::Pending,
            TaskState::Started,
            TaskState::Retry,
            TaskState::Success,
            TaskState::Failure,
            TaskState::Revoked,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }

    /// No further attempt will run.
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failure | TaskState::Revoked)
    }
}

/// What a producer asks for.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// A registered kind; another is refused (400).
    pub kind: String,
    /// Any JSON; `null` when left out.
    #[serde(default)]
    #[schema(required = false)]
    pub payload: Value,
    #[serde(default)]
    pub lane: Option<Lane>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Attempts in all, 1–100; `MAX_RETRIES + 1` when left out.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// Tasks with the same order key run one at a time, in the order they were queued (a
    /// conversation's messages, its replies). Retries keep their place: the next one waits.
    #[serde(default)]
    pub order_key: Option<String>,
    /// Run no sooner than this long after it is queued (`"90s"`, `"1h 30m"`); see
    /// [`TaskSpec::due_ms`].
    #[serde(default, deserialize_with = "de_delay")]
    #[schema(value_type = Option<String>, example = "90s")]
    pub delay: Option<Duration>,
    /// Run no sooner than this time (ms since the epoch; given as RFC 3339, `run_at`).
    #[serde(default, rename = "run_at", deserialize_with = "de_rfc3339")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at_ms: Option<u64>,
    /// The payload already serialized (producers that have it as JSON text skip a round of
    /// building and serializing a value); used instead of `payload` when set.
    #[serde(skip)]
    pub payload_json: Option<String>,
    /// A repeat of the idempotency key is only told apart, its earlier task not named: the
    /// marker then holds no id, one write less per enqueue (webhooks' message ids).
    #[serde(skip)]
    pub dedup_only: bool,
    /// The key whose partition the task goes to, when not its order key (a reply's delivery goes
    /// to its conversation's partition; its order key is the conversation's `out:` key).
    #[serde(skip)]
    pub route: Option<String>,
}

impl TaskSpec {
    pub fn new(kind: impl Into<String>, payload: Value) -> TaskSpec {
        TaskSpec {
            kind: kind.into(),
            payload,
            lane: None,
            idempotency_key: None,
            max_attempts: None,
            order_key: None,
            delay: None,
            run_at_ms: None,
            payload_json: None,
            dedup_only: false,
            route: None,
        }
    }

    /// A task whose payload is given as JSON text.
    pub fn from_json(kind: impl Into<String>, payload_json: String) -> TaskSpec {
        TaskSpec { payload_json: Some(payload_json), ..TaskSpec::new(kind, Value::Null) }
    }

    pub fn on_lane(mut self, lane: Lane) -> TaskSpec {
        self.lane = Some(lane);
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> TaskSpec {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Queue nothing when `key` was seen within the idempotency window, without learning which
    /// task it was ([`Engine::enqueue_many`](super::Engine::enqueue_many) answers an empty id).
    pub fn dedup_key(mut self, key: impl Into<String>) -> TaskSpec {
        self.idempotency_key = Some(key.into());
        self.dedup_only = true;
        self
    }

    /// Run after every task queued earlier with the same order key has settled.
    pub fn ordered_by(mut self, key: impl Into<String>) -> TaskSpec {
        self.order_key = Some(key.into());
        self
    }

    /// Go to the partition of `key` (see [`TaskSpec::route`]).
    pub fn routed_by(mut self, key: impl Into<String>) -> TaskSpec {
        self.route = Some(key.into());
        self
    }

    /// The key that chooses the task's partition: its route, else its order key, else its
    /// idempotency key; none for a task that may go to any partition.
    pub fn routing_key(&self) -> Option<&str> {
        self.route.as_deref().or(self.order_key.as_deref()).or(self.idempotency_key.as_deref())
    }

    pub fn max_attempts(mut self, n: u32) -> TaskSpec {
        self.max_attempts = Some(n);
        self
    }

    /// Run no sooner than `delay` from now.
    pub fn delayed(mut self, delay: Duration) -> TaskSpec {
        self.delay = Some(delay);
        self
    }

    /// Run no sooner than `ms` (since the epoch).
    pub fn run_at(mut self, ms: u64) -> TaskSpec {
        self.run_at_ms = Some(ms);
        self
    }

    /// When the task is due (ms since the epoch) if that is after `now`, `None` to run now: a
    /// time already past runs now, as Celery's `eta` does. A delay and a time together, or one
    /// further than [`MAX_DELAY`] ahead, are refused.
    pub fn due_ms(&self, now: u64) -> Result<Option<u64>, String> {
        let due = match (self.delay, self.run_at_ms) {
            (Some(_), Some(_)) => return Err("give `delay` or `run_at`, not both".into()),
            (Some(d), None) => now.saturating_add(d.as_millis().try_into().unwrap_or(u64::MAX)),
            (None, Some(at)) => at,
            (None, None) => return Ok(None),
        };
        if due > now.saturating_add(MAX_DELAY.as_millis() as u64) {
            return Err(format!("a task may be queued at most {} ahead", humantime::format_duration(MAX_DELAY)));
        }
        Ok((due > now).then_some(due))
    }
}

/// How far ahead a task may be queued: a year.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

fn de_delay<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
    humantime::parse_duration(text.trim()).map(Some).map_err(|e| {
        serde::de::Error::custom(format!("`delay` must be a duration such as \"90s\" or \"1h 30m\" ({e})"))
    })
}

fn de_rfc3339<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
    let at = chrono::DateTime::parse_from_rfc3339(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!("`run_at` must be an RFC 3339 time such as \"2026-12-24T18:00:00Z\" ({e})"))
    })?;
    Ok(Some(at.timestamp_millis().max(0) as u64))
}

/// One attempt at running a task, as recorded in its history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Start of the attempt, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// `success`, `retry`, `failure`, `panic`, `timeout`, `revoked`, `interrupted` or `lost`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A task's record as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TaskStatus {
    pub task_id: String,
    pub status: TaskState,
    pub progress: u8,
    pub result: Value,
    pub error: Option<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub kind: String,
    pub lane: Option<Lane>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub worker: Option<String>,
    pub payload: Value,
    pub history: Vec<Attempt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// A task queued for later: when it is due (it is PENDING until then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Microseconds since the Unix epoch (stream entries carry their enqueue time this precisely).
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// RFC 3339 time, with milliseconds, of a ms timestamp.
pub fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A new unique id: a ULID, sortable by creation time (conversations and messages of the API).
pub fn new_task_id() -> String {
    ulid::Ulid::new().to_string()
}

/// A stream entry's id, `<ms>-<seq>`, as its two numbers (ordered as Redis orders entries).
pub fn parse_entry_id(entry: &str) -> Option<(u64, u64)> {
    let (ms, seq) = entry.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(ms) && digits(seq)).then(|| Some((ms.parse().ok()?, seq.parse().ok()?)))?
}

/// The most partitions a deployment may have: a task id keeps its partition in 10 bits.
pub const MAX_PARTITIONS: usize = 1024;

/// Where a task id says its entry is: the partition and the lane. Kept in the 12 bits after the
/// UUID's version, the partition above the lane's two bits (so the ids of a single partition,
/// partition 0, are those of the layout before partitions).
pub fn id_place(partition: usize, lane: Lane) -> u16 {
    ((partition as u16) << 2) | lane.index() as u16
}

/// The id of the task queued as `entry` of `lane` in `partition`: a UUIDv7 whose time is the
/// entry's millisecond, whose 12 bits after the version are its [place](id_place) and whose last
/// 62 bits are the entry's sequence number (as `task_id` in src/redis/lua/task_id.lua). A queued
/// task is its entry alone, so its id must lead to it; ids stay sortable by time of enqueue.
pub fn task_id_for_entry(partition: usize, lane: Lane, entry: &str) -> Option<String> {
    let (ms, seq) = parse_entry_id(entry)?;
    if partition >= MAX_PARTITIONS {
        return None;
    }
    Some(format!(
        "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        id_place(partition, lane),
        0x8000 | ((seq >> 48) & 0x3fff),
        seq & 0xffff_ffff_ffff
    ))
}

/// Sequence numbers of task ids at or above this name no entry: they are those of tasks queued
/// for later ([`task_id_for_later`]); Redis never numbers an entry so high within a millisecond.
const LATER_SEQ: u64 = 1 << 48;

/// A new id for a task queued at `ms` to run later in `lane` of `partition`: as an entry's
/// ([`task_id_for_entry`]), so it names its place and sorts by time of enqueue, with a random
/// sequence number of [`LATER_SEQ`] or more. Its record says where the task is.
pub fn task_id_for_later(partition: usize, lane: Lane, ms: u64) -> Option<String> {
    task_id_for_entry(partition, lane, &format!("{ms}-{}", fastrand::u64(LATER_SEQ..1 << 62)))
}

/// Whether `id` was made by [`task_id_for_later`].
pub fn is_later_id(id: &str) -> bool {
    entry_of_task(id).and_then(|(_, _, e)| parse_entry_id(&e)).is_some_and(|(_, seq)| seq >= LATER_SEQ)
}

/// The partition, lane and entry a task id is named after, for ids made by [`task_id_for_entry`]
/// (older tasks have ULIDs, which name none: their records, in partition 0, say where they are).
pub fn entry_of_task(id: &str) -> Option<(usize, Lane, String)> {
    let b = id.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') || b[14] != b'7' {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| {
        id.get(r).filter(|s| s.bytes().all(|c| c.is_ascii_hexdigit())).and_then(|s| u64::from_str_radix(s, 16).ok())
    };
    let ms = hex(0..8)? << 16 | hex(9..13)?;
    let place = usize::try_from(hex(15..18)?).ok()?;
    let (partition, lane) = (place >> 2, *Lane::ALL.get(place & 3)?);
    let variant = hex(19..23)?;
    if variant & 0xc000 != 0x8000 {
        return None;
    }
    let seq = (variant & 0x3fff) << 48 | hex(24..36)?;
    let entry = format!("{ms}-{seq}");
    // Only the id as it was given out: the same hex in capitals would name the same entry under
    // another record key.
    (task_id_for_entry(partition, lane, &entry)? == id).then_some((partition, lane, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_parse_in_priority_order() {
        assert_eq!(Lane::parse_list("analytics, conversations").unwrap(), vec![Lane::Conversations, Lane::Analytics]);
        assert!(Lane::parse_list("email").unwrap_err().contains("email"));
    }

    #[test]
    fn task_ids_name_their_entries() {
        let id = task_id_for_entry(0, Lane::Webhooks, "1796181455301-7").unwrap();
        assert_eq!(id, "01a234c1-f1c5-7001-8000-000000000007", "partition 0: the ids from before partitions");
        assert_eq!(entry_of_task(&id), Some((0, Lane::Webhooks, "1796181455301-7".to_string())));
        // Every lane, the largest sequence numbers, the first millisecond, the last partition.
        for (partition, lane, entry) in [
            (0, Lane::Conversations, "0-0"),
            (0, Lane::Analytics, "281474976710655-4611686018427387903"),
            (11, Lane::Webhooks, "1796181455301-7"),
            (1023, Lane::Analytics, "1796181455301-7"),
        ] {
            let id = task_id_for_entry(partition, lane, entry).unwrap();
            assert_eq!(entry_of_task(&id), Some((partition, lane, entry.to_string())), "{id}");
        }
        assert_eq!(
            task_id_for_entry(11, Lane::Webhooks, "1796181455301-7").unwrap(),
            "01a234c1-f1c5-702d-8000-000000000007"
        );
        assert_eq!(task_id_for_entry(1024, Lane::Webhooks, "1796181455301-7"), None);
        // Sortable by time of enqueue, then by place in the lane.
        let ids: Vec<String> = ["1796181455301-7", "1796181455301-12", "1796181455302-0"]
            .iter()
            .map(|e| task_id_for_entry(0, Lane::Analytics, e).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        // ULIDs, other UUIDs, the id in capitals and garbage name no entry.
        for other in [
            "01A234C1-F1C5-7001-8000-000000000007",
            "01JDQ4ZK3V7Y8W9X0A1B2C3D4E",
            "01a234c1-f1c5-4001-8000-000000000007",
            "01a234c1-f1c5-7003-8000-000000000007",
            "01a234c1-f1c5-7001-c000-000000000007",
            "01a234c1-f1c5-7001-8000-00000000000g",
            "01a2355c+4c45-7001-8000-000000000007",
            "",
        ] {
            assert_eq!(entry_of_task(other), None, "{other}");
        }
        assert_eq!(task_id_for_entry(0, Lane::Analytics, "12"), None);
        assert_eq!(parse_entry_id("1796181455301-12"), Some((1796181455301, 12)));
        for not_an_entry in ["12", "-3", "5-", "+5-3", "5-3x", "01a234c1-f1c5"] {
            assert_eq!(parse_entry_id(not_an_entry), None, "{not_an_entry}");
        }
    }

    #[test]
    fn ids_of_tasks_queued_for_later_name_their_place_and_no_entry() {
        let id = task_id_for_later(11, Lane::Analytics, 1796181455301).unwrap();
        let (part, lane, entry) = entry_of_task(&id).unwrap();
        assert_eq!((part, lane), (11, Lane::Analytics));
        assert!(entry.starts_with("1796181455301-"), "{entry}");
        assert!(is_later_id(&id), "{id}");
        assert!(!is_later_id(&task_id_for_entry(11, Lane::Analytics, "1796181455301-7").unwrap()));
        assert_ne!(task_id_for_later(11, Lane::Analytics, 1796181455301).unwrap(), id);
    }

    #[test]
    fn a_task_is_due_after_its_delay_or_at_its_time() {
        let now = 1_796_181_455_301;
        let spec = TaskSpec::new("k", Value::Null);
        assert_eq!(spec.due_ms(now), Ok(None));
        assert_eq!(spec.clone().delayed(Duration::from_secs(90)).due_ms(now), Ok(Some(now + 90_000)));
        assert_eq!(spec.clone().run_at(now + 5).due_ms(now), Ok(Some(now + 5)));
        assert_eq!(spec.clone().run_at(now - 5).due_ms(now), Ok(None), "a time past runs now");
        assert!(spec.clone().delayed(Duration::from_secs(1)).run_at(now).due_ms(now).unwrap_err().contains("not both"));
        assert!(spec.clone().delayed(MAX_DELAY + Duration::from_secs(1)).due_ms(now).is_err());
        let parsed: TaskSpec = serde_json::from_str(r#"{"kind": "k", "delay": "1m 30s", "run_at": null}"#).unwrap();
        assert_eq!(parsed.delay, Some(Duration::from_secs(90)));
        let parsed: TaskSpec = serde_json::from_str(r#"{"kind": "k", "run_at": "2026-12-24T19:00:00+01:00"}"#).unwrap();
        assert_eq!(parsed.run_at_ms, Some(1_798_135_200_000));
        let bad = serde_json::from_str::<TaskSpec>(r#"{"kind": "k", "delay": "soon"}"#).unwrap_err().to_string();
        assert!(bad.contains("`delay` must be a duration"), "{bad}");
        let bad = serde_json::from_str::<TaskSpec>(r#"{"kind": "k", "run_at": "tomorrow"}"#).unwrap_err().to_string();
        assert!(bad.contains("`run_at` must be an RFC 3339 time"), "{bad}");
    }

    #[test]
    fn states_use_celery_names() {
        assert_eq!(serde_json::to_string(&TaskState::Revoked).unwrap(), "\"REVOKED\"");
        assert_eq!(TaskState::parse("retry"), Some(TaskState::Retry));
        assert!(TaskState::Failure.is_finished() && !TaskState::Retry.is_finished());
    }
}
