//! The deterministic cluster simulator: many nodes in one process, on
//! simulated time and a simulated network, under seeded faults.
//!
//! Each node runs real chitchat ([`chitchat::spawn_chitchat`]) over
//! [`transport::SimTransport`]; a simulation runs on a tokio current-thread
//! runtime with paused time, so a seed fixes every delay, loss, fault and
//! (through [`entropy`]) every random draw inside chitchat, std and tokio.
//! Same seed ⇒ same trace, byte for byte; a failure prints the seed and the
//! command that replays it. Each node also runs ringhost's `model::Node`
//! state machine over a simulated disk ([`sites`]).
//!
//! Never: real sockets, DNS, the wall clock, extra threads or
//! `spawn_blocking` inside a simulation; decisions iterate `BTreeMap`s.
//! Nothing in ringhost depends on this crate.

mod addr;
pub mod entropy;
pub mod net;
pub mod node;
pub mod rng;
pub mod sim;
pub mod sites;
pub mod trace;
pub mod transport;
mod world;

pub use net::{LinkConfig, NetStats};
pub use node::SimNode;
pub use sim::{FaultCounts, Faults, Report, SimConfig, run, run_on_fresh_thread};
pub use sites::{Broken, SiteSettings, SiteStats};
pub use world::{Bounds, Departure, DepartureKind, Violation};
