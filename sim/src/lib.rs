//! The deterministic cluster simulator: many nodes running the production
//! model in one process, on simulated time, under seeded faults.
//!
//! Nothing in ringhost depends on this crate.
