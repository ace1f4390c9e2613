//! Failover time of a real cluster with default settings: five nodes, each
//! on its own host (a network namespace), a `command` site with three
//! copies, and clients asking for the site through every other node every
//! 50 ms. `kill -9` of the master → the time until the site answers 200
//! again (from the new master) through every surviving node. Then the old
//! master restarts and rejoins as a replica. Two cases, `--trials N` each
//! (default 10):
//!
//! - settled: the next kill comes 11 s after the previous master restarted
//!   (or the model's election warm-up plus 1 s, if that is longer): every
//!   member has been alive a while;
//! - after a restart: the next kill comes 3 s after the previous master
//!   restarted, while it is still rejoining (its gossip, its votes).
//!
//! Run: `cargo bench --bench failover` (options after `--`: `--trials N`).
//! Needs root, `ip netns`, iptables and zfs-fuse.
//! Target, in both cases: median ≤ 3 s, max ≤ 6 s.

#![allow(clippy::disallowed_methods)] // real processes against the wall clock

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::bed::{Bed, name, parse_claim};
use common::netns::netns_available;
use common::{wait_for, zfs_available};

#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

/// Polls the site through host `k` every 50 ms (for at most 30 s) until a
/// master other than `old` answers 200; the time from `t0`.
fn first_answer(bed: &Bed, k: usize, old: &str, t0: Instant) -> Option<Duration> {
    while t0.elapsed() < Duration::from_secs(30) {
        let (status, body) = bed.get(k, "/");
        if status == 200 && parse_claim(&body).is_some_and(|(n, _)| n != old) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Waits until the master and two replicas hold the same head.
fn wait_replicated(bed: &Bed, within: Duration) {
    wait_for("three copies at the master's head", within, || {
        let v = bed.show(0)?;
        let master = v["master"].as_str()?.to_owned();
        let copies = v["copies"].as_array()?;
        let head = copies
            .iter()
            .find(|c| c["node"].as_str() == Some(master.as_str()))?["head"]["guid"]
            .clone();
        let same = copies.iter().filter(|c| c["head"]["guid"] == head).count();
        (same >= 3).then_some(())
    });
}

fn main() {
    let mut trials = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--trials" {
            trials = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--trials N");
        }
    }
    if !zfs_available("failover bench") || !netns_available("failover bench") {
        return;
    }
    let mut bed = Bed::start("fo-bench", 5, &[]);
    let mut settled = Instant::now();
    bed.create_history_site(3);
    wait_replicated(&bed, Duration::from_secs(30));
    let all: Vec<usize> = (0..5).collect();
    let warmup = model::NodeConfig::new("n1".parse().expect("name")).election_warmup;
    let cases = [
        (
            "settled",
            warmup.max(Duration::from_secs(10)) + Duration::from_secs(1),
            true,
        ),
        ("3 s after a restart", Duration::from_secs(3), false),
    ];
    let mut verdicts = Vec::new();
    for (case, gap, wait_settled) in cases {
        let mut times = Vec::new();
        for trial in 1..=trials {
            // The kill comes `gap` after the previous master restarted.
            std::thread::sleep((settled + gap).saturating_duration_since(Instant::now()));
            let (old, epoch) = bed.wait_served(&all, Duration::from_secs(30));
            let m = (0..5)
                .find(|&k| name(k) == old)
                .expect("the master is a host");
            let survivors: Vec<usize> = all.iter().copied().filter(|&k| k != m).collect();
            let t0 = Instant::now();
            bed.kill(m);
            let per_node: Vec<Option<Duration>> = std::thread::scope(|s| {
                let handles: Vec<_> = survivors
                    .iter()
                    .map(|&k| {
                        let bed = &bed;
                        let old = old.as_str();
                        s.spawn(move || first_answer(bed, k, old, t0))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("prober"))
                    .collect()
            });
            let worst = per_node
                .iter()
                .map(|t| t.expect("the site answers again within 30 s"))
                .max()
                .expect("survivors");
            let (new, new_epoch) = bed.wait_served(&survivors, Duration::from_secs(5));
            say(&format!(
                "{case}: trial {trial}: kill -9 of {old}@{epoch} → {new}@{new_epoch} serves through every surviving node after {:.2} s (per node: {})",
                worst.as_secs_f64(),
                per_node
                    .iter()
                    .zip(&survivors)
                    .map(|(t, k)| format!(
                        "{} {:.2}",
                        name(*k),
                        t.unwrap_or_default().as_secs_f64()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            times.push(worst.as_secs_f64());
            bed.restart(m);
            settled = Instant::now();
            if wait_settled {
                bed.wait_alive(&all, Duration::from_secs(30));
                bed.wait_served(&all, Duration::from_secs(30));
                wait_replicated(&bed, Duration::from_secs(60));
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let max = times.last().copied().unwrap_or_default();
        let met = median <= 3.0 && max <= 6.0;
        say(&format!(
            "failover, {case}, over {trials} trials (5 nodes, default settings): median {median:.2} s, max {max:.2} s (target: median ≤ 3 s, max ≤ 6 s: {})",
            if met { "met" } else { "NOT met" }
        ));
        verdicts.push((case, median, max, met));
    }
    for (case, median, max, met) in verdicts {
        say(&format!(
            "failover summary: {case}: median {median:.2} s, max {max:.2} s: {}",
            if met { "met" } else { "NOT met" }
        ));
    }
}
