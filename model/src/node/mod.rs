//! The node state machine: everything a node decides about its sites, as a
//! pure function of what it has seen.
//!
//! The driver (the daemon, or the simulator) feeds [`Event`]s with the time
//! they happened, drains [`Action`]s with [`Node::poll_action`] and executes
//! them, and reports each action's outcome back as an [`Event::Done`]. It
//! calls [`Node::handle`] with [`Event::Tick`] no later than
//! [`Node::poll_timeout`].
//!
//! # Invariants
//!
//! - At most one action is outstanding per site (`busy`); the next decision
//!   for a site waits for the outcome of the last.
//! - A copy is promoted only when [`crate::election::master`] elects this
//!   node, and demoted as soon as [`crate::election::should_step_down`] says
//!   so, or (quorum guard on) as soon as this node no longer sees a
//!   majority alive; a demoted master stops serving before anything else
//!   happens to it.
//! - Nothing is destroyed except on a deletion tombstone: a diverged replica
//!   is stashed (the driver keeps the data), never rolled back.
//! - What the node publishes is derived from its state ([`Node::published`]),
//!   never edited separately, so gossip always says what the node holds.
//!
//! Files, each depending only on `types` and `state` below it: `events`
//! (taking events in), `view` (reading the view), `plan` (what each site's
//! copy does next), `claims` (votes, elections, the lease), `migration`
//! (hand-over, takeover and resume), `replication` (taking a copy,
//! following the master, stashing), `publish` (the node's gossip keys).

mod claims;
mod events;
mod migration;
mod plan;
mod publish;
mod replication;
mod state;
mod types;
mod view;

#[cfg(test)]
mod testing;

pub use state::Node;
pub use types::{
    Action, Event, Explain, LocalCopy, MemberView, NodeConfig, Outcome, PullError, View,
};
pub use view::{holders, member_view, quorum_of, serving_master, view_of};

pub use crate::time::Time;
