//! State shared by everything inside one simulation: the clock origin, the
//! trace, the network and what every node currently believes about
//! membership, with the membership invariants checked against it.
//!
//! One `World` per simulation behind one mutex. The simulation runs on one
//! thread, so the mutex is never contended; it exists because chitchat's
//! `Transport` must be `Send + Sync`. Never hold it across an `.await`, and
//! never drop a socket while holding it (the socket's `Drop` locks it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chitchat::ChitchatId;
use tokio::time::Instant;

use crate::addr::node_index;
use crate::net::Network;
use crate::trace::Trace;

pub(crate) type Shared = Arc<Mutex<World>>;

/// Locks the world. A poisoned lock means a panic elsewhere in the
/// simulation, which already fails the run; keep going to report it.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, World> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct World {
    start: Instant,
    pub(crate) trace: Trace,
    pub(crate) net: Network,
    pub(crate) members: Membership,
}

impl World {
    pub(crate) fn new(start: Instant, trace: Trace, net: Network, members: Membership) -> Self {
        Self {
            start,
            trace,
            net,
            members,
        }
    }

    /// Simulated time since the simulation started.
    pub(crate) fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// Records a new membership view of node `index` (its chitchat's live
    /// set, self included). Costs only the difference from the last view,
    /// so the frequent updates that change no membership (a live node's
    /// keys changed) are cheap.
    pub(crate) fn on_view<'a>(
        &mut self,
        index: usize,
        id: &ChitchatId,
        live: impl Iterator<Item = &'a ChitchatId>,
    ) {
        let at = self.elapsed();
        if self.members.members[index].up.as_ref() != Some(id) {
            // A late report from a generation that has since crashed.
            return;
        }
        let (gone, added) = diff(&self.members.members[index].view, live);
        if gone.is_empty() && added.is_empty() {
            return;
        }
        for g in &gone {
            self.trace
                .record(at, format_args!("view {} -{}", Short(id), Short(g)));
        }
        for a in &added {
            self.trace
                .record(at, format_args!("view {} +{}", Short(id), Short(a)));
        }
        self.members.apply_view(index, gone, added, at, &self.net);
        self.after_change(at);
    }

    /// Node `index` runs generation `id` from now on.
    pub(crate) fn node_up(&mut self, index: usize, id: ChitchatId) {
        let at = self.elapsed();
        self.members.node_up(index, id, at, &self.net);
        self.after_change(at);
    }

    /// Node `index` crashed or left.
    pub(crate) fn node_down(&mut self, index: usize, kind: DepartureKind) {
        let at = self.elapsed();
        self.members.node_down(index, kind, at, &self.net);
        self.after_change(at);
    }

    /// The partitions changed: which pairs of nodes can hear each other.
    pub(crate) fn cuts_changed(&mut self) {
        let at = self.elapsed();
        self.members.refresh_suspects(at, &self.net);
    }

    fn after_change(&mut self, at: Duration) {
        if let Some(took) = self.members.try_converge(at) {
            self.trace.record(
                at,
                format_args!(
                    "converged {}.{:06}s after heal",
                    took.as_secs(),
                    took.subsec_micros()
                ),
            );
        }
    }

    /// Checks the membership invariants at the current simulated time.
    /// Cheap: the bookkeeping is kept up to date as views change.
    pub(crate) fn check(&mut self) -> Option<Violation> {
        let at = self.elapsed();
        self.after_change(at);
        let violation = self.members.check(at);
        if let Some(violation) = &violation {
            self.trace
                .record(at, format_args!("violation {}", violation.what));
        }
        violation
    }
}

/// The ids of `old` missing from `new`, and those of `new` missing from
/// `old`; `new` must be sorted, as a `BTreeMap`'s keys are. One merge pass,
/// no allocation while nothing changed.
fn diff<'a>(
    old: &BTreeSet<ChitchatId>,
    new: impl Iterator<Item = &'a ChitchatId>,
) -> (Vec<ChitchatId>, Vec<ChitchatId>) {
    let (mut gone, mut added) = (Vec::new(), Vec::new());
    let mut old = old.iter().peekable();
    for id in new {
        loop {
            match old.peek() {
                Some(&o) if o < id => {
                    gone.push(o.clone());
                    old.next();
                }
                Some(&o) if o == id => {
                    old.next();
                    break;
                }
                _ => {
                    added.push(id.clone());
                    break;
                }
            }
        }
    }
    gone.extend(old.cloned());
    (gone, added)
}

