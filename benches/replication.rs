//! Replication figures of a real cluster on ZFS (zfs-fuse here):
//!
//! 1. throughput of a 200 MiB change replicated over the QUIC mesh, against
//!    `zfs send -i | zfs recv` of the very same increment piped on the same
//!    machine into a reference replica with the same chain, as a ratio
//!    measured in the same run: each rep pushes a new change, times its
//!    replication over the mesh, then pipes the same increment locally; the
//!    ratio is the median of the reps' ratios (7 reps);
//! 2. replication lag (master's snapshot → replica holds it) p50/p99 for 50
//!    sites each changed once a second, from the nodes' own log timestamps.
//!
//! Run: `cargo bench --bench replication` (as root, with ZFS). Options after
//! `--`: `--reps N` (default 7), `--lag-secs N` (default 20), `--sites N`
//! (default 50; 0 skips the lag part). `RINGHOST_BENCH_LOG` sets the nodes'
//! log filter; `RINGHOST_BENCH_LOG_DIR=DIR` copies both nodes' logs of the
//! throughput part there. Each rep prints the machine's load average and
//! the CPU seconds of zfs-fuse and of both nodes: the figures are only
//! comparable within one run, and other work on the machine (which shares
//! the one zfs-fuse daemon) skews them.

#![allow(clippy::disallowed_methods, clippy::print_stdout, clippy::print_stderr)] // a benchmark measures wall time and prints

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, Node, formed, p, run, wait_for};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn ringhost(node: &Node, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", p(&node.data_dir)]);
    let out = run(&all);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (node → (seq, guid)) of `site` as `node` sees it.
fn heads(node: &Node, site: &str) -> BTreeMap<String, (u64, String)> {
    let out = run(&[
        "site",
        "show",
        site,
        "--json",
        "--data-dir",
        p(&node.data_dir),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["copies"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["node"].as_str().unwrap_or("").to_owned(),
                        (
                            c["head"]["seq"].as_u64().unwrap_or(0),
                            c["head"]["guid"].as_str().unwrap_or("").to_owned(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn random_file(path: &std::path::Path, seed: u64, len: usize) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(path, data).expect("write");
}

fn zfs(args: &[&str]) -> String {
    let out = Command::new("zfs").args(args).output().expect("zfs runs");
    assert!(out.status.success(), "zfs {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn throughput(reps: u64) {
    let env = Env::new_zfs("bench", &["n1", "n2"], "2G").with_log(
        &std::env::var("RINGHOST_BENCH_LOG")
            .unwrap_or_else(|_| "info,ringhost::sites=debug".into()),
    );
    let nodes = env.start_cluster(2, &[]);
    formed(&nodes);
    ringhost(
        &nodes[0],
        &[
            "site",
            "create",
            "big",
            "--domain",
            "big.example",
            "--replicas",
            "2",
        ],
    );
    let show = wait_for("a master", Duration::from_secs(10), || {
        let out = run(&[
            "site",
            "show",
            "big",
            "--json",
            "--data-dir",
            p(&nodes[0].data_dir),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["master"].as_str().map(str::to_owned)
    });
    let mi = nodes.iter().position(|n| n.name == show).expect("master");
    let ri = 1 - mi;
    let master_pool = nodes[mi].pool().expect("pool");
    // The reference receiver: a pool of its own, destroyed at the end.
    let ref_pool = format!("rh-bench-{}", std::process::id());
    let ref_img = env.path().join("ref.img");
    std::fs::File::create(&ref_img)
        .and_then(|f| f.set_len(2 << 30))
        .expect("ref image");
    let out = Command::new("zpool")
        .args(["create", "-m", "none", &ref_pool, p(&ref_img)])
        .output()
        .expect("zpool");
    assert!(out.status.success(), "{out:?}");
    let dir = env.path().join("content");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut ratios = Vec::new();
    let mut mesh_rates = Vec::new();
    let mut pipe_rates = Vec::new();
    let mut e2e_ratios = Vec::new();
    let size = 200u64 << 20;
    let dst = format!("{ref_pool}/r");
    for rep in 0..reps {
        random_file(&dir.join("data.bin"), 1000 + rep, size as usize);
        ringhost(&nodes[mi], &["site", "push", "big", p(&dir)]);
        let target = heads(&nodes[mi], "big")
            .get(&nodes[mi].name)
            .cloned()
            .expect("master head");
        let cpu0 = Cpu::read(&nodes[mi], &nodes[ri]);
        let udp0 = udp_datagrams_sent();
        let t0 = Instant::now();
        wait_for(
            "the replica to hold the change",
            Duration::from_secs(120),
            || (heads(&nodes[ri], "big").get(&nodes[ri].name) == Some(&target)).then_some(()),
        );
        let e2e = t0.elapsed().as_secs_f64();
        let mesh_cpu = Cpu::read(&nodes[mi], &nodes[ri]).since(&cpu0);
        let udp = udp_datagrams_sent().saturating_sub(udp0);
        // The transfer itself, from the replica's log: the receive began
        // ("receiving snapshots ... seq=S") until it published seq S.
        let log = nodes[ri].log_text();
        let begin = log
            .lines()
            .filter(|l| {
                l.contains("receiving snapshots site=big")
                    && l.contains(&format!("seq={} ", target.0))
            })
            .find_map(log_time);
        let end = publishes(&log, "replica")
            .into_iter()
            .find(|(s, q, _)| s == "big" && *q == target.0)
            .map(|(_, _, t)| t);
        let mesh = match (begin, end) {
            (Some(b), Some(e)) if e > b => e - b,
            _ => e2e,
        };

        // The same increment, piped locally into a reference replica that
        // follows the same chain in a pool of the same size, so both
        // receivers hold the same data (a fuller pool receives slower).
        let ds = format!("{master_pool}/sites/big");
        let to = format!("{ds}@ringhost-{}", target.0);
        let from = format!("@ringhost-{}", target.0 - 1);
        if rep == 0 {
            let base = format!("{ds}{from}");
            let full = Command::new("sh")
                .args(["-c", &format!("zfs send {base} | zfs recv {dst}")])
                .output()
                .expect("sh");
            assert!(full.status.success(), "{full:?}");
        }
        let cpu1 = Cpu::read(&nodes[mi], &nodes[ri]);
        let t1 = Instant::now();
        let inc = Command::new("sh")
            .args(["-c", &format!("zfs send -i {from} {to} | zfs recv {dst}")])
            .output()
            .expect("sh");
        let pipe = t1.elapsed().as_secs_f64();
        let pipe_cpu = Cpu::read(&nodes[mi], &nodes[ri]).since(&cpu1);
        assert!(inc.status.success(), "{inc:?}");
        let mib = (size >> 20) as f64;
        println!(
            "  rep {}: mesh transfer {:.2} s ({:.0} MiB/s; {:.2} s from the master's snapshot, gossip included), local pipe {:.2} s ({:.0} MiB/s), ratio {:.2}; load {}",
            rep + 1,
            mesh,
            mib / mesh,
            e2e,
            pipe,
            mib / pipe,
            pipe / mesh,
            load()
        );
        println!(
            "    CPU s during the mesh wait: zfs-fuse {:.2}, master node {:.2} (+ its zfs children {:.2}), replica node {:.2} (+ {:.2}); UDP datagrams sent (machine-wide) {udp}; during the pipe: zfs-fuse {:.2}, zfs send|recv {:.2}",
            mesh_cpu.zfs_fuse,
            mesh_cpu.master.0,
            mesh_cpu.master.1,
            mesh_cpu.replica.0,
            mesh_cpu.replica.1,
            pipe_cpu.zfs_fuse,
            pipe_cpu.bench_children
        );
        e2e_ratios.push(pipe / e2e);
        ratios.push(pipe / mesh);
        mesh_rates.push(mib / mesh);
        pipe_rates.push(mib / pipe);
        if let Ok(d) = std::env::var("RINGHOST_BENCH_LOG_DIR") {
            let _ = std::fs::write(format!("{d}/master.log"), nodes[mi].log_text());
            let _ = std::fs::write(format!("{d}/replica.log"), nodes[ri].log_text());
        }
    }
    zfs(&["destroy", "-r", &dst]);
    let _ = Command::new("zpool")
        .args(["destroy", "-f", &ref_pool])
        .output();
    let per_rep: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "replication throughput, 200 MiB change, median of {reps} interleaved reps: mesh {:.0} MiB/s, local zfs send|recv pipe {:.0} MiB/s",
        median(&mut mesh_rates),
        median(&mut pipe_rates),
    );
    println!(
        "replication throughput ratio (mesh / pipe, each rep's mesh against the pipe of the same increment): median {:.2} (target >= 0.7; per rep {})",
        median(&mut ratios),
        per_rep.join(" ")
    );
    println!(
        "  with the time from the master's snapshot to the replica's head (gossip and scheduling included): median ratio {:.2}",
        median(&mut e2e_ratios)
    );
}

/// CPU seconds (user + system) used so far, from /proc: the zfs-fuse
/// daemon (which does the work of every `zfs send` and `zfs recv`), each
/// node itself and the children it waited for, and this benchmark's own
/// waited children (the reference pipe).
struct Cpu {
    zfs_fuse: f64,
    master: (f64, f64),
    replica: (f64, f64),
    bench_children: f64,
}

impl Cpu {
    fn read(master: &Node, replica: &Node) -> Cpu {
        let zfs_fuse = Command::new("pgrep")
            .args(["-x", "zfs-fuse"])
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<u32>()
                    .ok()
            })
            .map_or(0.0, |pid| proc_cpu(&pid.to_string()).0);
        Cpu {
            zfs_fuse,
            master: proc_cpu(&master.pid().to_string()),
            replica: proc_cpu(&replica.pid().to_string()),
            bench_children: proc_cpu("self").1,
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            zfs_fuse: self.zfs_fuse - before.zfs_fuse,
            master: (
                self.master.0 - before.master.0,
                self.master.1 - before.master.1,
            ),
            replica: (
                self.replica.0 - before.replica.0,
                self.replica.1 - before.replica.1,
            ),
            bench_children: self.bench_children - before.bench_children,
        }
    }
}

/// UDP datagrams this machine has sent (all sockets), from /proc/net/snmp.
fn udp_datagrams_sent() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut rows = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "OutDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// (own, waited children's) CPU seconds of a process, from
/// `/proc/PID/stat` (in clock ticks of 1/100 s, Linux's USER_HZ).
fn proc_cpu(pid: &str) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the command name in parentheses: state is field 3;
    // utime, stime, cutime, cstime are fields 14-17.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    (tick(14) + tick(15), tick(16) + tick(17))
}

/// The 1-minute load average: other work on the machine skews both sides.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// `2026-11-25T16:27:54.719041Z` → seconds since midnight.
fn log_time(line: &str) -> Option<f64> {
    let t = line.get(11..26)?;
    let h: f64 = t.get(0..2)?.parse().ok()?;
    let m: f64 = t.get(3..5)?.parse().ok()?;
    let s: f64 = t.get(6..15)?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// From a node's debug log: (site, seq, time) of each `site:` key published
/// with the given role.
fn publishes(log: &str, role: &str) -> Vec<(String, u64, f64)> {
    let mut out = Vec::new();
    for line in log.lines() {
        const KEY: &str = "Publish { key: \"site:";
        let Some(i) = line.find(KEY) else {
            continue;
        };
        if !line.contains(&format!("\\\"role\\\":\\\"{role}\\\"")) {
            continue;
        }
        let rest = &line[i + KEY.len()..];
        let site = rest.split('"').next().unwrap_or("").to_owned();
        let seq = line
            .split("\\\"seq\\\":")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok());
        if let (Some(seq), Some(t)) = (seq, log_time(line)) {
            out.push((site, seq, t));
        }
    }
    out
}

fn lag(secs: u64, sites: u64) {
    // The site driver's debug log carries the publish times measured here
    // (all nodes log with the one clock of this machine).
    let env =
        Env::new_zfs("bench", &["n1", "n2", "n3"], "1G").with_log("info,ringhost::sites=debug");
    let nodes: Vec<Node> = {
        let first = env.start("n1", &[], &[]);
        let seed = first.mesh();
        let mut v = vec![first];
        for n in ["n2", "n3"] {
            v.push(env.start(n, std::slice::from_ref(&seed), &[]));
        }
        v
    };
    formed(&nodes);
    let names: Vec<String> = (0..sites).map(|i| format!("s{i:02}")).collect();
    for s in &names {
        ringhost(
            &nodes[0],
            &[
                "site",
                "create",
                s,
                "--domain",
                &format!("{s}.example"),
                "--replicas",
                "2",
            ],
        );
    }
    let dir = env.path().join("content");
    std::fs::create_dir_all(&dir).expect("dir");
    println!("  {sites} sites created; changing each once a second for {secs} s");
    let start = Instant::now();
    let mut children = Vec::new();
    for tick in 0..secs {
        let due = start + Duration::from_secs(tick);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for (i, s) in names.iter().enumerate() {
            let d = dir.join(s);
            std::fs::create_dir_all(&d).expect("dir");
            std::fs::write(d.join("index.html"), format!("{s} change {tick}")).expect("write");
            let node = &nodes[i % nodes.len()];
            children.push(
                Command::new(common::bin())
                    .args(["site", "push", s, p(&d), "--data-dir", p(&node.data_dir)])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("push"),
            );
        }
        children.retain_mut(|c| c.try_wait().ok().flatten().is_none());
    }
    for mut c in children {
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_secs(3));
    // Latency of each master snapshot: until the first replica publish of
    // that seq or later, per replica.
    let mut masters: BTreeMap<(String, u64), f64> = BTreeMap::new();
    let mut replicas: BTreeMap<String, Vec<Vec<(u64, f64)>>> = BTreeMap::new();
    for n in &nodes {
        let log = n.log_text();
        for (site, seq, t) in publishes(&log, "master") {
            masters.entry((site, seq)).or_insert(t);
        }
        let mut per_site: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        for (site, seq, t) in publishes(&log, "replica") {
            per_site.entry(site).or_default().push((seq, t));
        }
        for (site, v) in per_site {
            replicas.entry(site).or_default().push(v);
        }
    }
    let mut lags = Vec::new();
    for ((site, seq), t) in &masters {
        for r in replicas.get(site).into_iter().flatten() {
            if let Some((_, tr)) = r.iter().find(|(s, tr)| s >= seq && tr >= t) {
                lags.push(tr - t);
            }
        }
    }
    lags.sort_by(|a, b| a.total_cmp(b));
    if lags.is_empty() {
        println!("replication lag: no samples (is ringhost=debug logging on?)");
        return;
    }
    let pct = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    println!(
        "replication lag, {sites} sites changed once a second for {secs} s, 3 nodes, 2 copies each: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms over {} snapshot deliveries",
        pct(0.5) * 1e3,
        pct(0.99) * 1e3,
        lags[lags.len() - 1] * 1e3,
        lags.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if !common::zfs_available("replication bench") {
        return;
    }
    throughput(arg(&args, "--reps", 7));
    if arg(&args, "--sites", 50) > 0 {
        lag(arg(&args, "--lag-secs", 20), arg(&args, "--sites", 50));
    }
}
