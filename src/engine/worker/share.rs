//! `WORKER_PARTITIONS=balanced`: the partitions of each lane a worker reads new entries from.
//!
//! With its heartbeat, every few seconds, a worker reads the others' heartbeats and works out the
//! assignment every worker works out the same way: per lane, the live workers serving it, sorted
//! by name, with the partitions dealt out among them in turn (with more workers than partitions,
//! each worker gets one partition and each partition several workers). A worker not yet among
//! them reads every partition. The assignment shifts when a worker comes or goes; nothing is lost
//! meanwhile: entries already read stay with their reader, and the claim sweep over every
//! partition (at a quarter of `VISIBILITY_TIMEOUT`) takes due retries and the entries of workers
//! that died.

use std::time::Duration;

use super::Shared;
use crate::engine::{EngineError, now_ms};

/// Heartbeats younger than this count as live workers: a worker that dies stops being dealt
/// partitions this long after its last beat.
pub(super) const LIVE: Duration = Duration::from_secs(10);

/// The partitions (of `parts`) dealt to `me` among `workers`, sorted and without repeats; `None`
/// when `me` is not among them.
pub(super) fn deal(workers: &[&str], me: &str, parts: usize) -> Option<Vec<usize>> {
    let i = workers.iter().position(|w| *w == me)?;
    let n = workers.len();
    Some(if n <= parts { (0..parts).filter(|p| p % n == i).collect() } else { vec![i % parts] })
}

/// Work out this worker's share again from the heartbeats.
pub(super) async fn refresh(sh: &Shared) -> Result<(), EngineError> {
    let beats = sh.engine.workers().await?;
    let now = now_ms();
    let mut share: [Option<Vec<usize>>; 3] = Default::default();
    for &lane in &sh.opts.lanes {
        let mut live: Vec<&str> = beats
            .iter()
            .filter(|b| now.saturating_sub(b.last_seen) < LIVE.as_millis() as u64 && b.lanes.contains(&lane))
            .map(|b| b.name.as_str())
            .collect();
        live.sort_unstable();
        live.dedup();
        share[lane.index()] = deal(&live, &sh.name, sh.engine.partitions());
    }
    *sh.share.write().unwrap_or_else(|e| e.into_inner()) = share;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_dealt_evenly_and_each_has_a_reader() {
        let workers = ["a", "b", "c"];
        let shares: Vec<Vec<usize>> = workers.iter().map(|w| deal(&workers, w, 12).unwrap()).collect();
        assert_eq!(shares[0], [0, 3, 6, 9]);
        let mut all: Vec<usize> = shares.concat();
        all.sort_unstable();
        assert_eq!(all, (0..12).collect::<Vec<_>>(), "every partition once");
        // More workers than partitions: one each, every partition read.
        let many = ["a", "b", "c", "d", "e"];
        let firsts: Vec<usize> = many.iter().map(|w| deal(&many, w, 2).unwrap()[0]).collect();
        assert_eq!(firsts, [0, 1, 0, 1, 0]);
        // Not (yet) among the live workers: no share of its own.
        assert_eq!(deal(&workers, "z", 12), None);
    }
}
