//! `ZfsStore`: the `SnapshotStore` on the real `zfs`/`zpool` CLI, and
//! `EmbeddedPool`, a pool on a sparse file. This module is the only code in
//! ringhost that spawns `zfs` or `zpool`.
//!
//! It uses the subset that both OpenZFS and zfs-fuse 0.7 understand, and
//! detects the rest at open time ([`Features`]): zfs-fuse's `zfs list` has
//! no `-p` (guids come out rounded, "8.41E"), so exact values then come from
//! `zfs get -Hp`; it has no `written`, no bookmarks, no `recv -s`/`-u`/`-o`.
//! `zfs send -p` is never used (it drags the master's mountpoint along) and
//! `zfs recv -F` is never used (it destroys what only the receiver has).
//!
//! A snapshot's `creation` (Unix seconds) is the sender's: `zfs receive`
//! sets the received snapshot's creation time from the stream's BEGIN
//! record, on OpenZFS and on zfs-fuse 0.7 alike (checked on zfs-fuse: a
//! snapshot received seconds later reports the sender's exact `creation`;
//! only the received *dataset* gets the receive time). `createtxg`, by
//! contrast, is the receiver's own.
//!
//! Layout under the root dataset (usually the pool itself):
//! `<root>/sites` and `<root>/stash` are parents with `canmount=off`,
//! `atime=off`, `readonly=on` and a mountpoint under `mount_root`; sites
//! inherit all of these, so a received replica is read-only from the moment
//! it exists, and a master is created with a local `readonly=off`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Output, Stdio};

use model::SiteName;
use tracing::debug;

use crate::error::{Error, Result};
use crate::parse::{STREAM_HEADER_LEN, parse_get_output, parse_snapshot_list};
use crate::parse::{parse_zfs_stream_header, stream_snapshot_name};
use crate::rules::{check_receive, check_rel_path};
use crate::store::{SendStream, SnapshotStore};
use crate::types::{Changed, Guid, Snapshot, Stash, snapshot_name};

/// Where the binaries are and which datasets and directories to use.
#[derive(Clone, Debug)]
pub struct ZfsConfig {
    /// Path or name (looked up in `PATH`) of `zfs`.
    pub zfs_bin: PathBuf,
    /// Path or name of `zpool`.
    pub zpool_bin: PathBuf,
    /// The dataset under which `sites/` and `stash/` live (usually the pool).
    pub root: String,
    /// Directory under which sites are mounted (`<mount_root>/sites/<name>`).
    pub mount_root: PathBuf,
}

impl ZfsConfig {
    pub fn new(root: impl Into<String>, mount_root: impl Into<PathBuf>) -> Self {
        Self {
            zfs_bin: "zfs".into(),
            zpool_bin: "zpool".into(),
            root: root.into(),
            mount_root: mount_root.into(),
        }
    }
}

/// What the installed ZFS offers beyond the common subset, probed at open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `zfs list -p` (exact numbers in one listing call).
    pub list_parsable: bool,
    /// The `written` property (exact change detection).
    pub written: bool,
    /// Pool feature `bookmarks` enabled or active.
    pub bookmarks: bool,
    /// `zfs receive -s` (resumable receive).
    pub resumable_receive: bool,
    /// `zfs receive -o` (override properties on receive).
    pub receive_props: bool,
}

/// Runs the binaries and logs each call with its duration.
#[derive(Clone, Debug)]
struct Cli {
    zfs: PathBuf,
    zpool: PathBuf,
}

