//! What a node holds: the [`Node`] itself (its settings, the view and its
//! index, its copies, votes, beats and pending actions), the per-copy and
//! per-site records planning works on, and the accessors the driver uses.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::types::{Action, Explain, NodeConfig, View};
use crate::election::{CopyState, Epoch, Head, Holder, MasterDecision, Role};
use crate::ids::{NodeName, SiteName};
use crate::lease::Beats;
use crate::site::{SiteKey, SiteSpec, Vote};
use crate::time::Time;

/// A migration's hand-over that a replica waits to complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TakeOver {
    pub(super) from: NodeName,
    pub(super) epoch: Epoch,
    pub(super) head: Head,
    pub(super) until: Time,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Copy {
    pub(super) role: Role,
    pub(super) epoch: Epoch,
    pub(super) chain: Vec<Head>,
    pub(super) spec: Option<SiteSpec>,
    pub(super) busy: bool,
    pub(super) dirty: bool,
    pub(super) last_snapshot: Time,
    pub(super) failures: u32,
    pub(super) retry_at: Time,
    /// Stepped down while an action was in flight: the copy already
    /// counts (and is published) as a replica; `Demote` follows as soon as
    /// the action ends.
    pub(super) demote_pending: bool,
    /// A promotion failed (the copy could not be made writable): `Promote`
    /// is asked for again after the retry delay. The claim stands
    /// meanwhile; the driver serves the copy only once a promotion works.
    pub(super) promote_pending: bool,
    /// Snapshot as soon as the copy is free (`Event::Flush`).
    pub(super) flush: bool,
    /// A migration's hand-over to this copy (`Event::TakeOver`).
    pub(super) takeover: Option<TakeOver>,
    /// As master: the first beat published after the promotion (echoes of
    /// it, or later ones, count for the lease from any peer).
    pub(super) office_beat: u64,
    /// As master: a hand-over of this copy is under way in this run
    /// (`Node::hand_over`, until `Node::abort_hand_over`).
    pub(super) handing_over: bool,
    /// As master, after a hand-over that did not complete (aborted, or
    /// left by an earlier run): the epoch this node claims again, above
    /// the one it voted for its successor in, once a majority voted so.
    pub(super) resume_at: Option<Epoch>,
}

impl Copy {
    /// A copy with nothing in flight, pending or failed.
    pub(super) fn new(
        role: Role,
        epoch: Epoch,
        chain: Vec<Head>,
        spec: Option<SiteSpec>,
        now: Time,
    ) -> Copy {
        Copy {
            role,
            epoch,
            chain,
            spec,
            busy: false,
            dirty: false,
            last_snapshot: now,
            failures: 0,
            retry_at: now,
            demote_pending: false,
            promote_pending: false,
            flush: false,
            takeover: None,
            office_beat: 0,
            handing_over: false,
            resume_at: None,
        }
    }

    pub(super) fn head(&self) -> Option<Head> {
        self.chain.last().copied()
    }
}

/// What the node knows about a site from the view.
#[derive(Debug, Default)]
pub(super) struct SiteView {
    pub(super) holders: Vec<Holder>,
    /// The votes of the other members (not left), as their keys arrived.
    pub(super) votes: Vec<Vote>,
    /// The same votes by voter.
    pub(super) vote_of: BTreeMap<NodeName, Vote>,
    pub(super) spec: Option<SiteSpec>,
    pub(super) deleted: BTreeSet<u64>,
}

/// What one member's gossip says about one site (the view, indexed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SiteKeys {
    pub(super) copy: Option<CopyState>,
    pub(super) spec: Option<SiteSpec>,
    pub(super) deleted: Option<u64>,
    pub(super) vote: Option<Vote>,
}

impl SiteKeys {
    pub(super) fn is_empty(&self) -> bool {
        self.copy.is_none() && self.spec.is_none() && self.deleted.is_none() && self.vote.is_none()
    }
}

/// What a site's published keys are derived from.
pub(super) type Derived = (
    Option<(Role, Epoch, Option<Head>, Option<SiteSpec>)>,
    Option<u64>,
);

pub(super) fn key_site(k: &SiteKey) -> &SiteName {
    match k {
        SiteKey::Copy(s, _)
        | SiteKey::Spec(s, _)
        | SiteKey::Deleted(s, _)
        | SiteKey::Vote(s, _) => s,
    }
}

