//! Failover and partitions, on five hosts in network namespaces (see
//! `common/netns.rs`), real ZFS and a `command` site whose every
//! acknowledged write is checked afterwards (`common/bed.rs`).
//!
//! The tests time failure detection on real processes: they run one at a
//! time. They need root, `ip netns`, iptables and zfs-fuse; in CI they must
//! run, elsewhere they skip with a printed reason.

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes against the wall clock, figures on stderr

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::bed::{Attempt, Bed, DOMAIN, Load, Verdict, check_history, curl_at, name, parse_claim};
use common::netns::netns_available;
use common::{env_or, wait_for, zfs_available};

fn sleep(d: Duration) {
    std::thread::sleep(d);
}

static SERIAL: Mutex<()> = Mutex::new(());

fn can_run(test: &str) -> bool {
    zfs_available(test) && netns_available(test)
}

/// Waits until host k answers `status` for the site's front page.
fn wait_status(bed: &Bed, k: usize, status: u16, within: Duration) {
    let start = Instant::now();
    let mut last = (0, String::new());
    while start.elapsed() < within {
        last = bed.get(k, "/");
        if last.0 == status {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    panic!(
        "{} did not answer {status} within {within:?}; last: {} {:?}",
        name(k),
        last.0,
        last.1
    );
}

/// Waits until every host in `ks` is served by a master other than
/// `not` at an epoch above `above`.
fn wait_new_master(
    bed: &Bed,
    ks: &[usize],
    not: &str,
    above: u64,
    within: Duration,
) -> (String, u64) {
    wait_for(
        &format!("a new master above epoch {above} through {ks:?}"),
        within,
        || {
            let mut seen = None;
            for &k in ks {
                let (status, body) = bed.get(k, "/");
                let who =
                    parse_claim(&body).filter(|(n, e)| status == 200 && n != not && *e > above)?;
                if seen.as_ref().is_some_and(|s| *s != who) {
                    return None;
                }
                seen = Some(who);
            }
            seen
        },
    )
}

/// The site's master (name, epoch) and a split that puts it in a minority
/// with one other host: (master, epoch, [master host, other], majority).
fn master_and_sides(bed: &Bed) -> (String, u64, [usize; 2], Vec<usize>) {
    let all: Vec<usize> = (0..bed.len()).collect();
    let (old, epoch) = bed.wait_served(&all, Duration::from_secs(10));
    let m = all
        .iter()
        .copied()
        .find(|&k| name(k) == old)
        .expect("the master is a host");
    let other = all.iter().copied().find(|&k| k != m).expect("another host");
    let minority = [m, other];
    let majority = all.into_iter().filter(|k| !minority.contains(k)).collect();
    (old, epoch, minority, majority)
}

/// The acknowledgement span of the claim `epoch`.
fn claim(v: &Verdict, epoch: u64) -> Option<(Duration, Duration)> {
    v.claims.iter().find(|c| c.0 == epoch).map(|c| (c.1, c.2))
}

fn report(test: &str, attempts: &[Attempt], v: &Verdict) {
    eprintln!("{test}: {} writes sent; {}", attempts.len(), v.summary());
    // Which master acknowledged the lost writes, and when (seconds into
    // the load): the claim whose end they fall into names the path.
    let mut by: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for a in attempts.iter().filter(|a| v.lost.contains(&a.id)) {
        let key =
            a.by.as_ref()
                .map_or_else(|| "?".to_owned(), |(n, e)| format!("{n}@{e}"));
        let t = a.done.as_secs_f64();
        let e = by.entry(key).or_insert((0, t, t));
        e.0 += 1;
        e.1 = e.1.min(t);
        e.2 = e.2.max(t);
    }
    for (claim, (n, first, last)) in by {
        eprintln!("{test}: {n} lost writes acknowledged by {claim} at {first:.2}-{last:.2} s");
    }
}

#[test]
fn a_master_cut_off_in_a_minority_answers_503_while_the_majority_takes_over_and_nothing_acknowledged_is_lost()
 {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("minority") {
        return;
    }
    let bed = Bed::start("fo-minority", 5, &[]);
    bed.create_history_site(3);
    let load = Load::start(&bed, 3, 5000, Duration::from_secs(240));
    sleep(Duration::from_secs(3));
    let all: Vec<usize> = (0..5).collect();
    let (old, epoch0, minority, majority) = master_and_sides(&bed);
    let m = minority[0];

    bed.net.partition(&[&minority, &majority]);
    let cut = Instant::now();
    // The minority stops serving (503, no second master there)...
    for &k in &minority {
        wait_status(&bed, k, 503, Duration::from_secs(10));
    }
    let fenced = cut.elapsed();
    // ...while the majority elects a master with a higher epoch.
    let (new, epoch1) = wait_new_master(&bed, &majority, &old, epoch0, Duration::from_secs(20));
    let promoted = cut.elapsed();
    // Both stay so while the split lasts.
    for _ in 0..6 {
        for &k in &minority {
            let (status, body) = bed.get(k, "/");
            assert_eq!(status, 503, "{} during the split: {body}", name(k));
        }
        sleep(Duration::from_millis(500));
    }

    bed.net.heal();
    let healed = Instant::now();
    // The old master steps down: every node now reaches the new one.
    let after = bed.wait_served(&all, Duration::from_secs(30));
    assert_eq!(after, (new.clone(), epoch1), "after the heal");
    let served = healed.elapsed();
    sleep(Duration::from_secs(2));
    let attempts = load.finish();
    // The old master follows the new one again (its divergence, if any,
    // stashed first).
    wait_for("the old master to follow", Duration::from_secs(30), || {
        let copy = bed.copy_of(m, old.as_str())?;
        (copy["role"].as_str() == Some("replica") && copy["epoch"].as_u64() >= Some(epoch1))
            .then_some(())
    });
    let found = bed.found_writes(0);
    let v = check_history(&attempts, &found);
    report("minority", &attempts, &v);
    eprintln!(
        "minority: fenced after {:.2} s, new master {new}@{epoch1} after {:.2} s, all served {:.2} s after the heal, stashes {:?}",
        fenced.as_secs_f64(),
        promoted.as_secs_f64(),
        served.as_secs_f64(),
        bed.stashes(0)
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
        "no node died, so every acknowledged write is on the master or in a stash: {v:?}"
    );
    let (_, last_old) = claim(&v, epoch0).expect("the old master took writes");
    let (first_new, _) = claim(&v, epoch1).expect("the new master took writes");
    assert!(
        last_old < first_new,
        "the old master acknowledged a write after the new one began: {v:?}"
    );
}

#[test]
fn with_the_quorum_guard_off_both_sides_serve_a_split_and_the_heal_stashes_the_divergence() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("no_guard") {
        return;
    }
    let bed = Bed::start("fo-noguard", 5, &["--quorum-guard", "off"]);
    bed.create_history_site(3);
    let load = Load::start(&bed, 3, 5000, Duration::from_secs(240));
    sleep(Duration::from_secs(3));
    let all: Vec<usize> = (0..5).collect();
    let (old, epoch0, minority, majority) = master_and_sides(&bed);

    bed.net.partition(&[&minority, &majority]);
    // The majority elects its own master; the minority keeps serving.
    let (new, epoch1) = wait_new_master(&bed, &majority, &old, epoch0, Duration::from_secs(20));
    for &k in &minority {
        let (status, body) = bed.get(k, "/");
        assert_eq!(
            (status, parse_claim(&body)),
            (200, Some((old.clone(), epoch0))),
            "{} during the split",
            name(k)
        );
    }
    sleep(Duration::from_secs(3));

    bed.net.heal();
    // One master again, the higher claim.
    let after = bed.wait_served(&all, Duration::from_secs(30));
    assert_eq!(after, (new.clone(), epoch1), "after the heal");
    sleep(Duration::from_secs(1));
    let attempts = load.finish();
    // The old master's writes during the split are kept in a stash. A
    // replica that pulled some of them stashes too, and may list its
    // stash first: wait for the old master's.
    let stashes = wait_for("the old master's stash", Duration::from_secs(30), || {
        let s = bed.stashes(0);
        s.iter().any(|(node, _)| *node == old).then_some(s)
    });
    let found = bed.found_writes(0);
    let v = check_history(&attempts, &found);
    report("no_guard", &attempts, &v);
    eprintln!("no_guard: stashes {stashes:?}");
    assert!(
        stashes.iter().any(|(node, _)| *node == old),
        "the old master's stash is listed: {stashes:?}"
    );
    let (_, last_old) = claim(&v, epoch0).expect("the old master took writes");
    let (first_new, _) = claim(&v, epoch1).expect("the new master took writes");
    assert!(
        first_new < last_old,
        "both sides acknowledged writes during the split: {v:?}"
    );
    assert!(
        v.split_epochs.is_empty(),
        "an epoch with two masters: {v:?}"
    );
    assert!(v.holes.is_empty(), "{v:?}");
    assert!(v.lost.is_empty(), "nothing is destroyed: {v:?}");
}

/// A write already inside the master's site command when the master is
/// cut off alone: the master steps down (its copy becomes a replica at the
/// snapshot of what it held) and only then may the command finish the
/// write. A master that stepped down acknowledges nothing: its command is
/// stopped before that snapshot, so the write is refused, never
/// acknowledged after the snapshot and then rolled away by the heal.
#[test]
fn a_write_inside_the_command_when_the_master_steps_down_is_not_acknowledged() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("inflight") {
        return;
    }
    let bed = Bed::start("fo-inflight", 3, &[]);
    bed.create_history_site(3);
    let all: Vec<usize> = (0..3).collect();
    let (old, epoch0) = bed.wait_served(&all, Duration::from_secs(10));
    let m = all
        .iter()
        .copied()
        .find(|&k| name(k) == old)
        .expect("the master is a host");
    let others: Vec<usize> = all.iter().copied().filter(|&k| k != m).collect();
    let flag = bed.env.path().join("release-the-write");
    let id: u64 = 9_000_001;
    let ip = bed.net.ip(m);
    let path = format!("/w/{id}?until={}", flag.display());
    let write =
        std::thread::spawn(move || curl_at(ip, DOMAIN, &["-X", "POST", "-m", "120"], &path));
    // The write waits inside the command; a plain one shows the command
    // takes writes.
    sleep(Duration::from_secs(1));
    let (status, body) = bed.curl(m, &["-X", "POST"], "/w/9000000");
    assert_eq!(status, 200, "a plain write before the split: {body}");

    bed.net.partition(&[&[m], &others]);
    let cut = Instant::now();
    wait_for(
        "the cut-off master to step down",
        Duration::from_secs(30),
        || {
            let copy = bed.copy_of(m, old.as_str())?;
            (copy["role"].as_str() == Some("replica")).then_some(())
        },
    );
    let stepped_down = cut.elapsed();
    std::fs::write(&flag, b"go").expect("write the flag");
    let (status, body) = write.join().expect("the write's thread");
    let (new, epoch1) = wait_new_master(&bed, &others, &old, epoch0, Duration::from_secs(20));

    bed.net.heal();
    bed.wait_served(&all, Duration::from_secs(30));
    sleep(Duration::from_secs(3));
    let found = bed.found_writes(0);
    eprintln!(
        "inflight: {old}@{epoch0} stepped down {:.2} s after the cut, {new}@{epoch1} took over; the held write answered {status} {:?}; found: {:?}",
        stepped_down.as_secs_f64(),
        body.trim(),
        found.get(&id)
    );
    assert!(
        found.contains_key(&9_000_000),
        "the plain write before the split survives: {found:?}"
    );
    assert_ne!(
        status,
        200,
        "a master that had stepped down acknowledged a write ({body:?}); kept: {:?}\n{}",
        found.get(&id),
        bed.locate(&[id])
    );
}

