//! Live migration on five hosts in network namespaces (see
//! `common/netns.rs`), real ZFS, and writers through every node that count
//! every failed request (`common/bed.rs`). They need root, `ip netns`,
//! iptables and zfs-fuse; in CI they must run, elsewhere they skip.

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes against the wall clock, figures on stderr

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::bed::{Bed, Load, check_history, name};
use common::netns::netns_available;
use common::{wait_for, zfs_available};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn can_run(test: &str) -> bool {
    zfs_available(test) && netns_available(test)
}

/// `site migrate --json` through host `via`: its events, and whether it
/// succeeded.
fn migrate(bed: &Bed, via: usize, to: &str) -> (bool, Vec<Value>) {
    let out = bed.ringhost(
        via,
        &["site", "migrate", common::bed::SITE, "--to", to, "--json"],
    );
    let events = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    eprintln!("migrate: {}", String::from_utf8_lossy(&out.stderr).trim());
    (out.status.success(), events)
}

fn event<'a>(events: &'a [Value], kind: &str) -> Option<&'a Value> {
    events.iter().find(|e| e["event"] == kind)
}

#[test]
fn a_site_under_load_moves_to_a_node_without_a_copy_with_no_failed_request() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("migrate") {
        return;
    }
    let bed = Bed::start("mig-load", 5, &[]);
    bed.create_history_site(2);
    let all: Vec<usize> = (0..5).collect();
    let (from, epoch) = bed.wait_served(&all, Duration::from_secs(10));
    // A node that holds no copy.
    let holders: Vec<String> = wait_for("two copies", Duration::from_secs(30), || {
        let v = bed.show(0)?;
        let h: Vec<String> = v["copies"]
            .as_array()?
            .iter()
            .filter_map(|c| c["node"].as_str().map(str::to_owned))
            .collect();
        (h.len() == 2).then_some(h)
    });
    let to = (0..5)
        .map(name)
        .find(|n| !holders.contains(n))
        .expect("a node without a copy");
    let load = Load::start(&bed, 3, 5000, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    // Started through a node that is neither the master nor the target.
    let via = (0..5)
        .find(|&k| name(k) != from && name(k) != to)
        .expect("a third node");
    let (ok, events) = migrate(&bed, via, &to);
    assert!(ok, "migration failed: {events:?}");
    std::thread::sleep(Duration::from_secs(2));
    let attempts = load.finish();
    for e in &events {
        eprintln!("migrate: {e}");
    }
    let done = event(&events, "done").expect("a report");
    // Every node now reaches the site on the target, at the next epoch.
    let (now, now_epoch) = bed.wait_served(&all, Duration::from_secs(10));
    assert_eq!((now.as_str(), now_epoch), (to.as_str(), epoch + 1));
    let failed: Vec<_> = attempts.iter().filter(|a| a.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the migration: {:?}",
        failed.len(),
        attempts.len(),
        &failed[..failed.len().min(5)]
    );
    let found = bed.found_writes(0);
    let v = check_history(&attempts, &found);
    eprintln!("migrate: {}", v.summary());
    assert!(
        v.lost.is_empty() && v.holes.is_empty() && v.split_epochs.is_empty(),
        "{v:?}"
    );
    assert!(done["pause_ms"].as_f64().is_some_and(|p| p > 0.0));
    assert!(std::env::var_os("RINGHOST_MIGRATE_DUMP").is_none(), "dump");
}
