//! A ringhost cluster on network-namespace hosts (see `netns`), serving
//! the history site (`tests/fixtures/history_app.py`), with the clients and
//! the history checker the failover tests and benchmark share.
//!
//! Clients are curl processes run from the test's own address on the
//! bridge: every request is bounded (`--connect-timeout 1 -m 3`) and every
//! load loop by a count and a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::netns::Net;
use super::{Env, Node, drop_caches, p, run, wait_for};

pub const SITE: &str = "hist";
pub const DOMAIN: &str = "hist.test";

/// Nodes n1..nN, host k running `n{k+1}`. Fields drop in order: nodes
/// (killed), then the env (pools destroyed), then the network.
pub struct Bed {
    nodes: Vec<Option<Node>>,
    pub env: Env,
    pub net: Net,
    extra: Vec<String>,
}

pub fn name(k: usize) -> String {
    format!("n{}", k + 1)
}

impl Bed {
    /// Starts `n` nodes, each on its own host, seeded with the first two,
    /// and waits until every node lists all of them alive.
    pub fn start(cluster: &str, n: usize, extra: &[&str]) -> Bed {
        Self::start_sized(cluster, n, "256M", extra)
    }

    /// [`Bed::start`] with file-backed pools of `pool_size` (sparse).
    pub fn start_sized(cluster: &str, n: usize, pool_size: &str, extra: &[&str]) -> Bed {
        let net = Net::new(n);
        let names: Vec<String> = (0..n).map(name).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let env = Env::new_zfs(cluster, &refs, pool_size);
        let mut bed = Bed {
            nodes: Vec::new(),
            env,
            net,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for k in 0..n {
            let node = bed.spawn(k);
            bed.nodes.push(Some(node));
        }
        bed.wait_alive(&(0..n).collect::<Vec<_>>(), Duration::from_secs(20));
        bed
    }

    fn spawn(&self, k: usize) -> Node {
        // Seed with the first two hosts (a node never seeds itself).
        let seeds: Vec<String> = (0..self.net.hosts().min(2))
            .filter(|&j| j != k)
            .map(|j| format!("{}:7000", self.net.ip(j)))
            .collect();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.env.start_on(&self.net, k, &name(k), &seeds, &extra)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn node(&self, k: usize) -> &Node {
        self.nodes[k].as_ref().expect("node is running")
    }

    pub fn is_up(&self, k: usize) -> bool {
        self.nodes[k].is_some()
    }

    /// `kill -9` of host k's node.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut n) = self.nodes[k].take() {
            n.kill9();
        }
    }

    /// Starts host k's node again (same data dir and pool).
    pub fn restart(&mut self, k: usize) {
        assert!(self.nodes[k].is_none(), "{} is running", name(k));
        let node = self.spawn(k);
        self.nodes[k] = Some(node);
    }

    /// Waits until each of `ks` lists every one of `ks` alive.
    pub fn wait_alive(&self, ks: &[usize], within: Duration) {
        let want: BTreeSet<String> = ks.iter().map(|&k| name(k)).collect();
        wait_for(&format!("{want:?} alive"), within, || {
            ks.iter()
                .all(|&k| {
                    self.node(k).members().is_some_and(|m| {
                        let alive: BTreeSet<String> = m
                            .into_iter()
                            .filter(|(_, s, _)| s == "alive")
                            .map(|(n, _, _)| n)
                            .collect();
                        want.is_subset(&alive)
                    })
                })
                .then_some(())
        });
    }

    /// `ringhost ARGS --data-dir <host k's node>`.
    pub fn ringhost(&self, k: usize, args: &[&str]) -> std::process::Output {
        let mut a = args.to_vec();
        let dir = self.node(k).data_dir.clone();
        a.extend(["--data-dir", p(&dir)]);
        run(&a)
    }