fn command_line(bin: &Path, args: &[&str]) -> String {
    let mut s = bin.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

fn spawn_error(bin: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::PermissionDenied {
        Error::BinaryNotFound {
            path: bin.to_owned(),
            source: e,
        }
    } else {
        Error::Io {
            context: format!("cannot start '{}'", bin.display()),
            source: e,
        }
    }
}

/// How long a call may take before it is killed: mounts and unmounts
/// only. zfs-fuse was seen to leave an `umount` waiting for an answer
/// from the daemon for good (after concurrent remounts under load); once
/// killed, the dataset could be mounted again. Other calls can take long
/// on big pools and are never killed.
fn call_limit(args: &[&str]) -> Option<std::time::Duration> {
    match args.first() {
        Some(&"mount") | Some(&"unmount") | Some(&"umount") => {
            Some(std::time::Duration::from_secs(MOUNT_CALL_LIMIT_S))
        }
        _ => None,
    }
}

const MOUNT_CALL_LIMIT_S: u64 = 15;

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

fn command_error(bin: &Path, args: &[&str], out: &Output) -> Error {
    Error::Command {
        command: command_line(bin, args),
        status: out.status.to_string(),
        stderr: stderr_of(out),
    }
}

impl Cli {
    /// Runs a command to completion; a failed exit is not an error here.
    fn output(&self, bin: &Path, args: &[&str]) -> Result<Output> {
        #[allow(clippy::disallowed_methods)] // for logging the call's duration only
        let start = std::time::Instant::now();
        let limit = call_limit(args);
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if limit.is_some() {
            // Its own process group: `zfs unmount` runs `umount`, and a
            // stuck one is a grandchild.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let child = cmd.spawn().map_err(|e| spawn_error(bin, e))?;
        let watchdog = limit.map(|limit| {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let (done, wait) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::spawn(move || {
                let expired = matches!(
                    wait.recv_timeout(limit),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                if expired {
                    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                }
                expired
            });
            (done, thread, limit)
        });
        let out = child.wait_with_output().map_err(|e| Error::Io {
            context: format!("waiting for '{}'", command_line(bin, args)),
            source: e,
        })?;
        if let Some((done, thread, limit)) = watchdog {
            let _ = done.send(());
            if thread.join().unwrap_or(false) {
                debug!(command = %command_line(bin, args), ?limit, "killed a stuck call");
                return Err(Error::Command {
                    command: command_line(bin, args),
                    status: out.status.to_string(),
                    stderr: format!(
                        "no answer within {} s; killed (zfs-fuse can leave an unmount waiting for good)",
                        limit.as_secs()
                    ),
                });
            }
        }
        debug!(
            command = %command_line(bin, args),
            status = %out.status,
            duration_ms = start.elapsed().as_secs_f64() * 1e3,
            "ran"
        );
        Ok(out)
    }

    fn zfs_out(&self, args: &[&str]) -> Result<Output> {
        self.output(&self.zfs, args)
    }

    /// Runs `zfs` and returns stdout, or the failure with its stderr.
    fn zfs(&self, args: &[&str]) -> Result<String> {
        let out = self.zfs_out(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(command_error(&self.zfs, args, &out))
        }
    }

    /// Runs `zfs` again (at once, a bounded number of times) while it says
    /// "busy": zfs-fuse calls a dataset busy for a moment after an unmount.
    fn zfs_unbusy(&self, args: &[&str]) -> Result<String> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.zfs(args) {
                Err(Error::Command { ref stderr, .. })
                    if stderr.contains("busy") && attempt < MOUNT_ATTEMPTS => {}
                r => return r,
            }
        }
    }

    fn zpool(&self, args: &[&str]) -> Result<String> {
        let out = self.output(&self.zpool, args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(command_error(&self.zpool, args, &out))
        }
    }

    fn exists(&self, dataset: &str) -> Result<bool> {
        let out = self.zfs_out(&["list", "-H", "-o", "name", dataset])?;
        if out.status.success() {
            Ok(true)
        } else if stderr_of(&out).contains("does not exist") {
            Ok(false)
        } else {
            Err(command_error(&self.zfs, &["list", dataset], &out))
        }
    }

    /// A property of `dataset`, or `None` when the dataset does not exist
    /// (one call where `exists` and `get` would take two).
    fn get_if_exists(&self, prop: &str, dataset: &str) -> Result<Option<String>> {
        let args = ["get", "-H", "-p", "-o", "value", prop, dataset];
        let out = self.zfs_out(&args)?;
        if out.status.success() {
            Ok(Some(
                String::from_utf8_lossy(&out.stdout)
                    .trim_end_matches('\n')
                    .to_owned(),
            ))
        } else if stderr_of(&out).contains("does not exist") {
            Ok(None)
        } else {
            Err(command_error(&self.zfs, &args, &out))
        }
    }

    fn get(&self, prop: &str, dataset: &str) -> Result<String> {
        Ok(self
            .zfs(&["get", "-H", "-p", "-o", "value", prop, dataset])?
            .trim_end_matches('\n')
            .to_owned())
    }

    fn get_u64(&self, prop: &str, dataset: &str) -> Result<u64> {
        let v = self.get(prop, dataset)?;
        v.parse().map_err(|_| Error::Parse {
            line: v.clone(),
            reason: format!("{prop} of {dataset} is not an integer"),
        })
    }

    /// Mounted, by the `mounted` property rather than an exit code.
    fn mounted(&self, dataset: &str) -> Result<bool> {
        Ok(self.get("mounted", dataset)? == "yes")
    }

    /// Mounts a dataset. zfs-fuse refuses a mount right after an unmount
    /// as busy once in a while and accepts the next attempt, so this
    /// retries a few times at once (no waiting) and trusts only `mounted`.
    fn mount(&self, dataset: &str) -> Result<()> {
        let mut last = None;
        for _ in 0..MOUNT_ATTEMPTS {
            if self.mounted(dataset)? {
                return Ok(());
            }
            last = Some(self.zfs_out(&["mount", dataset])?);
        }
        if self.mounted(dataset)? {
            return Ok(());
        }
        Err(match last {
            Some(out) => command_error(&self.zfs, &["mount", dataset], &out),
            None => Error::Command {
                command: format!("zfs mount {dataset}"),
                status: "not run".into(),
                stderr: String::new(),
            },
        })
    }

    fn unmount(&self, dataset: &str) -> Result<()> {
        if self.mounted(dataset)? {
            let out = self.zfs_out(&["unmount", dataset])?;
            if self.mounted(dataset)? {
                return Err(command_error(&self.zfs, &["unmount", dataset], &out));
            }
        }
        Ok(())
    }
}

const MOUNT_ATTEMPTS: usize = 10;

/// The user property that records the intended read-only state. zfs-fuse
/// reports `readonly` as `off temporary` for a mounted dataset whose
/// `readonly=on` is in force (writes fail), so the intent is kept here too.
const RO_PROP: &str = "ringhost:readonly";

/// Where the machine-wide lock of FUSE remounts lives.
const FUSE_MOUNT_LOCK: &str = "/tmp/ringhost-zfs-fuse-mount.lock";

/// Takes the machine-wide lock that serializes FUSE remounts across
/// processes (an advisory `flock`, released when the guard drops or the
/// process dies). Without the lock file (read-only /tmp), runs unlocked.
fn fuse_mount_lock() -> Option<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(FUSE_MOUNT_LOCK)
        .ok()?;
    f.lock().ok()?;
    Some(f)
}

/// Whether the mount at `mountpoint` is a FUSE mount (zfs-fuse), whose
/// kernel cache can keep serving old file contents after a receive.
fn is_fuse_mount(mountpoint: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split(' ');
            let (_, mp, fstype) = (f.next(), f.next(), f.next());
            mp == Some(mountpoint) && fstype.is_some_and(|t| t.starts_with("fuse"))
        })
    })
}

/// Maps a failed `zfs` command's stderr to the specific variants.
fn classify(err: Error, target: &str) -> Error {
    match err {
        Error::Command { ref stderr, .. }
            if stderr.contains("out of space") || stderr.contains("No space left") =>
        {
            Error::OutOfSpace {
                target: target.to_owned(),
                stderr: stderr.clone(),
            }
        }
        e => e,
    }
}

fn io_error(site: &SiteName, path: &Path, context: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::ReadOnlyFilesystem => Error::ReadOnly { site: site.clone() },
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::OutOfSpace {
            target: format!("{site}/{}", path.display()),
            stderr: e.to_string(),
        },
        io::ErrorKind::NotFound => Error::NoSuchFile {
            site: site.clone(),
            path: path.display().to_string(),
        },
        _ => Error::Io {
            context: format!("{context} '{}' in site '{site}'", path.display()),
            source: e,
        },
    }
}

/// A pool on a sparse file: the embedded default, so a laptop needs no
/// spare disk.
#[derive(Debug)]
pub struct EmbeddedPool {
    pub name: String,
    pub image: Option<PathBuf>,
    cli: Cli,
}

