//! Settings shared by the daemon and the simulator, so that what the
//! simulator measures is what production runs.

use std::time::Duration;

/// Gossip timing. The defaults suit a LAN: a crashed node is seen dead by
/// every peer in about 1.2 s at 5 nodes (`cargo bench --bench membership`).
#[derive(Debug, Clone, PartialEq)]
pub struct GossipSettings {
    /// How often a node gossips with up to three peers.
    pub interval: Duration,
    /// Phi-accrual threshold above which a silent node is dead.
    pub phi_threshold: f64,
    /// How long a dead node stays listed before it is forgotten.
    pub dead_node_grace: Duration,
}

impl Default for GossipSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            dead_node_grace: Duration::from_secs(3600),
        }
    }
}

impl GossipSettings {
    /// The failure detector's prior for a node heard from only a few times.
    /// One gossip interval, so that a young cluster (or a node that has
    /// just heard of another through stale gossip) detects as fast as an
    /// old one; chitchat's own default of 5 s keeps a dead node "alive" for
    /// tens of seconds in those cases.
    pub fn initial_interval(&self) -> Duration {
        self.interval
    }
}
