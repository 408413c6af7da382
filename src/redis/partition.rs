//! Partitions: how a deployment's keys are spread over the slots of a Redis Cluster.
//!
//! A partition is one hash tag. Everything a script may touch at once lives under it — the three
//! lanes with their retry sets, the dead letters, the revoked set, the task records, idempotency
//! markers, order sequences and the conversations routed to it — so every script stays on one
//! slot. With one partition the tag is `{prefix}`, the layout of a single Redis; with P of them,
//! partition `i` gets a tag whose slot falls in the `i`-th of P equal bands of the slot range.
//! A cluster made by `redis-cli --cluster create` gives each master an equal run of slots, so
//! with P a multiple of the masters each master holds the same number of partitions (naive tags,
//! `{sy:0}` … `{sy:15}`, bunch up: ten of sixteen land on one of three masters).
//!
//! Keys that belong to the deployment rather than to a partition (workers, schedules, sessions,
//! reports) keep the tag `{prefix}`.

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

pub use crate::model::task::MAX_PARTITIONS;

/// The slot of a key, as Redis Cluster computes it (`CLUSTER KEYSLOT`): CRC16 (XMODEM) of the
/// key's hash tag — what is between its first `{` and the next `}`, when that is not empty — or
/// of the whole key, modulo 16384.
pub fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let hashed = match b.iter().position(|&c| c == b'{') {
        Some(open) => match b[open + 1..].iter().position(|&c| c == b'}') {
            Some(len) if len > 0 => &b[open + 1..open + 1 + len],
            _ => b,
        },
        None => b,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// The hash tags of `count` partitions of the deployment `prefix` (without braces): `prefix`
/// alone for one partition; else, for partition `i`, `prefix:i` when its slot is in the `i`-th
/// band, or the first `prefix:i.k` (k = 1, 2, …) whose slot is.
pub fn tags(prefix: &str, count: usize) -> Vec<String> {
    if count <= 1 {
        return vec![prefix.to_string()];
    }
    (0..count)
        .map(|i| {
            let band = band(i, count);
            let first = format!("{prefix}:{i}");
            if band.contains(&slot(&first)) {
                return first;
            }
            (1u64..)
                .map(|k| format!("{prefix}:{i}.{k}"))
                .find(|t| band.contains(&slot(t)))
                .expect("every band of at least 16 slots is hit")
        })
        .collect()
}

/// The `i`-th of `count` equal runs of slots.
fn band(i: usize, count: usize) -> std::ops::Range<u16> {
    let at = |n: usize| (n * SLOTS as usize / count) as u16;
    at(i)..at(i + 1)
}

/// The partition a routing key (an order key, an idempotency key, a conversation) belongs to, of
/// `count`: always the same one for the same key.
pub fn partition_of(routing_key: &str, count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    // CRC16 spreads short keys evenly enough; 32 bits of SHA-256 would not change the answer
    // for fewer than 1 024 partitions, only its cost.
    let h = crc16::State::<crc16::XMODEM>::calculate(routing_key.as_bytes()) as usize;
    let h2 = crc16::State::<crc16::ARC>::calculate(routing_key.as_bytes()) as usize;
    ((h << 16) | h2) % count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag_rules() {
        // The examples of the Redis Cluster specification.
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("{user1000}.followers"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"), "an empty tag hashes the whole key");
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"));
        assert_eq!(slot("123456789"), 0x31c3 % SLOTS);
    }

    #[test]
    fn one_partition_keeps_the_single_redis_layout() {
        assert_eq!(tags("sy", 1), ["sy"]);
        assert_eq!(partition_of("messenger:P:U", 1), 0);
    }

    #[test]
    fn partition_tags_spread_evenly_over_the_slots() {
        for count in [2, 3, 12, 16, 64, 1024] {
            let t = tags("sy", count);
            assert_eq!(t.len(), count);
            for (i, tag) in t.iter().enumerate() {
                let s = slot(&format!("{{{tag}}}:lane:webhooks"));
                assert!(band(i, count).contains(&s), "{tag} → {s}, outside band {i} of {count}");
            }
            assert_eq!(t.iter().collect::<std::collections::HashSet<_>>().len(), count);
        }
        // With P a multiple of the masters, each master holds P / masters partitions.
        for (count, masters) in [(12, 3), (16, 4), (12, 6)] {
            let mut per_master = vec![0; masters];
            for tag in tags("sy", count) {
                let s = slot(&tag) as usize;
                per_master[s * masters / SLOTS as usize] += 1;
            }
            assert!(per_master.iter().all(|&n| n == count / masters), "{count} on {masters}: {per_master:?}");
        }
    }

    #[test]
    fn routing_keys_spread_over_the_partitions() {
        let count = 12;
        let mut hits = vec![0u32; count];
        for i in 0..12_000 {
            hits[partition_of(&format!("messenger:PAGE1:{i}"), count)] += 1;
        }
        // 1 000 expected each; a fair spread stays well inside ±15 %.
        assert!(hits.iter().all(|&n| (850..1150).contains(&n)), "{hits:?}");
        assert_eq!(partition_of("whatsapp:A:B", count), partition_of("whatsapp:A:B", count));
    }
}
