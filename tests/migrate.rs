//! Live migration on five hosts in network namespaces (see
//! `common/netns.rs`), real ZFS, and writers through every node that count
//! every failed request (`common/bed.rs`). They need root, `ip netns`,
//! iptables and zfs-fuse; in CI they must run, elsewhere they skip.

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes against the wall clock, figures on stderr

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::bed::{Bed, Load, check_history, curl_at, name};
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

/// A host that holds no copy of the site (which has two).
fn host_without_copy(bed: &Bed) -> usize {
    let holders: Vec<String> = wait_for("two copies", Duration::from_secs(30), || {
        let v = bed.show(0)?;
        let h: Vec<String> = v["copies"]
            .as_array()?
            .iter()
            .filter_map(|c| c["node"].as_str().map(str::to_owned))
            .collect();
        (h.len() == 2).then_some(h)
    });
    (0..bed.len())
        .find(|&k| !holders.contains(&name(k)))
        .expect("a node without a copy")
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
    let to = name(host_without_copy(&bed));
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
}

/// The events of the site's migration as host `k`'s node recorded them.
fn migration_log(bed: &Bed, k: usize) -> Vec<Value> {
    let sock = bed.node(k).data_dir.join("admin.sock");
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "2", "--unix-socket", common::p(&sock)])
        .arg(format!(
            "http://node/v1/sites/{}/migration",
            common::bed::SITE
        ))
        .output()
        .expect("curl runs");
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v["events"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn the_target_killed_during_the_final_send_leaves_the_site_on_the_source_with_all_its_data() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("migrate_kill") {
        return;
    }
    let mut bed = Bed::start("mig-kill", 5, &[]);
    bed.create_history_site(2);
    let all: Vec<usize> = (0..5).collect();
    let (from, epoch) = bed.wait_served(&all, Duration::from_secs(10));
    let t = host_without_copy(&bed);
    let to = name(t);
    let m = (0..5).find(|&k| name(k) == from).expect("the master");
    let load = Load::start(&bed, 3, 5000, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    // The migration runs on the master; its log shows when the final
    // snapshot is taken: the target dies then, during the final send.
    let target_pid = bed.node(t).pid();
    let (ok, events, killed_at) = std::thread::scope(|s| {
        let run = s.spawn(|| migrate(&bed, m, &to));
        let killed_at = wait_for("the final snapshot", Duration::from_secs(60), || {
            migration_log(&bed, m)
                .iter()
                .any(|e| e["event"] == "stopped")
                .then(|| load.now())
        });
        let _ = std::process::Command::new("kill")
            .args(["-9", &target_pid.to_string()])
            .status();
        let (ok, events) = run.join().expect("migrate");
        (ok, events, killed_at)
    });
    bed.kill(t);
    for e in &events {
        eprintln!("migrate_kill: {e}");
    }
    assert!(!ok, "the migration cannot succeed without its target");
    let failed = event(&events, "failed").expect("a failure event");
    assert_eq!(failed["resumed_on"], from.as_str(), "{failed}");
    // The source serves again, through every live node.
    let live: Vec<usize> = all.iter().copied().filter(|&k| k != t).collect();
    let (now, now_epoch) = bed.wait_served(&live, Duration::from_secs(10));
    let back = load.now().saturating_sub(killed_at);
    std::thread::sleep(Duration::from_secs(1));
    let attempts = load.finish();
    eprintln!(
        "migrate_kill: {to} killed during the final send; {now}@{now_epoch} serves every live node {:.2} s later",
        back.as_secs_f64()
    );
    assert_eq!(now, from, "the site stays on its source");
    // Requests through live nodes were held, then served by the source:
    // none failed (those sent to the dead target's own address did).
    let failed: Vec<_> = attempts
        .iter()
        .filter(|a| a.host != t && a.status != 200)
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let slowest = attempts
        .iter()
        .filter(|a| a.host != t && a.done >= killed_at)
        .map(|a| a.done - a.sent)
        .max()
        .unwrap_or_default();
    eprintln!(
        "migrate_kill: slowest request through a live node after the kill: {:.2} s",
        slowest.as_secs_f64()
    );
    assert!(now_epoch >= epoch);
    let found = bed.found_writes(live[0]);
    let v = check_history(&attempts, &found);
    eprintln!("migrate_kill: {}", v.summary());
    assert!(
        v.lost.is_empty() && v.holes.is_empty() && v.split_epochs.is_empty(),
        "{v:?}"
    );
}

#[test]
fn a_slow_download_in_flight_when_the_pause_starts_completes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("migrate_download") {
        return;
    }
    let bed = Bed::start_sized("mig-dl", 3, "512M", &[]);
    let dir = bed.env.path().join("dl");
    std::fs::create_dir_all(&dir).expect("dir");
    let data: Vec<u8> = (0..(40u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("big.bin"), &data).expect("write");
    std::fs::write(dir.join("index.html"), b"hello\n").expect("write");
    let out = bed.ringhost(
        0,
        &[
            "site",
            "create",
            "dl",
            "--domain",
            "dl.test",
            "--replicas",
            "1",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = bed.ringhost(0, &["site", "push", "dl", common::p(&dir)]);
    assert!(out.status.success(), "{out:?}");
    let v = wait_for("a master", Duration::from_secs(20), || {
        let out = bed.ringhost(0, &["site", "show", "dl", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        v["master"].as_str().map(str::to_owned)
    });
    let m = (0..3).find(|&k| name(k) == v).expect("master host");
    let other = (0..3).find(|&k| k != m).expect("another host");
    let to = name(
        (0..3)
            .find(|&k| k != m && k != other)
            .expect("a third host"),
    );
    let ip = bed.net.ip(other);
    let got = bed.env.path().join("got.bin");
    std::thread::scope(|s| {
        // 40 MiB at 8 MiB/s through a node that is not the master: about
        // 5 s, and the migration starts a second into it.
        let dl = s.spawn(|| {
            std::process::Command::new("curl")
                .args([
                    "-s",
                    "-m",
                    "60",
                    "--limit-rate",
                    "8M",
                    "-o",
                    common::p(&got),
                ])
                .args([
                    "-w",
                    "%{http_code}",
                    "--resolve",
                    &format!("dl.test:8080:{ip}"),
                ])
                .arg("http://dl.test:8080/big.bin")
                .output()
                .expect("curl runs")
        });
        std::thread::sleep(Duration::from_secs(1));
        let out = bed.ringhost(other, &["site", "migrate", "dl", "--to", &to, "--json"]);
        eprintln!("migrate_download: {}", String::from_utf8_lossy(&out.stdout));
        assert!(out.status.success(), "{out:?}");
        let out = dl.join().expect("download");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    });
    let body = std::fs::read(&got).expect("downloaded");
    assert!(
        body == data,
        "the download is whole: {} of {} bytes",
        body.len(),
        data.len()
    );
    // And the site is served by the target now.
    let (status, _) = curl_at(ip, "dl.test", &[], "/index.html");
    assert_eq!(status, 200);
}
