//! What a run of the site layer is given and what it counts: the
//! settings, the deliberately broken variants, the timeline events, the
//! statistics.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;

/// A deliberately broken variant, to show the invariants have teeth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// The election ignores epochs: the view the simulator feeds each
    /// model shows every other copy at epoch 0, so no claim is ever fenced.
    IgnoreEpochs,
    /// A diverged replica receives with a blind rollback: `Stash` destroys
    /// the diverged snapshots instead of keeping them.
    BlindRollback,
    /// A candidate promotes without a majority's votes: the view the
    /// simulator feeds each model shows every other member voting as the
    /// node itself last voted, so a candidate needs only to see a majority
    /// alive (the rule before votes).
    NoVotes,
    /// A master ignores its lease: it admits and acknowledges writes
    /// whatever its peers' echoes say (the voters still wait).
    IgnoreLease,
}

impl Broken {
    pub const ALL: [Broken; 4] = [
        Broken::IgnoreEpochs,
        Broken::BlindRollback,
        Broken::NoVotes,
        Broken::IgnoreLease,
    ];
}

impl FromStr for Broken {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "ignore-epochs" => Ok(Broken::IgnoreEpochs),
            "blind-rollback" => Ok(Broken::BlindRollback),
            "no-votes" => Ok(Broken::NoVotes),
            "ignore-lease" => Ok(Broken::IgnoreLease),
            _ => bail!(
                "unknown broken variant '{s}': expected ignore-epochs, blind-rollback, no-votes \
                 or ignore-lease"
            ),
        }
    }
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Broken::IgnoreEpochs => "ignore-epochs",
            Broken::BlindRollback => "blind-rollback",
            Broken::NoVotes => "no-votes",
            Broken::IgnoreLease => "ignore-lease",
        })
    }
}

/// Settings of the site layer.
#[derive(Debug, Clone)]
pub struct SiteSettings {
    pub sites: usize,
    /// Copies per site, the master's included.
    pub replicas: u8,
    /// Client writes per simulated second, over all sites.
    pub write_rate: f64,
    /// A write's logical size: uniform in this range (bytes).
    pub write_bytes: (u64, u64),
    /// A new site's logical size: uniform in this range (bytes).
    pub site_bytes: (u64, u64),
    /// Per-link bandwidth for snapshot streams: uniform in this range
    /// (bytes per second), drawn once per link.
    pub bandwidth: (u64, u64),
    /// A transfer whose request, reply or stream is lost, cut or whose
    /// peer crashed fails this long after it started.
    pub transfer_timeout: Duration,
    /// Once faults healed, every site must have a master and its full
    /// replica count within this bound.
    pub settle: Duration,
    pub broken: Option<Broken>,
    /// Replaces `model::NodeConfig::election_settle`, for experiments only.
    pub election_settle: Option<Duration>,
}

impl Default for SiteSettings {
    fn default() -> Self {
        Self {
            sites: 0,
            replicas: 3,
            write_rate: 50.0,
            write_bytes: (1 << 10, 256 << 10),
            site_bytes: (1 << 20, 32 << 20),
            bandwidth: (20 << 20, 120 << 20),
            transfer_timeout: Duration::from_secs(5),
            settle: Duration::from_secs(60),
            broken: None,
            election_settle: None,
        }
    }
}

/// Timeline events of the site layer.
#[derive(Debug, Clone)]
pub(crate) enum SiteEvent {
    /// Every gossip interval: rebuild each node's view, feed it if changed.
    Step,
    /// A node's `poll_timeout` came (node, generation).
    Timer(usize, u64),
    /// Create site `k` through placement's first node.
    Create(usize),
    /// The next client write.
    Write,
    /// A forwarded write reaches the master it was sent to.
    WriteArrive {
        node: usize,
        generation: u64,
        site: usize,
        id: u64,
        bytes: u64,
    },
    /// The next stage of operation `id`.
    Op(u64),
}

/// What the site layer counted.
#[derive(Debug, Clone, Default)]
pub struct SiteStats {
    pub created: u64,
    pub writes: u64,
    pub writes_unroutable: u64,
    pub writes_lost: u64,
    pub writes_refused: u64,
    pub writes_accepted: u64,
    pub writes_acked: u64,
    pub snapshots: u64,
    pub pulls: u64,
    pub pulls_failed: u64,
    pub diverged: u64,
    pub stashes: u64,
    pub promotions: u64,
    pub demotions: u64,
    pub views_fed: u64,
    pub events: u64,
}