/// `n3/g1`: a chitchat id as the trace prints it.
pub(crate) struct Short<'a>(pub(crate) &'a ChitchatId);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/g{}", self.0.node_id, self.0.generation_id)
    }
}

/// A broken invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Simulated time of the check that failed.
    pub at: Duration,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {:.3}s: {}", self.at.as_secs_f64(), self.what)
    }
}

/// How a node went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartureKind {
    Crash,
    Leave,
}

/// A node that went away, and when every other live node saw it dead.
#[derive(Debug, Clone)]
pub struct Departure {
    pub kind: DepartureKind,
    pub node: usize,
    pub generation: u64,
    pub at: Duration,
    /// Time from the departure until no live node listed it as live.
    pub detected_after: Option<Duration>,
    id: ChitchatId,
}

/// Bounds of the membership invariants.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How long a node may report a live node dead while both are up and
    /// the link between them passes both ways.
    pub suspect: Duration,
    /// How long after the last fault event (partition healed, loss ended,
    /// crash, restart, leave) the live nodes' views may take to agree.
    pub converge: Duration,
}

struct Member {
    /// The running generation's id; `None` while crashed or after leaving.
    up: Option<ChitchatId>,
    ip: IpAddr,
    view: BTreeSet<ChitchatId>,
    /// How many ids in `view` are up now, and how many are not: the view
    /// is right when they are `live` and 0.
    listed_up: usize,
    listed_down: usize,
}

impl Member {
    fn reset_view(&mut self) {
        self.view.clear();
        self.listed_up = 0;
        self.listed_down = 0;
    }
}

/// What every node believes about membership, and the membership
/// invariants over it. Kept incrementally: a view change costs the ids
/// that changed, a node going up or down or a partition costs a pass over
/// the nodes, and [`Membership::check`] costs the pairs currently in
/// suspicion.
pub(crate) struct Membership {
    members: Vec<Member>,
    /// Members that are up.
    live: usize,
    bounds: Bounds,
    pub(crate) departures: Vec<Departure>,
    /// Departed ids some live node still lists, with their departure.
    undetected: BTreeMap<ChitchatId, usize>,
    /// `(observer, subject)` → since when the observer has wrongly listed
    /// the subject as dead while the link passes both ways.
    suspects: BTreeMap<(usize, usize), Duration>,
    /// A partition or loss episode is active: views need not agree.
    disturbed: bool,
    quiet_since: Duration,
    quiet_after_heal: bool,
    quiet_converged: bool,
    /// Times from a heal until all live views agreed.
    pub(crate) heal_convergence: Vec<Duration>,
}

impl Membership {
    pub(crate) fn new(ips: Vec<IpAddr>, bounds: Bounds) -> Self {
        Self {
            members: ips
                .into_iter()
                .map(|ip| Member {
                    up: None,
                    ip,
                    view: BTreeSet::new(),
                    listed_up: 0,
                    listed_down: 0,
                })
                .collect(),
            live: 0,
            bounds,
            departures: Vec::new(),
            undetected: BTreeMap::new(),
            suspects: BTreeMap::new(),
            disturbed: false,
            quiet_since: Duration::ZERO,
            quiet_after_heal: false,
            quiet_converged: false,
            heal_convergence: Vec::new(),
        }
    }

    /// The member currently running generation `id`.
    fn up_index(&self, id: &ChitchatId) -> Option<usize> {
        let index = node_index(id.gossip_advertise_addr)?;
        let member = self.members.get(index)?;
        (member.up.as_ref() == Some(id)).then_some(index)
    }

    /// Whether `observer` wrongly listing `subject` as dead counts as a
    /// suspicion: both up, and the link between them passes both ways.
    fn may_suspect(&self, net: &Network, observer: usize, subject: usize) -> bool {
        let (o, s) = (&self.members[observer], &self.members[subject]);
        observer != subject
            && o.up.is_some()
            && s.up.is_some()
            && net.passes(o.ip, s.ip)
            && net.passes(s.ip, o.ip)
    }

