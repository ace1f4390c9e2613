//! Live migration under load, on five hosts in network namespaces with real
//! ZFS (zfs-fuse here):
//!
//! 1. a static site holding 500 MiB, read through every node by four
//!    clients, migrated to a node that holds no copy;
//! 2. the history site (a `command` site: a Python process that appends
//!    each acknowledged write to a file), written through every node by
//!    three clients, migrated the same way.
//!
//! For each it prints the migration's own report (pause from the gate's
//! hold to its release, final delta, pre-copy rounds, total time) and what
//! the clients saw: requests, failures, and the longest added latency (the
//! slowest request during the migration minus the median before it).
//! Target: zero failed requests; pause ≤ 300 ms at a final delta ≤ 1 MiB,
//! the pause being the longest added latency (as the issue defines it); the
//! gate's hold is judged against the same bound too, as the stricter reading.
//!
//! Run: `cargo bench --bench migration` (`-- --mib N` for another size).
//! Needs root, `ip netns`, iptables and zfs-fuse.

#![allow(clippy::disallowed_methods)] // real processes against the wall clock

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::bed::{Attempt, Bed, Load, curl_at, name};
use common::netns::netns_available;
use common::{p, wait_for, zfs_available};
use serde_json::Value;

#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Holders of `site` as host 0 sees them, once `n` copies share a head.
fn copies(bed: &Bed, site: &str, n: usize) -> Vec<String> {
    wait_for(
        &format!("{n} copies of {site} at one head"),
        Duration::from_secs(300),
        || {
            let out = bed.ringhost(0, &["site", "show", site, "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).ok()?;
            let cs = v["copies"].as_array()?;
            let head = &cs.first()?["head"]["guid"];
            let same = cs.iter().all(|c| &c["head"]["guid"] == head);
            (cs.len() == n && same).then(|| {
                cs.iter()
                    .filter_map(|c| c["node"].as_str().map(str::to_owned))
                    .collect()
            })
        },
    )
}

fn migrate(bed: &Bed, via: usize, site: &str, to: &str) -> Vec<Value> {
    let out = bed.ringhost(via, &["site", "migrate", site, "--to", to, "--json"]);
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        out.status.success(),
        "migration of {site} failed: {events:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    events
}

/// Runs one migration of `site` under `load` and prints the figures.
fn measure(bed: &Bed, site: &str, load: Load, what: &str) {
    let all: Vec<usize> = (0..bed.len()).collect();
    let holders = copies(bed, site, 2);
    let out = bed.ringhost(0, &["site", "show", site, "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("site show");
    let from = v["master"].as_str().expect("a master").to_owned();
    let to = (0..bed.len())
        .map(name)
        .find(|n| !holders.contains(n))
        .expect("a node without a copy");
    let via = all
        .iter()
        .copied()
        .find(|&k| name(k) != from && name(k) != to)
        .expect("a third node");
    std::thread::sleep(Duration::from_secs(3));
    let start = load.now();
    let events = migrate(bed, via, site, &to);
    let end = load.now();
    std::thread::sleep(Duration::from_secs(2));
    let attempts = load.finish();
    let report = events
        .iter()
        .find(|e| e["event"] == "done")
        .expect("a report")
        .clone();
    let failed = attempts.iter().filter(|a| a.status != 200).count();
    let mut before: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.done < start)
        .map(|a| a.done - a.sent)
        .collect();
    before.sort();
    let median = before.get(before.len() / 2).copied().unwrap_or_default();
    let during: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.done >= start && a.sent <= end)
        .collect();
    let slowest = during
        .iter()
        .map(|a| a.done - a.sent)
        .max()
        .unwrap_or_default();
    let pause_ms = report["pause_ms"].as_f64().unwrap_or(f64::NAN);
    let delta = report["final_delta_bytes"].as_u64().unwrap_or(0);
    say(&format!(
        "{what}: {from} → {to}: pause {pause_ms:.0} ms, final delta {delta} bytes, {} pre-copy rounds ({:.1} MiB), total {:.2} s",
        report["precopy_rounds"],
        report["precopy_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64,
        report["total_ms"].as_f64().unwrap_or(0.0) / 1000.0
    ));
    say(&format!(
        "{what}: clients: {} requests, {failed} failed; median latency before {:.1} ms; slowest during the migration {:.1} ms (added {:.1} ms)",
        attempts.len(),
        median.as_secs_f64() * 1e3,
        slowest.as_secs_f64() * 1e3,
        slowest.saturating_sub(median).as_secs_f64() * 1e3
    ));
    // The issue defines the pause as the longest added latency a client
    // sees; the gate's hold (from the first held request to the release)
    // is the stricter reading: both are judged.
    let added_ms = slowest.saturating_sub(median).as_secs_f64() * 1e3;
    let verdict = |pause: f64| {
        if failed == 0 && pause <= 300.0 && delta <= 1 << 20 {
            "met"
        } else {
            "NOT met"
        }
    };
    say(&format!(
        "{what}: target (zero failed, pause ≤ 300 ms at final delta ≤ 1 MiB): {} with the pause as the longest added latency ({added_ms:.0} ms); {} with the pause as the gate's hold ({pause_ms:.0} ms)",
        verdict(added_ms),
        verdict(pause_ms)
    ));
    for e in &events {
        say(&format!("{what}:   {e}"));
    }
}

fn main() {
    let mut mib = 500usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--mib" {
            mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N");
        }
    }
    if !zfs_available("migration bench") || !netns_available("migration bench") {
        return;
    }
    let bed = Bed::start_sized("mig-bench", 5, &format!("{}M", 3 * mib + 512), &[]);

    // 1. A static site with `mib` MiB, read through every node.
    let dir = bed.env.path().join("big");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("index.html"), bytes(0, 1024)).expect("index");
    for i in 0..mib.div_ceil(10) {
        std::fs::write(
            dir.join(format!("part-{i:03}.bin")),
            bytes(i as u64 + 1, 10 << 20),
        )
        .expect("part");
    }
    let out = bed.ringhost(
        0,
        &[
            "site",
            "create",
            "big",
            "--domain",
            "big.test",
            "--replicas",
            "2",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let pushed = std::time::Instant::now();
    let out = bed.ringhost(0, &["site", "push", "big", p(&dir)]);
    assert!(out.status.success(), "{out:?}");
    copies(&bed, "big", 2);
    say(&format!(
        "static site: {mib} MiB pushed and on 2 copies in {:.1} s",
        pushed.elapsed().as_secs_f64()
    ));
    let get: common::bed::Request = Arc::new(|ip, _| curl_at(ip, "big.test", &[], "/index.html"));
    let load = Load::start_with(&bed, 4, 20_000, Duration::from_secs(600), get);
    measure(&bed, "big", load, "static site");

    // 2. A command site, written through every node.
    bed.create_history_site(2);
    let load = Load::start(&bed, 3, 20_000, Duration::from_secs(600));
    measure(&bed, common::bed::SITE, load, "command site");
}
