//! The `SnapshotStore` trait: what a ringhost node needs from its storage.

use std::io::Read;
use std::path::{Path, PathBuf};

use model::SiteName;

use crate::error::{Error, Result};
use crate::types::{Changed, Guid, Snapshot, Stash};

/// A send stream: bytes to hand to [`SnapshotStore::receive`] on another
/// store of the same kind. Reading it to the end reports a failure of the
/// sending side as an `io::Error`.
pub type SendStream = Box<dyn Read + Send>;

/// The snapshots of a node's sites, under `<root>/sites/<name>`.
///
/// Rules every implementation keeps:
/// - a chain is ordered oldest first and identified by guid, not name;
/// - a full stream only creates a new site; an incremental one applies only
///   onto the receiver's newest snapshot (see [`crate::check_receive`]); a
///   receive is never forced, so no snapshot is ever destroyed by it;
/// - a failed receive leaves the replica at its previous snapshot, readable;
/// - a read-only copy refuses writes;
/// - a diverged copy is stashed, never destroyed;
/// - only [`SnapshotStore::destroy_site`] and
///   [`SnapshotStore::destroy_snapshot`] destroy, when asked explicitly.
///
/// The API is blocking: the daemon calls it from blocking tasks.
pub trait SnapshotStore: Send + Sync {
    /// Creates a new, empty, writable site (for a new master).
    fn create_site(&self, site: &SiteName) -> Result<()>;

    /// The sites this store holds, sorted by name.
    fn sites(&self) -> Result<Vec<SiteName>>;

    /// A site's snapshots, oldest first.
    fn snapshots(&self, site: &SiteName) -> Result<Vec<Snapshot>>;

    /// Takes snapshot `ringhost-<seq>` of the site and returns it.
    fn snapshot(&self, site: &SiteName, seq: u64) -> Result<Snapshot>;

    /// Whether the site changed since its newest snapshot (`Yes` when it
    /// has none).
    fn changed(&self, site: &SiteName) -> Result<Changed>;

    /// Takes snapshot `ringhost-<seq>` if the site may hold changes after
    /// its newest snapshot ([`SnapshotStore::changed`] is not `No`), and
    /// returns it; `None` if it holds nothing more. Where the store cannot
    /// tell, it takes the snapshot: an empty one costs a stash at worst,
    /// a missed one loses what a master acknowledged.
    fn snapshot_changes(&self, site: &SiteName, seq: u64) -> Result<Option<Snapshot>> {
        match self.changed(site)? {
            Changed::No => Ok(None),
            Changed::Yes | Changed::Unknown => self.snapshot(site, seq).map(Some),
        }
    }

    /// A stream of snapshot `to`: full when `from` is `None`, else
    /// incremental from `from` (both identified by guid).
    fn send(&self, site: &SiteName, from: Option<Guid>, to: Guid) -> Result<SendStream>;

    /// As [`send`](Self::send), given the site's chain as the caller just
    /// listed it ([`snapshots`](Self::snapshots)): a store that finds
    /// snapshots by listing them skips listing again (on ZFS, three CLI
    /// calls before the stream starts). A snapshot gone since then fails
    /// the send, or its stream.
    fn send_listed(
        &self,
        site: &SiteName,
        chain: &[Snapshot],
        from: Option<Guid>,
        to: Guid,
    ) -> Result<SendStream> {
        for g in from.into_iter().chain([to]) {
            if !chain.iter().any(|s| s.guid == g) {
                return Err(Error::NoSuchSnapshot {
                    site: site.clone(),
                    what: format!("with guid {g}"),
                });
            }
        }
        self.send(site, from, to)
    }

    /// Receives a stream into a replica: a full stream creates the site
    /// (read-only), an incremental stream applies onto its newest snapshot
    /// only. Returns the received snapshot.
    fn receive(&self, site: &SiteName, stream: &mut dyn Read) -> Result<Snapshot>;

    /// As [`receive`](Self::receive), given the site's chain as the caller
    /// just listed it (`None`: no copy here): a store that lists snapshots
    /// skips listing again before the stream may go in. The store still
    /// refuses a stream whose base is not its newest snapshot.
    fn receive_listed(
        &self,
        site: &SiteName,
        chain: Option<&[Snapshot]>,
        stream: &mut dyn Read,
    ) -> Result<Snapshot> {
        let _ = chain;
        self.receive(site, stream)
    }

    /// Makes a copy a read-only replica (`readonly=on`, `atime=off`).
    fn set_readonly(&self, site: &SiteName) -> Result<()>;

    /// Makes a copy writable (promotion to master).
    fn set_writable(&self, site: &SiteName) -> Result<()>;

    /// Whether writes to the copy are refused.
    fn is_readonly(&self, site: &SiteName) -> Result<bool>;

    /// Stashes a diverged copy under the stash parent. With `common` (a
    /// snapshot the copy shares with the master) the site continues,
    /// read-only, at that snapshot and the stash keeps only what came after
    /// it; without, the site is gone and needs a full receive. Nothing is
    /// destroyed.
    fn stash(&self, site: &SiteName, common: Option<Guid>) -> Result<Stash>;

    /// The stashed copies, sorted by name.
    fn stashes(&self) -> Result<Vec<Stash>>;

    /// Destroys one snapshot (pruning).
    fn destroy_snapshot(&self, site: &SiteName, guid: Guid) -> Result<()>;

    /// Destroys a site and all its snapshots (explicit delete only).
    fn destroy_site(&self, site: &SiteName) -> Result<()>;

    /// Where the site's files are (for `MemStore`, a name only).
    fn mountpoint(&self, site: &SiteName) -> Result<PathBuf>;

    /// Writes a file inside the site (`path` is relative), creating parent
    /// directories.
    fn write_file(&self, site: &SiteName, path: &Path, data: &[u8]) -> Result<()>;

    /// Reads a file inside the site (`path` is relative).
    fn read_file(&self, site: &SiteName, path: &Path) -> Result<Vec<u8>>;

    /// Reads a file of a stash's live copy (`path` is relative), where its
    /// mountpoint says: a stash that is not mounted is an error, not
    /// mounted here, so that one left unmounted shows.
    fn read_stash_file(&self, stash: &Stash, path: &Path) -> Result<Vec<u8>>;
}