/// A master killed with writes it acknowledged after its last snapshot
/// (they are only in its live dataset) comes back after another node took
/// over, and no write reaches the new master: nothing makes the new master
/// snapshot again, so the old master's copy is never asked to pull. Its
/// unsnapshotted writes must still end up where the cluster lists them (a
/// stash), not stay invisible in a replica's live dataset.
#[test]
fn a_killed_masters_unsnapshotted_writes_are_kept_in_a_listed_stash_after_it_comes_back() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("tail") {
        return;
    }
    let rounds: usize = env_or("RINGHOST_TAIL_ROUNDS", 2);
    let mut bed = Bed::start("fo-tail", 5, &[]);
    bed.create_history_site(3);
    let all: Vec<usize> = (0..5).collect();
    let mut attempts = Vec::new();
    for round in 0..rounds {
        let (old, epoch0) = bed.wait_served(&all, Duration::from_secs(30));
        let m = all
            .iter()
            .copied()
            .find(|&k| name(k) == old)
            .expect("the master is a host");
        // Writers through the master itself, so that the last writes land
        // there just before the kill.
        let load = Load::start(&bed, 3, 100_000, Duration::from_secs(60));
        sleep(Duration::from_millis(2500));
        bed.kill(m);
        attempts.extend(load.finish());
        let others: Vec<usize> = all.iter().copied().filter(|&k| k != m).collect();
        let (new, epoch1) = wait_new_master(&bed, &others, &old, epoch0, Duration::from_secs(30));
        bed.restart(m);
        bed.wait_alive(&all, Duration::from_secs(30));
        // Every acknowledged write is on the master or in a listed stash.
        let start = Instant::now();
        let (found, v) = loop {
            let found = bed.found_writes(others[0]);
            let v = check_history(&attempts, &found);
            if v.lost.is_empty() {
                break (found, v);
            }
            assert!(
                start.elapsed() < Duration::from_secs(40),
                "round {round}: acknowledged writes are on no master and in no listed stash 40 s after {old} came back: {v:?}\nwhere they are:\n{}",
                bed.locate(&v.lost)
            );
            sleep(Duration::from_millis(500));
        };
        eprintln!(
            "tail: round {round}: {old}@{epoch0} killed, {new}@{epoch1} took over; {} acknowledged, {} found in stashes",
            v.acknowledged,
            found.values().filter(|w| w.starts_with("stash")).count()
        );
    }
}

