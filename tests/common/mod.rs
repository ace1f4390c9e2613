//! Test harness: real `ringhost` processes on loopback, each test in its own
//! temp dir, ports chosen by the kernel (port 0) and read back from
//! `ready.json`, children killed by PID on drop, and convergence awaited
//! with a deadline.
#![allow(dead_code)] // each test binary uses a different part of the harness
#![allow(clippy::disallowed_methods, clippy::print_stderr)] // tests poll real processes against the wall clock and report on stderr

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod bed;
pub mod netns;
pub mod ws;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringhost")
}

/// Runs `ringhost ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("RINGHOST_DATA_DIR")
        .output()
        .expect("ringhost binary runs")
}

/// The value of environment variable `name` (a test's knob: rounds, a
/// seed), or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}{}",
            zfs_daemon_gone()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A cluster's certificate directory and the temp dir everything lives in.
#[derive(Debug)]
pub struct Env {
    pub tmp: tempfile::TempDir,
    /// Pools the nodes of this test created; destroyed when the Env drops
    /// (after its nodes: declare the Env first).
    pools: std::sync::Mutex<Vec<String>>,
    /// Storage flags every node gets.
    pub storage: Vec<String>,
    /// RUST_LOG for the nodes (default: RINGHOST_TEST_LOG, else "info").
    log: Option<String>,
}

/// Drops the kernel's page, dentry and inode caches (root only), so that
/// reading a replica's mount shows what its last receive wrote: zfs-fuse
/// does not invalidate the kernel's caches of a copy it received into.
pub fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Whether this machine can run ZFS tests: in CI they must run (a missing
/// ZFS fails the test); elsewhere they are skipped with a printed reason.
pub fn zfs_available(test: &str) -> bool {
    let ok = Command::new("zpool")
        .arg("list")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: ZFS is required in CI but `zpool list` fails (is zfs-fuse running?)"
        );
        eprintln!("{test}: skipped: ZFS is not usable here (`zpool list` fails; start zfs-fuse)");
    }
    ok
}

impl Env {
    /// Nodes with in-memory storage: for membership tests.
    pub fn new(cluster: &str, nodes: &[&str]) -> Env {
        Self::with_storage(cluster, nodes, &["--storage", "memory"])
    }

    /// Nodes with a file-backed ZFS pool each (destroyed when the node is
    /// dropped).
    pub fn new_zfs(cluster: &str, nodes: &[&str], pool_size: &str) -> Env {
        Self::with_storage(cluster, nodes, &["--pool-size", pool_size])
    }

    fn with_storage(cluster: &str, nodes: &[&str], storage: &[&str]) -> Env {
        let tmp = tempfile::tempdir().expect("temp dir");
        let env = Env {
            tmp,
            pools: std::sync::Mutex::default(),
            log: None,
            storage: storage.iter().map(|s| s.to_string()).collect(),
        };
        let certs = env.certs();
        let out = run(&["tls", "init", "--dir", p(&certs), "--cluster", cluster]);
        assert!(out.status.success(), "tls init: {out:?}");
        for n in nodes {
            env.issue(n);
        }
        env
    }

    /// Nodes started from now on log at `level` (a RUST_LOG filter).
    pub fn with_log(mut self, level: &str) -> Env {
        self.log = Some(level.to_owned());
        self
    }