/// The site logic of one node. See the module docs.
#[derive(Debug)]
pub struct Node {
    pub(super) cfg: NodeConfig,
    pub(super) started: bool,
    pub(super) started_at: Time,
    /// When the set of live members last changed.
    pub(super) membership_changed: Time,
    /// Since when each live member (this node aside) has been alive in the
    /// view, without a break.
    pub(super) alive_since: BTreeMap<NodeName, Time>,
    pub(super) now: Time,
    pub(super) view: View,
    /// The view's site keys by site, then member: what planning a site
    /// reads, kept up to date as views arrive.
    pub(super) index: BTreeMap<SiteName, BTreeMap<NodeName, SiteKeys>>,
    /// Sites whose inputs changed since they were last planned (besides
    /// the local copies, which are planned on every event: their timers).
    pub(super) dirty: BTreeSet<SiteName>,
    /// Every site must be planned again: membership moved (quorum,
    /// placement and liveness of holders feed every site's plan).
    pub(super) dirty_all: bool,
    /// Whether placement wants this node for a site with that many
    /// replicas, under the current live members (cleared when they move).
    pub(super) placed: BTreeMap<(SiteName, u8), bool>,
    /// When the node last planned (`None`: never).
    pub(super) last_plan: Option<Time>,
    /// Per site, what its published keys were derived from: (role, epoch,
    /// head, spec) of the copy, and the tombstone.
    pub(super) published_from: BTreeMap<SiteName, Derived>,
    pub(super) copies: BTreeMap<SiteName, Copy>,
    pub(super) tombstones: BTreeMap<SiteName, u64>,
    /// Sites this node keeps a copy of regardless of placement
    /// (`Event::Pin`: a migration's target).
    pub(super) pinned: BTreeSet<SiteName>,
    /// Members known before a restart (`remember`).
    pub(super) remembered: BTreeSet<NodeName>,
    /// This node's last vote in each site's election (durable:
    /// `Action::PersistVote`, `restore_votes`).
    pub(super) votes: BTreeMap<SiteName, Vote>,
    /// Beats, echoes and mutes ([`crate::lease`]).
    pub(super) beats: Beats,
    /// Sites whose vote waits for an earlier master's lease, until when.
    pub(super) vote_waits: BTreeMap<SiteName, Time>,
    pub(super) published: BTreeMap<String, String>,
    pub(super) actions: VecDeque<Action>,
}

impl Node {
    pub fn new(cfg: NodeConfig) -> Node {
        Node {
            started: false,
            started_at: Time(0),
            membership_changed: Time(0),
            alive_since: BTreeMap::new(),
            now: Time(0),
            view: View::default(),
            index: BTreeMap::new(),
            dirty: BTreeSet::new(),
            dirty_all: true,
            placed: BTreeMap::new(),
            last_plan: None,
            published_from: BTreeMap::new(),
            copies: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            pinned: BTreeSet::new(),
            remembered: BTreeSet::new(),
            votes: BTreeMap::new(),
            beats: Beats::new(cfg.incarnation),
            vote_waits: BTreeMap::new(),
            published: BTreeMap::new(),
            actions: VecDeque::new(),
            cfg,
        }
    }

    pub fn name(&self) -> &NodeName {
        &self.cfg.name
    }

    /// The members this node knew before a restart (what
    /// [`Node::known_members`] returned then, read back from disk). Call it
    /// before `Event::Start`. For `remember_for` after the start they count
    /// as known members for the quorum guard, so that a restarted master
    /// that sees no one yet does not keep its claim on a majority of one.
    /// The votes this node cast before a restart (`Action::PersistVote`),
    /// before `Event::Start`: it never votes again at those epochs, and
    /// publishes them again.
    pub fn restore_votes(&mut self, votes: impl IntoIterator<Item = (SiteName, Vote)>) {
        self.votes.extend(votes);
    }

    /// This node's last vote in `site`'s election.
    pub fn vote(&self, site: &SiteName) -> Option<&Vote> {
        self.votes.get(site)
    }

    pub fn remember(&mut self, members: impl IntoIterator<Item = NodeName>) {
        self.remembered.extend(members);
    }