/// A small deterministic generator for the fault schedule.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn fifty_rounds_of_kills_restarts_and_partitions_under_load_lose_nothing_beyond_the_rpo() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("rounds") {
        return;
    }
    let rounds: usize = env_or("RINGHOST_FAULT_ROUNDS", 50);
    let seed: u64 = env_or("RINGHOST_FAULT_SEED", 7);
    let mut rng = Rng(seed.max(1));
    let mut bed = Bed::start("fo-rounds", 5, &[]);
    bed.create_history_site(3);
    let load = Load::start(&bed, 3, 100_000, Duration::from_secs(1200));
    let all: Vec<usize> = (0..5).collect();
    let mut recoveries: Vec<f64> = Vec::new();
    let (mut kills, mut partitions) = (0, 0);
    for round in 0..rounds {
        let master = bed.master_host(0).unwrap_or(0);
        // Half the faults hit the master.
        let target = if rng.below(2) == 0 {
            master
        } else {
            rng.below(5)
        };
        // Short faults heal before anyone notices; long ones fail over.
        let hold = Duration::from_millis(2000 + 1000 * rng.below(6) as u64);
        if rng.below(2) == 0 {
            kills += 1;
            bed.kill(target);
            sleep(hold);
            bed.restart(target);
        } else {
            partitions += 1;
            // A minority of one or two hosts, the target among them.
            let mut minority = vec![target];
            if rng.below(2) == 0 {
                minority.push((target + 1 + rng.below(4)) % 5);
            }
            let majority: Vec<usize> = all
                .iter()
                .copied()
                .filter(|k| !minority.contains(k))
                .collect();
            bed.net.partition(&[&minority, &majority]);
            sleep(hold);
            bed.net.heal();
        }
        let healed = Instant::now();
        bed.wait_alive(&all, Duration::from_secs(30));
        let (who, epoch) = bed.wait_served(&all, Duration::from_secs(30));
        let took = healed.elapsed().as_secs_f64();
        recoveries.push(took);
        eprintln!("round {round}: {who}@{epoch} serves every node {took:.2} s after the heal");
    }
    sleep(Duration::from_secs(2));
    let attempts = load.finish();
    // Every copy settles: the history on the master is final.
    sleep(Duration::from_secs(3));
    let found = bed.found_writes(0);
    let v = check_history(&attempts, &found);
    recoveries.sort_by(f64::total_cmp);
    eprintln!(
        "rounds: {rounds} rounds (seed {seed}): {kills} kill -9 + restart, {partitions} partitions; served again after each heal: median {:.2} s, max {:.2} s",
        recoveries[recoveries.len() / 2],
        recoveries.last().copied().unwrap_or_default()
    );
    report("rounds", &attempts, &v);
    if !v.lost.is_empty() {
        eprintln!(
            "rounds: where the lost writes are:\n{}",
            bed.locate(&v.lost)
        );
        for k in 0..5 {
            if let Some(show) = bed.show(k) {
                eprintln!("rounds: site show on {}: {show}", name(k));
            }
        }
    }
    assert!(
        v.claims.len() > 1,
        "the faults caused no failover at all: {v:?}"
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
        "every killed node came back with its disk: nothing acknowledged may be missing: {v:?}"
    );
}

