//! The node's interface: its settings, what the driver tells it
//! ([`Event`], [`Outcome`], [`LocalCopy`], the [`View`]) and what it asks
//! the driver to do ([`Action`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::election::{Epoch, Head, MasterDecision, Quorum, Role};
use crate::ids::{NodeName, SiteName, Zone};
use crate::lease::Beat;
use crate::site::{SiteKey, SiteSpec, Vote};
use crate::time::Time;

/// Settings of the site logic.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    pub name: NodeName,
    /// Promote, and keep serving as master, only while a majority of the
    /// known members is alive: a master that loses sight of the majority
    /// steps down, so a minority side of a partition serves no site.
    pub quorum_guard: bool,
    /// How often a master snapshots a changed site.
    pub snapshot_interval: Duration,
    /// First retry delay after a failed transfer; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// No promotion during this long after `Event::Start`. A node that
    /// just started sees only itself, then a partial cluster, in its
    /// gossip view: a majority of what it knows is not a majority of the
    /// cluster, and without the grace it promoted every copy it held
    /// (found by the simulator).
    pub election_grace: Duration,
    /// No promotion until the set of live members has been still this
    /// long. Failure detectors on one side of a partition see the other
    /// side die one node at a time; in between, a minority still counts
    /// enough stale "alive" members for a quorum (found by the simulator:
    /// both sides of a 9/11 split promoted). With `election_warmup`, the
    /// longest quiet spell seen in such a transition was 1.0 s over 1017
    /// two-way partitions of 20 simulated nodes (ARCHITECTURE.md, model/,
    /// "Election timing"; `sim/quorum-gaps.py`).
    pub election_settle: Duration,
    /// A member counts toward the quorum of a promotion only once it has
    /// been alive this long in this node's view. chitchat's failure
    /// detector restarts its sampling for a member it hears of again (after
    /// a heal or a restart) and then takes several seconds to see that
    /// member die; in the simulator such members kept a minority's "quorum"
    /// through quiet spells of up to 8 s after the rest of the other side
    /// was seen dead.
    /// Keeping a master (and stepping down) uses the plain live count.
    /// Zero (off) by default since promotions need a majority's votes: a
    /// vote is a key, so a member whose state does not arrive gives none,
    /// however alive its relayed heartbeats make it look; the 10 s it was
    /// cost every failover that came soon after a restart or a heal.
    pub election_warmup: Duration,
    /// How long after `Event::Start` the members remembered from before
    /// a restart (`Node::remember`) still count as known members, alive or
    /// not: as long as gossip keeps a dead member (its dead-node grace).
    /// Without them, a restarted node sees only itself, then whichever
    /// members it hears from: 1 of 1 is a majority, and a node restarted
    /// on the minority side of a split counts only that side.
    pub remember_for: Duration,
    /// Which start of the daemon this is: a new value for every start
    /// (a beat of an earlier start must never pass for one of this one).
    pub incarnation: u64,
    /// How often the node publishes its beat ([`crate::lease`]). Zero: no
    /// beats (for tests of the other rules; a master then holds no lease
    /// with peers).
    pub beat_interval: Duration,
    /// A master acknowledges writes only until this long after the
    /// freshest majority of the known members echoed its beats.
    pub lease: Duration,
    /// The bound assumed on how much two nodes' clocks drift apart over a
    /// lease: a voter waits `lease + lease_drift` before it votes against
    /// a master it echoed.
    pub lease_drift: Duration,
}

impl NodeConfig {
    pub fn new(name: NodeName) -> Self {
        Self {
            name,
            quorum_guard: true,
            snapshot_interval: Duration::from_secs(1),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            election_grace: Duration::from_secs(5),
            election_settle: Duration::from_millis(1300),
            election_warmup: Duration::ZERO,
            remember_for: Duration::from_secs(3600),
            incarnation: 0,
            beat_interval: Duration::from_millis(200),
            lease: Duration::from_secs(2),
            lease_drift: Duration::from_millis(500),
        }
    }
}

/// [`Node::explain`]: one local copy and the election as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explain {
    pub role: Role,
    pub epoch: Epoch,
    pub head: Option<Head>,
    /// An action on the copy is in flight.
    pub busy: bool,
    /// Failed actions in a row, and the wait before the next try.
    pub failures: u32,
    pub retry_in_ms: u64,
    /// Kept for a migration.
    pub pinned: bool,
    /// A migration's hand-over to this copy is under way.
    pub takeover: bool,
    /// The election over the view, with the promotion quorum and the votes.
    pub decision: MasterDecision,
    /// This node's last vote in the site's election.
    pub vote: Option<Vote>,
    /// The votes this node can read for the elected candidate at its epoch.
    pub votes: usize,
    /// Every live member counted (keeping a master).
    pub quorum: Quorum,
    /// Only members alive for `election_warmup` counted (promoting).
    pub promotion: Quorum,
    /// Until the start grace and the settle time allow a promotion.
    pub elections_in_ms: u64,
    /// Until the node next looks again by itself.
    pub next_tick_in_ms: Option<u64>,
}

