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
//!
//! Files: `config.rs` (what a store is opened with), `cli.rs` (running the
//! tools), `pool.rs` (`EmbeddedPool`), `store.rs` (`ZfsStore`),
//! `stream.rs` (streams to and from `zfs`), `snapshot_store.rs` (the
//! `SnapshotStore` operations).

mod cli;
mod config;
mod pool;
mod snapshot_store;
mod store;
mod stream;
#[cfg(test)]
mod tests;

pub use config::{Features, ZfsConfig};
pub use pool::EmbeddedPool;
pub use store::ZfsStore;
