//! Safety under partitions that are not a clean split in two: one-way
//! cuts (a master the others cannot hear, or one that cannot hear them)
//! and a bridge (two sides that cannot reach each other, and a host that
//! reaches both). Five hosts in network namespaces (`common/netns.rs`),
//! real ZFS and the history site under load (`common/bed.rs`).
//!
//! Each test checks, at the end, with the history checker: never two
//! masters acknowledging writes in one epoch, no holes, and every
//! acknowledged write on the final master or in a listed stash (no node
//! dies here, so nothing may be missing); and that the site is served
//! through every node again soon after the heal. During the cut, every
//! host is sampled: no two nodes may answer 200 under the same epoch.
//!
//! Like `failover.rs`, the tests time failure detection on real processes:
//! they run one at a time, need root, `ip netns`, iptables and zfs-fuse,
//! and skip elsewhere with a printed reason (in CI they must run).
//! `RINGHOST_PARTITION_HOLD_MS` sets how long each cut lasts (8000).

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes against the wall clock, figures on stderr

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::bed::{Attempt, Bed, Load, Verdict, check_history, name, parse_claim};
use common::netns::netns_available;
use common::{env_or, zfs_available};

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

static SERIAL: Mutex<()> = Mutex::new(());

fn can_run(test: &str) -> bool {
    zfs_available(test) && netns_available(test)
}

fn hold() -> Duration {
    Duration::from_millis(env_or("RINGHOST_PARTITION_HOLD_MS", 8000))
}

/// A bed of five hosts serving the history site (three copies) under
/// three writers, and the host of its master: (bed, load, master host,
/// master, epoch).
fn loaded_bed(cluster: &str) -> (Bed, Load, usize, String, u64) {
    let bed = Bed::start(cluster, 5, &[]);
    bed.create_history_site(3);
    let load = Load::start(&bed, 3, 100_000, Duration::from_secs(300));
    sleep(Duration::from_secs(3));
    let all: Vec<usize> = (0..5).collect();
    let (master, epoch) = bed.wait_served(&all, Duration::from_secs(10));
    let m = all
        .iter()
        .copied()
        .find(|&k| name(k) == master)
        .expect("the master is a host");
    (bed, load, m, master, epoch)
}

