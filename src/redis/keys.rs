//! Every Redis key Switchyard uses, in one place.
//!
//! All keys of one deployment share the hash tag `{prefix}`, so every script that touches
//! several of them (move to the DLQ, redrive, claim) stays on one Redis Cluster slot and may
//! derive a task's key from its id inside the script.

use crate::model::Lane;

/// Consumer group every lane stream carries; all worker processes join it.
pub const GROUP: &str = "workers";

/// A key the Lua scripts derive from the root (they are given the root, not the key, when the
/// key depends on what they read: a task's record from its id, a lane from a dead letter): the
/// Lua function it is named by, that function's arguments after the root, and its shape, `{}`
/// standing for the arguments in turn. [`Keys`] names these keys from the same shapes and
/// [`lua_prelude`] writes the functions every script starts with, so a script never spells a key
/// itself.
struct Derived {
    lua: &'static str,
    args: &'static str,
    shape: &'static str,
}

const TASK: Derived = Derived { lua: "key_task", args: "id", shape: "task:{}" };
const DONE: Derived = Derived { lua: "key_done", args: "bucket", shape: "done:{}" };
const LANE: Derived = Derived { lua: "key_lane", args: "lane", shape: "lane:{}" };
const RETRY: Derived = Derived { lua: "key_retry", args: "lane", shape: "retry:{}" };
const ORDER: Derived = Derived { lua: "key_order", args: "okey", shape: "order:{}" };
const PARKED: Derived = Derived { lua: "key_parked", args: "okey", shape: "order:{}:parked" };
const IDEM: Derived = Derived { lua: "key_idem", args: "slice, shard", shape: "idem:{}:{}" };
const IDEM_LEGACY: Derived = Derived { lua: "key_idem_legacy", args: "k", shape: "idem:{}" };
const REVOKED: Derived = Derived { lua: "key_revoked", args: "", shape: "revoked" };
const LATER: Derived = Derived { lua: "key_later", args: "lane", shape: "later:{}" };
const HISTORY: Derived = Derived { lua: "key_history", args: "", shape: "history" };
const HISTORY_SIZES: Derived = Derived { lua: "key_history_sizes", args: "", shape: "history:sizes" };

const DERIVED: [Derived; 12] =
    [TASK, DONE, LANE, RETRY, ORDER, PARKED, IDEM, IDEM_LEGACY, REVOKED, LATER, HISTORY, HISTORY_SIZES];

impl Derived {
    /// `root` and the shape with `args` in its places.
    fn key(&self, root: &str, args: &[&str]) -> String {
        let mut out = root.to_string();
        let mut args = args.iter();
        for (i, piece) in self.shape.split("{}").enumerate() {
            if i > 0 {
                out.push_str(args.next().expect("an argument for each place"));
            }
            out.push_str(piece);
        }
        out
    }

    /// The Lua function: `local function key_task(root, id) return root .. 'task:' .. id end`.
    fn lua_function(&self) -> String {
        let mut body = String::from("root");
        let mut params = self.args.split(", ").filter(|a| !a.is_empty());
        for (i, piece) in self.shape.split("{}").enumerate() {
            if i > 0 {
                body.push_str(" .. ");
                body.push_str(params.next().expect("a parameter for each place"));
            }
            if !piece.is_empty() {
                body.push_str(&format!(" .. '{piece}'"));
            }
        }
        let comma = if self.args.is_empty() { "" } else { ", " };
        format!("local function {}(root{comma}{}) return {body} end\n", self.lua, self.args)
    }
}

/// The Lua functions naming the derived keys, one a line, put before every script.
pub fn lua_prelude() -> String {
    let mut out = String::from("-- The keys scripts derive from the root, written from src/redis/keys.rs.\n");
    for d in &DERIVED {
        out.push_str(&d.lua_function());
    }
    out
}

