//! `ZfsStore` itself: opening (feature detection), the datasets' layout,
//! chains and snapshots, change detection, mounts, stashes, receives.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use model::SiteName;
use tracing::debug;

use super::cli::{
    Cli, MOUNT_ATTEMPTS, RO_PROP, classify, command_error, command_line, fuse_mount_lock,
    is_fuse_mount, spawn_error, stderr_of,
};
use super::config::{Features, ZfsConfig};
use super::stream::{ChildStream, Head, widen_pipe};
use crate::error::{Error, Result};
use crate::parse::{STREAM_HEADER_LEN, parse_get_output, parse_snapshot_list};
use crate::parse::{parse_zfs_stream_header, stream_snapshot_name};
use crate::rules::check_receive;
use crate::store::SendStream;
use crate::types::{Changed, Guid, Snapshot, Stash};

/// The `SnapshotStore` on real ZFS.
#[derive(Debug)]
pub struct ZfsStore {
    pub(super) cli: Cli,
    pub(super) root: String,
    pub(super) mount_root: PathBuf,
    pub(super) features: Features,
    /// Datasets received into on zfs-fuse since their last mount: the
    /// kernel may still cache their old files. Remounted before this store
    /// reads them, and by `set_writable`; not after every receive, which
    /// would put a remount on replication's hot path.
    pub(super) stale: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Without `written` (zfs-fuse): the tree fingerprint of each site's
    /// live copy when its newest snapshot was taken here (or when it was
    /// made writable, holding its newest snapshot), so that `changed` can
    /// answer where the size counters cannot. Lost with the process: after
    /// a restart `changed` says `Unknown` until the next snapshot.
    pub(super) baselines:
        std::sync::Mutex<std::collections::BTreeMap<String, crate::types::TreeFingerprint>>,
}

/// Whether `zfs receive`'s usage text lists a flag (e.g. `s` in `[-vnsFu]`).
pub(super) fn usage_has_flag(usage: &str, flag: char) -> bool {
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

    pub(super) fn ensure_parent(&self, name: &str) -> Result<()> {
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

    pub(super) fn dataset(&self, site: &SiteName) -> String {
        format!("{}/sites/{site}", self.root)
    }

    pub(super) fn stash_dataset(&self, name: &str) -> String {
        format!("{}/stash/{name}", self.root)
    }

    /// `zfs send` of `to` (incremental from `from`) of dataset `ds`, the
    /// snapshots named from `chain`.
    pub(super) fn spawn_send(
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

    pub(super) fn existing(&self, site: &SiteName) -> Result<String> {
        let ds = self.dataset(site);
        if self.cli.exists(&ds)? {
            Ok(ds)
        } else {
            Err(Error::NoSuchSite { site: site.clone() })
        }
    }

    pub(super) fn chain(&self, ds: &str) -> Result<Vec<Snapshot>> {
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
    pub(super) fn exact_snapshots(&self, ds: &str, names: &[&str]) -> Result<Vec<Snapshot>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.get_rows("guid,createtxg,creation", names)?;
        Self::snapshots_from_rows(ds, names, &rows)
    }

    /// `zfs get -Hp` of `props` (comma-separated) on `targets`, as rows.
    pub(super) fn get_rows(
        &self,
        props: &str,
        targets: &[&str],
    ) -> Result<Vec<(String, String, String)>> {
        let mut args = vec!["get", "-H", "-p", "-o", "name,property,value", props];
        args.extend(targets);
        parse_get_output(&self.cli.zfs(&args)?)
    }

    /// The snapshots `names` of `ds` from `zfs get` rows holding their
    /// guid, createtxg and creation; oldest first.
    pub(super) fn snapshots_from_rows(
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

    pub(super) fn find(site: &SiteName, chain: &[Snapshot], guid: Guid) -> Result<Snapshot> {
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
    pub(super) fn changed_without_written(&self, site: &SiteName) -> Result<Changed> {
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
    pub(super) fn live_fingerprint(
        &self,
        site: &SiteName,
    ) -> Option<crate::types::TreeFingerprint> {
        if self.features.written {
            return None;
        }
        let mp = self.mount_root.join("sites").join(site.as_str());
        crate::types::tree_fingerprint(&mp, &[])
    }

    pub(super) fn set_baseline(&self, ds: &str, print: Option<crate::types::TreeFingerprint>) {
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
    pub(super) fn remount(&self, site: &SiteName, ds: &str) -> Result<()> {
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
    pub(super) fn fresh(&self, site: &SiteName, ds: &str) -> Result<()> {
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

    pub(super) fn ensure_mounted(&self, site: &SiteName, ds: &str) -> Result<PathBuf> {
        let mp = self.cli.get("mountpoint", ds)?;
        if self.cli.mount(ds).is_err() {
            return Err(Error::NotMounted {
                site: site.clone(),
                mountpoint: mp,
            });
        }
        Ok(PathBuf::from(mp))
    }

    pub(super) fn list_children(&self, parent: &str) -> Result<Vec<String>> {
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
    pub(super) fn rename_to_stash(&self, ds: &str, stash: &str) -> Result<()> {
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
    pub(super) fn clones_of(&self, ds: &str) -> Result<Vec<String>> {
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
    pub(super) fn mount_stashes(&self) -> Result<()> {
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
    pub(super) fn remount_stashes(&self) {
        if let Err(e) = self.mount_stashes() {
            tracing::warn!(error = %e, "cannot mount every stash; their data is safe but unmounted");
        }
    }

    pub(super) fn read_stash(&self, name: &str) -> Result<Option<Stash>> {
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
    pub(super) fn receive_inner(
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
    pub(super) fn receive_body(
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