impl EmbeddedPool {
    /// Imports the pool if it is not imported and its image exists, or
    /// creates the image (sparse, `size` bytes) and the pool (`-m none`).
    pub fn create_or_import(
        zpool_bin: impl Into<PathBuf>,
        name: &str,
        image: &Path,
        size: u64,
    ) -> Result<Self> {
        let cli = Cli {
            zfs: "zfs".into(),
            zpool: zpool_bin.into(),
        };
        let image = std::path::absolute(image).map_err(|e| Error::Io {
            context: format!("cannot resolve pool image path '{}'", image.display()),
            source: e,
        })?;
        let pool = Self {
            name: name.to_owned(),
            image: Some(image.clone()),
            cli,
        };
        if pool.imported()? {
            return Ok(pool);
        }
        let img = image.display().to_string();
        if image.exists() {
            let dir = image
                .parent()
                .map_or_else(|| "/".to_owned(), |d| d.display().to_string());
            pool.cli.zpool(&["import", "-d", &dir, name])?;
        } else {
            let file = std::fs::File::create_new(&image).map_err(|e| Error::Io {
                context: format!("cannot create pool image '{img}'"),
                source: e,
            })?;
            file.set_len(size).map_err(|e| Error::Io {
                context: format!("cannot size pool image '{img}' to {size} bytes"),
                source: e,
            })?;
            if let Err(e) = pool.cli.zpool(&["create", "-m", "none", name, &img]) {
                // The image is ours and holds no pool: remove it.
                let _ = std::fs::remove_file(&image);
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// An existing, imported pool by name.
    pub fn open(zpool_bin: impl Into<PathBuf>, name: &str) -> Result<Self> {
        let pool = Self {
            name: name.to_owned(),
            image: None,
            cli: Cli {
                zfs: "zfs".into(),
                zpool: zpool_bin.into(),
            },
        };
        if !pool.imported()? {
            return Err(Error::Command {
                command: format!("zpool list {name}"),
                status: "not imported".into(),
                stderr: format!("no pool '{name}'"),
            });
        }
        Ok(pool)
    }

    fn imported(&self) -> Result<bool> {
        let out = self
            .cli
            .output(&self.cli.zpool, &["list", "-H", "-o", "name", &self.name])?;
        Ok(out.status.success())
    }

    /// Exports the pool (it can be imported again from its image).
    pub fn export(&self) -> Result<()> {
        self.cli.zpool(&["export", &self.name]).map(drop)
    }

    /// Destroys the pool and removes its image file (explicit delete only).
    pub fn destroy(self) -> Result<()> {
        // zfs-fuse can call a just-unmounted pool busy; the next try works.
        let mut result = Ok(String::new());
        for _ in 0..MOUNT_ATTEMPTS {
            result = self.cli.zpool(&["destroy", "-f", &self.name]);
            if result.is_ok() || !self.imported()? {
                break;
            }
        }
        result?;
        if let Some(image) = &self.image {
            std::fs::remove_file(image).map_err(|e| Error::Io {
                context: format!("pool destroyed; cannot remove image '{}'", image.display()),
                source: e,
            })?;
        }
        Ok(())
    }
}

/// The `SnapshotStore` on real ZFS.
#[derive(Debug)]
pub struct ZfsStore {
    cli: Cli,
    root: String,
    mount_root: PathBuf,
    features: Features,
    /// Datasets received into on zfs-fuse since their last mount: the
    /// kernel may still cache their old files. Remounted before this store
    /// reads them, and by `set_writable`; not after every receive, which
    /// would put a remount on replication's hot path.
    stale: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Without `written` (zfs-fuse): the tree fingerprint of each site's
    /// live copy when its newest snapshot was taken here (or when it was
    /// made writable, holding its newest snapshot), so that `changed` can
    /// answer where the size counters cannot. Lost with the process: after
    /// a restart `changed` says `Unknown` until the next snapshot.
    baselines: std::sync::Mutex<std::collections::BTreeMap<String, crate::types::TreeFingerprint>>,
}

/// Whether `zfs receive`'s usage text lists a flag (e.g. `s` in `[-vnsFu]`).
fn usage_has_flag(usage: &str, flag: char) -> bool {
    usage
        .lines()
        .filter(|l| l.trim_start().starts_with("receive") || l.trim_start().starts_with("recv"))
        .flat_map(|l| l.split('['))
        .filter_map(|part| part.strip_prefix('-'))
        .any(|opts| {
            opts.split([']', ' '])
                .next()
                .is_some_and(|o| o.contains(flag))
        })
}

impl ZfsStore {
    /// Opens the store under `config.root`, probing features and creating
    /// the `sites` and `stash` parents when missing.
    pub fn open(config: ZfsConfig) -> Result<Self> {
        let cli = Cli {
            zfs: config.zfs_bin,
            zpool: config.zpool_bin,
        };
        cli.zfs(&["list", "-H", "-o", "name", &config.root])?;
        let pool = config.root.split('/').next().unwrap_or(&config.root);
        let features = Features {
            list_parsable: cli
                .zfs_out(&["list", "-H", "-p", "-o", "name", &config.root])?
                .status
                .success(),
            written: cli
                .zfs_out(&["get", "-H", "-p", "-o", "value", "written", &config.root])?
                .status
                .success(),
            bookmarks: cli
                .output(
                    &cli.zpool,
                    &["get", "-H", "-o", "value", "feature@bookmarks", pool],
                )?
                .stdout
                .starts_with(b"enabled")
                || cli
                    .output(
                        &cli.zpool,
                        &["get", "-H", "-o", "value", "feature@bookmarks", pool],
                    )?
                    .stdout
                    .starts_with(b"active"),
            ..Features::default()
        };
        // `zfs receive` without arguments prints its usage (on stderr).
        let usage = cli.zfs_out(&["receive"])?;
        let usage = String::from_utf8_lossy(&usage.stderr).into_owned()
            + &String::from_utf8_lossy(&usage.stdout);
        let features = Features {
            resumable_receive: usage_has_flag(&usage, 's'),
            receive_props: usage.contains("-o "),
            ..features
        };
        debug!(root = %config.root, ?features, "opened zfs store");
        let store = Self {
            cli,
            root: config.root,
            mount_root: config.mount_root,
            baselines: std::sync::Mutex::default(),
            features,
            stale: std::sync::Mutex::default(),
        };
        for parent in ["sites", "stash"] {
            store.ensure_parent(parent)?;
        }
        Ok(store)
    }

    pub fn features(&self) -> Features {
        self.features
    }

    fn ensure_parent(&self, name: &str) -> Result<()> {
        let ds = format!("{}/{name}", self.root);
        let mp = self.mount_root.join(name);
        let props = [
            "canmount=off".to_owned(),
            "atime=off".to_owned(),
            "readonly=on".to_owned(),
            format!("{RO_PROP}=on"),
            format!("mountpoint={}", mp.display()),
        ];
        if self.cli.exists(&ds)? {
            // Set only what differs: a `zfs set` remounts the children, and
            // a child still mounted from before a crash is then "busy".
            for p in &props {
                let (key, value) = p.split_once('=').expect("props are key=value");
                if self.cli.get(key, &ds).ok().as_deref() != Some(value) {
                    self.cli.zfs(&["set", p, &ds])?;
                }
            }
        } else {
            let mut args = vec!["create"];
            for p in &props {
                args.push("-o");
                args.push(p);
            }
            args.push(&ds);
            self.cli.zfs(&args).map_err(|e| classify(e, &ds))?;
        }
        Ok(())
    }

    fn dataset(&self, site: &SiteName) -> String {
        format!("{}/sites/{site}", self.root)
    }

    fn stash_dataset(&self, name: &str) -> String {
        format!("{}/stash/{name}", self.root)
    }

    /// `zfs send` of `to` (incremental from `from`) of dataset `ds`, the
    /// snapshots named from `chain`.
    fn spawn_send(
        &self,
        site: &SiteName,
        ds: &str,
        chain: &[Snapshot],
        from: Option<Guid>,
        to: Guid,
    ) -> Result<SendStream> {
        let to = format!("{ds}@{}", Self::find(site, chain, to)?.name);
        let from = from
            .map(|g| Self::find(site, chain, g).map(|s| format!("{ds}@{}", s.name)))
            .transpose()?;
        let mut args = vec!["send"];
        if let Some(from) = &from {
            args.extend(["-i", from.as_str()]);
        }
        args.push(&to);
        debug!(command = %command_line(&self.cli.zfs, &args), "spawn");
        let mut child = Command::new(&self.cli.zfs)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(&self.cli.zfs, e))?;
        // Invariant: both were requested as piped above.
        let stdout = child.stdout.take().expect("stdout is piped");
        widen_pipe(&stdout);
        let stderr = child.stderr.take();
        Ok(Box::new(ChildStream {
            child,
            stdout,
            stderr,
            done: false,
        }))
    }

    fn existing(&self, site: &SiteName) -> Result<String> {
        let ds = self.dataset(site);
        if self.cli.exists(&ds)? {
            Ok(ds)
        } else {
            Err(Error::NoSuchSite { site: site.clone() })
        }
    }

    fn chain(&self, ds: &str) -> Result<Vec<Snapshot>> {
        if self.features.list_parsable {
            let out = self.cli.zfs(&[
                "list",
                "-H",
                "-p",
                "-t",
                "snapshot",
                "-o",
                "name,guid,createtxg,creation",
                "-s",
                "createtxg",
                "-r",
                ds,
            ])?;
            return parse_snapshot_list(&out, ds);
        }
        // zfs-fuse: names from `list`, exact numbers from `get -Hp`.
        let names = self
            .cli
            .zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", ds])?;
        let prefix = format!("{ds}@");
        let names: Vec<&str> = names.lines().filter(|n| n.starts_with(&prefix)).collect();
        self.exact_snapshots(ds, &names)
    }

    /// The snapshots `names` (`<ds>@<snap>`) of `ds` with exact numbers
    /// from one `zfs get -Hp` call, which both OpenZFS and zfs-fuse have;
    /// oldest first.
    fn exact_snapshots(&self, ds: &str, names: &[&str]) -> Result<Vec<Snapshot>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.get_rows("guid,createtxg,creation", names)?;
        Self::snapshots_from_rows(ds, names, &rows)
    }

    /// `zfs get -Hp` of `props` (comma-separated) on `targets`, as rows.
    fn get_rows(&self, props: &str, targets: &[&str]) -> Result<Vec<(String, String, String)>> {
        let mut args = vec!["get", "-H", "-p", "-o", "name,property,value", props];
        args.extend(targets);
        parse_get_output(&self.cli.zfs(&args)?)
    }

    /// The snapshots `names` of `ds` from `zfs get` rows holding their
    /// guid, createtxg and creation; oldest first.
    fn snapshots_from_rows(
        ds: &str,
        names: &[&str],
        rows: &[(String, String, String)],
    ) -> Result<Vec<Snapshot>> {
        let mut text = String::new();
        for name in names {
            let val = |prop: &str| {
                rows.iter()
                    .find(|(n, p, _)| n == name && p == prop)
                    .map_or("", |(_, _, v)| v.as_str())
            };
            text.push_str(&format!(
                "{name}\t{}\t{}\t{}\n",
                val("guid"),
                val("createtxg"),
                val("creation")
            ));
        }
        parse_snapshot_list(&text, ds)
    }

    fn find(site: &SiteName, chain: &[Snapshot], guid: Guid) -> Result<Snapshot> {
        chain
            .iter()
            .find(|s| s.guid == guid)
            .cloned()
            .ok_or_else(|| Error::NoSuchSnapshot {
                site: site.clone(),
                what: format!("with guid {guid}"),
            })
    }

    /// `changed` where there is no `written` (zfs-fuse): a different size,
    /// or blocks of the newest snapshot no longer in the live dataset, prove
    /// a change; equal sizes prove nothing (an in-place rewrite keeps them).
    ///
    /// A master runs this every snapshot interval, so it takes two `zfs`
    /// calls (the snapshot names; then every number in one `get`) where
    /// `existing` + `chain` + three `get`s took six.
    fn changed_without_written(&self, site: &SiteName) -> Result<Changed> {
        let ds = self.dataset(site);
        let listed = match self
            .cli
            .zfs(&["list", "-H", "-t", "snapshot", "-o", "name", "-r", &ds])
        {
            Ok(l) => l,
            Err(e) => {
                // A missing site is reported as such; anything else as is.
                self.existing(site)?;
                return Err(e);
            }
        };
        let prefix = format!("{ds}@");
        let names: Vec<&str> = listed.lines().filter(|n| n.starts_with(&prefix)).collect();
        if names.is_empty() {
            return Ok(Changed::Yes);
        }
        let mut targets = names.clone();
        targets.push(&ds);
        let rows = self.get_rows("guid,createtxg,creation,referenced,used", &targets)?;
        let chain = Self::snapshots_from_rows(&ds, &names, &rows)?;
        let newest = chain
            .last()
            .expect("names is not empty, so neither is the chain");
        let snap = format!("{ds}@{}", newest.name);
        let num = |name: &str, prop: &str| -> Result<u64> {
            let v = rows
                .iter()
                .find(|(n, p, _)| n == name && p == prop)
                .map_or("", |(_, _, v)| v.as_str());
            v.parse().map_err(|_| Error::Parse {
                line: v.to_owned(),
                reason: format!("{prop} of {name} is not an integer"),
            })
        };
        if num(&ds, "referenced")? != num(&snap, "referenced")? || num(&snap, "used")? > 0 {
            return Ok(Changed::Yes);
        }
        let baseline = self
            .baselines
            .lock()
            .expect("baselines lock is never poisoned")
            .get(&ds)
            .copied();
        Ok(match (baseline, self.live_fingerprint(site)) {
            (Some(then), Some(now)) if then == now => Changed::No,
            (Some(_), Some(_)) => Changed::Yes,
            _ => Changed::Unknown,
        })
    }

    /// The tree fingerprint of a site's live copy, where `changed` needs
    /// one (no `written`): `None` with `written`, or where the tree cannot
    /// be read or is too large.
    fn live_fingerprint(&self, site: &SiteName) -> Option<crate::types::TreeFingerprint> {
        if self.features.written {
            return None;
        }
        let mp = self.mount_root.join("sites").join(site.as_str());
        crate::types::tree_fingerprint(&mp, &[])
    }

    fn set_baseline(&self, ds: &str, print: Option<crate::types::TreeFingerprint>) {
        let mut b = self
            .baselines
            .lock()
            .expect("baselines lock is never poisoned");
        match print {
            Some(p) => {
                b.insert(ds.to_owned(), p);
            }
            None => {
                b.remove(ds);
            }
        }
    }

    /// Unmounts and mounts `ds` again, holding the machine-wide FUSE mount
    /// lock: one zfs-fuse daemon serves every pool of the machine, and
    /// concurrent unmounts from several nodes have wedged it.
    fn remount(&self, site: &SiteName, ds: &str) -> Result<()> {
        let _guard = fuse_mount_lock();
        // Three calls, not seven: this sits in a live migration's pause.
        // An unmount of a dataset that is not mounted fails harmlessly; a
        // mount refused as busy right after an unmount is retried; only
        // `mounted` is trusted at the end.
        let _ = self.cli.zfs_out(&["unmount", ds])?;
        for _ in 0..MOUNT_ATTEMPTS {
            if self.cli.zfs_out(&["mount", ds])?.status.success() {
                break;
            }
        }
        if !self.cli.mounted(ds)? {
            return Err(Error::NotMounted {
                site: site.clone(),
                mountpoint: self.cli.get("mountpoint", ds)?,
            });
        }
        self.stale
            .lock()
            .expect("stale lock is never poisoned")
            .remove(ds);
        Ok(())
    }

    /// Remounts `ds` if a receive left the kernel's cache of it stale.
    fn fresh(&self, site: &SiteName, ds: &str) -> Result<()> {
        let stale = self
            .stale
            .lock()
            .expect("stale lock is never poisoned")
            .contains(ds);
        if stale {
            self.remount(site, ds)?;
        }
        Ok(())
    }

    fn ensure_mounted(&self, site: &SiteName, ds: &str) -> Result<PathBuf> {
        let mp = self.cli.get("mountpoint", ds)?;
        if self.cli.mount(ds).is_err() {
            return Err(Error::NotMounted {
                site: site.clone(),
                mountpoint: mp,
            });
        }
        Ok(PathBuf::from(mp))
    }

    fn list_children(&self, parent: &str) -> Result<Vec<String>> {
        let out = self.cli.zfs(&[
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "filesystem",
            "-d",
            "1",
            "-r",
            parent,
        ])?;
        let prefix = format!("{parent}/");
        Ok(out
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter(|n| !n.contains(['/', '%']))
            .map(str::to_owned)
            .collect())
    }

    /// Renames a site's copy `ds` to `stash`. zfs-fuse refuses the rename
    /// as "busy" now and then while a clone of one of `ds`'s snapshots (an
    /// earlier stash of the site) is mounted, and it can rename and still
    /// fail: on "busy" the clones are unmounted for the rename (the
    /// caller mounts them again with [`Self::mount_stashes`]), and a
    /// rename that happened is done whatever its exit status said.
    fn rename_to_stash(&self, ds: &str, stash: &str) -> Result<()> {
        let done = || -> Result<bool> { Ok(!self.cli.exists(ds)? && self.cli.exists(stash)?) };
        let first = match self.cli.zfs(&["rename", ds, stash]) {
            Ok(_) => return Ok(()),
            Err(e) if done()? => {
                tracing::debug!(error = %e, "zfs rename failed after renaming");
                return Ok(());
            }
            Err(e) => e,
        };
        if !first.to_string().contains("busy") {
            return Err(first);
        }
        for clone in self.clones_of(ds)? {
            self.cli.unmount(&clone)?;
        }
        match self.cli.zfs_unbusy(&["rename", ds, stash]) {
            Ok(_) => Ok(()),
            Err(_) if done()? => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The datasets cloned from a snapshot of `ds`.
    fn clones_of(&self, ds: &str) -> Result<Vec<String>> {
        let prefix = format!("{ds}@");
        let out = self.cli.zfs(&[
            "list",
            "-H",
            "-o",
            "name,origin",
            "-t",
            "filesystem",
            "-r",
            &self.root,
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, origin)| origin.starts_with(&prefix))
            .map(|(name, _)| name.to_owned())
            .collect())
    }

    /// Mounts every stash that is not mounted, so that its files are
    /// where `zfs get mountpoint` says. The first failure is returned
    /// after every stash was tried.
    fn mount_stashes(&self) -> Result<()> {
        let parent = format!("{}/stash", self.root);
        let out = self.cli.zfs(&[
            "list",
            "-H",
            "-o",
            "name,mounted",
            "-t",
            "filesystem",
            "-d",
            "1",
            "-r",
            &parent,
        ])?;
        let mut first = None;
        for (name, mounted) in out.lines().filter_map(|l| l.split_once('\t')) {
            if name == parent || mounted == "yes" {
                continue;
            }
            if let Err(e) = self.cli.mount(name) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// [`Self::mount_stashes`], for the places where a mount that fails
    /// must not stop the work: it is said, and tried again at the next.
    fn remount_stashes(&self) {
        if let Err(e) = self.mount_stashes() {
            tracing::warn!(error = %e, "cannot mount every stash; their data is safe but unmounted");
        }
    }

    fn read_stash(&self, name: &str) -> Result<Option<Stash>> {
        let Some(site) = name.rsplit_once('-').and_then(|(s, _)| s.parse().ok()) else {
            return Ok(None);
        };
        let ds = self.stash_dataset(name);
        let origin = self.cli.get("origin", &ds)?;
        let origin = if origin == "-" || origin.is_empty() {
            None
        } else {
            Some(Guid(self.cli.get_u64("guid", &origin)?))
        };
        Ok(Some(Stash {
            name: name.to_owned(),
            site,
            snapshots: self.chain(&ds)?,
            origin,
        }))
    }

    /// `listed`: the chain the caller just listed (`Some(None)`: no copy),
    /// or `None` to list it here.
    fn receive_inner(
        &self,
        site: &SiteName,
        listed: Option<Option<&[Snapshot]>>,
        stream: &mut dyn Read,
    ) -> Result<Snapshot> {
        let ds = self.dataset(site);
        // What is here, asked while the stream's first bytes are on their
        // way (over the mesh the sender is starting `zfs send`): the
        // queries are not on the transfer's path. With the chain given,
        // only the mountpoint is asked.
        let mut head = vec![0u8; STREAM_HEADER_LEN];
        let mut got = 0;
        let existed_given = listed.map(|given| given.is_some());
        let here = || -> Result<(Option<String>, Option<Vec<Snapshot>>)> {
            if existed_given == Some(false) {
                return Ok((None, None));
            }
            let mountpoint = self.cli.get_if_exists("mountpoint", &ds)?;
            let chain = match (&mountpoint, listed) {
                (Some(_), None) => Some(self.chain(&ds)?),
                _ => None,
            };
            Ok((mountpoint, chain))
        };
        std::thread::scope(|scope| {
            let here = scope.spawn(here);
            let mut read_head = Ok(());
            while got < head.len() {
                match stream.read(&mut head[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        read_head = Err(e);
                        break;
                    }
                }
            }
            // A panic in the queries is a bug; surface it here.
            let join = |h: std::thread::ScopedJoinHandle<'_, _>| {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
            };
            let head = |existed, chain| Head {
                bytes: head,
                got,
                read: read_head,
                existed,
                chain,
            };
            match listed {
                None => {
                    let (mountpoint, chain) = join(here)?;
                    let head = head(mountpoint.is_some(), chain);
                    self.receive_body(site, &ds, head, stream, mountpoint)
                }
                Some(given) => {
                    // Awaited before `zfs receive` starts, as the listing
                    // always was: queries about a dataset during its receive
                    // are untried on zfs-fuse (a run where they overlapped
                    // wedged it, cause unknown).
                    let (mountpoint, _) = join(here)?;
                    let head = head(given.is_some(), given.map(<[Snapshot]>::to_vec));
                    self.receive_body(site, &ds, head, stream, mountpoint)
                }
            }
        })
    }

    /// The rest of a receive, once the stream's first record is read:
    /// `mountpoint` gives the copy's mountpoint (None: no copy).
    fn receive_body(
        &self,
        site: &SiteName,
        ds: &str,
        head: Head,
        stream: &mut dyn Read,
        mountpoint: Option<String>,
    ) -> Result<Snapshot> {
        let ds = ds.to_owned();
        let Head {
            bytes: mut head,
            got,
            read,
            existed,
            chain,
        } = head;
        if let Err(e) = read {
            return Err(Error::CorruptStream {
                site: site.clone(),
                reason: format!("reading the stream failed: {e}"),
            });
        }
        head.truncate(got);
        let corrupt = |reason: String| Error::CorruptStream {
            site: site.clone(),
            reason,
        };
        let header = match parse_zfs_stream_header(&head) {
            Ok(Some(h)) if got == STREAM_HEADER_LEN => h,
            Ok(_) => return Err(corrupt(format!("stream ends after {got} bytes"))),
            Err(reason) => return Err(corrupt(reason)),
        };
        check_receive(site, chain.as_deref(), header)?;

        let args = ["receive", ds.as_str()];
        #[allow(clippy::disallowed_methods)] // for logging the call's duration only
        let start = std::time::Instant::now();
        let mut child = Command::new(&self.cli.zfs)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_error(&self.cli.zfs, e))?;
        let mut read_error = None;
        {
            // Invariant: stdin was requested as piped above.
            let mut stdin = child.stdin.take().expect("stdin is piped");
            widen_pipe(&stdin);
            let mut copy = || -> io::Result<()> {
                stdin.write_all(&head)?;
                let mut buf = vec![0u8; 1 << 17];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) => return Ok(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            read_error = Some(e.to_string());
                            return Ok(());
                        }
                    };
                    stdin.write_all(&buf[..n])?;
                }
            };
            // A broken pipe means zfs stopped reading; its stderr says why.
            let _ = copy();
        }
        let out = child.wait_with_output().map_err(|e| Error::Io {
            context: format!("waiting for zfs receive into '{ds}'"),
            source: e,
        })?;
        debug!(
            command = %command_line(&self.cli.zfs, &args),
            status = %out.status,
            duration_ms = start.elapsed().as_secs_f64() * 1e3,
            "ran"
        );
        if out.status.success() && read_error.is_none() {
            // The live copy is the received snapshot now.
            self.set_baseline(&ds, None);
            if mountpoint.as_deref().is_some_and(is_fuse_mount) {
                // zfs-fuse does not invalidate the kernel's cache of the
                // replica's files: remount before anything here reads them.
                self.stale
                    .lock()
                    .expect("stale lock is never poisoned")
                    .insert(ds.clone());
            } else if !existed {
                // A new copy from a full stream: zfs-fuse does not always
                // mount it; readers need it mounted.
                self.ensure_mounted(site, &ds)?;
            }
            // The received snapshot has the name the stream gives it: one
            // query, or the whole chain if that name does not hold it.
            if let Some(name) = stream_snapshot_name(&head)
                && let Ok(got) = self.exact_snapshots(&ds, &[format!("{ds}@{name}").as_str()])
                && let Ok(snap) = Self::find(site, &got, header.to)
            {
                return Ok(snap);
            }
            let chain = self.chain(&ds)?;
            return Self::find(site, &chain, header.to);
        }
        let stderr = stderr_of(&out);
        let err = if stderr.contains("does not match incremental source") {
            Error::Diverged {
                site: site.clone(),
                base: header.from.unwrap_or(Guid(0)),
                newest: chain
                    .as_ref()
                    .and_then(|c| c.last())
                    .map_or(Guid(0), |s| s.guid),
                stderr,
            }
        } else if stderr.contains("has been modified") {
            Error::Modified {
                site: site.clone(),
                stderr,
            }
        } else if stderr.contains("out of space") || stderr.contains("No space left") {
            Error::OutOfSpace {
                target: ds.clone(),
                stderr,
            }
        } else if let Some(e) = read_error {
            corrupt(format!("reading the stream failed: {e}; zfs: {stderr}"))
        } else if stderr.contains("invalid backup stream")
            || stderr.contains("checksum mismatch")
            || stderr.contains("incomplete")
            || stderr.contains("corrupt")
            || stderr.contains("Input/output error")
        {
            corrupt(stderr)
        } else {
            command_error(&self.cli.zfs, &args, &out)
        };
        if existed {
            // A failed receive can leave the replica unmounted.
            let _ = self.ensure_mounted(site, &ds);
        } else if self.cli.exists(&ds)? && self.chain(&ds)?.is_empty() {
            // A half-created dataset of this very receive: it holds nothing.
            let _ = self.cli.unmount(&ds);
            self.cli.zfs_unbusy(&["destroy", &ds])?;
        }
        Err(err)
    }
}