    pub fn issue(&self, node: &str) {
        let out = run(&["tls", "issue", "--dir", p(&self.certs()), "--node", node]);
        assert!(out.status.success(), "tls issue {node}: {out:?}");
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn certs(&self) -> PathBuf {
        self.tmp.path().join("certs")
    }

    pub fn data_dir(&self, node: &str) -> PathBuf {
        self.tmp.path().join(format!("data-{node}"))
    }

    /// Starts `node` seeded with `seeds` and waits for its ready.json.
    pub fn start(&self, node: &str, seeds: &[String], extra: &[&str]) -> Node {
        self.start_with_certs(node, &self.certs(), seeds, extra)
    }

    pub fn start_with_certs(
        &self,
        node: &str,
        certs: &Path,
        seeds: &[String],
        extra: &[&str],
    ) -> Node {
        self.spawn(&[], node, certs, "127.0.0.1:0", seeds, extra)
    }

    /// Starts `node` inside host `k` of `net`, its mesh at `IP:7000` and
    /// its proxy at `IP:8080` (HTTP) and `IP:8443` (TLS) of that host.
    pub fn start_on(
        &self,
        net: &netns::Net,
        k: usize,
        node: &str,
        seeds: &[String],
        extra: &[&str],
    ) -> Node {
        let ip = net.ip(k);
        let (http, https) = (format!("{ip}:8080"), format!("{ip}:8443"));
        let mut args = vec!["--http", &http, "--https", &https];
        args.extend_from_slice(extra);
        self.spawn(
            &net.exec_prefix(k),
            node,
            &self.certs(),
            &format!("{ip}:7000"),
            seeds,
            &args,
        )
    }

    /// Spawns `wrap... ringhost node ...` and waits for its ready.json.
    fn spawn(
        &self,
        wrap: &[String],
        node: &str,
        certs: &Path,
        mesh: &str,
        seeds: &[String],
        extra: &[&str],
    ) -> Node {
        let data_dir = self.data_dir(node);
        let log = self.tmp.path().join(format!("{node}.log"));
        let _ = std::fs::remove_file(data_dir.join("ready.json"));
        // A wrapper (nsenter) execs the program: the PID is the node's.
        let mut cmd = match wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(["node", "--name", node, "--data-dir", p(&data_dir)])
            .args(["--certs", p(certs), "--mesh", mesh]);
        for s in seeds {
            cmd.args(["--seed", s]);
        }
        cmd.args(&self.storage)
            .args(extra)
            .env(
                "RUST_LOG",
                self.log.clone().unwrap_or_else(|| {
                    std::env::var("RINGHOST_TEST_LOG").unwrap_or_else(|_| "info".into())
                }),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            );
        let child = cmd.spawn().expect("spawn ringhost node");
        let mut node = Node {
            name: node.to_owned(),
            data_dir,
            log,
            child: Some(child),
            ready: Value::Null,
        };
        let ready_path = node.data_dir.join("ready.json");
        // A start lists the pool's copies and their chains: a few zfs
        // calls each, which wait while zfs-fuse is stalled (CI once saw
        // more than 10 s).
        node.ready = wait_for(
            &format!("{} ready.json", node.name),
            Duration::from_secs(30),
            || {
                if let Some(c) = node.child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    panic!(
                        "{} exited early ({status}){}: {}",
                        node.name,
                        zfs_daemon_gone(),
                        std::fs::read_to_string(&node.log).unwrap_or_default()
                    );
                }
                let text = std::fs::read_to_string(&ready_path).ok()?;
                serde_json::from_str(&text).ok()
            },
        );
        if let Some(pool) = node.pool() {
            let mut pools = self.pools.lock().expect("pool list");
            if !pools.contains(&pool) {
                pools.push(pool);
            }
        }
        node
    }

    /// Starts `n` nodes named n1..nN, each seeded with the first.
    pub fn start_cluster(&self, n: usize, extra: &[&str]) -> Vec<Node> {
        let first = self.start("n1", &[], extra);
        let seed = first.mesh();
        let mut nodes = vec![first];
        for i in 2..=n {
            nodes.push(self.start(&format!("n{i}"), std::slice::from_ref(&seed), extra));
        }
        nodes
    }
}

