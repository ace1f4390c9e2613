//! The site layer of every simulated node: the production `model::Node`
//! state machine, driven the way the daemon's `Driver` (src/driver.rs)
//! drives it, against simulated parts.
//!
//! - Gossip: the node's keys go into its own chitchat state
//!   (`Publish`/`Unpublish`), and its `View` is built from its chitchat
//!   state exactly as the daemon builds it (newest generation per name,
//!   alive/dead/left, [`model::member_view`] over the key/value pairs),
//!   every gossip interval, fed only when it changed.
//! - Disk: a [`MemStore`] per node and the persisted roles, both surviving
//!   crashes. A restart sends `Event::Start` with the copies read back.
//! - Storage actions run against the store at once and report their
//!   outcome after a simulated duration. Pull and stash run the daemon's
//!   protocol as simulated messages: request, reply, and for a pull the
//!   stream, whose transfer time is its logical size over the link's
//!   bandwidth. A lost message, a cut link or a crashed peer fails the
//!   transfer after a timeout (`PullError::Failed`).
//! - Clients write through random nodes, which forward to the master their
//!   view names; the master acknowledges a write once the snapshot that
//!   holds it is taken, as the daemon's waiters do.
//!
//! The invariants checked here (see [`SiteLayer`]): fencing, no lost
//! snapshot, no lost replicated write after a single crash, and every site
//! served with its full replica count once faults heal.
//!
//! Deliberately broken variants ([`Broken`]) mutate what the simulator
//! feeds the model or how it executes an action; production code has no
//! such switch.
//!
//! Files: `settings` (what a run is given and counts), `state` (the
//! layer's state and helpers), `driver` (each node's model driven as the
//! daemon drives it), `transfers` (pulls and stashes), `faults` (crashes,
//! restarts, episodes), `clients` (creations and writes), `invariants`.

mod clients;
mod driver;
mod faults;
mod invariants;
mod settings;
mod state;
mod transfers;

pub(crate) use settings::SiteEvent;
pub use settings::{Broken, SiteSettings, SiteStats};
pub(crate) use state::SiteLayer;