/// What a receive knows once the stream's first record is read: its bytes,
/// how many arrived, whether reading failed; whether a copy was here, and
/// its chain.
struct Head {
    bytes: Vec<u8>,
    got: usize,
    read: io::Result<()>,
    existed: bool,
    chain: Option<Vec<Snapshot>>,
}

/// Capacity asked for the pipes that carry snapshot streams to `zfs
/// receive` and from `zfs send`. With Linux's default 64 KiB, zfs-fuse's
/// receive of a 200 MiB increment fed by a writer that keeps up took 0.33 s;
/// with 1 MiB it took 0.20 s, as fast as reading a file (the writer stalls
/// less often and the reader finds whole records waiting).
const STREAM_PIPE_CAPACITY: i32 = 1 << 20;

/// Best effort: Linux caps the capacity at `/proc/sys/fs/pipe-max-size`
/// (1 MiB by default) for processes without `CAP_SYS_RESOURCE`; a refusal
/// leaves the pipe as it was, which is slower but correct.
fn widen_pipe(fd: impl std::os::fd::AsFd) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(STREAM_PIPE_CAPACITY))
    {
        debug!(error = %e, "pipe capacity unchanged");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = fd;
}

/// The stdout of `zfs send`; reports the sender's failure at the end.
struct ChildStream {
    child: Child,
    stdout: ChildStdout,
    stderr: Option<ChildStderr>,
    done: bool,
}

