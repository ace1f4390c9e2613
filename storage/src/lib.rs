//! Site storage: the [`SnapshotStore`] trait, its ZFS implementation
//! ([`ZfsStore`], the only code in ringhost that runs `zfs` or `zpool`) and
//! an in-memory implementation ([`MemStore`]) with the same chain and guid
//! rules, for the simulator and fast tests.
//!
//! Invariants: snapshots are matched by guid, never by name; a receive is
//! never forced (`zfs recv -F` is never used), so nothing only the receiver
//! has is ever destroyed by replication; a diverged copy is stashed, not
//! destroyed; replicas are read-only with `atime=off`.
//!
//! This crate never talks to the network.

mod error;
mod mem;
mod parse;
mod rules;
mod store;
mod types;
mod zfs;

pub use error::{Error, Result};
pub use mem::MemStore;
pub use parse::{
    STREAM_HEADER_LEN, parse_get_output, parse_snapshot_list, parse_zfs_stream_header,
    stream_snapshot_name,
};
pub use rules::check_receive;
pub use store::{SendStream, SnapshotStore};
pub use types::{
    Changed, FINGERPRINT_MAX_ENTRIES, Guid, SNAPSHOT_PREFIX, Snapshot, Stash, StreamHeader,
    TreeFingerprint, newest_common, snapshot_name, tree_fingerprint,
};
pub use zfs::{EmbeddedPool, Features, ZfsConfig, ZfsStore};