/// One member as the gossip view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub alive: bool,
    /// Left politely: no longer counted as a member.
    pub left: bool,
    pub zone: Option<Zone>,
    /// The member's site keys, as gossiped.
    pub keys: Vec<SiteKey>,
    /// The member's beat ([`crate::lease`]), if its key parsed.
    pub beat: Option<Beat>,
}

/// The cluster as this node's gossip shows it, this node included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub members: BTreeMap<NodeName, MemberView>,
}

/// A copy found on local storage at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCopy {
    pub site: SiteName,
    /// Role and epoch as last persisted ([`Action::Persist`]); a copy with
    /// no record is a replica of epoch 0.
    pub role: Role,
    pub epoch: Epoch,
    /// Snapshots, oldest first.
    pub chain: Vec<Head>,
    /// The spec read from the copy's own data, if any.
    pub spec: Option<SiteSpec>,
    /// The copy was left writable and may hold changes after its newest
    /// snapshot: writes a master acknowledged before it was killed. They
    /// are snapshotted before anything else happens to the copy (as
    /// master, by the next snapshot; otherwise by a `Demote`), so that they
    /// are kept, in the chain or in a stash, never left unlisted.
    pub changed: bool,
}

/// Why a pull failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The local copy holds snapshots the master lacks: it must be stashed
    /// before it can follow.
    Diverged,
    /// Anything else (network, disk, the master went away): retried with
    /// backoff; the copy is unchanged.
    Failed(String),
}

/// The outcome of an [`Action`], reported back by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `Action::Create`: the new copy's first snapshot.
    Created(Result<Head, String>),
    /// `Action::Snapshot`.
    Snapshot(Result<Head, String>),
    /// `Action::Pull`: the copy's chain afterwards.
    Pulled(Result<Vec<Head>, PullError>),
    /// `Action::Stash`: the chain left in place (the common prefix).
    Stashed(Result<Vec<Head>, String>),
    /// `Action::Promote`.
    Switched(Result<(), String>),
    /// `Action::Demote`: the snapshot of what the copy held beyond its
    /// newest snapshot, if it held anything.
    Demoted(Result<Option<Head>, String>),
    /// `Action::Destroy`.
    Destroyed(Result<(), String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The copies on local storage; sent once, before anything else.
    Start(Vec<LocalCopy>),
    View(View),
    Tick,
    /// The master copy of `site` was written to (an upload).
    Written(SiteName),
    /// Create a new site here, as its first master (the driver checked
    /// that the name is free and that placement picks this node).
    Create(SiteSpec),
    /// Delete a site everywhere.
    Delete(SiteName),
    Done(SiteName, Outcome),
    /// Live migration, on the master: snapshot the site as soon as the
    /// copy is free, without waiting for the snapshot interval.
    Flush(SiteName),
    /// Live migration, on the target: keep a copy of the site (pull one if
    /// there is none) even where placement does not want it. `Unpin` ends
    /// that (the copy stays; nothing is destroyed).
    Pin(SiteName),
    Unpin(SiteName),
    /// Live migration, on the target: become master of `site` at `epoch`
    /// (the old master's plus one) once the copy holds `head`, pulling it
    /// from `from` if it does not yet; given up at `until`.
    TakeOver {
        site: SiteName,
        from: NodeName,
        epoch: Epoch,
        head: Head,
        until: Time,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the site's dataset (writable), write its spec into it, take
    /// snapshot 1. Outcome: `Created`.
    Create { site: SiteName, spec: SiteSpec },
    /// Take snapshot `ringhost-<seq>`. Outcome: `Snapshot`.
    Snapshot { site: SiteName, seq: u64 },
    /// Bring the local copy up to `from`'s head (a full copy when there is
    /// none), read-only. Outcome: `Pulled`.
    Pull { site: SiteName, from: NodeName },
    /// Keep the local copy's diverged snapshots aside (never destroyed) and
    /// leave the copy at its newest snapshot shared with `from`. Outcome:
    /// `Stashed`.
    Stash { site: SiteName, from: NodeName },
    /// Make the copy writable and start serving it as master at `epoch`.
    /// Outcome: `Switched`.
    Promote { site: SiteName, epoch: Epoch },
    /// Stop serving at once, make the copy read-only, then snapshot as
    /// `ringhost-<seq>` whatever it holds beyond its newest snapshot (the
    /// writes a master acknowledged since: they exist nowhere else), if it
    /// holds anything. Outcome: `Demoted`.
    Demote { site: SiteName, seq: u64 },
    /// Destroy the local copy (its site was deleted). Outcome: `Destroyed`.
    Destroy { site: SiteName },
    /// Record durably this node's vote in the site's election, for the
    /// next start ([`Node::restore_votes`]), before it is published (the
    /// `Publish` of the vote follows this action).
    PersistVote { site: SiteName, vote: Vote },
    /// Record durably what this copy is, for the next start.
    Persist {
        site: SiteName,
        role: Role,
        epoch: Epoch,
    },
    /// Set one of this node's gossip keys.
    Publish { key: String, value: String },
    /// Delete one of this node's gossip keys.
    Unpublish { key: String },
}