    /// Creates the history site with `replicas` copies through host 0 and
    /// waits until it answers through every node.
    pub fn create_history_site(&self, replicas: u8) {
        let replicas = replicas.to_string();
        let out = self.ringhost(
            0,
            &[
                "site",
                "create",
                SITE,
                "--domain",
                DOMAIN,
                "--replicas",
                &replicas,
                "--runtime",
                "command",
                "--cmd",
                "exec python3 app.py",
            ],
        );
        assert!(out.status.success(), "site create: {out:?}");
        let dir = self.env.path().join("history-site");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("app.py"),
            include_str!("../fixtures/history_app.py"),
        )
        .expect("write app.py");
        let out = self.ringhost(0, &["site", "push", SITE, p(&dir)]);
        assert!(out.status.success(), "site push: {out:?}");
        let all: Vec<usize> = (0..self.len()).collect();
        self.wait_served(&all, Duration::from_secs(30));
        // The push is on every copy before a test's faults begin: a fault
        // right after the push would otherwise elect a replica that holds
        // only the empty site (the push is acknowledged once snapshotted on
        // the master, and replicated after). The push's snapshot is read
        // from the master's pool: the heads that members gossip lag, and
        // once all named the site's first snapshot while a replica still
        // lacked the push (a partition then elected it: a site without its
        // code, every round after failed).
        let copies = usize::from(replicas.parse::<u8>().unwrap_or(1));
        let master = self.master_host(0).expect("a master serves the site");
        let pushed = self
            .newest_snapshot_guid(master)
            .expect("the push's snapshot on the master");
        let start = std::time::Instant::now();
        loop {
            let heads: Vec<String> = self
                .show(0)
                .and_then(|v| {
                    Some(
                        v["copies"]
                            .as_array()?
                            .iter()
                            .filter_map(|c| c["head"]["guid"].as_str().map(str::to_owned))
                            .collect(),
                    )
                })
                .unwrap_or_default();
            if heads.len() >= copies && heads.iter().all(|h| *h == pushed) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the push (snapshot {pushed}) is not on every copy after 30 s: heads {heads:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The guid of the newest snapshot of the site in host `k`'s pool
    /// (the one of the highest seq: snapshots are named `ringhost-SEQ`).
    fn newest_snapshot_guid(&self, k: usize) -> Option<String> {
        let ds = format!("{}/sites/{SITE}", self.node(k).pool()?);
        let zfs = |args: &[&str]| {
            let out = Command::new("zfs").args(args).output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let names = zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", &ds])?;
        let prefix = format!("{ds}@ringhost-");
        let newest = names
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix)?.parse::<u64>().ok())
            .max()?;
        let guid = zfs(&[
            "get",
            "-Hp",
            "-o",
            "value",
            "guid",
            &format!("{prefix}{newest}"),
        ])?;
        Some(guid.trim().to_owned())
    }

    /// Waits until every host in `ks` answers 200 for the site; returns the
    /// (node, epoch) that answered.
    pub fn wait_served(&self, ks: &[usize], within: Duration) -> (String, u64) {
        let start = std::time::Instant::now();
        let mut last_try = Vec::new();
        wait_for(&format!("{SITE} served through {ks:?}"), within, || {
            // One poll takes up to a curl's 3 s (a gate that holds answers
            // late), so the last one starts within 4 s of the deadline.
            if start.elapsed() + Duration::from_secs(4) >= within && last_try.is_empty() {
                // About to time out: say what each host answers and sees.
                for &k in ks {
                    let (status, body) = self.get(k, "/");
                    let show = self.ringhost(k, &["site", "show", SITE, "--json"]);
                    last_try.push(format!(
                        "host {k}: {status} {:?}; site show: {}",
                        body.chars().take(80).collect::<String>(),
                        String::from_utf8_lossy(&show.stdout).replace('\n', "")
                    ));
                }
                eprintln!("{}", last_try.join("\n"));
            }
            let mut seen = None;
            for &k in ks {
                let (status, body) = self.get(k, "/");
                if status != 200 {
                    return None;
                }
                let who = parse_claim(&body)?;
                if seen.as_ref().is_some_and(|s| *s != who) {
                    return None;
                }
                seen = Some(who);
            }
            seen
        })
    }

    /// curl through host k's proxy: (status, body); status 0 if no answer.
    pub fn get(&self, k: usize, path: &str) -> (u16, String) {
        self.curl(k, &[], path)
    }

    pub fn curl(&self, k: usize, extra: &[&str], path: &str) -> (u16, String) {
        curl_at(self.net.ip(k), DOMAIN, extra, path)
    }

    /// `site show --json` as host k's node reports it.
    pub fn show(&self, k: usize) -> Option<Value> {
        let out = self.ringhost(k, &["site", "show", SITE, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// `node`'s copy of the site as `site show` through host `k` lists it.
    pub fn copy_of(&self, k: usize, node: &str) -> Option<Value> {
        let v = self.show(k)?;
        v["copies"]
            .as_array()?
            .iter()
            .find(|c| c["node"].as_str() == Some(node))
            .cloned()
    }

    /// The host of the site's master, as host k's node reports it.
    pub fn master_host(&self, k: usize) -> Option<usize> {
        let v = self.show(k)?;
        let m = v["master"].as_str()?;
        (0..self.len()).find(|&j| name(j) == m)
    }

    /// Every history line on the current master (through host k) and in
    /// every stash of the site on a running node: id → where it was found.
    pub fn found_writes(&self, k: usize) -> BTreeMap<u64, String> {
        let mut found = BTreeMap::new();
        let (status, log) = self.get(k, "/log");
        assert_eq!(status, 200, "GET /log through {}", name(k));
        for id in log_ids(&log) {
            found.entry(id).or_insert_with(|| "master".to_owned());
        }
        for (node, stash) in self.stashes(k) {
            for id in log_ids(&self.read_stash(&node, &stash)) {
                found
                    .entry(id)
                    .or_insert_with(|| format!("stash {stash} on {node}"));
            }
        }
        found
    }

    /// Where each of `ids` is on disk, for a failure's report: every
    /// dataset and snapshot of every running node's pool (listed with
    /// `zfs list -t all`), with the ids of `ids` its history log holds.
    pub fn locate(&self, ids: &[u64]) -> String {
        let want: BTreeSet<u64> = ids.iter().copied().collect();
        let mut report = String::new();
        for k in 0..self.len() {
            let Some(pool) = self.nodes[k].as_ref().and_then(Node::pool) else {
                continue;
            };
            let out = Command::new("zfs")
                .args([
                    "list",
                    "-H",
                    "-t",
                    "all",
                    "-o",
                    "name,mountpoint,mounted,origin",
                    "-r",
                    &pool,
                ])
                .output()
                .expect("zfs list");
            drop_caches();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let cols: Vec<&str> = line.split('\t').collect();
                let (ds, mp) = (cols[0], cols.get(1).copied().unwrap_or("-"));
                let path = if let Some((fs, snap)) = ds.split_once('@') {
                    let fs_mp = String::from_utf8_lossy(
                        &Command::new("zfs")
                            .args(["get", "-H", "-o", "value", "mountpoint", fs])
                            .output()
                            .expect("zfs get")
                            .stdout,
                    )
                    .trim()
                    .to_owned();
                    format!("{fs_mp}/.zfs/snapshot/{snap}/history.log")
                } else {
                    format!("{mp}/history.log")
                };
                let held: Vec<u64> = std::fs::read_to_string(&path)
                    .map(|l| log_ids(&l))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|id| want.contains(id))
                    .collect();
                report.push_str(&format!("{} {line}: {} of the ids\n", name(k), held.len()));
            }
        }
        report
    }

    /// (node, stash name) of every stash `site show` lists.
    pub fn stashes(&self, k: usize) -> Vec<(String, String)> {
        let v = self.show(k).expect("site show");
        v["stashes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((
                            s["node"].as_str()?.to_owned(),
                            s["name"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The history log inside `node`'s stash, read from its dataset's
    /// mountpoint (empty if that node is not running).
    pub fn read_stash(&self, node: &str, stash: &str) -> String {
        let Some(pool) = (0..self.len())
            .find(|&j| name(j) == node)
            .and_then(|j| self.nodes[j].as_ref())
            .and_then(Node::pool)
        else {
            return String::new();
        };
        let out = Command::new("zfs")
            .args(["list", "-H", "-o", "name,mountpoint"])
            .output()
            .expect("zfs list");
        let suffix = format!("/stash/{stash}");
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(mp) = text.lines().find_map(|l| {
            let (ds, mp) = l.split_once('\t')?;
            (ds.ends_with(&suffix) && ds.starts_with(&format!("{pool}/"))).then(|| mp.to_owned())
        }) else {
            return String::new();
        };
        drop_caches();
        std::fs::read_to_string(std::path::Path::new(&mp).join("history.log")).unwrap_or_default()
    }
}

/// curl of `http://DOMAIN:8080PATH` through the node at `ip`: (status,
/// body); status 0 if no answer within 3 s.
pub fn curl_at(ip: std::net::Ipv4Addr, domain: &str, extra: &[&str], path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--connect-timeout",
            "1",
            "-m",
            "3",
            "-w",
            "\n%{http_code}",
        ])
        .args(["--resolve", &format!("{domain}:8080:{ip}")])
        .args(extra)
        .arg(format!("http://{domain}:8080{path}"))
        .output();
    let Ok(out) = out else {
        return (0, String::new());
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// "<node> <epoch>" as the history app answers GET /.
pub fn parse_claim(body: &str) -> Option<(String, u64)> {
    let mut it = body.split_whitespace();
    let node = it.next()?.to_owned();
    let epoch = it.next()?.parse().ok()?;
    Some((node, epoch))
}

fn log_ids(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// One write the load sent.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: u64,
    pub host: usize,
    pub sent: Duration,
    pub done: Duration,
    pub status: u16,
    /// (node, epoch) of the master that acknowledged it (status 200).
    pub by: Option<(String, u64)>,
}

/// Writers posting `/w/<id>` through random hosts until stopped, bounded
/// by `max_writes` each and by `deadline`.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub attempts: Arc<Mutex<Vec<Attempt>>>,
    pub t0: Instant,
}

/// One request of a load: (status, body) for request `id` through `ip`.
pub type Request = Arc<dyn Fn(std::net::Ipv4Addr, u64) -> (u16, String) + Send + Sync>;

impl Load {
    /// Writers to the history site.
    pub fn start(bed: &Bed, writers: usize, max_writes: u64, deadline: Duration) -> Load {
        Self::start_with(bed, writers, max_writes, deadline, Arc::new(post))
    }

    /// Clients each sending `req` through random hosts, 30 ms apart, until
    /// stopped, `max_writes` requests each or `deadline`. A request counts
    /// as acknowledged (`by`) if it answered 200 with "ok ID NODE EPOCH".
    pub fn start_with(
        bed: &Bed,
        writers: usize,
        max_writes: u64,
        deadline: Duration,
        req: Request,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let ips: Vec<std::net::Ipv4Addr> = (0..bed.len()).map(|k| bed.net.ip(k)).collect();
        let threads = (0..writers)
            .map(|w| {
                let (stop, attempts, ips) = (stop.clone(), attempts.clone(), ips.clone());
                let req = req.clone();
                std::thread::spawn(move || {
                    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (w as u64 + 1);
                    for i in 0..max_writes {
                        if stop.load(Ordering::Relaxed) || t0.elapsed() > deadline {
                            break;
                        }
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let host = (rng % ips.len() as u64) as usize;
                        let id = (w as u64 + 1) * 1_000_000 + i;
                        let sent = t0.elapsed();
                        let (status, body) = req(ips[host], id);
                        let done = t0.elapsed();
                        let by = (status == 200)
                            .then(|| {
                                let rest = body.strip_prefix(&format!("ok {id} "))?;
                                parse_claim(rest)
                            })
                            .flatten();
                        attempts.lock().expect("attempts").push(Attempt {
                            id,
                            host,
                            sent,
                            done,
                            status,
                            by,
                        });
                        std::thread::sleep(Duration::from_millis(30));
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            attempts,
            t0,
        }
    }

    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Stops the writers and returns every attempt.
    pub fn finish(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut v = self.attempts.lock().expect("attempts").clone();
        v.sort_by_key(|a| a.sent);
        v
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn post(ip: std::net::Ipv4Addr, id: u64) -> (u16, String) {
    curl_at(ip, DOMAIN, &["-X", "POST"], &format!("/w/{id}"))
}

/// What the history checker found.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acknowledged: usize,
    pub failed: usize,
    pub lost: Vec<u64>,
    /// Acknowledged writes missing although a later-sent write of the same
    /// master claim survived: a hole, never allowed.
    pub holes: Vec<u64>,
    /// Epochs acknowledged by more than one node: never allowed.
    pub split_epochs: Vec<u64>,
    /// Longest span of lost writes at the end of one master claim: from the
    /// first lost write's acknowledgement to the claim's last one.
    pub rpo: Duration,
    /// (epoch, first ack, last ack, node) of each master claim seen.
    pub claims: Vec<(u64, Duration, Duration, String)>,
}

impl Verdict {
    pub fn summary(&self) -> String {
        format!(
            "{} writes acknowledged, {} not; {} lost within the RPO of {:.2} s; {} holes; {} claims {:?}",
            self.acknowledged,
            self.failed,
            self.lost.len(),
            self.rpo.as_secs_f64(),
            self.holes.len(),
            self.claims.len(),
            self.claims
                .iter()
                .map(|(e, a, b, n)| format!(
                    "{n}@{e} {:.1}-{:.1}s",
                    a.as_secs_f64(),
                    b.as_secs_f64()
                ))
                .collect::<Vec<_>>()
        )
    }
}

/// Checks acknowledged writes against what survived (`found`: the current
/// master's history and every stash). A write may be missing only if it
/// was newer than the last snapshot of its master that reached a replica:
/// then every write of the same claim sent after it is missing too (no
/// hole). Each epoch must have been acknowledged by one node.
pub fn check_history(attempts: &[Attempt], found: &BTreeMap<u64, String>) -> Verdict {
    let mut v = Verdict::default();
    let mut by_claim: BTreeMap<(u64, String), Vec<&Attempt>> = BTreeMap::new();
    let mut nodes_of_epoch: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for a in attempts {
        match &a.by {
            Some((node, epoch)) => {
                v.acknowledged += 1;
                by_claim.entry((*epoch, node.clone())).or_default().push(a);
                nodes_of_epoch
                    .entry(*epoch)
                    .or_default()
                    .insert(node.clone());
            }
            None => v.failed += 1,
        }
    }
    v.split_epochs = nodes_of_epoch
        .iter()
        .filter(|(_, n)| n.len() > 1)
        .map(|(e, _)| *e)
        .collect();
    for ((epoch, node), acks) in &by_claim {
        let first = acks.iter().map(|a| a.done).min().unwrap_or_default();
        let last = acks.iter().map(|a| a.done).max().unwrap_or_default();
        v.claims.push((*epoch, first, last, node.clone()));
        let lost: Vec<&&Attempt> = acks.iter().filter(|a| !found.contains_key(&a.id)).collect();
        for l in &lost {
            v.lost.push(l.id);
            // A surviving write sent after this one was acknowledged was
            // appended after it: its snapshot would hold this one too.
            if acks
                .iter()
                .any(|f| found.contains_key(&f.id) && f.sent > l.done)
            {
                v.holes.push(l.id);
            }
        }
        if let Some(first_lost) = lost.iter().map(|a| a.done).min() {
            v.rpo = v.rpo.max(last.saturating_sub(first_lost));
        }
    }
    v.claims.sort_by_key(|c| c.1);
    v
}
