//! The byte streams to and from `zfs`: a receive's first record, and a
//! `zfs send` child's stdout that reports the child's failure at its end.

use std::io::{self, Read};
use std::process::{Child, ChildStderr, ChildStdout};

use tracing::debug;

use crate::types::Snapshot;

/// What a receive knows once the stream's first record is read: its bytes,
/// how many arrived, whether reading failed; whether a copy was here, and
/// its chain.
pub(super) struct Head {
    pub(super) bytes: Vec<u8>,
    pub(super) got: usize,
    pub(super) read: io::Result<()>,
    pub(super) existed: bool,
    pub(super) chain: Option<Vec<Snapshot>>,
}

/// Capacity asked for the pipes that carry snapshot streams to `zfs
/// receive` and from `zfs send`. With Linux's default 64 KiB, zfs-fuse's
/// receive of a 200 MiB increment fed by a writer that keeps up took 0.33 s;
/// with 1 MiB it took 0.20 s, as fast as reading a file (the writer stalls
/// less often and the reader finds whole records waiting).
pub(super) const STREAM_PIPE_CAPACITY: i32 = 1 << 20;

/// Best effort: Linux caps the capacity at `/proc/sys/fs/pipe-max-size`
/// (1 MiB by default) for processes without `CAP_SYS_RESOURCE`; a refusal
/// leaves the pipe as it was, which is slower but correct.
pub(super) fn widen_pipe(fd: impl std::os::fd::AsFd) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(STREAM_PIPE_CAPACITY))
    {
        debug!(error = %e, "pipe capacity unchanged");
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = fd;
}

/// The stdout of `zfs send`; reports the sender's failure at the end.
pub(super) struct ChildStream {
    pub(super) child: Child,
    pub(super) stdout: ChildStdout,
    pub(super) stderr: Option<ChildStderr>,
    pub(super) done: bool,
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
