//! The sans-I/O core of ringhost: identifiers, the cluster view, the ring
//! hash (placement and master election), replication planning and the node
//! state machine.
//!
//! This crate performs no I/O: no sockets, no files, no processes, no
//! clocks and no global randomness. Time comes in as an argument, randomness
//! is seeded by the caller, and decisions come out as values. The daemon and
//! the simulator drive the very same code.

pub mod ids;

pub use ids::{InvalidName, NodeName, SiteName, Zone};
