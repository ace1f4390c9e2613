//! Site storage: the `SnapshotStore` trait, its ZFS implementation (the only
//! code in ringhost that runs `zfs` or `zpool`) and an in-memory
//! implementation with the same chain and guid rules.
//!
//! This crate never talks to the network.