/// What to add to a failure when ZFS is zfs-fuse and its daemon is gone:
/// every node's storage went with it, whatever the node did (seen once in
/// the fifty-round fault test: the daemon died with SIGABRT answers to
/// the `zfs` calls in flight; the restarted node could not import its
/// pool).
fn zfs_daemon_gone() -> &'static str {
    let installed = Command::new("sh")
        .args(["-c", "command -v zfs-fuse"])
        .output()
        .is_ok_and(|o| o.status.success());
    let running = Command::new("pgrep")
        .args(["-x", "zfs-fuse"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed && !running {
        " (the zfs-fuse daemon is not running: it died during the test, and every node's storage with it)"
    } else {
        ""
    }
}

impl Env {
    /// Destroys the pools this test's nodes created, and nothing else.
    /// Their nodes must be dead by now (Node drops kill them).
    fn destroy_pools(&self) {
        self.kill_orphaned_commands();
        for pool in self.pools.lock().expect("pool list").drain(..) {
            // A killed node's `zfs` children (a receive, a remount) may
            // still run; destroying the pool under them has wedged
            // zfs-fuse. Wait for them (bounded).
            for _ in 0..150 {
                let busy = Command::new("pgrep")
                    .args(["-f", &format!("zfs .*{pool}")])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !busy {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // zfs-fuse can leave an `umount` of this test's mounts waiting
            // for good (the node that ran it is dead): end it, or the pool
            // cannot go.
            let _ = Command::new("pkill")
                .args(["-9", "-f", &format!("umount {}/", p(self.tmp.path()))])
                .output();
            for _ in 0..20 {
                let _ = Command::new("zpool")
                    .args(["destroy", "-f", &pool])
                    .output();
                let gone = Command::new("zpool")
                    .args(["list", &pool])
                    .output()
                    .is_ok_and(|o| !o.status.success());
                if gone {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Env {
    /// Kills the site commands that nodes killed with -9 left running.
    /// They would keep the pools busy.
    fn kill_orphaned_commands(&self) {
        let Ok(dirs) = std::fs::read_dir(self.tmp.path()) else {
            return;
        };
        for d in dirs.flatten() {
            kill_site_commands(&d.path());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the site commands of the node whose data dir is `data_dir` (a
/// node records each command's process group in `DATA_DIR/run/`, and
/// removes the record when it stops the command itself).
fn kill_site_commands(data_dir: &Path) {
    let Ok(runs) = std::fs::read_dir(data_dir.join("run")) else {
        return;
    };
    for r in runs.flatten() {
        let Some(pid) = std::fs::read_to_string(r.path())
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        else {
            continue;
        };
        // Only a process that still is a ringhost site command.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(b"RINGHOST_SITE="))
        {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .output();
        }
    }
}

impl Drop for Env {
    /// When a test fails, show the end of every node's log: the failure
    /// can then be understood from CI's output alone.
    fn drop(&mut self) {
        self.destroy_pools();
        // RINGHOST_TEST_KEEP_LOGS=DIR keeps every node's log, for reading
        // a passing run (a benchmark's timings at debug level, say), in
        // DIR/<test name>/: tests that run at once name their nodes alike.
        if let Some(keep) = std::env::var_os("RINGHOST_TEST_KEEP_LOGS") {
            let mut keep = PathBuf::from(keep);
            if let Some(test) = std::thread::current().name()
                && test != "main"
            {
                keep.push(test.replace([':', '/'], "_"));
            }
            let _ = std::fs::create_dir_all(&keep);
            for e in std::fs::read_dir(self.tmp.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = e.path();
                if path.extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(&path, keep.join(e.file_name()));
                }
            }
        }
        if !std::thread::panicking() {
            return;
        }
        let Ok(dir) = std::fs::read_dir(self.tmp.path()) else {
            return;
        };
        for e in dir.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let keep: usize = std::env::var("RINGHOST_TEST_LOG_LINES")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(40);
                let tail = &lines[lines.len().saturating_sub(keep)..];
                eprintln!(
                    "--- last lines of {} ---\n{}",
                    path.display(),
                    tail.join("\n")
                );
            }
        }
    }
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A running node; killed (SIGKILL, by its PID) when dropped.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub ready: Value,
}

impl Node {
    pub fn mesh(&self) -> String {
        self.ready["mesh"]
            .as_str()
            .expect("ready.json has mesh")
            .to_owned()
    }

    pub fn generation(&self) -> u64 {
        self.ready["generation"]
            .as_u64()
            .expect("ready.json has generation")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is running").id()
    }

    /// `ringhost status --json` of this node, or None if it did not answer.
    pub fn status(&self) -> Option<Value> {
        let out = run(&["status", "--json", "--data-dir", p(&self.data_dir)]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// name → (state, generation) as this node sees the cluster.
    pub fn members(&self) -> Option<Vec<(String, String, u64)>> {
        let st = self.status()?;
        Some(
            st["members"]
                .as_array()?
                .iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or_default().to_owned(),
                        m["state"].as_str().unwrap_or_default().to_owned(),
                        m["generation"].as_u64().unwrap_or_default(),
                    )
                })
                .collect(),
        )
    }

    pub fn state_of(&self, name: &str) -> Option<(String, u64)> {
        self.members()?
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, s, g)| (s, g))
    }

    /// `kill -9` of the node and of its site commands, as a crash of its
    /// machine ends them (left running, a command keeps its files open in
    /// the dead node's FUSE mount: in the fifty-round run where zfs-fuse
    /// stopped answering every pool for 30 s, one had; the cause is not
    /// proven).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            kill_site_commands(&self.data_dir);
        }
    }

    /// The node's ZFS pool, if it has one.
    pub fn pool(&self) -> Option<String> {
        self.ready["pool"].as_str().map(str::to_owned)
    }

    /// The mountpoint of this node's copy of `site`.
    pub fn site_dir(&self, site: &str) -> PathBuf {
        self.data_dir.join("mnt/sites").join(site)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("node is running");
        let pid = i32::try_from(c.id()).expect("pid fits in i32");
        let out = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .output()
            .expect("kill runs");
        assert!(out.status.success(), "kill -TERM {pid}: {out:?}");
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                panic!("{} did not exit within 10 s of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until every node lists all of them alive: a master keeps a site
/// only while it sees a majority of the known members alive (quorum guard),
/// so a site created before the cluster formed would wait for an election.
pub fn formed(nodes: &[Node]) {
    let n = nodes.len();
    wait_for("the cluster to form", Duration::from_secs(20), || {
        nodes
            .iter()
            .all(|x| {
                x.members()
                    .is_some_and(|m| m.iter().filter(|(_, s, _)| s == "alive").count() == n)
            })
            .then_some(())
    });
}