    /// The members this node knows now, to be kept on disk for the next
    /// start: those of the view that did not leave, this node, and the
    /// remembered ones still in their window.
    pub fn known_members(&self) -> BTreeSet<NodeName> {
        let me = &self.cfg.name;
        let mut out: BTreeSet<NodeName> = self
            .view
            .members
            .iter()
            .filter(|(n, m)| !m.left || *n == me)
            .map(|(n, _)| n.clone())
            .collect();
        out.insert(me.clone());
        out.extend(
            self.remembered_now()
                .iter()
                .filter(|n| !self.view.members.contains_key(*n))
                .cloned(),
        );
        out
    }

    /// The remembered members while they still count.
    pub(super) fn remembered_now(&self) -> &BTreeSet<NodeName> {
        static NONE: BTreeSet<NodeName> = BTreeSet::new();
        if self.now < self.started_at.plus(self.cfg.remember_for) {
            &self.remembered
        } else {
            &NONE
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the node next needs a `Tick` (it may be called earlier).
    pub fn poll_timeout(&self) -> Option<Time> {
        // A time already past was due when the last event was planned, at
        // `now`, and nothing came of it: it must not be asked for again,
        // or the driver spins at one instant (found by the simulator). Nor
        // may it hide a later time: a copy whose retry time passed (its
        // failure count stays until a transfer works) once made this
        // return nothing at all, and the node never looked again when a
        // member turned warm (found by the 50-round fault test: a site
        // left without a master for good).
        let now = self.now;
        let mut next: Option<Time> = None;
        let mut at = |t: Time| {
            if t > now {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        let elections = self
            .started_at
            .plus(self.cfg.election_grace)
            .max(self.membership_changed.plus(self.cfg.election_settle));
        if self.started && self.now < elections {
            at(elections);
        }
        if self.started {
            // A member turning warm may complete a promotion's quorum.
            for since in self.alive_since.values() {
                let warm = since.plus(self.cfg.election_warmup);
                if warm > self.now {
                    at(warm);
                }
            }
        }
        if self.started {
            if !self.cfg.beat_interval.is_zero() {
                at(self.beats.next_at);
            }
            for t in self.vote_waits.values() {
                at(*t);
            }
        }
        for c in self.copies.values() {
            if c.busy {
                continue;
            }
            if c.role == Role::Master && c.dirty {
                at(c.last_snapshot.plus(self.cfg.snapshot_interval));
            }
            if c.failures > 0 {
                at(c.retry_at);
            }
        }
        next
    }

    /// What this node holds of `site` and why it acts as it does: its
    /// copy's state, the election as it sees it, and when it will look
    /// again. For operators (`site show`) and for tests that time out.
    pub fn explain(&self, site: &SiteName, now: Time) -> Option<Explain> {
        let c = self.copies.get(site)?;
        let sv = self.site_view(site);
        let promotion = self.promotion_quorum();
        let in_ms = |t: Time| t.0.saturating_sub(now.0);
        let elections = self
            .started_at
            .plus(self.cfg.election_grace)
            .max(self.membership_changed.plus(self.cfg.election_settle));
        Some(Explain {
            role: c.role,
            epoch: c.epoch,
            head: c.head(),
            busy: c.busy,
            failures: c.failures,
            retry_in_ms: in_ms(c.retry_at),
            pinned: self.pinned.contains(site),
            takeover: c.takeover.is_some(),
            decision: self.decide(site, &sv, promotion),
            vote: self.votes.get(site).cloned(),
            votes: match self.decide(site, &sv, promotion) {
                MasterDecision::Elect { node, epoch } => sv
                    .votes
                    .iter()
                    .chain(self.votes.get(site))
                    .filter(|v| v.epoch == epoch && v.candidate == node)
                    .count(),
                _ => 0,
            },
            quorum: self.quorum(),
            promotion,
            elections_in_ms: in_ms(elections),
            next_tick_in_ms: self.poll_timeout().map(in_ms),
        })
    }

    /// The sites this node holds a copy of.
    pub fn local_sites(&self) -> impl Iterator<Item = &SiteName> {
        self.copies.keys()
    }

    /// The last view fed to the node.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The gossip keys this node currently publishes.
    pub fn published(&self) -> &BTreeMap<String, String> {
        &self.published
    }

    /// The local copy of `site`: role, epoch and head.
    pub fn copy(&self, site: &SiteName) -> Option<(Role, Epoch, Option<Head>)> {
        self.copies.get(site).map(|c| (c.role, c.epoch, c.head()))
    }
}
