//! The sans-I/O core of ringhost: identifiers, the cluster view, the ring
//! hash (placement and master election), replication planning and the node
//! state machine.
//!
//! This crate performs no I/O: no sockets, no files, no processes, no
//! clocks and no global randomness. Time comes in as an argument, randomness
//! is seeded by the caller, and decisions come out as values. The daemon and
//! the simulator drive the very same code.

pub mod election;
pub mod hash;
pub mod ids;
pub mod lease;
pub mod node;
pub mod placement;
pub mod prune;
pub mod settings;
pub mod site;
pub mod time;
pub mod vote;

pub use election::{
    CopyState, Epoch, Head, Holder, MasterDecision, Quorum, Role, has_quorum, master,
    should_step_down,
};
pub use hash::{Rank, rendezvous_score};
pub use ids::{InvalidName, NodeName, SiteName, Zone};
pub use node::{
    Action, Event, Explain, LocalCopy, MemberView, Node, NodeConfig, Outcome, PullError, Time,
    View, holders, member_view, quorum_of, serving_master, view_of,
};
pub use placement::placement;
pub use prune::{Aged, PrunePolicy, to_prune};
pub use settings::GossipSettings;
pub use site::{CopyKey, Domain, Runtime, SiteKey, SiteSpec, Vote};
