//! The site layer of every simulated node: the production `model::Node`
//! state machine, driven the way the daemon's `Driver` (src/sites.rs)
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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use chitchat::ChitchatId;
use model::{
    Action, Epoch, Event, Head, LocalCopy, MemberView, Node, NodeConfig, NodeName, Outcome,
    PullError, Role, SiteKey, SiteName, SiteSpec, Time, View,
};
use storage::{Guid, MemStore, SnapshotStore};

use crate::addr::node_ip;
use crate::node::{LEFT_KEY, SimNode};
use crate::rng::SimRng;
use crate::world::{Shared, Violation, lock};

/// Where a site's spec lives inside its dataset (the daemon's `SPEC_FILE`).
const SPEC_FILE: &str = ".ringhost/site.toml";

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

#[derive(Debug, Default)]
struct Waiters {
    issued: u64,
    in_flight: Option<u64>,
    /// (snapshots issued before the write, write id, epoch it was accepted at)
    pending: Vec<(u64, u64, Epoch)>,
}

/// A running generation's site state: lost on a crash.
struct Mem {
    generation: u64,
    node: Node,
    /// Parsed members by chitchat id, at the max version they were parsed.
    cache: BTreeMap<ChitchatId, Parsed>,
    /// (name, generation, max version, alive, left) of the last view.
    fingerprint: Vec<(NodeName, u64, u64, bool, bool)>,
    /// The last view built from chitchat (unmutated), until it is fed to
    /// the model, which keeps it ([`Mem::view`]); kept here only when the
    /// model gets a mutated one ([`Broken::IgnoreEpochs`]).
    view: View,
    /// Per site: the highest epoch any other copy in `view` carries.
    fence: BTreeMap<SiteName, (Epoch, NodeName)>,
    waiters: BTreeMap<SiteName, Waiters>,
    timer: Option<Time>,
}

/// A member's keys as last parsed: at which max version, the member view,
/// and each key's version and parse (so a new version re-parses only the
/// keys that changed; a key's value changes only with its version).
struct Parsed {
    version: u64,
    member: MemberView,
    keys: BTreeMap<String, (u64, Option<SiteKey>)>,
}

