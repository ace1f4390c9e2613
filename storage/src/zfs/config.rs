//! What a `ZfsStore` is opened with, and what it found the tools can do.

use std::path::PathBuf;

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
