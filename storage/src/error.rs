//! The one error type of the storage boundary.

use std::path::PathBuf;

use model::SiteName;

use crate::types::Guid;

/// Everything a [`crate::SnapshotStore`] can refuse or fail at. Each variant
/// says what happened to the store's state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `zfs` or `zpool` binary could not be started at all. Nothing was
    /// run, so nothing was changed.
    #[error("cannot run '{path}': {source}")]
    BinaryNotFound {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The named site has no dataset in this store. Nothing was changed.
    #[error("no site '{site}'")]
    NoSuchSite { site: SiteName },
    /// A site of that name already exists (create, or a full receive onto an
    /// existing copy: never forced). Nothing was changed.
    #[error("site '{site}' already exists")]
    SiteExists { site: SiteName },
    /// No snapshot with that guid (or name) on the site. Nothing was changed.
    #[error("site '{site}' has no snapshot {what}")]
    NoSuchSnapshot { site: SiteName, what: String },
    /// A snapshot with that name already exists on the site. Nothing was
    /// changed.
    #[error("site '{site}' already has snapshot '{name}'")]
    SnapshotExists { site: SiteName, name: String },
    /// The snapshot is the origin of a clone (a stash), so it cannot be
    /// destroyed. Nothing was changed.
    #[error("snapshot {guid} of site '{site}' has dependent clones: {stderr}")]
    HasDependents {
        site: SiteName,
        guid: Guid,
        stderr: String,
    },
    /// The receiver holds snapshots newer than the stream's base that the
    /// sender lacks: two histories. The replica was not changed; stash it
    /// ([`crate::SnapshotStore::stash`]) to follow the sender.
    #[error("site '{site}' diverged: the stream's base {base} is not its newest snapshot ({newest}){}", stderr_suffix(.stderr))]
    Diverged {
        site: SiteName,
        base: Guid,
        newest: Guid,
        stderr: String,
    },
    /// The stream is incremental from a snapshot the receiver does not hold,
    /// or full while the receiver already has the site. The replica was not
    /// changed.
    #[error("site '{site}': stream base {base} is not in its chain (newest {newest})")]
    WrongBase {
        site: SiteName,
        base: Guid,
        newest: String,
    },
    /// The stream's target snapshot is already on the receiver. Nothing was
    /// changed.
    #[error("site '{site}' already has snapshot {guid}")]
    AlreadyReceived { site: SiteName, guid: Guid },
    /// The replica was written to (or read with atime on) after its newest
    /// snapshot, so an incremental receive would lose that. The replica was
    /// not changed.
    #[error("site '{site}' has been modified since its newest snapshot: {stderr}")]
    Modified { site: SiteName, stderr: String },
    /// The pool has no room. A failed receive leaves no partly created
    /// dataset and the replica at its previous snapshot; a failed write may
    /// have left a partly written file.
    #[error("out of space on '{target}': {stderr}")]
    OutOfSpace { target: String, stderr: String },
    /// The stream is truncated or corrupt. The replica was left at its
    /// previous snapshot (and no new site was created).
    #[error("corrupt stream for site '{site}': {reason}")]
    CorruptStream { site: SiteName, reason: String },
    /// A write to a read-only copy was refused. Nothing was changed.
    #[error("site '{site}' is read-only")]
    ReadOnly { site: SiteName },
    /// A path inside a site is absolute, empty, or escapes the site with
    /// `..`. Nothing was changed.
    #[error("invalid path '{path}' in site '{site}'")]
    InvalidPath { site: SiteName, path: String },
    /// The file does not exist in the site. Nothing was changed.
    #[error("no file '{path}' in site '{site}'")]
    NoSuchFile { site: SiteName, path: String },
    /// The dataset is not mounted (and mounting it failed). Nothing was
    /// changed.
    #[error("site '{site}' is not mounted at '{mountpoint}'")]
    NotMounted { site: SiteName, mountpoint: String },
    /// A `zfs`/`zpool` command failed in a way not covered above. Its
    /// stderr is included; what it changed depends on the command, named in
    /// `command` (ZFS commands are atomic, so usually nothing).
    #[error("'{command}' failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    /// Output of a `zfs` command could not be understood. Nothing was
    /// changed by the parse itself.
    #[error("cannot parse zfs output line '{line}': {reason}")]
    Parse { line: String, reason: String },
    /// A local file operation failed (pool image, a site's file). What
    /// changed is described by `context`.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
