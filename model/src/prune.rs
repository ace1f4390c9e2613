//! Which snapshots to destroy: a retention policy over a chain, as a pure
//! function.
//!
//! The policy keeps every snapshot younger than `keep_all`, the newest of
//! each hour younger than `keep_hourly`, and the newest of each day younger
//! than `keep_daily`. Whatever the policy says, it never removes:
//!
//! - the newest snapshot of the chain (the copy's head);
//! - a protected snapshot: for a master, each live replica's head that the
//!   master holds, which is that replica's base for its next incremental
//!   receive (zrepl's cursors, in spirit).
//!
//! So pruning never forces a full resend to a replica that is alive.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A retention policy (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrunePolicy {
    pub keep_all: Duration,
    pub keep_hourly: Duration,
    pub keep_daily: Duration,
}

impl Default for PrunePolicy {
    /// Every snapshot of the last hour, hourly for a day, daily for a week.
    fn default() -> Self {
        Self {
            keep_all: Duration::from_secs(3600),
            keep_hourly: Duration::from_secs(24 * 3600),
            keep_daily: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl PrunePolicy {
    /// The most snapshots a chain keeps under this policy when snapshots are
    /// taken every `interval`, protected ones aside.
    pub fn bound(&self, interval: Duration) -> u64 {
        let all = self.keep_all.as_secs_f64() / interval.as_secs_f64().max(1e-3);
        let hours = self.keep_hourly.as_secs() / 3600;
        let days = self.keep_daily.as_secs() / 86_400;
        all.ceil() as u64 + hours + days + 2
    }
}

/// One snapshot of a chain: its guid and creation time (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aged {
    pub guid: u64,
    pub created: u64,
}

/// The guids of `chain` (oldest first) to destroy at `now` (Unix seconds).
pub fn to_prune(
    chain: &[Aged],
    protected: &BTreeSet<u64>,
    policy: &PrunePolicy,
    now: u64,
) -> Vec<u64> {
    let Some(newest) = chain.last() else {
        return Vec::new();
    };
    // The newest snapshot of each bucket (hour or day) wins the bucket.
    let mut hour_winner: BTreeMap<u64, u64> = BTreeMap::new();
    let mut day_winner: BTreeMap<u64, u64> = BTreeMap::new();
    for s in chain {
        hour_winner.insert(s.created / 3600, s.guid);
        day_winner.insert(s.created / 86_400, s.guid);
    }
    chain
        .iter()
        .filter(|s| {
            let age = now.saturating_sub(s.created);
            let keep = s.guid == newest.guid
                || protected.contains(&s.guid)
                || age <= policy.keep_all.as_secs()
                || (age <= policy.keep_hourly.as_secs()
                    && hour_winner.get(&(s.created / 3600)) == Some(&s.guid))
                || (age <= policy.keep_daily.as_secs()
                    && day_winner.get(&(s.created / 86_400)) == Some(&s.guid));
            !keep
        })
        .map(|s| s.guid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(times: &[u64]) -> Vec<Aged> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Aged {
                guid: 100 + i as u64,
                created: *t,
            })
            .collect()
    }

    #[test]
    fn keeps_recent_hourly_daily_and_never_the_head_or_protected() {
        let now = 10 * 86_400;
        let policy = PrunePolicy::default();
        // Two snapshots 30 min apart in one old hour, one 9 days old, two recent.
        let c = chain(&[
            now - 9 * 86_400,
            now - 5 * 3600 - 1800,
            now - 5 * 3600 - 100,
            now - 60,
            now - 1,
        ]);
        let gone = to_prune(&c, &BTreeSet::new(), &policy, now);
        // The 9-day-old one is beyond daily; the older of the two in one
        // hour loses its hour (and its day to newer ones).
        assert_eq!(gone, vec![100, 101]);
        // Protected survives anyway.
        let gone = to_prune(&c, &BTreeSet::from([100]), &policy, now);
        assert_eq!(gone, vec![101]);
        // The head survives even when everything is old.
        let old = chain(&[1, 2, 3]);
        assert_eq!(
            to_prune(&old, &BTreeSet::new(), &policy, now),
            vec![100, 101]
        );
        assert!(to_prune(&[], &BTreeSet::new(), &policy, now).is_empty());
    }

    /// A snapshot every second for 200 s, then every interval for a week of
    /// simulated time: what is kept stays within the policy's bound.
    #[test]
    fn the_default_policy_keeps_a_bounded_chain() {
        let policy = PrunePolicy::default();
        let interval = 60; // one snapshot a minute for 9 days
        let mut kept: Vec<Aged> = Vec::new();
        let mut max_len = 0;
        for i in 0..(9 * 24 * 60u64) {
            let now = 1_000_000 + i * interval;
            kept.push(Aged {
                guid: i,
                created: now,
            });
            let gone = to_prune(&kept, &BTreeSet::new(), &policy, now);
            kept.retain(|s| !gone.contains(&s.guid));
            max_len = max_len.max(kept.len());
        }
        let bound = policy.bound(Duration::from_secs(interval)) as usize;
        assert!(max_len <= bound, "{max_len} > {bound}");
        // About an hour of minutes, a day of hours and a week of days.
        assert!(max_len >= 60 + 20, "{max_len}");
    }
}