/// The nodes holding a copy of the site, as host k sees it.
fn holders(bed: &Bed, k: usize) -> Vec<String> {
    bed.show(k)
        .and_then(|v| {
            Some(
                v["copies"]
                    .as_array()?
                    .iter()
                    .filter_map(|c| Some(c["node"].as_str()?.to_owned()))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// What every host answered while a cut lasted.
#[derive(Debug, Default)]
struct Samples {
    rounds: usize,
    /// epoch → the nodes that answered 200 under it.
    servers: BTreeMap<u64, BTreeSet<String>>,
    /// host → status → how many times.
    statuses: BTreeMap<usize, BTreeMap<u16, usize>>,
    /// Rounds in which more than one claim (node, epoch) answered 200:
    /// an old master still serving reads beside a new one.
    overlaps: usize,
}

impl Samples {
    fn split_epochs(&self) -> Vec<(u64, BTreeSet<String>)> {
        self.servers
            .iter()
            .filter(|(_, n)| n.len() > 1)
            .map(|(e, n)| (*e, n.clone()))
            .collect()
    }

    fn summary(&self) -> String {
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, s)| format!("{}: {s:?}", name(*k)))
            .collect();
        format!(
            "{} sampling rounds; 200 answered per epoch {:?}; rounds with two claims serving {}; statuses {}",
            self.rounds,
            self.servers,
            self.overlaps,
            statuses.join(", ")
        )
    }
}

/// Samples `GET /` on every host until `hold` has passed since `cut`
/// (bounded also in rounds).
fn sample_until(bed: &Bed, cut: Instant, hold: Duration) -> Samples {
    let mut s = Samples::default();
    while cut.elapsed() < hold && s.rounds < 200 {
        s.rounds += 1;
        let mut claims = BTreeSet::new();
        for k in 0..bed.len() {
            let (status, body) = bed.get(k, "/");
            *s.statuses.entry(k).or_default().entry(status).or_default() += 1;
            if status == 200
                && let Some((node, epoch)) = parse_claim(&body)
            {
                s.servers.entry(epoch).or_default().insert(node.clone());
                claims.insert((node, epoch));
            }
        }
        if claims.len() > 1 {
            s.overlaps += 1;
        }
        sleep(Duration::from_millis(200));
    }
    s
}

/// Heals the cut, waits until every node serves the site (30 s), stops the
/// load, waits (40 s at most) until every acknowledged write is on the
/// master or in a listed stash, reports and checks the history.
fn heal_and_check(test: &str, bed: &Bed, load: Load, samples: &Samples) {
    let all: Vec<usize> = (0..bed.len()).collect();
    bed.net.heal();
    let healed = Instant::now();
    let (who, epoch) = bed.wait_served(&all, Duration::from_secs(30));
    let served = healed.elapsed();
    sleep(Duration::from_secs(2));
    let attempts: Vec<Attempt> = load.finish();
    // The copies settle: a demoted master stashes its divergence, if any.
    let start = Instant::now();
    let v: Verdict = loop {
        let found = bed.found_writes(0);
        let v = check_history(&attempts, &found);
        if v.lost.is_empty() || start.elapsed() > Duration::from_secs(40) {
            break v;
        }
        sleep(Duration::from_millis(500));
    };
    eprintln!("{test}: {} writes sent; {}", attempts.len(), v.summary());
    eprintln!(
        "{test}: {who}@{epoch} serves every node {:.2} s after the heal; settled in {:.2} s; stashes {:?}",
        served.as_secs_f64(),
        start.elapsed().as_secs_f64(),
        bed.stashes(0)
    );
    eprintln!("{test}: during the cut: {}", samples.summary());
    if !v.lost.is_empty() {
        eprintln!(
            "{test}: where the lost writes are:\n{}",
            bed.locate(&v.lost)
        );
        for k in &all {
            if let Some(show) = bed.show(*k) {
                eprintln!("{test}: site show on {}: {show}", name(*k));
            }
        }
    }
    assert!(
        samples.split_epochs().is_empty(),
        "two nodes answered 200 under one epoch during the cut: {:?}",
        samples.split_epochs()
    );
    assert!(
        v.split_epochs.is_empty(),
        "an epoch with two masters: {v:?}"
    );
    assert!(
        v.holes.is_empty(),
        "writes lost before surviving ones: {v:?}"
    );
    assert!(
        v.lost.is_empty(),
        "no node died, so every acknowledged write is on the master or in a stash 40 s after the load stopped: {v:?}"
    );
}

/// The master can send to no one (the other four cannot hear it); it
/// still hears them.
#[test]
fn a_master_the_others_cannot_hear_loses_no_acknowledged_write_and_never_shares_an_epoch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("deaf") {
        return;
    }
    let (bed, load, m, master, epoch) = loaded_bed("pt-deaf");
    let others: Vec<usize> = (0..5).filter(|&k| k != m).collect();
    eprintln!(
        "deaf: master {master}@{epoch}; copies on {:?}; cutting {master} → {:?}",
        holders(&bed, m),
        others.iter().map(|&k| name(k)).collect::<Vec<_>>()
    );
    bed.net.partition_one_way(&[m], &others);
    let cut = Instant::now();
    let samples = sample_until(&bed, cut, hold());
    heal_and_check("deaf", &bed, load, &samples);
}

/// The other four can send nothing to the master; it can still send to
/// them.
#[test]
fn a_master_that_cannot_hear_the_others_loses_no_acknowledged_write_and_never_shares_an_epoch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("mute") {
        return;
    }
    let (bed, load, m, master, epoch) = loaded_bed("pt-mute");
    let others: Vec<usize> = (0..5).filter(|&k| k != m).collect();
    eprintln!(
        "mute: master {master}@{epoch}; copies on {:?}; cutting {:?} → {master}",
        holders(&bed, m),
        others.iter().map(|&k| name(k)).collect::<Vec<_>>()
    );
    bed.net.partition_one_way(&others, &[m]);
    let cut = Instant::now();
    let samples = sample_until(&bed, cut, hold());
    heal_and_check("mute", &bed, load, &samples);
}

/// Side A (the master and one other) and side C (two hosts) cannot reach
/// each other; host B reaches both, so each side sees a majority of three.
#[test]
fn a_bridge_host_between_two_cut_sides_never_lets_two_masters_serve_one_epoch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("bridge") {
        return;
    }
    let (bed, load, m, master, epoch) = loaded_bed("pt-bridge");
    let others: Vec<usize> = (0..5).filter(|&k| k != m).collect();
    let side_a = [m, others[0]];
    let bridge = others[1];
    let side_c = [others[2], others[3]];
    let names = |ks: &[usize]| ks.iter().map(|&k| name(k)).collect::<Vec<_>>();
    eprintln!(
        "bridge: master {master}@{epoch}; copies on {:?}; side A {:?}, bridge {}, side C {:?}",
        holders(&bed, m),
        names(&side_a),
        name(bridge),
        names(&side_c)
    );
    bed.net.partition(&[&side_a, &side_c]);
    let cut = Instant::now();
    let samples = sample_until(&bed, cut, hold());
    heal_and_check("bridge", &bed, load, &samples);
}
