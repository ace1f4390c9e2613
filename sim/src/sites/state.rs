//! The site layer's state: each node's simulated disk and model, the
//! operations in flight, the writes and what was acknowledged, and the
//! small helpers every part uses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chitchat::ChitchatId;
use model::{
    Epoch, Head, MemberView, Node, NodeName, Outcome, PullError, Role, SiteKey, SiteName, SiteSpec,
    Time, View,
};
use storage::{MemStore, SnapshotStore};

use super::settings::{Broken, SiteEvent, SiteSettings, SiteStats};
use crate::rng::SimRng;
use crate::world::{Shared, Violation, lock};

/// Where a site's spec lives inside its dataset (the daemon's `SPEC_FILE`).
pub(super) const SPEC_FILE: &str = ".ringhost/site.toml";

#[derive(Debug, Default)]
pub(super) struct Waiters {
    pub(super) issued: u64,
    pub(super) in_flight: Option<u64>,
    /// (snapshots issued before the write, write id, epoch it was accepted at)
    pub(super) pending: Vec<(u64, u64, Epoch)>,
}

/// A running generation's site state: lost on a crash.
pub(super) struct Mem {
    pub(super) generation: u64,
    pub(super) node: Node,
    /// Parsed members by chitchat id, at the max version they were parsed.
    pub(super) cache: BTreeMap<ChitchatId, Parsed>,
    /// (name, generation, max version, alive, left) of the last view.
    pub(super) fingerprint: Vec<(NodeName, u64, u64, bool, bool)>,
    /// The last view built from chitchat (unmutated), until it is fed to
    /// the model, which keeps it ([`Mem::view`]); kept here only when the
    /// model gets a mutated one ([`Broken::IgnoreEpochs`]).
    pub(super) view: View,
    /// Per site: the highest epoch any other copy in `view` carries.
    pub(super) fence: BTreeMap<SiteName, (Epoch, NodeName)>,
    pub(super) waiters: BTreeMap<SiteName, Waiters>,
    pub(super) timer: Option<Time>,
}

/// A member's keys as last parsed: at which max version, the member view,
/// and each key's version and parse (so a new version re-parses only the
/// keys that changed; a key's value changes only with its version).
pub(super) struct Parsed {
    pub(super) version: u64,
    pub(super) member: MemberView,
    pub(super) keys: BTreeMap<String, (u64, Option<SiteKey>)>,
}

/// `model::member_view` over `state`'s key/values, reusing the parses of
/// keys whose version did not change since `old`.
pub(super) fn parse_member(state: &chitchat::NodeState, old: Option<Parsed>) -> Parsed {
    let mut keys = old.map(|p| p.keys).unwrap_or_default();
    let mut live = 0;
    for (k, v) in state.key_values_including_deleted() {
        if v.is_deleted() {
            continue;
        }
        live += 1;
        match keys.get_mut(k) {
            Some((version, _)) if *version == v.version => {}
            Some(entry) => *entry = (v.version, model::site::parse_site_key(k, &v.value)),
            None => {
                keys.insert(
                    k.to_owned(),
                    (v.version, model::site::parse_site_key(k, &v.value)),
                );
            }
        }
    }
    if keys.len() != live {
        keys.retain(|k, _| state.get(k).is_some());
    }
    let site_keys = keys.values().filter_map(|(_, p)| p.clone()).collect();
    Parsed {
        version: state.max_version(),
        member: MemberView {
            alive: false,
            left: false,
            zone: None,
            keys: site_keys,
            beat: state
                .get(model::lease::BEAT_KEY)
                .and_then(model::lease::parse_beat),
        },
        keys,
    }
}

/// A node's disk: survives crashes.
pub(super) struct Disk {
    pub(super) store: MemStore,
    pub(super) persisted: BTreeMap<SiteName, (Role, Epoch)>,
    /// The members the node knew (`Node::known_members`), as the daemon
    /// keeps them in sites.json.
    pub(super) members: BTreeSet<NodeName>,
    /// The node's last vote per site, as the daemon keeps them.
    pub(super) votes: BTreeMap<SiteName, model::Vote>,
    /// Logical bytes written since the newest snapshot, per site.
    pub(super) dirty_bytes: BTreeMap<SiteName, u64>,
}

pub(super) struct NodeSites {
    pub(super) name: NodeName,
    pub(super) disk: Disk,
    pub(super) mem: Option<Mem>,
}