    fn apply_view(
        &mut self,
        index: usize,
        gone: Vec<ChitchatId>,
        added: Vec<ChitchatId>,
        at: Duration,
        net: &Network,
    ) {
        for id in gone {
            self.members[index].view.remove(&id);
            match self.up_index(&id) {
                Some(subject) => {
                    self.members[index].listed_up -= 1;
                    if self.may_suspect(net, index, subject) {
                        self.suspects.entry((index, subject)).or_insert(at);
                    }
                }
                None => {
                    self.members[index].listed_down -= 1;
                    if let Some(&departure) = self.undetected.get(&id) {
                        self.update_departure(departure, at);
                    }
                }
            }
        }
        for id in added {
            match self.up_index(&id) {
                Some(subject) => {
                    self.members[index].listed_up += 1;
                    self.suspects.remove(&(index, subject));
                }
                None => self.members[index].listed_down += 1,
            }
            self.members[index].view.insert(id);
        }
    }

    fn node_up(&mut self, index: usize, id: ChitchatId, at: Duration, net: &Network) {
        self.members[index].reset_view();
        for member in &mut self.members {
            if member.up.is_some() && member.view.contains(&id) {
                member.listed_down -= 1;
                member.listed_up += 1;
            }
        }
        self.members[index].up = Some(id);
        self.live += 1;
        self.refresh_node(index, at, net);
    }

    fn node_down(&mut self, index: usize, kind: DepartureKind, at: Duration, net: &Network) {
        let Some(id) = self.members[index].up.take() else {
            return;
        };
        self.live -= 1;
        self.members[index].reset_view();
        for member in &mut self.members {
            if member.up.is_some() && member.view.contains(&id) {
                member.listed_up -= 1;
                member.listed_down += 1;
            }
        }
        let departure = self.departures.len();
        self.departures.push(Departure {
            kind,
            node: index,
            generation: id.generation_id,
            at,
            detected_after: None,
            id: id.clone(),
        });
        self.undetected.insert(id, departure);
        // The node's own view no longer counts, which may complete the
        // detection of earlier departures.
        let pending: Vec<usize> = self.undetected.values().copied().collect();
        for departure in pending {
            self.update_departure(departure, at);
        }
        self.refresh_node(index, at, net);
    }

    /// Recomputes the suspicions by and of node `index`.
    fn refresh_node(&mut self, index: usize, at: Duration, net: &Network) {
        for other in 0..self.members.len() {
            self.suspects.remove(&(index, other));
            self.suspects.remove(&(other, index));
        }
        for other in 0..self.members.len() {
            for (o, s) in [(index, other), (other, index)] {
                let Some(subject_id) = &self.members[s].up else {
                    continue;
                };
                if self.may_suspect(net, o, s) && !self.members[o].view.contains(subject_id) {
                    self.suspects.insert((o, s), at);
                }
            }
        }
    }

    /// Recomputes every suspicion, keeping the start of those that hold.
    fn refresh_suspects(&mut self, at: Duration, net: &Network) {
        let mut suspects = BTreeMap::new();
        for (o, observer) in self.members.iter().enumerate() {
            if observer.up.is_none() {
                continue;
            }
            for (s, subject) in self.members.iter().enumerate() {
                let Some(subject_id) = &subject.up else {
                    continue;
                };
                if observer.view.contains(subject_id) || !self.may_suspect(net, o, s) {
                    continue;
                }
                let since = self.suspects.get(&(o, s)).copied().unwrap_or(at);
                suspects.insert((o, s), since);
            }
        }
        self.suspects = suspects;
    }

    /// Notes a fault event: views may disagree until `converge` after the
    /// last one. `disturbed` says whether a partition or loss episode is
    /// still active; `heal` whether this event ended the last of them.
    pub(crate) fn fault_event(&mut self, at: Duration, disturbed: bool, heal: bool) {
        self.disturbed = disturbed;
        self.quiet_since = at;
        self.quiet_after_heal = heal || (self.quiet_after_heal && !self.quiet_converged);
        self.quiet_converged = false;
    }

