//! Running `zfs` and `zpool`: time limits, errors that name the command,
//! properties, mounts (serialized on zfs-fuse), and error classes.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use model::SiteName;
use tracing::debug;

use crate::error::{Error, Result};

/// Runs the binaries and logs each call with its duration.
#[derive(Clone, Debug)]
pub(super) struct Cli {
    pub(super) zfs: PathBuf,
    pub(super) zpool: PathBuf,
}

pub(super) fn command_line(bin: &Path, args: &[&str]) -> String {
    let mut s = bin.display().to_string();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

pub(super) fn spawn_error(bin: &Path, e: io::Error) -> Error {
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
pub(super) fn call_limit(args: &[&str]) -> Option<std::time::Duration> {
    match args.first() {
        Some(&"mount") | Some(&"unmount") | Some(&"umount") => {
            Some(std::time::Duration::from_secs(MOUNT_CALL_LIMIT_S))
        }
        _ => None,
    }
}

pub(super) const MOUNT_CALL_LIMIT_S: u64 = 15;

pub(super) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

pub(super) fn command_error(bin: &Path, args: &[&str], out: &Output) -> Error {
    Error::Command {
        command: command_line(bin, args),
        status: out.status.to_string(),
        stderr: stderr_of(out),
    }
}

impl Cli {
    /// Runs a command to completion; a failed exit is not an error here.
    pub(super) fn output(&self, bin: &Path, args: &[&str]) -> Result<Output> {
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

    pub(super) fn zfs_out(&self, args: &[&str]) -> Result<Output> {
        self.output(&self.zfs, args)
    }

    /// Runs `zfs` and returns stdout, or the failure with its stderr.
    pub(super) fn zfs(&self, args: &[&str]) -> Result<String> {
        let out = self.zfs_out(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(command_error(&self.zfs, args, &out))
        }
    }

    /// Runs `zfs` again (at once, a bounded number of times) while it says
    /// "busy": zfs-fuse calls a dataset busy for a moment after an unmount.
    pub(super) fn zfs_unbusy(&self, args: &[&str]) -> Result<String> {
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

    pub(super) fn zpool(&self, args: &[&str]) -> Result<String> {
        let out = self.output(&self.zpool, args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(command_error(&self.zpool, args, &out))
        }
    }

    pub(super) fn exists(&self, dataset: &str) -> Result<bool> {
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
    pub(super) fn get_if_exists(&self, prop: &str, dataset: &str) -> Result<Option<String>> {
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

    pub(super) fn get(&self, prop: &str, dataset: &str) -> Result<String> {
        Ok(self
            .zfs(&["get", "-H", "-p", "-o", "value", prop, dataset])?
            .trim_end_matches('\n')
            .to_owned())
    }

    pub(super) fn get_u64(&self, prop: &str, dataset: &str) -> Result<u64> {
        let v = self.get(prop, dataset)?;
        v.parse().map_err(|_| Error::Parse {
            line: v.clone(),
            reason: format!("{prop} of {dataset} is not an integer"),
        })
    }

    /// Mounted, by the `mounted` property rather than an exit code.
    pub(super) fn mounted(&self, dataset: &str) -> Result<bool> {
        Ok(self.get("mounted", dataset)? == "yes")
    }

    /// Mounts a dataset. zfs-fuse refuses a mount right after an unmount
    /// as busy once in a while and accepts the next attempt, so this
    /// retries a few times at once (no waiting) and trusts only `mounted`.
    pub(super) fn mount(&self, dataset: &str) -> Result<()> {
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

    pub(super) fn unmount(&self, dataset: &str) -> Result<()> {
        if self.mounted(dataset)? {
            let out = self.zfs_out(&["unmount", dataset])?;
            if self.mounted(dataset)? {
                return Err(command_error(&self.zfs, &["unmount", dataset], &out));
            }
        }
        Ok(())
    }
}

pub(super) const MOUNT_ATTEMPTS: usize = 10;

/// The user property that records the intended read-only state. zfs-fuse
/// reports `readonly` as `off temporary` for a mounted dataset whose
/// `readonly=on` is in force (writes fail), so the intent is kept here too.
pub(super) const RO_PROP: &str = "ringhost:readonly";

/// Where the machine-wide lock of FUSE remounts lives.
pub(super) const FUSE_MOUNT_LOCK: &str = "/tmp/ringhost-zfs-fuse-mount.lock";

/// Takes the machine-wide lock that serializes FUSE remounts across
/// processes (an advisory `flock`, released when the guard drops or the
/// process dies). Without the lock file (read-only /tmp), runs unlocked.
pub(super) fn fuse_mount_lock() -> Option<std::fs::File> {
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
pub(super) fn is_fuse_mount(mountpoint: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split(' ');
            let (_, mp, fstype) = (f.next(), f.next(), f.next());
            mp == Some(mountpoint) && fstype.is_some_and(|t| t.starts_with("fuse"))
        })
    })
}

/// Maps a failed `zfs` command's stderr to the specific variants.
pub(super) fn classify(err: Error, target: &str) -> Error {
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

pub(super) fn io_error(site: &SiteName, path: &Path, context: &str, e: io::Error) -> Error {
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