#[derive(Debug)]
pub(super) enum Reply {
    UpToDate,
    Diverged,
    Refused(String),
    Send {
        stream: Vec<u8>,
        bytes: u64,
        /// The first snapshot the puller lacked (for the lag).
        first_new: Option<u64>,
        full: bool,
    },
}

#[derive(Debug)]
pub(super) enum OpKind {
    /// A storage action already applied; its outcome reported now.
    Report(Outcome),
    PullRequest {
        from: usize,
        have: Vec<u64>,
    },
    PullReply {
        from: usize,
        from_generation: u64,
        reply: Reply,
    },
    StashRequest {
        from: usize,
    },
    StashReply {
        theirs: Vec<u64>,
    },
    /// A transfer that failed: reported at its timeout.
    Fail(Outcome),
}

#[derive(Debug)]
pub(super) struct Op {
    pub(super) node: usize,
    pub(super) generation: u64,
    pub(super) site: SiteName,
    pub(super) started: Duration,
    pub(super) kind: OpKind,
}

pub(super) struct SnapInfo {
    pub(super) seq: u64,
    pub(super) parent: Option<u64>,
    pub(super) taken: Duration,
    /// Logical bytes this snapshot added over its parent.
    pub(super) bytes: u64,
}

pub(super) struct Acked {
    pub(super) seq: u64,
    pub(super) node: usize,
    pub(super) epoch: Epoch,
    pub(super) writes: u64,
    pub(super) replicated: Option<Duration>,
}

/// All nodes' sites, the client load and the site invariants.
pub(crate) struct SiteLayer {
    pub(super) settings: SiteSettings,
    pub(super) interval: Duration,
    pub(super) rng: SimRng,
    pub(super) nodes: Vec<NodeSites>,
    pub(super) specs: Vec<SiteSpec>,
    pub(super) created: BTreeSet<SiteName>,
    pub(super) ops: BTreeMap<u64, Op>,
    pub(super) next_op: u64,
    pub(super) next_write: u64,
    /// Events to put on the simulation's timeline.
    pub(crate) outbox: Vec<(Duration, SiteEvent)>,
    pub(super) bandwidth: BTreeMap<(usize, usize), u64>,
    pub(super) snaps: BTreeMap<u64, SnapInfo>,
    /// How many places (chains and stashes, on every disk) hold each guid.
    pub(super) holdings: BTreeMap<u64, u32>,
    pub(super) held: BTreeMap<(usize, SiteName), Vec<u64>>,
    pub(super) acked: BTreeMap<SiteName, BTreeMap<u64, Acked>>,
    /// Which node acknowledged writes at each (site, epoch).
    pub(super) ack_owner: BTreeMap<(SiteName, Epoch), usize>,
    /// When each (site, epoch)'s master first took office (its `Promote`).
    pub(super) office: BTreeMap<SiteName, BTreeMap<Epoch, (Duration, usize)>>,
    pub(super) failover_pending: BTreeMap<SiteName, Duration>,
    pub(crate) failover: Vec<Duration>,
    pub(crate) lag: Vec<Duration>,
    /// Starts of crashes and leaves.
    pub(super) crash_starts: Vec<Duration>,
    /// Partitions: start and end (none while active).
    pub(super) partitions: Vec<(Duration, Option<Duration>)>,
    pub(super) last_fault_event: Duration,
    pub(crate) stats: SiteStats,
    pub(crate) violation: Option<Violation>,
}

pub(super) fn node_name(index: usize) -> NodeName {
    format!("n{index}")
        .parse()
        .expect("n<index> is a node name")
}

pub(super) fn site_name(k: usize) -> SiteName {
    format!("s{k}").parse().expect("s<k> is a site name")
}

pub(super) fn node_of(name: &NodeName) -> Option<usize> {
    name.as_str().strip_prefix('n')?.parse().ok()
}

pub(super) fn site_of(name: &SiteName) -> Option<usize> {
    name.as_str().strip_prefix('s')?.parse().ok()
}

pub(super) fn heads(snaps: &[storage::Snapshot]) -> Vec<Head> {
    snaps
        .iter()
        .filter_map(|s| {
            s.seq().map(|seq| Head {
                seq,
                guid: s.guid.0,
            })
        })
        .collect()
}

pub(super) fn ms(d: Duration) -> Time {
    Time(d.as_millis() as u64)
}