    /// Marks departure `index` detected if no live node lists it any more.
    fn update_departure(&mut self, index: usize, at: Duration) {
        let departure = &mut self.departures[index];
        if departure.detected_after.is_some() {
            return;
        }
        let listed = self
            .members
            .iter()
            .any(|m| m.up.is_some() && m.view.contains(&departure.id));
        if !listed {
            departure.detected_after = Some(at - departure.at);
            self.undetected.remove(&departure.id);
        }
    }

    /// While the last quiet period has not converged: by when it must.
    pub(crate) fn convergence_deadline(&self) -> Option<Duration> {
        (!self.quiet_converged).then_some(self.quiet_since + self.bounds.converge)
    }

    /// Whether every live node lists exactly the live nodes as live,
    /// apart from masked generations (see [`masked`]).
    fn converged(&self) -> bool {
        self.members.iter().filter(|m| m.up.is_some()).all(|m| {
            m.listed_up == self.live
                && (m.listed_down == 0
                    || m.view.iter().filter(|id| masked(&m.view, id)).count() == m.listed_down)
        })
    }

    /// Marks the current quiet period converged if it is; returns the time
    /// it took when the period began with a heal.
    fn try_converge(&mut self, at: Duration) -> Option<Duration> {
        if self.disturbed || self.quiet_converged || !self.converged() {
            return None;
        }
        self.quiet_converged = true;
        if self.quiet_after_heal {
            let took = at - self.quiet_since;
            self.heal_convergence.push(took);
            return Some(took);
        }
        None
    }

    fn check(&mut self, at: Duration) -> Option<Violation> {
        // The longest-standing suspicion; on a tie the first pair.
        let worst = self
            .suspects
            .iter()
            .min_by_key(|&(pair, since)| (*since, *pair))
            .map(|(&pair, &since)| (pair, since));
        if let Some(((o, s), since)) = worst
            && at - since > self.bounds.suspect
        {
            let (observer, subject) = (&self.members[o], &self.members[s]);
            let (Some(observer_id), Some(subject_id)) = (&observer.up, &subject.up) else {
                unreachable!("suspects are only recorded between live nodes");
            };
            return Some(Violation {
                at,
                what: format!(
                    "{} has reported {} dead for {:.3}s (bound {:.3}s) although both are up \
                     and the link between them passes both ways",
                    Short(observer_id),
                    Short(subject_id),
                    (at - since).as_secs_f64(),
                    self.bounds.suspect.as_secs_f64(),
                ),
            });
        }
        if !self.disturbed && !self.quiet_converged && at - self.quiet_since > self.bounds.converge
        {
            return Some(Violation {
                at,
                what: format!(
                    "views have not converged {:.3}s after the last fault event (bound {:.3}s): {}",
                    (at - self.quiet_since).as_secs_f64(),
                    self.bounds.converge.as_secs_f64(),
                    self.first_disagreement(),
                ),
            });
        }
        None
    }

    fn first_disagreement(&self) -> String {
        let expected: BTreeSet<&ChitchatId> =
            self.members.iter().filter_map(|m| m.up.as_ref()).collect();
        for member in &self.members {
            let Some(id) = &member.up else { continue };
            let view: BTreeSet<&ChitchatId> = member.view.iter().collect();
            let missing: Vec<String> = expected
                .difference(&view)
                .map(|i| Short(i).to_string())
                .collect();
            let extra: Vec<String> = view
                .difference(&expected)
                .filter(|i| !masked(&member.view, i))
                .map(|i| Short(i).to_string())
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                return format!(
                    "{} misses [{}] and lists as live [{}]",
                    Short(id),
                    missing.join(" "),
                    extra.join(" ")
                );
            }
        }
        "no disagreement".to_string()
    }
}

/// Whether `view` also lists a newer generation of `id`'s node. Every
/// view the nodes act on (`gossip::Cluster`'s members, the site layer's
/// `View`) keeps only the newest generation of each node name, so an older
/// one that chitchat still lists as live is invisible to them: chitchat
/// can learn a crashed generation anew from a stale digest relayed across
/// a heal and restart its failure detector's window for it (found by
/// seed 159 of the site sweep, where that took > 14 s), while the node's
/// new generation is already listed.
fn masked(view: &BTreeSet<ChitchatId>, id: &ChitchatId) -> bool {
    view.iter()
        .any(|other| other.node_id == id.node_id && other.generation_id > id.generation_id)
}
