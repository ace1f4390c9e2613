//! Sites on real ZFS (zfs-fuse in CI): replication to every copy, a master
//! killed in the middle of a send, a diverged replica kept as a stash, and
//! bad input. Each node has its own file-backed pool, destroyed afterwards.

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes: wall-clock deadlines, figures on stderr

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, Node, formed, p, run, wait_for, zfs_available};
use serde_json::Value;

fn ringhost(node: &Node, args: &[&str]) -> std::process::Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", p(&node.data_dir)]);
    run(&all)
}

/// Reads a file of a copy, fresh (see `common::drop_caches`).
fn read(path: &Path) -> String {
    common::drop_caches();
    std::fs::read_to_string(path).expect("readable")
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(node: &Node, site: &str) -> Option<Value> {
    let out = ringhost(node, &["site", "show", site, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// (node, seq, guid) of every copy, as `node` reports.
fn heads(v: &Value) -> Vec<(String, u64, String)> {
    v["copies"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["node"].as_str().unwrap_or("").to_owned(),
                        c["head"]["seq"].as_u64().unwrap_or(0),
                        c["head"]["guid"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// xxh3 of every file under `dir` (relative path → digest), skipping `.ringhost`.
fn digests(dir: &Path) -> BTreeMap<String, u64> {
    common::drop_caches();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, u64>) {
        for e in std::fs::read_dir(dir).expect("readable dir") {
            let e = e.expect("entry");
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            if rel == ".ringhost" {
                continue;
            }
            if e.file_type().expect("type").is_dir() {
                walk(root, &path, out);
            } else {
                let data = std::fs::read(&path).expect("readable file");
                out.insert(rel, xxhash(&data));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Compares two digest maps, naming the first difference (not the whole map).
fn assert_same(got: &BTreeMap<String, u64>, want: &BTreeMap<String, u64>, whose: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{whose}: {} files, expected {}",
        got.len(),
        want.len()
    );
    for (path, d) in want {
        assert_eq!(got.get(path), Some(d), "{whose}: '{path}' differs");
    }
}

fn xxhash(data: &[u8]) -> u64 {
    // FNV-1a: a content checksum for comparing copies.
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Creates `site` through `via` and returns the name of its master.
fn create(via: &Node, site: &str, replicas: &str) -> String {
    ok(ringhost(
        via,
        &[
            "site",
            "create",
            site,
            "--domain",
            &format!("{site}.example"),
            "--replicas",
            replicas,
        ],
    ));
    let v = wait_for("the site's master", Duration::from_secs(10), || {
        show(via, site)
    });
    v["master"].as_str().expect("a master").to_owned()
}

/// The master's own head of `site` (a master publishes its head at once).
fn master_seq(nodes: &[&Node], site: &str) -> u64 {
    // A restarted master of a two-node cluster steps down until it sees
    // the other alive, then is elected again after the election warm-up.
    wait_for("the master's own head", Duration::from_secs(30), || {
        nodes.iter().find_map(|n| {
            let v = show(n, site)?;
            (v["master"].as_str()? == n.name).then_some(())?;
            heads(&v)
                .into_iter()
                .find(|(c, _, _)| *c == n.name)
                .map(|(_, s, _)| s)
        })
    })
}

/// Waits until every copy, as `nodes[0]` reports, is at the master's head
/// and that head is at least the master's own head now.
fn wait_equal_heads(nodes: &[&Node], site: &str, copies: usize, within: Duration) -> u64 {
    let start = Instant::now();
    let at_least = master_seq(nodes, site);
    let left = within
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    wait_for("every copy at the master's head", left, || {
        let v = show(nodes[0], site)?;
        let hs = heads(&v);
        let master = v["master"].as_str()?;
        let (_, seq, guid) = hs.iter().find(|(n, _, _)| n == master)?.clone();
        (seq >= at_least
            && hs.len() == copies
            && hs.iter().all(|(_, s, g)| *s == seq && *g == guid))
        .then_some(seq)
    })
}

#[test]
fn a_50mib_push_through_a_non_master_reaches_every_copy_byte_identical_within_10s() {
    if !zfs_available("push_50mib") {
        return;
    }
    let env = Env::new_zfs("demo", &["n1", "n2", "n3"], "1G");
    let nodes = env.start_cluster(3, &[]);
    formed(&nodes);
    let master = create(&nodes[0], "blog", "3");
    let via = nodes
        .iter()
        .find(|n| n.name != master)
        .expect("a non-master");

    // 50 MiB: 3000 small files in 30 directories, and 4 large ones.
    let src = env.path().join("content");
    let mut total = 0;
    for i in 0..3000u64 {
        let dir = src.join(format!("d{:02}", i % 30));
        std::fs::create_dir_all(&dir).expect("dir");
        let data = bytes(i, 1000 + (i as usize * 7919) % 9000);
        total += data.len();
        std::fs::write(dir.join(format!("f{i}.txt")), data).expect("write");
    }
    for i in 0..4u64 {
        let data = bytes(10_000 + i, 9 << 20);
        total += data.len();
        std::fs::write(src.join(format!("large{i}.bin")), data).expect("write");
    }
    eprintln!(
        "pushing {:.1} MiB through {} (master {master})",
        total as f64 / 1048576.0,
        via.name
    );
    let start = Instant::now();
    ok(ringhost(via, &["site", "push", "blog", p(&src)]));
    let pushed = start.elapsed();
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_equal_heads(
        &refs,
        "blog",
        3,
        Duration::from_secs(10)
            .saturating_sub(pushed)
            .max(Duration::from_millis(1)),
    );
    eprintln!(
        "push took {pushed:?}; every copy at the same head {:?} after the push began",
        start.elapsed()
    );
    assert!(
        start.elapsed() <= Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    let want = digests(&src);
    for n in &nodes {
        assert_same(&digests(&n.site_dir("blog")), &want, &n.name);
    }
    // Every node reports the same heads.
    let h0 = heads(&show(&nodes[0], "blog").expect("show"));
    for n in &nodes[1..] {
        let mut a = heads(&show(n, "blog").expect("show"));
        let mut b = h0.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{} reports other heads", n.name);
    }
}

#[test]
fn a_master_killed_mid_send_leaves_the_replica_readable_then_it_catches_up_incrementally() {
    if !zfs_available("kill_mid_send") {
        return;
    }
    // Two nodes: when the master dies, the replica alone is no majority,
    // so it stays a replica and must wait for the master to return.
    let env = Env::new_zfs("demo", &["n1", "n2"], "1G");
    let mut nodes = env.start_cluster(2, &[]);
    formed(&nodes);
    let master_name = create(&nodes[0], "blog", "2");
    let mi = nodes
        .iter()
        .position(|n| n.name == master_name)
        .expect("master");
    let ri = 1 - mi;
    let v1 = env.path().join("v1");
    std::fs::create_dir_all(&v1).expect("dir");
    std::fs::write(v1.join("index.html"), "version one").expect("write");
    ok(ringhost(&nodes[mi], &["site", "push", "blog", p(&v1)]));
    let before = wait_equal_heads(&[&nodes[0], &nodes[1]], "blog", 2, Duration::from_secs(10));

    // A 300 MiB change; kill the master as soon as the replica is receiving.
    let v2 = env.path().join("v2");
    std::fs::create_dir_all(&v2).expect("dir");
    std::fs::write(v2.join("index.html"), "version two").expect("write");
    std::fs::write(v2.join("big.bin"), bytes(7, 300 << 20)).expect("write");
    ok(ringhost(&nodes[mi], &["site", "push", "blog", p(&v2)]));
    let receiving = format!(
        "receiving snapshots site=blog from={master_name} seq={}",
        before + 1
    );
    wait_for(
        "the replica to start receiving",
        Duration::from_secs(20),
        || nodes[ri].log_text().contains(&receiving).then_some(()),
    );
    nodes[mi].kill9();
    let killed = Instant::now();

    // The replica stays at its previous snapshot, readable.
    std::thread::sleep(Duration::from_secs(2));
    let v = show(&nodes[ri], "blog").expect("replica answers");
    let mine = heads(&v)
        .into_iter()
        .find(|(n, _, _)| *n == nodes[ri].name)
        .expect("its copy");
    assert_eq!(
        mine.1, before,
        "replica head after the interrupted send: {v}"
    );
    assert_eq!(
        read(&nodes[ri].site_dir("blog").join("index.html")),
        "version one"
    );
    assert!(!nodes[ri].site_dir("blog").join("big.bin").exists());

    // The master returns (same data dir, same pool): the replica catches up
    // with an incremental stream.
    let seed = nodes[ri].mesh();
    nodes[mi] = env.start(&master_name, &[seed], &[]);
    wait_equal_heads(&[&nodes[0], &nodes[1]], "blog", 2, Duration::from_secs(60));
    eprintln!(
        "replica caught up {:?} after the master was killed",
        killed.elapsed()
    );
    assert_eq!(
        read(&nodes[ri].site_dir("blog").join("index.html")),
        "version two"
    );
    let log = nodes[ri].log_text();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("receiving snapshots site=blog"))
        .expect("a receive");
    assert!(
        last.contains("incremental=true"),
        "the catch-up was not incremental: {last}"
    );
    assert_same(
        &digests(&nodes[ri].site_dir("blog")),
        &digests(&v2),
        &nodes[ri].name,
    );
}

#[test]
fn a_replica_with_a_snapshot_the_master_lacks_keeps_it_as_a_stash_then_follows() {
    if !zfs_available("diverged") {
        return;
    }
    let env = Env::new_zfs("demo", &["n1", "n2", "n3"], "512M");
    let mut nodes = env.start_cluster(3, &[]);
    formed(&nodes);
    let old_master = create(&nodes[0], "blog", "3");
    let oi = nodes
        .iter()
        .position(|n| n.name == old_master)
        .expect("master");
    let v1 = env.path().join("v1");
    std::fs::create_dir_all(&v1).expect("dir");
    std::fs::write(v1.join("index.html"), "one").expect("write");
    ok(ringhost(&nodes[oi], &["site", "push", "blog", p(&v1)]));
    let refs: Vec<&Node> = nodes.iter().collect();
    let base = wait_equal_heads(&refs, "blog", 3, Duration::from_secs(10));

    // The master dies; the other two (a majority) elect a new one, which
    // takes a write the old master never sees.
    let pool = nodes[oi].pool().expect("zfs pool");
    nodes[oi].kill9();
    let others: Vec<usize> = (0..3).filter(|i| *i != oi).collect();
    let new_master = wait_for("a new master", Duration::from_secs(15), || {
        let v = show(&nodes[others[0]], "blog")?;
        let m = v["master"].as_str()?.to_owned();
        (m != old_master).then_some(m)
    });
    let ni = nodes
        .iter()
        .position(|n| n.name == new_master)
        .expect("new master");
    let v2 = env.path().join("v2");
    std::fs::create_dir_all(&v2).expect("dir");
    std::fs::write(v2.join("index.html"), "two, on the new master").expect("write");
    ok(ringhost(&nodes[ni], &["site", "push", "blog", p(&v2)]));

    // Meanwhile the old master's copy got a snapshot of its own (as if it
    // had taken a write just before it died): same seq, another history.
    let ds = format!("{pool}/sites/blog");
    std::fs::write(
        nodes[oi].site_dir("blog").join("lost.html"),
        "only on the old master",
    )
    .expect("write");
    let snap = Command::new("zfs")
        .args(["snapshot", &format!("{ds}@ringhost-{}", base + 1)])
        .output()
        .expect("zfs");
    assert!(snap.status.success(), "{snap:?}");

    // It returns: it steps down, stashes its own snapshot, follows.
    let seed = nodes[ni].mesh();
    nodes[oi] = env.start(&old_master, &[seed], &[]);
    let refs: Vec<&Node> = nodes.iter().collect();
    wait_equal_heads(&refs, "blog", 3, Duration::from_secs(30));
    let v = wait_for("the stash to be listed", Duration::from_secs(10), || {
        let v = show(&nodes[others[0]], "blog")?;
        (!v["stashes"].as_array()?.is_empty()).then_some(v)
    });
    let stash = &v["stashes"][0];
    assert_eq!(stash["node"], old_master.as_str(), "{v}");
    assert_eq!(v["master"], new_master.as_str());
    assert_eq!(
        read(&nodes[oi].site_dir("blog").join("index.html")),
        "two, on the new master"
    );
    // The stashed data is still there, in the old master's pool.
    let list = Command::new("zfs")
        .args([
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name",
            "-r",
            &format!("{pool}/stash"),
        ])
        .output()
        .expect("zfs");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains(&format!("@ringhost-{}", base + 1)),
        "stash snapshots: {text}"
    );
}

#[test]
fn bad_site_input_gets_clear_errors_and_leaves_nothing_half_created() {
    if !zfs_available("bad_site_input") {
        return;
    }
    let env = Env::new_zfs("demo", &["n1"], "64M");
    let nodes = env.start_cluster(1, &[]);
    formed(&nodes);
    let n1 = &nodes[0];
    let refused = |args: &[&str], needle: &str| {
        let out = ringhost(n1, args);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    };
    refused(
        &["site", "create", "Bad_Name", "--domain", "a.example"],
        "invalid site name 'Bad_Name'",
    );
    refused(
        &["site", "create", "ok", "--domain", "bad domain"],
        "invalid domain 'bad domain'",
    );
    refused(
        &[
            "site",
            "create",
            "ok",
            "--domain",
            "a.example",
            "--replicas",
            "0",
        ],
        "invalid replica count",
    );
    refused(&["site", "show", "nope"], "no site 'nope'");
    let empty_dir = env.path().join("empty");
    std::fs::create_dir_all(&empty_dir).expect("dir");
    refused(&["site", "push", "nope", p(&empty_dir)], "no site 'nope'");
    create(n1, "one", "1");
    refused(
        &["site", "create", "one", "--domain", "b.example"],
        "site 'one' already exists",
    );
    refused(
        &["site", "create", "two", "--domain", "one.example"],
        "already belongs to site 'one'",
    );

    // A full pool: the upload fails, the site keeps what it had.
    let small = env.path().join("small");
    std::fs::create_dir_all(&small).expect("dir");
    std::fs::write(small.join("index.html"), "kept").expect("write");
    ok(ringhost(n1, &["site", "push", "one", p(&small)]));
    let big = env.path().join("big");
    std::fs::create_dir_all(&big).expect("dir");
    std::fs::write(big.join("huge.bin"), bytes(3, 120 << 20)).expect("write");
    let out = ringhost(n1, &["site", "push", "one", p(&big)]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("No space left") || err.contains("507"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(n1.site_dir("one").join("index.html")).expect("kept"),
        "kept"
    );
    assert!(!n1.site_dir("one").join(".ringhost/incoming").exists());
    // A site created on the full pool is refused and leaves no dataset.
    let pool = n1.pool().expect("pool");
    let filler = n1.site_dir("one").join("filler.bin");
    let _ = std::fs::write(&filler, bytes(4, 200 << 20));
    let out = ringhost(
        n1,
        &[
            "site",
            "create",
            "three",
            "--domain",
            "three.example",
            "--replicas",
            "1",
        ],
    );
    if !out.status.success() {
        let list = Command::new("zfs")
            .args(["list", "-H", "-o", "name", "-r", &pool])
            .output()
            .expect("zfs");
        let text = String::from_utf8_lossy(&list.stdout);
        assert!(
            !text.contains("sites/three"),
            "half-created dataset left: {text}"
        );
    }
    let _ = std::fs::remove_file(&filler);

    // No zfs binary: the node refuses to start with exit 6 and says why.
    let empty = env.path().join("nobin");
    std::fs::create_dir_all(&empty).expect("dir");
    let out = Command::new(common::bin())
        .args([
            "node",
            "--name",
            "n1",
            "--data-dir",
            p(&env.data_dir("other")),
            "--certs",
            p(&env.certs()),
        ])
        .args(["--mesh", "127.0.0.1:0"])
        .env("PATH", &empty)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zpool"), "{err}");
    assert!(!env.data_dir("other").join("ready.json").exists());
}

#[test]
fn after_200_snapshot_intervals_the_chain_stays_bounded_and_replicas_stay_incremental() {
    if !zfs_available("prune") {
        return;
    }
    let env = Env::new_zfs("demo", &["n1", "n2"], "256M");
    // A compressed policy so that 200 intervals span several windows:
    // everything of the last 3 s, then one per hour and day bucket.
    let flags = [
        "--snapshot-interval",
        "50ms",
        "--keep-all",
        "3s",
        "--keep-hourly",
        "1s",
        "--keep-daily",
        "1s",
    ];
    let nodes = env.start_cluster(2, &flags);
    formed(&nodes);
    let master = create(&nodes[0], "blog", "2");
    let mi = nodes.iter().position(|n| n.name == master).expect("master");
    let ri = 1 - mi;
    let dir = env.path().join("content");
    std::fs::create_dir_all(&dir).expect("dir");
    let start = Instant::now();
    for i in 0..200 {
        std::fs::write(dir.join("index.html"), format!("version {i}")).expect("write");
        ok(ringhost(&nodes[mi], &["site", "push", "blog", p(&dir)]));
    }
    eprintln!(
        "200 pushes, each in its own snapshot, took {:?}",
        start.elapsed()
    );
    wait_equal_heads(&[&nodes[0], &nodes[1]], "blog", 2, Duration::from_secs(10));
    let count = |n: &Node| {
        let pool = n.pool().expect("pool");
        let out = Command::new("zfs")
            .args([
                "list",
                "-H",
                "-t",
                "snapshot",
                "-o",
                "name",
                "-r",
                &format!("{pool}/sites/blog"),
            ])
            .output()
            .expect("zfs");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let (m, r) = (count(&nodes[mi]), count(&nodes[ri]));
    eprintln!("snapshots kept after 200 intervals: master {m}, replica {r}");
    let seq = master_seq(&[&nodes[0], &nodes[1]], "blog");
    assert!(seq >= 200, "only {seq} snapshots were taken");
    // 3 s of 50 ms intervals at most (pushes are slower), plus the hour and
    // day buckets, the head and the replica's base.
    assert!(m <= 3000 / 50 + 4, "master keeps {m} snapshots");
    assert!(r <= 3000 / 50 + 4, "replica keeps {r} snapshots");
    let log = nodes[ri].log_text();
    let full = log
        .lines()
        .filter(|l| l.contains("receiving snapshots site=blog") && l.contains("incremental=false"))
        .count();
    let incr = log
        .lines()
        .filter(|l| l.contains("receiving snapshots site=blog") && l.contains("incremental=true"))
        .count();
    eprintln!("replica receives: {full} full, {incr} incremental");
    assert_eq!(full, 1, "the replica needed a full resend");
    assert!(incr >= 10, "{incr} incremental receives");
    assert_eq!(
        read(&nodes[ri].site_dir("blog").join("index.html")),
        "version 199"
    );
}

#[test]
fn delete_removes_every_copy_after_confirmation() {
    if !zfs_available("delete") {
        return;
    }
    let env = Env::new_zfs("demo", &["n1", "n2"], "256M");
    let nodes = env.start_cluster(2, &[]);
    formed(&nodes);
    create(&nodes[0], "gone", "2");
    wait_equal_heads(&[&nodes[0], &nodes[1]], "gone", 2, Duration::from_secs(10));
    let out = ringhost(&nodes[1], &["site", "delete", "gone"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    ok(ringhost(&nodes[1], &["site", "delete", "gone", "--yes"]));
    let datasets = |n: &Node| {
        let pool = n.pool().expect("pool");
        let out = Command::new("zfs")
            .args(["list", "-H", "-o", "name", "-r", &pool])
            .output()
            .expect("zfs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for("every copy destroyed", Duration::from_secs(15), || {
        nodes
            .iter()
            .all(|n| !datasets(n).contains("sites/gone"))
            .then_some(())
    });
    for n in &nodes {
        let out = ringhost(n, &["site", "list", "--json"]);
        let v: Value = serde_json::from_slice(&ok(out).into_bytes()).expect("json");
        assert_eq!(
            v["sites"].as_array().map(Vec::len),
            Some(0),
            "{}: {v}",
            n.name
        );
    }
    // The name can be used again: a new incarnation is not deleted.
    create(&nodes[0], "gone", "2");
    wait_equal_heads(&[&nodes[0], &nodes[1]], "gone", 2, Duration::from_secs(10));
}