#[test]
fn a_lost_copy_is_replaced_by_a_full_copy_on_another_node() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !can_run("repair") {
        return;
    }
    let mut bed = Bed::start("fo-repair", 5, &[]);
    bed.create_history_site(3);
    let all: Vec<usize> = (0..5).collect();
    let (master, _) = bed.wait_served(&all, Duration::from_secs(10));
    // A write, so the copies hold more than the push.
    let (status, _) = bed.curl(0, &["-X", "POST"], "/w/1");
    assert_eq!(status, 200);
    let copies = |bed: &Bed| -> Option<(String, Vec<(String, serde_json::Value)>)> {
        let v = bed.show(0)?;
        let master = v["master"].as_str()?.to_owned();
        let head = v["copies"]
            .as_array()?
            .iter()
            .find(|c| c["node"].as_str() == Some(master.as_str()))?["head"]
            .clone();
        let holders = v["copies"]
            .as_array()?
            .iter()
            .filter(|c| c["head"] == head && c["alive"].as_bool() != Some(false))
            .filter_map(|c| Some((c["node"].as_str()?.to_owned(), c["head"].clone())))
            .collect();
        Some((master, holders))
    };
    let before = wait_for("three copies at one head", Duration::from_secs(30), || {
        copies(&bed).filter(|(_, h)| h.len() == 3)
    });
    let replica = before
        .1
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| *n != master)
        .expect("a replica");
    let r = (0..5).find(|&k| name(k) == replica).expect("a host");
    bed.kill(r);
    // Another node takes a full copy: three live copies at the master's
    // head again, none of them on the dead node.
    let after = wait_for("a third copy elsewhere", Duration::from_secs(60), || {
        copies(&bed).filter(|(_, h)| h.len() == 3 && h.iter().all(|(n, _)| *n != replica))
    });
    let newcomer = after
        .1
        .iter()
        .map(|(n, _)| n.clone())
        .find(|n| !before.1.iter().any(|(b, _)| b == n))
        .expect("a new holder");
    eprintln!(
        "repair: {replica} died; {newcomer} received a full copy; copies now {:?}",
        after.1.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    // The site still answers, with its history, through every live node.
    let live: Vec<usize> = all.iter().copied().filter(|&k| k != r).collect();
    bed.wait_served(&live, Duration::from_secs(10));
    let (status, log) = bed.get(live[0], "/log");
    assert_eq!(status, 200);
    assert!(
        log.lines()
            .next()
            .is_some_and(|l| l.starts_with(&format!("1 {master} "))),
        "the write is kept: {log}"
    );
}