impl Read for ChildStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            let mut err = String::new();
            if let Some(mut s) = self.stderr.take() {
                let _ = s.read_to_string(&mut err);
            }
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!(
                    "zfs send failed ({status}): {}",
                    err.trim()
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for ChildStream {
    fn drop(&mut self) {
        if !self.done {
            // The reader gave up early: stop this sender (our own child).
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl SnapshotStore for ZfsStore {
    fn create_site(&self, site: &SiteName) -> Result<()> {
        let ds = self.dataset(site);
        if self.cli.exists(&ds)? {
            return Err(Error::SiteExists { site: site.clone() });
        }
        self.cli
            .zfs(&[
                "create",
                "-o",
                "readonly=off",
                "-o",
                &format!("{RO_PROP}=off"),
                &ds,
            ])
            .map_err(|e| classify(e, &ds))?;
        self.ensure_mounted(site, &ds).map(drop)
    }

    fn sites(&self) -> Result<Vec<SiteName>> {
        let mut sites: Vec<SiteName> = self
            .list_children(&format!("{}/sites", self.root))?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        sites.sort();
        Ok(sites)
    }

    fn snapshots(&self, site: &SiteName) -> Result<Vec<Snapshot>> {
        let ds = self.existing(site)?;
        self.chain(&ds)
    }

    fn snapshot(&self, site: &SiteName, seq: u64) -> Result<Snapshot> {
        let ds = self.existing(site)?;
        let name = snapshot_name(seq);
        if self.chain(&ds)?.iter().any(|s| s.name == name) {
            return Err(Error::SnapshotExists {
                site: site.clone(),
                name,
            });
        }
        let full = format!("{ds}@{name}");
        // Before the snapshot: a write in between makes the next `changed`
        // say yes (one snapshot too many), never no.
        let print = self.live_fingerprint(site);
        self.cli
            .zfs(&["snapshot", &full])
            .map_err(|e| classify(e, &full))?;
        self.set_baseline(&ds, print);
        self.exact_snapshots(&ds, &[&full])?
            .pop()
            .ok_or_else(|| Error::NoSuchSnapshot {
                site: site.clone(),
                what: format!("'{name}' right after taking it"),
            })
    }

    fn changed(&self, site: &SiteName) -> Result<Changed> {
        if !self.features.written {
            return self.changed_without_written(site);
        }
        let ds = self.existing(site)?;
        if self.chain(&ds)?.is_empty() {
            return Ok(Changed::Yes);
        }
        Ok(if self.cli.get_u64("written", &ds)? > 0 {
            Changed::Yes
        } else {
            Changed::No
        })
    }

    fn send(&self, site: &SiteName, from: Option<Guid>, to: Guid) -> Result<SendStream> {
        let ds = self.existing(site)?;
        let chain = self.chain(&ds)?;
        self.spawn_send(site, &ds, &chain, from, to)
    }

    fn send_listed(
        &self,
        site: &SiteName,
        chain: &[Snapshot],
        from: Option<Guid>,
        to: Guid,
    ) -> Result<SendStream> {
        self.spawn_send(site, &self.dataset(site), chain, from, to)
    }

    fn receive(&self, site: &SiteName, stream: &mut dyn Read) -> Result<Snapshot> {
        self.receive_inner(site, None, stream)
    }

    fn receive_listed(
        &self,
        site: &SiteName,
        chain: Option<&[Snapshot]>,
        stream: &mut dyn Read,
    ) -> Result<Snapshot> {
        self.receive_inner(site, Some(chain), stream)
    }

    fn set_readonly(&self, site: &SiteName) -> Result<()> {
        let ds = self.existing(site)?;
        self.cli.zfs(&["set", "atime=off", &ds])?;
        self.cli.zfs(&["set", &format!("{RO_PROP}=on"), &ds])?;
        self.cli.zfs(&["set", "readonly=on", &ds]).map(drop)
    }

    fn set_writable(&self, site: &SiteName) -> Result<()> {
        let ds = self.existing(site)?;
        self.cli.zfs(&["set", "readonly=off", &ds])?;
        self.cli.zfs(&["set", &format!("{RO_PROP}=off"), &ds])?;
        // A promoted copy is about to be served: on zfs-fuse the kernel may
        // still cache files of an older snapshot (receives do not
        // invalidate it), so remount once, now.
        let mp = self.cli.get("mountpoint", &ds)?;
        if is_fuse_mount(&mp) {
            self.remount(site, &ds)?;
        }
        // A read-only copy holds its newest snapshot, no more.
        let print = self.live_fingerprint(site);
        self.set_baseline(&ds, print);
        Ok(())
    }

    fn is_readonly(&self, site: &SiteName) -> Result<bool> {
        let ds = self.existing(site)?;
        let row = self
            .cli
            .zfs(&["get", "-H", "-p", "-o", "value,source", "readonly", &ds])?;
        let mut cols = row.trim_end().split('\t');
        let (value, source) = (cols.next(), cols.next());
        if source == Some("temporary") {
            // See RO_PROP: the reported value is not what is in force.
            return Ok(self.cli.get(RO_PROP, &ds)? != "off");
        }
        Ok(value == Some("on"))
    }

    fn stash(&self, site: &SiteName, common: Option<Guid>) -> Result<Stash> {
        let ds = self.existing(site)?;
        let chain = self.chain(&ds)?;
        let common = common.map(|g| Self::find(site, &chain, g)).transpose()?;
        let tag = chain
            .last()
            .map_or_else(|| "empty".to_owned(), |s| s.guid.to_string());
        // The same head can diverge twice (changes after it, stashed, then
        // again): never reuse a stash's name.
        let mut name = format!("{site}-{tag}");
        let mut n = 1;
        while self.cli.exists(&self.stash_dataset(&name))? {
            n += 1;
            name = format!("{site}-{tag}-{n}");
        }
        let stash = self.stash_dataset(&name);
        self.set_baseline(&ds, None);
        self.cli.unmount(&ds)?;
        let renamed = self.rename_to_stash(&ds, &stash);
        // Whatever the rename did, every stash is mounted again after it:
        // the renamed copy comes out unmounted (zfs-fuse), and on "busy"
        // the earlier stashes were unmounted for the rename. A mount that
        // fails does not stop the stash half-way (the copy is under the
        // stash already): `stashes()`, which runs after every stash, tries
        // again.
        self.remount_stashes();
        renamed?;
        // From here on the copy is safe under the stash; make it read-only.
        self.cli.zfs(&["set", "readonly=on", &stash])?;
        self.cli.zfs(&["set", &format!("{RO_PROP}=on"), &stash])?;
        if let Some(common) = common {
            let origin = format!("{stash}@{}", common.name);
            self.cli
                .zfs(&["clone", &origin, &ds])
                .map_err(|e| classify(e, &ds))?;
            self.cli.zfs(&["promote", &ds])?;
            self.ensure_mounted(site, &ds)?;
            // The promote moved the other stashes' origins to `ds`.
            self.remount_stashes();
        }
        self.read_stash(&name)?.ok_or(Error::NoSuchSnapshot {
            site: site.clone(),
            what: format!("stash '{name}'"),
        })
    }

    fn stashes(&self) -> Result<Vec<Stash>> {
        // A stash left unmounted (a stash interrupted by a kill, or by
        // zfs-fuse's rename) is readable again once listed.
        self.remount_stashes();
        let mut out = Vec::new();
        let mut names = self.list_children(&format!("{}/stash", self.root))?;
        names.sort();
        for name in names {
            out.extend(self.read_stash(&name)?);
        }
        Ok(out)
    }

    fn destroy_snapshot(&self, site: &SiteName, guid: Guid) -> Result<()> {
        let ds = self.existing(site)?;
        let snap = Self::find(site, &self.chain(&ds)?, guid)?;
        let full = format!("{ds}@{}", snap.name);
        match self.cli.zfs(&["destroy", &full]) {
            Err(Error::Command { stderr, .. }) if stderr.contains("dependent clones") => {
                Err(Error::HasDependents {
                    site: site.clone(),
                    guid,
                    stderr,
                })
            }
            r => r.map(drop),
        }
    }

    fn destroy_site(&self, site: &SiteName) -> Result<()> {
        let ds = self.existing(site)?;
        self.set_baseline(&ds, None);
        self.cli.unmount(&ds)?;
        self.cli.zfs_unbusy(&["destroy", "-r", &ds]).map(drop)
    }

    fn mountpoint(&self, site: &SiteName) -> Result<PathBuf> {
        let ds = self.existing(site)?;
        // Whoever asks is about to read the files: make them current.
        self.fresh(site, &ds)?;
        Ok(PathBuf::from(self.cli.get("mountpoint", &ds)?))
    }

    fn write_file(&self, site: &SiteName, path: &Path, data: &[u8]) -> Result<()> {
        check_rel_path(site, path)?;
        let ds = self.existing(site)?;
        let full = self.ensure_mounted(site, &ds)?.join(path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(site, path, "cannot create", e))?;
        }
        let write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&full)?;
            f.write_all(data)?;
            f.sync_all()
        };
        write().map_err(|e| io_error(site, path, "cannot write", e))
    }

    fn read_stash_file(&self, stash: &Stash, path: &Path) -> Result<Vec<u8>> {
        check_rel_path(&stash.site, path)?;
        let ds = self.stash_dataset(&stash.name);
        let mp = self.cli.get("mountpoint", &ds)?;
        if !self.cli.mounted(&ds)? {
            return Err(Error::NotMounted {
                site: stash.site.clone(),
                mountpoint: mp,
            });
        }
        std::fs::read(Path::new(&mp).join(path))
            .map_err(|e| io_error(&stash.site, path, "cannot read", e))
    }

    fn read_file(&self, site: &SiteName, path: &Path) -> Result<Vec<u8>> {
        check_rel_path(site, path)?;
        let ds = self.existing(site)?;
        self.fresh(site, &ds)?;
        let full = self.ensure_mounted(site, &ds)?.join(path);
        std::fs::read(full).map_err(|e| io_error(site, path, "cannot read", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_usage_flags() {
        let fuse = "usage:\n\treceive [-vnF] <filesystem|volume|snapshot>\n\treceive [-vnF] -d <filesystem>\n";
        assert!(!usage_has_flag(fuse, 's'));
        assert!(usage_has_flag(fuse, 'F'));
        let openzfs = "usage:\n\treceive [-vMnsFhu] [-o <property>=<value>] ... <filesystem>\n\treceive -A <filesystem|volume>\n";
        assert!(usage_has_flag(openzfs, 's'));
        assert!(usage_has_flag(openzfs, 'u'));
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let mut config = ZfsConfig::new("nopool", "/nonexistent");
        config.zfs_bin = "/nonexistent/bin/zfs".into();
        let err = ZfsStore::open(config).expect_err("no binary");
        assert!(matches!(err, Error::BinaryNotFound { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/bin/zfs"), "{err}");
    }
}