/// The failed outcome of the operation `kind` belongs to.
pub(super) fn failure(kind: &OpKind, why: String) -> Outcome {
    match kind {
        OpKind::StashRequest { .. } | OpKind::StashReply { .. } => Outcome::Stashed(Err(why)),
        _ => Outcome::Pulled(Err(PullError::Failed(why))),
    }
}

impl SiteLayer {
    pub(crate) fn new(seed: u64, nodes: usize, interval: Duration, settings: SiteSettings) -> Self {
        let specs = (0..settings.sites)
            .map(|k| SiteSpec {
                name: site_name(k),
                domains: vec![format!("s{k}.example").parse().expect("a domain")],
                replicas: settings.replicas,
                runtime: model::Runtime::Static,
                id: k as u64 + 1,
                version: 1,
            })
            .collect();
        let mut stores = SimRng::derive(seed, 3);
        Self {
            interval,
            rng: SimRng::derive(seed, 4),
            nodes: (0..nodes)
                .map(|i| NodeSites {
                    name: node_name(i),
                    disk: Disk {
                        store: MemStore::new(stores.next_u64()),
                        persisted: BTreeMap::new(),
                        members: BTreeSet::new(),
                        votes: BTreeMap::new(),
                        dirty_bytes: BTreeMap::new(),
                    },
                    mem: None,
                })
                .collect(),
            specs,
            settings,
            created: BTreeSet::new(),
            ops: BTreeMap::new(),
            next_op: 0,
            next_write: 0,
            outbox: Vec::new(),
            bandwidth: BTreeMap::new(),
            snaps: BTreeMap::new(),
            holdings: BTreeMap::new(),
            held: BTreeMap::new(),
            acked: BTreeMap::new(),
            ack_owner: BTreeMap::new(),
            office: BTreeMap::new(),
            failover_pending: BTreeMap::new(),
            failover: Vec::new(),
            lag: Vec::new(),
            crash_starts: Vec::new(),
            partitions: Vec::new(),
            last_fault_event: Duration::ZERO,
            stats: SiteStats::default(),
            violation: None,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.settings.sites > 0
    }

    /// Schedules site creation and the client load, starting at `at`.
    pub(crate) fn begin(&mut self, at: Duration) {
        if !self.enabled() {
            return;
        }
        self.outbox.push((self.interval, SiteEvent::Step));
        let n = self.specs.len() as u32;
        for k in 0..self.specs.len() {
            // Spread over one second.
            let t = at + Duration::from_secs(1) * k as u32 / n;
            self.outbox.push((t, SiteEvent::Create(k)));
        }
        if self.settings.write_rate > 0.0 {
            self.outbox
                .push((at + Duration::from_secs(2), SiteEvent::Write));
        }
    }

    pub(super) fn trace(world: &Shared, text: fmt::Arguments<'_>) {
        let mut w = lock(world);
        let at = w.elapsed();
        w.trace.record(at, text);
    }

    pub(super) fn fail(&mut self, world: &Shared, what: String) {
        if self.violation.is_some() {
            return;
        }
        let mut w = lock(world);
        let at = w.elapsed();
        w.trace.record(at, format_args!("violation {what}"));
        self.violation = Some(Violation { at, what });
    }

    pub(super) fn op(&mut self, at: Duration, op: Op) {
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(id, op);
        self.outbox.push((at, SiteEvent::Op(id)));
    }

    pub(super) fn generation(&self, i: usize) -> Option<u64> {
        self.nodes[i].mem.as_ref().map(|m| m.generation)
    }

    /// The epoch at which node `i` serves `site` as master: its model says
    /// master and its dataset is writable.
    pub(super) fn serving(&self, i: usize, site: &SiteName) -> Option<Epoch> {
        let mem = self.nodes[i].mem.as_ref()?;
        let (role, epoch, _) = mem.node.copy(site)?;
        let writable = !self.nodes[i].disk.store.is_readonly(site).unwrap_or(true);
        (role == Role::Master && writable).then_some(epoch)
    }

    /// Whether node `i`'s lease on `site` holds at `now` (always, for
    /// [`Broken::IgnoreLease`]).
    pub(super) fn leased(&self, i: usize, site: &SiteName, now: Duration) -> bool {
        if self.settings.broken == Some(Broken::IgnoreLease) {
            return true;
        }
        self.nodes[i]
            .mem
            .as_ref()
            .and_then(|m| m.node.lease_until(site))
            .is_some_and(|t| t > ms(now))
    }

    // ---- faults ------------------------------------------------------
}
