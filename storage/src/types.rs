//! Values shared by every store, and the pure rules both stores apply.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use model::SiteName;

/// ZFS's identity of a snapshot: unique across pools and machines (random
/// 64 bits). Two snapshots with the same name on two sides of a split have
/// different guids; a snapshot received elsewhere keeps its guid.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Guid(pub u64);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Decimal, as `zfs get -Hp guid` prints it.
        write!(f, "{}", self.0)
    }
}

/// Prefix of the snapshots ringhost takes: `ringhost-<seq>`.
pub const SNAPSHOT_PREFIX: &str = "ringhost-";

/// The snapshot name for a sequence number.
pub fn snapshot_name(seq: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{seq}")
}

/// One snapshot of a site's chain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Snapshot {
    /// The part after `@`, e.g. `ringhost-7`.
    pub name: String,
    pub guid: Guid,
    /// Transaction group of creation: orders a chain (oldest first). Local
    /// to a pool: a received snapshot gets the receiver's txg.
    pub createtxg: u64,
    /// Creation time, Unix seconds (ZFS's `creation` property), for pruning
    /// by age. A received snapshot keeps the sender's value (ZFS copies it
    /// from the stream; zfs-fuse 0.7 does too), so it is the same on every
    /// copy. Taken from the wall clock, so it is non-decreasing along a
    /// chain only as far as the clock of the node that took it is.
    pub created: u64,
}

impl Snapshot {
    /// The sequence number if the name is `ringhost-<seq>`.
    pub fn seq(&self) -> Option<u64> {
        self.name.strip_prefix(SNAPSHOT_PREFIX)?.parse().ok()
    }
}

/// A diverged copy kept aside (never destroyed by ringhost).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Stash {
    /// Name under the stash parent, `<site>-<guid of its newest snapshot>`.
    pub name: String,
    pub site: SiteName,
    /// The snapshots only this stash holds, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// The common snapshot the site continued from, when the stash was split
    /// off with a common snapshot (the stash then is a clone of it).
    pub origin: Option<Guid>,
}

/// Whether a site changed since its newest snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Changed {
    Yes,
    No,
    /// The store cannot tell (zfs-fuse has no `written` property and its
    /// size counters miss an in-place rewrite). The caller decides from its
    /// own record of writes.
    Unknown,
}

/// At most this many entries are looked at for a [`tree_fingerprint`]; a
/// larger tree has none.
pub const FINGERPRINT_MAX_ENTRIES: usize = 10_000;

/// (entries, total size, newest mtime in ns) of a directory tree.
pub type TreeFingerprint = (u64, u64, i128);

/// The fingerprint of the tree under `root`, skipping the top-level entries
/// named in `skip`; `None` if it cannot be read or has more than
/// [`FINGERPRINT_MAX_ENTRIES`] entries. Two equal fingerprints of one tree
/// mean that nothing was added, removed, resized or written in between, to
/// the resolution of the file system's mtimes (a write sets the mtime).
pub fn tree_fingerprint(root: &Path, skip: &[&str]) -> Option<TreeFingerprint> {
    let mut stack = vec![root.to_owned()];
    let (mut n, mut size, mut newest) = (0u64, 0u64, 0i128);
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ok()? {
            let e = e.ok()?;
            if dir == root && skip.iter().any(|s| e.file_name() == *s) {
                continue;
            }
            n += 1;
            if n as usize > FINGERPRINT_MAX_ENTRIES {
                return None;
            }
            let m = e.metadata().ok()?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            newest = newest.max(mtime);
            size += m.len();
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Some((n, size, newest))
}

/// The newest snapshot of `ours` that `theirs` also holds, matched by guid
/// (never by name). Both chains are oldest first.
pub fn newest_common<'a>(ours: &'a [Snapshot], theirs: &[Snapshot]) -> Option<&'a Snapshot> {
    let theirs: BTreeSet<Guid> = theirs.iter().map(|s| s.guid).collect();
    ours.iter().rev().find(|s| theirs.contains(&s.guid))
}

/// What a stream says about itself: the snapshot it brings and the base it
/// applies to (`None`: a full stream).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StreamHeader {
    pub from: Option<Guid>,
    pub to: Guid,
}

/// Snapshot `ringhost-<n>` with guid `guid`, for the unit tests.
#[cfg(test)]
pub(crate) fn test_snapshot(n: u64, guid: u64) -> Snapshot {
    Snapshot {
        name: snapshot_name(n),
        guid: Guid(guid),
        createtxg: n,
        created: 1_700_000_000 + n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_snapshot as snap;

    #[test]
    fn newest_common_matches_by_guid_not_name() {
        let a = [snap(1, 11), snap(2, 22), snap(3, 33)];
        let b = [snap(1, 11), snap(2, 22), snap(3, 99)];
        assert_eq!(newest_common(&a, &b).map(|s| s.guid), Some(Guid(22)));
        assert_eq!(newest_common(&a, &[]), None);
        let c = [snap(7, 33)];
        assert_eq!(newest_common(&a, &c).map(|s| s.guid), Some(Guid(33)));
    }

    #[test]
    fn seq_from_name() {
        assert_eq!(snap(42, 1).seq(), Some(42));
        let other = Snapshot {
            name: "manual".into(),
            guid: Guid(1),
            createtxg: 1,
            created: 0,
        };
        assert_eq!(other.seq(), None);
    }
}