#[derive(Debug, Clone)]
pub struct Keys {
    /// `{prefix}:` — the hash-tagged root of every key.
    root: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys { root: format!("{{{prefix}}}:") }
    }

    /// The root, passed to scripts that derive keys from ids.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Stream of one lane's tasks (`XADD` by producers, `XREADGROUP` by workers).
    pub fn lane(&self, lane: Lane) -> String {
        LANE.key(&self.root, &[lane.as_str()])
    }

    /// Sorted set of a lane's entries waiting out a retry backoff: member is the stream entry id,
    /// score the time (ms) it becomes due. The entries stay pending in the group meanwhile.
    pub fn retry(&self, lane: Lane) -> String {
        RETRY.key(&self.root, &[lane.as_str()])
    }

    /// Sorted set of a lane's tasks queued to run later (a delay or a time): member is the task
    /// id, score the time (ms) it is due. Its record holds the rest until a worker's claim moves
    /// it onto the lane (claim.lua).
    pub fn later(&self, lane: Lane) -> String {
        LATER.key(&self.root, &[lane.as_str()])
    }

    /// Stream of the tasks that finished lately, the latest last (history.lua writes it; about
    /// the partition's share of `TASK_HISTORY` tasks): an entry per settling call, its id when
    /// they finished, per task its id → `kind TAB lane TAB state TAB run ms`.
    pub fn history(&self) -> String {
        HISTORY.key(&self.root, &[])
    }

    /// List of the history's entries, oldest first: `<entry id> <tasks> <tasks noted ever>`
    /// (history.lua), trimmed with the stream.
    pub fn history_sizes(&self) -> String {
        HISTORY_SIZES.key(&self.root, &[])
    }

    /// Hash holding one task's record: state, payload, result, attempts `a:<n>`.
    pub fn task(&self, id: &str) -> String {
        TASK.key(&self.root, &[id])
    }

    /// Where a task that succeeded keeps its one line of fields (see `finish.lua`; its `task:`
    /// record is gone then): for a UUIDv7 id, a field of the hash `done:<id[..11]>` shared by
    /// the tasks created in the same 256 ms, the rest of the id less its dashes, its version
    /// and the leading zeros of its last group; for another id, a key of its own (`done.lua`
    /// says why; the two must agree).
    pub fn done(&self, id: &str) -> (String, Option<String>) {
        let b = id.as_bytes();
        let hex = |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_hexdigit));
        let uuid7 = b.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
            && b[14] == b'7'
            && hex(0..8)
            && hex(9..13)
            && hex(15..18)
            && hex(19..23)
            && hex(24..36);
        if !uuid7 {
            return (self.done_own(id), None);
        }
        let field = format!("{}{}{}{}", &id[11..13], &id[15..18], &id[19..23], id[24..].trim_start_matches('0'));
        (DONE.key(&self.root, &[&id[..11]]), Some(field))
    }

    /// The key of its own a finished record had before records were kept in buckets (and still
    /// has when its id is not a UUIDv7).
    pub fn done_own(&self, id: &str) -> String {
        DONE.key(&self.root, &[id])
    }

    /// An idempotency key's marker as earlier builds kept it (a string, the task id it created):
    /// still honoured. Markers are now fields of `idem:<slice>:<shard>` (enqueue.lua).
    pub fn idempotency(&self, key: &str) -> String {
        IDEM_LEGACY.key(&self.root, &[key])
    }

    /// One shard of one slice of the idempotency window's markers (a hash: the key's digest →
    /// the task it created and the fingerprint of its kind and payload; enqueue.lua).
    pub fn idempotency_shard(&self, slice: u64, shard: u8) -> String {
        IDEM.key(&self.root, &[&slice.to_string(), &shard.to_string()])
    }

    /// The dead-letter stream: one entry per dead task with its whole attempt history.
    pub fn dlq(&self) -> String {
        format!("{}dlq", self.root)
    }

    /// Hash lane → number of dead letters from that lane.
    pub fn dlq_lanes(&self) -> String {
        format!("{}dlq:lanes", self.root)
    }

    /// The number of partitions the deployment's data is spread over, written once (one small
    /// string for the life of the deployment).
    pub fn partitions(&self) -> String {
        format!("{}partitions", self.root)
    }

    /// Set of the lanes an operator paused (at most one member per lane; gone once none is).
    pub fn paused(&self) -> String {
        format!("{}paused", self.root)
    }

    /// Hash worker name → JSON heartbeat (host, pid, lanes, concurrency, in-flight, time).
    pub fn workers(&self) -> String {
        format!("{}workers", self.root)
    }

    /// Set of running tasks an operator cancelled, until their worker records the attempt.
    pub fn revoked(&self) -> String {
        REVOKED.key(&self.root, &[])
    }

    /// Hash with one conversation's summary: platform, account, customer, times, counts, hand-off.
    pub fn conversation(&self, id: &str) -> String {
        format!("{}conv:{}", self.root, id)
    }

    /// List of one conversation's turns, oldest first.
    pub fn conversation_log(&self, id: &str) -> String {
        format!("{}conv:{}:log", self.root, id)
    }

    /// String of one conversation's figures (JSON), written by `analytics.conversation`.
    pub fn conversation_analytics(&self, id: &str) -> String {
        format!("{}conv:{}:analytics", self.root, id)
    }

    /// Flag of one conversation's figures being queued (debounces `analytics.conversation`).
    pub fn conversation_analytics_queued(&self, id: &str) -> String {
        format!("{}conv:{}:analytics:queued", self.root, id)
    }

    /// Marker of one part of a reply sent when the reply has no turn to count it in.
    pub fn sent(&self, reply: &str, part: usize) -> String {
        format!("{}sent:{}:{}", self.root, reply, part)
    }

    /// Which attempt is sending one part of a reply (until its marker is written).
    pub fn sending(&self, reply: &str, part: usize) -> String {
        format!("{}sending:{}:{}", self.root, reply, part)
    }

    /// Counter of one account's sends in one second (the platform's rate limit).
    pub fn rate(&self, account: &str, second: u64) -> String {
        format!("{}rate:{}:{}", self.root, account, second)
    }

    /// Hash of one order key's sequence: `next` (last number given), `done` (all before it have
    /// settled) and sequence number → task id for the tasks not yet passed.
    pub fn order(&self, key: &str) -> String {
        ORDER.key(&self.root, &[key])
    }

    /// Hash of one order key's parked tasks: sequence number → `lane TAB entry`.
    pub fn order_parked(&self, key: &str) -> String {
        PARKED.key(&self.root, &[key])
    }

    /// The scheduler's lease: the name of the process that fires ticks.
    pub fn scheduler_lease(&self) -> String {
        format!("{}scheduler:lease", self.root)
    }

    /// The scheduler's fencing counter: a new token each time the lease changes hands.
    pub fn scheduler_fence(&self) -> String {
        format!("{}scheduler:fence", self.root)
    }

    /// Hash of one schedule's state: `last_tick`, `last_run`, `last_task`, `next_run`, `fired_by`.
    pub fn schedule(&self, name: &str) -> String {
        format!("{}schedule:{}", self.root, name)
    }

    /// Hash of one minute's per-kind figures: `worker|lane|kind` → JSON (counts, histograms).
    pub fn stats(&self, minute: u64) -> String {
        format!("{}stats:{}", self.root, minute)
    }

    /// List of performance reports, newest first (the last 100).
    pub fn reports(&self) -> String {
        format!("{}reports", self.root)
    }

    /// A dashboard session: its CSRF token, expiring with the session.
    pub fn session(&self, id: &str) -> String {
        format!("{}session:{}", self.root, id)
    }

    /// Sorted set of conversation ids by the time of their last turn (ms).
    pub fn conversations(&self) -> String {
        format!("{}conversations", self.root)
    }

    /// Hash minute → Redis's `used_memory` then, for the last quarter hour (older minutes are
    /// dropped as new ones come; the key goes an hour after the last sample).
    pub fn memory_samples(&self) -> String {
        format!("{}memory", self.root)
    }

    /// Pub/sub channel on which cancellations of running tasks are announced.
    pub fn cancel_channel(&self) -> String {
        format!("{}cancel", self.root)
    }

    /// Pub/sub channel of live task events (state changes and progress), JSON lines, a batch a
    /// message (engine::events).
    pub fn events_channel(&self) -> String {
        format!("{}events", self.root)
    }

    /// Pub/sub channel a producer announces a task queued for later on when it is the first due
    /// in its place (`<partition> <lane> <due ms>`), so workers look at it on time.
    pub fn later_channel(&self) -> String {
        format!("{}later", self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_records_of_uuid7_ids_share_a_bucket_per_256_ms() {
        let k = Keys::new("sy");
        let a = "01a2462c-c682-7001-8000-00000000000f";
        let b = "01a2462c-c6ff-7002-8000-000000000003";
        let (bucket_a, field_a) = k.done(a);
        let (bucket_b, field_b) = k.done(b);
        assert_eq!(bucket_a, "{sy}:done:01a2462c-c6");
        assert_eq!((bucket_a.as_str(), field_a.as_deref()), (bucket_b.as_str(), Some("820018000f")));
        assert_eq!(field_b.as_deref(), Some("ff00280003"));
        assert_eq!(k.done("01a2462c-c682-7001-8000-000000000000").1.as_deref(), Some("820018000"));
        assert_eq!(k.done("01a2462c-c682-7001-8000-100000000000").1.as_deref(), Some("820018000100000000000"));
        // the next 256 ms: another bucket
        assert_ne!(k.done("01a2462c-c700-7001-8000-000000000000").0, bucket_a);
        // an older task's ULID, or anything that is not a UUIDv7, keeps a key of its own
        for id in [
            "01HZX3N8Q7Y2V4W6K9M1P3R5T7",
            "01a2462c-c682-4001-8000-00000000000f",
            "01a2462c-c682-7001-8000-0000000000",
            "01a2462c-c682-7001x8000-00000000000f",
            "01a2462c-c682-7001-8000-00000000000g",
        ] {
            assert_eq!(k.done(id), (format!("{{sy}}:done:{id}"), None), "{id}");
        }
    }

    #[test]
    fn scripts_name_derived_keys_only_through_the_prelude() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/redis/lua");
        let mut spelled = Vec::new();
        for file in std::fs::read_dir(&dir).unwrap() {
            let path = file.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("--").next().unwrap_or("");
                let literal_key = DERIVED.iter().any(|d| {
                    let head = d.shape.split("{}").next().unwrap();
                    code.contains(&format!("'{head}'")) || code.contains(&format!("\"{head}\""))
                });
                if code.contains("root ..") || literal_key {
                    spelled.push(format!("{}:{}: {line}", path.display(), n + 1));
                }
            }
        }
        assert!(
            spelled.is_empty(),
            "keys spelled in scripts instead of the prelude's functions:\n{}",
            spelled.join("\n")
        );
    }

    #[test]
    fn the_prelude_writes_each_shape_as_a_lua_function() {
        let prelude = lua_prelude();
        assert!(prelude.contains("local function key_task(root, id) return root .. 'task:' .. id end\n"), "{prelude}");
        assert!(
            prelude
                .contains("local function key_parked(root, okey) return root .. 'order:' .. okey .. ':parked' end\n"),
            "{prelude}"
        );
        assert!(
            prelude.contains(
                "local function key_idem(root, slice, shard) return root .. 'idem:' .. slice .. ':' .. shard end\n"
            ),
            "{prelude}"
        );
        assert!(prelude.contains("local function key_revoked(root) return root .. 'revoked' end\n"), "{prelude}");
    }
}