/// `model::member_view` over `state`'s key/values, reusing the parses of
/// keys whose version did not change since `old`.
fn parse_member(state: &chitchat::NodeState, old: Option<Parsed>) -> Parsed {
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
struct Disk {
    store: MemStore,
    persisted: BTreeMap<SiteName, (Role, Epoch)>,
    /// The members the node knew (`Node::known_members`), as the daemon
    /// keeps them in sites.json.
    members: BTreeSet<NodeName>,
    /// The node's last vote per site, as the daemon keeps them.
    votes: BTreeMap<SiteName, model::Vote>,
    /// Logical bytes written since the newest snapshot, per site.
    dirty_bytes: BTreeMap<SiteName, u64>,
}

struct NodeSites {
    name: NodeName,
    disk: Disk,
    mem: Option<Mem>,
}

#[derive(Debug)]
enum Reply {
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
enum OpKind {
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
struct Op {
    node: usize,
    generation: u64,
    site: SiteName,
    started: Duration,
    kind: OpKind,
}

struct SnapInfo {
    seq: u64,
    parent: Option<u64>,
    taken: Duration,
    /// Logical bytes this snapshot added over its parent.
    bytes: u64,
}

struct Acked {
    seq: u64,
    node: usize,
    epoch: Epoch,
    writes: u64,
    replicated: Option<Duration>,
}

/// All nodes' sites, the client load and the site invariants.
pub(crate) struct SiteLayer {
    settings: SiteSettings,
    interval: Duration,
    rng: SimRng,
    nodes: Vec<NodeSites>,
    specs: Vec<SiteSpec>,
    created: BTreeSet<SiteName>,
    ops: BTreeMap<u64, Op>,
    next_op: u64,
    next_write: u64,
    /// Events to put on the simulation's timeline.
    pub(crate) outbox: Vec<(Duration, SiteEvent)>,
    bandwidth: BTreeMap<(usize, usize), u64>,
    snaps: BTreeMap<u64, SnapInfo>,
    /// How many places (chains and stashes, on every disk) hold each guid.
    holdings: BTreeMap<u64, u32>,
    held: BTreeMap<(usize, SiteName), Vec<u64>>,
    acked: BTreeMap<SiteName, BTreeMap<u64, Acked>>,
    /// Which node acknowledged writes at each (site, epoch).
    ack_owner: BTreeMap<(SiteName, Epoch), usize>,
    /// When each (site, epoch)'s master first took office (its `Promote`).
    office: BTreeMap<SiteName, BTreeMap<Epoch, (Duration, usize)>>,
    failover_pending: BTreeMap<SiteName, Duration>,
    pub(crate) failover: Vec<Duration>,
    pub(crate) lag: Vec<Duration>,
    /// Starts of crashes and leaves.
    crash_starts: Vec<Duration>,
    /// Partitions: start and end (none while active).
    partitions: Vec<(Duration, Option<Duration>)>,
    last_fault_event: Duration,
    pub(crate) stats: SiteStats,
    pub(crate) violation: Option<Violation>,
}

fn node_name(index: usize) -> NodeName {
    format!("n{index}")
        .parse()
        .expect("n<index> is a node name")
}

fn site_name(k: usize) -> SiteName {
    format!("s{k}").parse().expect("s<k> is a site name")
}

fn node_of(name: &NodeName) -> Option<usize> {
    name.as_str().strip_prefix('n')?.parse().ok()
}

fn site_of(name: &SiteName) -> Option<usize> {
    name.as_str().strip_prefix('s')?.parse().ok()
}

fn heads(snaps: &[storage::Snapshot]) -> Vec<Head> {
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

fn ms(d: Duration) -> Time {
    Time(d.as_millis() as u64)
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

    fn trace(world: &Shared, text: fmt::Arguments<'_>) {
        let mut w = lock(world);
        let at = w.elapsed();
        w.trace.record(at, text);
    }

    fn fail(&mut self, world: &Shared, what: String) {
        if self.violation.is_some() {
            return;
        }
        let mut w = lock(world);
        let at = w.elapsed();
        w.trace.record(at, format_args!("violation {what}"));
        self.violation = Some(Violation { at, what });
    }

    fn op(&mut self, at: Duration, op: Op) {
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(id, op);
        self.outbox.push((at, SiteEvent::Op(id)));
    }

    fn generation(&self, i: usize) -> Option<u64> {
        self.nodes[i].mem.as_ref().map(|m| m.generation)
    }

    /// The epoch at which node `i` serves `site` as master: its model says
    /// master and its dataset is writable.
    fn serving(&self, i: usize, site: &SiteName) -> Option<Epoch> {
        let mem = self.nodes[i].mem.as_ref()?;
        let (role, epoch, _) = mem.node.copy(site)?;
        let writable = !self.nodes[i].disk.store.is_readonly(site).unwrap_or(true);
        (role == Role::Master && writable).then_some(epoch)
    }

    /// Whether node `i`'s lease on `site` holds at `now` (always, for
    /// [`Broken::IgnoreLease`]).
    fn leased(&self, i: usize, site: &SiteName, now: Duration) -> bool {
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

    pub(crate) fn on_fault_event(&mut self, at: Duration) {
        self.last_fault_event = at;
    }

    pub(crate) fn on_partition(&mut self, at: Duration, active: bool) {
        if active {
            self.partitions.push((at, None));
        } else if let Some((_, end)) = self.partitions.last_mut() {
            end.get_or_insert(at);
        }
    }

    /// Node `i` crashed or left: its memory is gone, its disk stays.
    pub(crate) fn on_down(&mut self, i: usize, at: Duration) {
        self.crash_starts.push(at);
        if !self.enabled() {
            return;
        }
        let served: Vec<SiteName> = match &self.nodes[i].mem {
            Some(_) => self.nodes[i]
                .disk
                .store
                .sites()
                .unwrap_or_default()
                .into_iter()
                .filter(|s| self.serving(i, s).is_some())
                .collect(),
            None => Vec::new(),
        };
        for site in served {
            self.failover_pending.entry(site).or_insert(at);
        }
        self.nodes[i].mem = None;
    }

    /// Node `i` started generation `generation`: `Event::Start` with the
    /// copies on its disk.
    pub(crate) async fn on_up(
        &mut self,
        i: usize,
        generation: u64,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        if !self.enabled() {
            return;
        }
        let now = lock(world).elapsed();
        let disk = &self.nodes[i].disk;
        disk.store.set_clock(1_700_000_000 + now.as_secs());
        let mut copies = Vec::new();
        for site in disk.store.sites().unwrap_or_default() {
            let chain = heads(&disk.store.snapshots(&site).unwrap_or_default());
            let spec = disk
                .store
                .read_file(&site, Path::new(SPEC_FILE))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| {
                    match model::site::parse_site_key(&model::site::spec_key(&site), &t) {
                        Some(SiteKey::Spec(_, spec)) => Some(spec),
                        _ => None,
                    }
                });
            let (role, epoch) = disk
                .persisted
                .get(&site)
                .copied()
                .unwrap_or((Role::Replica, Epoch(0)));
            // As the daemon does: a writable copy may hold changes.
            let changed = disk.store.is_readonly(&site).is_ok_and(|ro| !ro)
                && disk
                    .store
                    .changed(&site)
                    .is_ok_and(|c| c != storage::Changed::No);
            copies.push(LocalCopy {
                site,
                role,
                epoch,
                chain,
                spec,
                changed,
            });
        }
        let mut cfg = NodeConfig::new(self.nodes[i].name.clone());
        cfg.incarnation = generation;
        if let Some(settle) = self.settings.election_settle {
            cfg.election_settle = settle;
        }
        let mut node = Node::new(cfg);
        node.remember(disk.members.iter().cloned());
        node.restore_votes(disk.votes.clone());
        node.handle(ms(now), Event::Start(copies));
        self.nodes[i].mem = Some(Mem {
            generation,
            node,
            cache: BTreeMap::new(),
            fingerprint: Vec::new(),
            view: View::default(),
            fence: BTreeMap::new(),
            waiters: BTreeMap::new(),
            timer: None,
        });
        self.drive(i, nodes, world).await;
    }

    // ---- events ------------------------------------------------------

    pub(crate) async fn handle(&mut self, event: SiteEvent, nodes: &[SimNode], world: &Shared) {
        self.stats.events += 1;
        let now = lock(world).elapsed();
        for d in &self.nodes {
            d.disk.store.set_clock(1_700_000_000 + now.as_secs());
        }
        match event {
            SiteEvent::Step => {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].mem.is_some() && self.refresh_view(i, nodes).await {
                        let view = self.model_view(i);
                        self.feed(i, now, Event::View(view), nodes, world).await;
                    }
                }
                self.outbox.push((now + self.interval, SiteEvent::Step));
            }
            SiteEvent::Timer(i, generation) => {
                if self.generation(i) == Some(generation) {
                    if let Some(mem) = &mut self.nodes[i].mem {
                        mem.timer = None;
                    }
                    self.feed(i, now, Event::Tick, nodes, world).await;
                }
            }
            SiteEvent::Create(k) => self.create(k, now, nodes, world).await,
            SiteEvent::Write => self.write(now, world),
            SiteEvent::WriteArrive {
                node,
                generation,
                site,
                id,
                bytes,
            } => {
                self.write_arrive(node, generation, site, id, bytes, now, nodes, world)
                    .await
            }
            SiteEvent::Op(id) => {
                if let Some(op) = self.ops.remove(&id) {
                    self.run_op(op, now, nodes, world).await;
                }
            }
        }
    }

    async fn feed(
        &mut self,
        i: usize,
        now: Duration,
        event: Event,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let Some(mem) = &mut self.nodes[i].mem else {
            return;
        };
        let view = matches!(event, Event::View(_));
        mem.node.handle(ms(now), event);
        if view {
            self.stats.views_fed += 1;
            let known = mem.node.known_members();
            if known != self.nodes[i].disk.members {
                self.nodes[i].disk.members = known;
            }
        }
        self.drive(i, nodes, world).await;
    }

    /// The view the model is fed: the one built from chitchat (handed
    /// over), or for [`Broken::IgnoreEpochs`] a copy with every other copy
    /// at epoch 0.
    fn model_view(&mut self, i: usize) -> View {
        let me = self.nodes[i].name.clone();
        let broken = self.settings.broken;
        let mem = self.nodes[i].mem.as_mut().expect("a running node");
        if broken == Some(Broken::NoVotes) {
            let mut view = std::mem::take(&mut mem.view);
            let mine: Vec<SiteKey> = self
                .specs
                .iter()
                .filter_map(|spec| {
                    let v = mem.node.vote(&spec.name)?;
                    Some(SiteKey::Vote(spec.name.clone(), v.clone()))
                })
                .collect();
            for (name, m) in &mut view.members {
                if *name != me {
                    m.keys.retain(|k| !matches!(k, SiteKey::Vote(..)));
                    m.keys.extend(mine.iter().cloned());
                }
            }
            return view;
        }
        if broken != Some(Broken::IgnoreEpochs) {
            return std::mem::take(&mut mem.view);
        }
        let mut view = mem.view.clone();
        {
            for (name, m) in &mut view.members {
                if *name == me {
                    continue;
                }
                for k in &mut m.keys {
                    if let SiteKey::Copy(_, ck) = k {
                        ck.epoch = Epoch(0);
                    }
                }
            }
        }
        view
    }

    /// Rebuilds node `i`'s view from its chitchat state as the daemon's
    /// gossip layer does; returns whether it changed.
    async fn refresh_view(&mut self, i: usize, nodes: &[SimNode]) -> bool {
        let Some(handle) = nodes[i].chitchat() else {
            return false;
        };
        let me = self.nodes[i].name.clone();
        let chitchat = handle.chitchat();
        let c = chitchat.lock().await;
        let self_id = c.self_chitchat_id().clone();
        let live: BTreeSet<&ChitchatId> = c.live_nodes().collect();
        let mut newest: BTreeMap<NodeName, (&ChitchatId, &chitchat::NodeState, bool, bool)> =
            BTreeMap::new();
        for (id, state) in c.node_states() {
            let Ok(name) = id.node_id.parse::<NodeName>() else {
                continue;
            };
            let is_self = *id == self_id;
            if name == me && !is_self {
                continue;
            }
            let left = state.get(LEFT_KEY) == Some("1");
            let alive = is_self || live.contains(id);
            match newest.get(&name) {
                Some((old, ..)) if old.generation_id >= id.generation_id => {}
                _ => {
                    newest.insert(name, (id, state, alive, left));
                }
            }
        }
        let mem = self.nodes[i].mem.as_mut().expect("a running node");
        let unchanged = mem.fingerprint.len() == newest.len()
            && mem.fingerprint.iter().zip(&newest).all(
                |((n, g, v, a, l), (name, (id, state, alive, left)))| {
                    n == name
                        && *g == id.generation_id
                        && *v == state.max_version()
                        && a == alive
                        && l == left
                },
            );
        if unchanged {
            return false;
        }
        let mut view = View::default();
        let mut cache = BTreeMap::new();
        let mut fingerprint = Vec::with_capacity(newest.len());
        for (name, (id, state, alive, left)) in newest {
            let version = state.max_version();
            let parsed = match mem.cache.remove(id) {
                Some(p) if p.version == version => p,
                old => parse_member(state, old),
            };
            let mut shown = parsed.member.clone();
            shown.alive = alive;
            shown.left = left;
            fingerprint.push((name.clone(), id.generation_id, version, alive, left));
            view.members.insert(name, shown);
            cache.insert(id.clone(), parsed);
        }
        drop(c);
        let mut fence: BTreeMap<SiteName, (Epoch, NodeName)> = BTreeMap::new();
        for (name, m) in &view.members {
            if *name == me || m.left {
                continue;
            }
            for k in &m.keys {
                if let SiteKey::Copy(site, ck) = k {
                    let e = fence
                        .entry(site.clone())
                        .or_insert((ck.epoch, name.clone()));
                    if ck.epoch > e.0 {
                        *e = (ck.epoch, name.clone());
                    }
                }
            }
        }
        mem.cache = cache;
        mem.fingerprint = fingerprint;
        mem.view = view;
        mem.fence = fence;
        true
    }

    /// Executes node `i`'s actions until none is left, then sets its timer
    /// and checks the fencing invariant on it.
    async fn drive(&mut self, i: usize, nodes: &[SimNode], world: &Shared) {
        let now = lock(world).elapsed();
        loop {
            let Some(mem) = &mut self.nodes[i].mem else {
                return;
            };
            let Some(action) = mem.node.poll_action() else {
                break;
            };
            self.execute(i, action, now, nodes, world).await;
        }
        let Some(mem) = &mut self.nodes[i].mem else {
            return;
        };
        if let Some(t) = mem.node.poll_timeout() {
            let t = t.max(ms(now));
            if mem.timer.is_none_or(|s| t < s) {
                mem.timer = Some(t);
                let generation = mem.generation;
                self.outbox
                    .push((Duration::from_millis(t.0), SiteEvent::Timer(i, generation)));
            }
        }
        self.check_node(i, now, world);
    }

    /// Fencing: a node never serves a site while its own view shows a copy
    /// at a higher epoch. Also ends pending failovers this node now serves.
    fn check_node(&mut self, i: usize, now: Duration, world: &Shared) {
        let Some(mem) = &self.nodes[i].mem else {
            return;
        };
        let mut fenced = None;
        for (site, (fence, by)) in &mem.fence {
            if let Some(epoch) = self.serving(i, site)
                && epoch < *fence
            {
                fenced = Some(format!(
                    "{} serves {site} as master at epoch {epoch} although its view shows {by}'s \
                     copy at epoch {fence} (a fenced master serving)",
                    self.nodes[i].name
                ));
                break;
            }
        }
        if let Some(what) = fenced {
            self.fail(world, what);
        }
        let done: Vec<SiteName> = self
            .failover_pending
            .keys()
            .filter(|s| self.serving(i, s).is_some())
            .cloned()
            .collect();
        for site in done {
            if let Some(t) = self.failover_pending.remove(&site) {
                self.failover.push(now - t);
                Self::trace(
                    world,
                    format_args!(
                        "failover {site} to {} after {:.3}s",
                        self.nodes[i].name,
                        (now - t).as_secs_f64()
                    ),
                );
            }
        }
    }

    /// Takes snapshot `seq` of node `i`'s copy (with `only_changes`, only
    /// if it changed since its newest one) and records it; the guid taken.
    fn take_snapshot(
        &mut self,
        i: usize,
        site: &SiteName,
        seq: u64,
        now: Duration,
        only_changes: bool,
        world: &Shared,
    ) -> Result<Option<u64>, String> {
        let store = &self.nodes[i].disk.store;
        let parent = store
            .snapshots(site)
            .ok()
            .and_then(|c| c.last().map(|s| s.guid.0));
        let result = if only_changes {
            store.snapshot_changes(site, seq)
        } else {
            store.snapshot(site, seq).map(Some)
        }
        .map_err(|e| e.to_string());
        if let Ok(Some(s)) = &result {
            let bytes = self.nodes[i].disk.dirty_bytes.remove(site).unwrap_or(0);
            self.snaps.insert(
                s.guid.0,
                SnapInfo {
                    seq,
                    parent,
                    taken: now,
                    bytes,
                },
            );
            self.stats.snapshots += 1;
        }
        self.resync(i, site, world);
        result.map(|s| s.map(|s| s.guid.0))
    }

    async fn execute(
        &mut self,
        i: usize,
        action: Action,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let generation = self.generation(i).expect("a running node");
        let name = self.nodes[i].name.clone();
        let report = |site: SiteName, outcome: Outcome| Op {
            node: i,
            generation,
            site,
            started: now,
            kind: OpKind::Report(outcome),
        };
        let local = Duration::from_millis(5);
        match action {
            Action::Publish { key, value } => {
                if let Some(h) = nodes[i].chitchat() {
                    h.chitchat().lock().await.self_node_state().set(key, value);
                }
            }
            Action::Unpublish { key } => {
                if let Some(h) = nodes[i].chitchat() {
                    h.chitchat().lock().await.self_node_state().delete(&key);
                }
            }
            Action::PersistVote { site, vote } => {
                Self::trace(
                    world,
                    format_args!(
                        "site {name} vote {site} e{} for {}",
                        vote.epoch, vote.candidate
                    ),
                );
                self.nodes[i].disk.votes.insert(site, vote);
            }
            Action::Persist { site, role, epoch } => {
                self.nodes[i].disk.persisted.insert(site, (role, epoch));
            }
            Action::Create { site, spec } => {
                let result = self.create_on_disk(i, &site, &spec, now);
                Self::trace(world, format_args!("site {name} create {site} {result:?}"));
                if result.is_ok() {
                    self.created.insert(site.clone());
                    self.stats.created += 1;
                }
                self.resync(i, &site, world);
                let op = report(site, Outcome::Created(result));
                self.op(now + Duration::from_millis(50), op);
            }
            Action::Snapshot { site, seq } => {
                let w = self.nodes[i]
                    .mem
                    .as_mut()
                    .expect("a running node")
                    .waiters
                    .entry(site.clone())
                    .or_default();
                w.issued += 1;
                w.in_flight = Some(w.issued);
                let result = self.take_snapshot(i, &site, seq, now, false, world);
                let outcome = Outcome::Snapshot(result.map(|s| {
                    s.map(|g| Head { seq, guid: g })
                        .expect("a snapshot is taken whether or not the copy changed")
                }));
                self.op(now + local, report(site, outcome));
            }
            Action::Promote { site, epoch } => {
                let result = self.nodes[i]
                    .disk
                    .store
                    .set_writable(&site)
                    .map_err(|e| e.to_string());
                self.stats.promotions += 1;
                self.office
                    .entry(site.clone())
                    .or_default()
                    .entry(epoch)
                    .or_insert((now, i));
                Self::trace(world, format_args!("site {name} promote {site} e{epoch}"));
                self.check_promotion(i, &site, epoch, world);
                self.op(now + local, report(site, Outcome::Switched(result)));
            }
            Action::Demote { site, seq } => {
                let result = self.nodes[i]
                    .disk
                    .store
                    .set_readonly(&site)
                    .map_err(|e| e.to_string())
                    .and_then(|()| self.take_snapshot(i, &site, seq, now, true, world));
                self.stats.demotions += 1;
                Self::trace(world, format_args!("site {name} demote {site} {result:?}"));
                let outcome = Outcome::Demoted(result.map(|s| s.map(|g| Head { seq, guid: g })));
                self.op(now + local, report(site, outcome));
            }
            Action::Destroy { site } => {
                self.nodes[i].disk.persisted.remove(&site);
                let result = self.nodes[i]
                    .disk
                    .store
                    .destroy_site(&site)
                    .map_err(|e| e.to_string());
                Self::trace(world, format_args!("site {name} destroy {site}"));
                self.resync(i, &site, world);
                self.op(now + local, report(site, Outcome::Destroyed(result)));
            }
            Action::Pull { site, from } => {
                let have: Vec<u64> = self.nodes[i]
                    .disk
                    .store
                    .snapshots(&site)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.guid.0)
                    .collect();
                self.stats.pulls += 1;
                match node_of(&from) {
                    Some(j) if j < self.nodes.len() => {
                        self.send(
                            i,
                            j,
                            now,
                            world,
                            Op {
                                node: i,
                                generation,
                                site,
                                started: now,
                                kind: OpKind::PullRequest { from: j, have },
                            },
                        );
                    }
                    _ => {
                        let outcome =
                            Outcome::Pulled(Err(PullError::Failed(format!("unknown node {from}"))));
                        self.op(now + local, report(site, outcome));
                    }
                }
            }
            Action::Stash { site, from } => match node_of(&from) {
                Some(j) if j < self.nodes.len() => {
                    self.send(
                        i,
                        j,
                        now,
                        world,
                        Op {
                            node: i,
                            generation,
                            site,
                            started: now,
                            kind: OpKind::StashRequest { from: j },
                        },
                    );
                }
                _ => {
                    let outcome = Outcome::Stashed(Err(format!("unknown node {from}")));
                    self.op(now + local, report(site, outcome));
                }
            },
        }
    }

    fn create_on_disk(
        &mut self,
        i: usize,
        site: &SiteName,
        spec: &SiteSpec,
        now: Duration,
    ) -> Result<Head, String> {
        let store = &self.nodes[i].disk.store;
        store.create_site(site).map_err(|e| e.to_string())?;
        let result = store
            .write_file(
                site,
                Path::new(SPEC_FILE),
                model::site::encode_spec(spec).as_bytes(),
            )
            .and_then(|()| store.snapshot(site, 1));
        match result {
            Ok(s) => {
                let (lo, hi) = self.settings.site_bytes;
                let bytes = lo + self.rng.below(hi - lo + 1);
                self.snaps.insert(
                    s.guid.0,
                    SnapInfo {
                        seq: 1,
                        parent: None,
                        taken: now,
                        bytes,
                    },
                );
                Ok(Head {
                    seq: 1,
                    guid: s.guid.0,
                })
            }
            Err(e) => {
                let _ = store.destroy_site(site);
                Err(e.to_string())
            }
        }
    }

    /// A protocol message from node `i` to node `j`, carrying `op` to its
    /// next stage; a lost or cut message fails the operation at its
    /// timeout.
    fn send(&mut self, i: usize, j: usize, now: Duration, world: &Shared, mut op: Op) {
        let link = lock(world)
            .net
            .site_link(node_ip(i), node_ip(j), &mut self.rng);
        match link {
            Ok(delay) => self.op(now + delay, op),
            Err(why) => {
                let at = op.started + self.settings.transfer_timeout;
                op.kind = OpKind::Fail(failure(&op.kind, format!("message {why}")));
                self.op(at.max(now), op);
            }
        }
    }

    fn bandwidth(&mut self, i: usize, j: usize) -> u64 {
        let key = (i.min(j), i.max(j));
        let (lo, hi) = self.settings.bandwidth;
        let rng = &mut self.rng;
        *self
            .bandwidth
            .entry(key)
            .or_insert_with(|| lo + rng.below(hi - lo + 1))
    }

    async fn run_op(&mut self, op: Op, now: Duration, nodes: &[SimNode], world: &Shared) {
        let Op {
            node: i,
            generation,
            site,
            started,
            kind,
        } = op;
        let alive = |layer: &Self, n: usize, g: u64| layer.generation(n) == Some(g);
        let timeout_at = (started + self.settings.transfer_timeout).max(now);
        match kind {
            OpKind::Report(outcome) | OpKind::Fail(outcome) => {
                if alive(self, i, generation) {
                    self.done(i, site, outcome, now, nodes, world).await;
                }
            }
            OpKind::PullRequest { from: j, have } => {
                // At the master: answer as the daemon's serve_pull does.
                let Some(from_generation) = self.generation(j) else {
                    let kind =
                        OpKind::Fail(Outcome::Pulled(Err(PullError::Failed("no answer".into()))));
                    self.op(
                        timeout_at,
                        Op {
                            node: i,
                            generation,
                            site,
                            started,
                            kind,
                        },
                    );
                    return;
                };
                let reply = self.serve_pull(j, &site, &have);
                let (bytes, full) = match &reply {
                    Reply::Send { bytes, full, .. } => (*bytes, *full),
                    _ => (0, false),
                };
                let _ = full;
                let transfer = Duration::from_secs_f64(bytes as f64 / self.bandwidth(i, j) as f64);
                let next = Op {
                    node: i,
                    generation,
                    site,
                    started,
                    kind: OpKind::PullReply {
                        from: j,
                        from_generation,
                        reply,
                    },
                };
                let link = lock(world)
                    .net
                    .site_link(node_ip(j), node_ip(i), &mut self.rng);
                match link {
                    Ok(delay) => self.op(now + delay + transfer, next),
                    Err(why) => {
                        let kind = OpKind::Fail(Outcome::Pulled(Err(PullError::Failed(format!(
                            "reply {why}"
                        )))));
                        self.op(timeout_at, Op { kind, ..next });
                    }
                }
            }
            OpKind::PullReply {
                from: j,
                from_generation,
                reply,
            } => {
                if !alive(self, i, generation) {
                    return;
                }
                // The stream needs its sender up to its end and the link
                // open both ways.
                let cut = {
                    let w = lock(world);
                    !w.net.passes(node_ip(j), node_ip(i)) || !w.net.passes(node_ip(i), node_ip(j))
                };
                let sender_gone = self.generation(j) != Some(from_generation);
                let outcome = if matches!(reply, Reply::Send { .. }) && (cut || sender_gone) {
                    let why = if cut {
                        "link cut mid-stream"
                    } else {
                        "sender crashed mid-stream"
                    };
                    let kind = OpKind::Fail(Outcome::Pulled(Err(PullError::Failed(why.into()))));
                    self.op(
                        timeout_at,
                        Op {
                            node: i,
                            generation,
                            site,
                            started,
                            kind,
                        },
                    );
                    return;
                } else {
                    self.receive(i, j, &site, reply, now, world)
                };
                self.done(i, site, outcome, now, nodes, world).await;
            }
            OpKind::StashRequest { from: j } => {
                let theirs: Vec<u64> = match self.generation(j) {
                    Some(_) => self.nodes[j]
                        .disk
                        .store
                        .snapshots(&site)
                        .unwrap_or_default()
                        .iter()
                        .map(|s| s.guid.0)
                        .collect(),
                    None => {
                        let kind = OpKind::Fail(Outcome::Stashed(Err("no answer".into())));
                        self.op(
                            timeout_at,
                            Op {
                                node: i,
                                generation,
                                site,
                                started,
                                kind,
                            },
                        );
                        return;
                    }
                };
                let next = Op {
                    node: i,
                    generation,
                    site,
                    started,
                    kind: OpKind::StashReply { theirs },
                };
                self.send(j, i, now, world, next);
            }
            OpKind::StashReply { theirs } => {
                if !alive(self, i, generation) {
                    return;
                }
                let outcome = Outcome::Stashed(self.stash(i, &site, &theirs, world));
                self.done(i, site, outcome, now, nodes, world).await;
            }
        }
    }

    /// The master's side of a pull (the daemon's `serve_pull`).
    fn serve_pull(&self, j: usize, site: &SiteName, have: &[u64]) -> Reply {
        let store = &self.nodes[j].disk.store;
        let mine = match store.snapshots(site) {
            Ok(m) => m,
            Err(e) => return Reply::Refused(e.to_string()),
        };
        let Some(newest) = mine.last() else {
            return Reply::Refused(format!("site '{site}' has no snapshot here"));
        };
        let from = match have.last() {
            None => None,
            Some(last) if *last == newest.guid.0 => return Reply::UpToDate,
            Some(last) if !mine.iter().any(|m| m.guid.0 == *last) => return Reply::Diverged,
            Some(last) => Some(*last),
        };
        let mut stream = Vec::new();
        match store.send(site, from.map(Guid), newest.guid) {
            Ok(mut s) => {
                if let Err(e) = s.read_to_end(&mut stream) {
                    return Reply::Refused(e.to_string());
                }
            }
            Err(e) => return Reply::Refused(e.to_string()),
        }
        let after = match from {
            None => 0,
            Some(f) => mine.iter().position(|m| m.guid.0 == f).map_or(0, |p| p + 1),
        };
        let bytes: u64 = mine[after..]
            .iter()
            .map(|m| self.snaps.get(&m.guid.0).map_or(0, |s| s.bytes))
            .sum::<u64>()
            + stream.len() as u64;
        Reply::Send {
            stream,
            bytes,
            first_new: mine.get(after).map(|m| m.guid.0),
            full: from.is_none(),
        }
    }

    /// The puller's side after the reply (the daemon's `pull`).
    fn receive(
        &mut self,
        i: usize,
        j: usize,
        site: &SiteName,
        reply: Reply,
        now: Duration,
        world: &Shared,
    ) -> Outcome {
        let name = self.nodes[i].name.clone();
        let store = &self.nodes[i].disk.store;
        let chain = || heads(&store.snapshots(site).unwrap_or_default());
        let result = match reply {
            Reply::UpToDate => Ok(chain()),
            Reply::Diverged => Err(PullError::Diverged),
            Reply::Refused(e) => Err(PullError::Failed(e)),
            Reply::Send {
                stream,
                first_new,
                full,
                ..
            } => match store.receive(site, &mut &stream[..]) {
                Ok(_) => {
                    let c = chain();
                    if !full
                        && let Some(t) = first_new.and_then(|g| self.snaps.get(&g)).map(|s| s.taken)
                    {
                        self.lag.push(now.saturating_sub(t));
                    }
                    Ok(c)
                }
                Err(storage::Error::Diverged { .. }) => Err(PullError::Diverged),
                Err(e) => Err(PullError::Failed(e.to_string())),
            },
        };
        match &result {
            Ok(c) => {
                let head = c.last().copied();
                Self::trace(
                    world,
                    format_args!(
                        "site {name} pull {site}<n{j} ok seq {}",
                        head.map_or(0, |h| h.seq)
                    ),
                );
                if let Some(h) = head {
                    self.mark_replicated(i, site, h, now);
                }
            }
            Err(PullError::Diverged) => {
                self.stats.diverged += 1;
                Self::trace(world, format_args!("site {name} pull {site}<n{j} diverged"));
            }
            Err(PullError::Failed(e)) => {
                self.stats.pulls_failed += 1;
                Self::trace(
                    world,
                    format_args!("site {name} pull {site}<n{j} failed: {e}"),
                );
            }
        }
        self.resync(i, site, world);
        Outcome::Pulled(result)
    }

    /// The daemon's `stash`: keep the diverged snapshots aside, leave the
    /// copy at its newest snapshot the master also holds.
    fn stash(
        &mut self,
        i: usize,
        site: &SiteName,
        theirs: &[u64],
        world: &Shared,
    ) -> Result<Vec<Head>, String> {
        let name = self.nodes[i].name.clone();
        let store = &self.nodes[i].disk.store;
        let mine = store.snapshots(site).map_err(|e| e.to_string())?;
        let common = mine
            .iter()
            .rev()
            .find(|m| theirs.contains(&m.guid.0))
            .map(|m| m.guid);
        let result = if self.settings.broken == Some(Broken::BlindRollback) {
            // Broken: roll back blindly, destroying the diverged snapshots.
            let keep = common.map_or(0, |g| {
                mine.iter().position(|m| m.guid == g).map_or(0, |p| p + 1)
            });
            let mut r = Ok(());
            if keep == 0 {
                r = store.destroy_site(site);
            } else {
                for s in mine[keep..].iter().rev() {
                    r = r.and_then(|()| store.destroy_snapshot(site, s.guid));
                }
            }
            r.map_err(|e| e.to_string())
        } else {
            store
                .stash(site, common)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        self.stats.stashes += 1;
        Self::trace(
            world,
            format_args!(
                "site {name} stash {site} at {} {:?}",
                common.map_or_else(|| "nothing".to_owned(), |g| g.to_string()),
                result
            ),
        );
        let after = match store.snapshots(site) {
            Err(storage::Error::NoSuchSite { .. }) => Ok(Vec::new()),
            other => other.map(|c| heads(&c)).map_err(|e| e.to_string()),
        };
        self.resync(i, site, world);
        result.and(after)
    }

    /// Reports an outcome to node `i`'s model, then acknowledges the
    /// writes a snapshot holds (after the actions it caused ran, as the
    /// daemon's waiters are answered).
    async fn done(
        &mut self,
        i: usize,
        site: SiteName,
        outcome: Outcome,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let snapshot = match &outcome {
            Outcome::Snapshot(r) => Some(r.clone()),
            _ => None,
        };
        self.feed(i, now, Event::Done(site.clone(), outcome), nodes, world)
            .await;
        let Some(result) = snapshot else { return };
        let Some(mem) = &mut self.nodes[i].mem else {
            return;
        };
        let Some(w) = mem.waiters.get_mut(&site) else {
            return;
        };
        let Some(k) = w.in_flight.take() else { return };
        let (ready, rest): (Vec<_>, Vec<_>) =
            w.pending.drain(..).partition(|(before, ..)| *before < k);
        w.pending = rest;
        let Ok(head) = result else { return };
        if ready.is_empty() {
            return;
        }
        if !self.leased(i, &site, now) {
            // Out of its lease: the writes are answered with an error.
            self.stats.writes_refused += ready.len() as u64;
            return;
        }
        let epoch = ready[0].2;
        for (_, _, e) in &ready {
            if let Some((e2, (t, by))) = self.office.get(&site).and_then(|o| {
                // Another node's office: this node taking office
                // again later carries its own history on.
                o.range(e.next()..)
                    .find(|(_, (t, by))| *t <= now && *by != i)
            }) {
                let what = format!(
                    "{} acknowledged writes to {site} at epoch {e} at {:.3}s, after {} took \
                     office at epoch {e2} at {:.3}s: two masters at once",
                    self.nodes[i].name,
                    now.as_secs_f64(),
                    self.nodes[*by].name,
                    t.as_secs_f64()
                );
                self.fail(world, what);
                break;
            }
        }
        for (_, _, e) in &ready {
            if let Some(&owner) = self.ack_owner.get(&(site.clone(), *e))
                && owner != i
            {
                let what = format!(
                    "{} acknowledged writes to {site} at epoch {e}, which {} already served: \
                     two masters at one epoch",
                    self.nodes[i].name, self.nodes[owner].name
                );
                self.fail(world, what);
            }
            self.ack_owner.insert((site.clone(), *e), i);
        }
        self.stats.writes_acked += ready.len() as u64;
        let entry = self
            .acked
            .entry(site.clone())
            .or_default()
            .entry(head.guid)
            .or_insert(Acked {
                seq: head.seq,
                node: i,
                epoch,
                writes: 0,
                replicated: None,
            });
        entry.writes += ready.len() as u64;
    }

    /// Whether the history of snapshot `head` includes snapshot `g` (at
    /// `seq`): `g` is `head` or one of its ancestors.
    fn descends(&self, head: u64, g: u64, seq: u64) -> bool {
        let mut cur = head;
        loop {
            if cur == g {
                return true;
            }
            match self.snaps.get(&cur) {
                Some(s) if s.seq > seq => match s.parent {
                    Some(p) if self.snaps.get(&p).is_none_or(|ps| ps.seq < s.seq) => cur = p,
                    _ => return false,
                },
                _ => return false,
            }
        }
    }

    fn mark_replicated(&mut self, i: usize, site: &SiteName, head: Head, now: Duration) {
        let Some(acked) = self.acked.get(site) else {
            return;
        };
        let newly: Vec<u64> = acked
            .iter()
            .filter(|(g, a)| {
                a.replicated.is_none()
                    && a.node != i
                    && a.seq <= head.seq
                    && self.descends(head.guid, **g, a.seq)
            })
            .map(|(g, _)| *g)
            .collect();
        let acked = self.acked.get_mut(site).expect("checked above");
        for g in newly {
            if let Some(a) = acked.get_mut(&g) {
                a.replicated = Some(now);
            }
        }
    }

    /// Replicated writes survive a single crash: a node promoted for a site
    /// holds every acknowledged write that had reached a replica, unless
    /// more than one node crashed since it did, or a partition was on
    /// since it was acknowledged.
    fn check_promotion(&mut self, i: usize, site: &SiteName, epoch: Epoch, world: &Shared) {
        let Some(head) = self.nodes[i]
            .disk
            .store
            .snapshots(site)
            .ok()
            .and_then(|c| c.last().map(|s| (s.guid.0, s.seq().unwrap_or(0))))
        else {
            return;
        };
        let Some(acked) = self.acked.get(site) else {
            return;
        };
        for (g, a) in acked {
            let Some(since) = a.replicated else { continue };
            if self.descends(head.0, *g, a.seq) {
                continue;
            }
            let crashes = self.crash_starts.iter().filter(|t| **t >= since).count();
            // A partition since (or while) the write was acknowledged can
            // leave the only replicas holding it on the side that does not
            // elect: a second fault, not this invariant's business. (Its
            // replicas may pull it just after the heal, before they see
            // the other side's new master: found by the simulator.)
            let acked_at = self.snaps.get(g).map_or(since, |s| s.taken);
            let partitions = self
                .partitions
                .iter()
                .any(|(_, end)| end.is_none_or(|e| e >= acked_at));
            if crashes <= 1 && !partitions {
                let what = format!(
                    "{} was promoted for {site} at epoch {epoch} with head seq {} that lacks {} \
                     acknowledged write(s) of snapshot seq {} (guid {g}, acknowledged by {} at \
                     epoch {}), replicated at {:.3}s, after {crashes} crash(es) and no partition",
                    self.nodes[i].name,
                    head.1,
                    a.writes,
                    a.seq,
                    self.nodes[a.node].name,
                    a.epoch,
                    since.as_secs_f64()
                );
                self.fail(world, what);
                return;
            }
        }
    }

    /// Recounts which snapshots node `i` holds of `site` (chain and
    /// stashes); a snapshot no disk holds any more is lost.
    fn resync(&mut self, i: usize, site: &SiteName, world: &Shared) {
        let store = &self.nodes[i].disk.store;
        let mut now_held: Vec<u64> = store
            .snapshots(site)
            .unwrap_or_default()
            .iter()
            .map(|s| s.guid.0)
            .collect();
        for stash in store.stashes().unwrap_or_default() {
            if stash.site == *site {
                now_held.extend(stash.snapshots.iter().map(|s| s.guid.0));
            }
        }
        now_held.sort_unstable();
        now_held.dedup();
        let before = self.held.remove(&(i, site.clone())).unwrap_or_default();
        let mut lost = None;
        for g in &before {
            if now_held.binary_search(g).is_err() {
                let count = self.holdings.get_mut(g).expect("a held guid is counted");
                *count -= 1;
                if *count == 0 {
                    self.holdings.remove(g);
                    lost.get_or_insert(*g);
                }
            }
        }
        for g in &now_held {
            if before.binary_search(g).is_err() {
                *self.holdings.entry(*g).or_insert(0) += 1;
            }
        }
        self.held.insert((i, site.clone()), now_held);
        if let Some(g) = lost {
            let seq = self.snaps.get(&g).map_or(0, |s| s.seq);
            let what = format!(
                "snapshot {g} (seq {seq}) of {site} is lost: {} dropped it and no chain or \
                 stash on any node holds it",
                self.nodes[i].name
            );
            self.fail(world, what);
        }
    }

    // ---- clients ------------------------------------------------------

    async fn create(&mut self, k: usize, now: Duration, nodes: &[SimNode], world: &Shared) {
        let spec = self.specs[k].clone();
        let up: Vec<(NodeName, Option<model::Zone>)> = self
            .nodes
            .iter()
            .filter(|n| n.mem.is_some())
            .map(|n| (n.name.clone(), None))
            .collect();
        let picks = model::placement(&spec.name, up.iter().map(|(n, z)| (n, z.as_ref())), 1);
        let Some(i) = picks.first().and_then(node_of) else {
            return;
        };
        self.feed(i, now, Event::Create(spec), nodes, world).await;
    }

    fn write(&mut self, now: Duration, world: &Shared) {
        let rate = self.settings.write_rate;
        let gap = -(1.0 - self.rng.unit()).ln() / rate;
        self.outbox
            .push((now + Duration::from_secs_f64(gap), SiteEvent::Write));
        self.stats.writes += 1;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].mem.is_some())
            .collect();
        if up.is_empty() || self.specs.is_empty() {
            return;
        }
        let entry = up[self.rng.index(up.len())];
        let k = self.rng.index(self.specs.len());
        let site = &self.specs[k].name;
        let mem = self.nodes[entry].mem.as_ref().expect("up");
        let view = if self.settings.broken == Some(Broken::IgnoreEpochs) {
            &mem.view
        } else {
            mem.node.view()
        };
        let Some(target) = model::serving_master(view, site).and_then(|(n, _)| node_of(&n)) else {
            self.stats.writes_unroutable += 1;
            return;
        };
        let Some(generation) = self.generation(target) else {
            // The entry's view is stale: the write times out.
            self.stats.writes_lost += 1;
            return;
        };
        let id = self.next_write;
        self.next_write += 1;
        let (lo, hi) = self.settings.write_bytes;
        let bytes = lo + self.rng.below(hi - lo + 1);
        let delay = if entry == target {
            Ok(Duration::ZERO)
        } else {
            lock(world)
                .net
                .site_link(node_ip(entry), node_ip(target), &mut self.rng)
        };
        match delay {
            Ok(d) => self.outbox.push((
                now + d,
                SiteEvent::WriteArrive {
                    node: target,
                    generation,
                    site: k,
                    id,
                    bytes,
                },
            )),
            Err(_) => self.stats.writes_lost += 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_arrive(
        &mut self,
        i: usize,
        generation: u64,
        k: usize,
        id: u64,
        bytes: u64,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let site = self.specs[k].name.clone();
        if self.generation(i) != Some(generation) {
            self.stats.writes_lost += 1;
            return;
        }
        let Some(epoch) = self.serving(i, &site) else {
            self.stats.writes_refused += 1;
            return;
        };
        if !self.leased(i, &site, now) {
            // The daemon's gate holds it, then refuses it.
            self.stats.writes_refused += 1;
            return;
        }
        let disk = &mut self.nodes[i].disk;
        let path = format!("data/w{}", id % 8);
        if disk
            .store
            .write_file(&site, Path::new(&path), &id.to_le_bytes())
            .is_err()
        {
            self.stats.writes_refused += 1;
            return;
        }
        *disk.dirty_bytes.entry(site.clone()).or_insert(0) += bytes;
        self.stats.writes_accepted += 1;
        let mem = self.nodes[i].mem.as_mut().expect("checked above");
        let w = mem.waiters.entry(site.clone()).or_default();
        w.pending.push((w.issued, id, epoch));
        self.feed(i, now, Event::Written(site), nodes, world).await;
    }

    // ---- settling ------------------------------------------------------

    /// When every site must have settled, once the last fault event passed.
    pub(crate) fn settle_deadline(&self) -> Duration {
        self.last_fault_event + self.settings.settle
    }

    /// The first site that has no single master or lacks copies, if any.
    pub(crate) fn unsettled(&self) -> Option<String> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].mem.is_some())
            .collect();
        for site in &self.created {
            let k = site_of(site).expect("sites are s<k>");
            let masters: Vec<(usize, Epoch)> = up
                .iter()
                .filter_map(|&i| self.serving(i, site).map(|e| (i, e)))
                .collect();
            let copies = up
                .iter()
                .filter(|&&i| {
                    self.nodes[i]
                        .mem
                        .as_ref()
                        .and_then(|m| m.node.copy(site))
                        .is_some_and(|(role, _, head)| role != Role::Diverged && head.is_some())
                })
                .count();
            let want = usize::from(self.specs[k].replicas).min(up.len());
            if masters.len() != 1 {
                let names: Vec<String> = masters
                    .iter()
                    .map(|(i, e)| format!("{}@e{e}", self.nodes[*i].name))
                    .collect();
                return Some(format!(
                    "{site} has {} serving masters [{}]",
                    masters.len(),
                    names.join(" ")
                ));
            }
            if copies < want {
                return Some(format!(
                    "{site} has {copies} copies on live nodes, wants {want}"
                ));
            }
        }
        None
    }
}

/// The failed outcome of the operation `kind` belongs to.
fn failure(kind: &OpKind, why: String) -> Outcome {
    match kind {
        OpKind::StashRequest { .. } | OpKind::StashReply { .. } => Outcome::Stashed(Err(why)),
        _ => Outcome::Pulled(Err(PullError::Failed(why))),
    }
}
