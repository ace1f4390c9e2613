//! Who is a site's master: a pure function of the gossiped view that every
//! node evaluates for itself, so all nodes agree once their views agree.
//!
//! # The rule
//!
//! 1. The *fence* of a site is the highest epoch any copy in the view
//!    carries, live or dead: a master claim's own epoch, or the epoch of the
//!    master a replica last followed. A claim below the fence has been
//!    superseded, even if the claim that superseded it is no longer visible,
//!    because some copy saw a newer master.
//! 2. Keep: a live master claim at the fence stays master, whatever joins the
//!    cluster, so masters never flap. If several live claims share the fence
//!    (two sides of a healed partition both promoted), the one with the
//!    highest rendezvous [`Rank`] keeps it. The rank depends only on the site
//!    and node names, not on heads that keep moving while both claims are
//!    visible, so every node picks the same one and keeps picking it; the
//!    others learn through [`should_step_down`] that they must stop serving.
//! 3. Otherwise a new master is needed. Promotion requires a majority of the
//!    cluster's known members to be alive when the quorum guard is on
//!    ([`Quorum`]), so a minority side of a partition elects no second
//!    master.
//! 4. The candidates are the live nodes holding a copy that is not diverged
//!    (a diverged copy is a history the cluster has left; serving it would
//!    lose the newer one). The newest head (highest `seq`, least data lost)
//!    wins; among equal `seq`s the copy with the highest epoch, then the
//!    highest rendezvous rank. The winner claims `fence + 1`. Equal `seq`s
//!    at different epochs are two histories: a master that stepped down
//!    snapshots what it wrote after its last snapshot at its old epoch,
//!    while the next master may have taken that `seq` already; the newer
//!    epoch's history is the one the cluster went on with.
//!
//! # Invariants
//!
//! - At most one node is master: the decision names at most one node, and
//!   every other live master claim is told to step down.
//! - A live master claim at the fence is never replaced.
//! - An elected node is alive, not diverged, and holds the newest head among
//!   the live candidates; no election happens without quorum while the guard
//!   is on.
//! - The decision depends on the set of holders, not on their order.
//! - A node appears at most once in the holders; a duplicate is a bug in the
//!   caller's view and panics.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::Rank;
use crate::ids::{NodeName, SiteName};

/// A site's master generation. It grows by one at every change of master,
/// and a claim with a lower epoch loses to one with a higher epoch.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch a new master claims after this one.
    pub fn next(self) -> Epoch {
        // A site would need 2^64 changes of master to get here.
        Epoch(self.0.checked_add(1).expect("epoch below u64::MAX"))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The newest snapshot of a copy. `seq` only grows, across masters; `guid`
/// is ZFS's identity of the snapshot and tells apart two snapshots with one
/// `seq` taken on two sides of a split. Election compares `seq`, then the
/// copy's epoch: equal `seq`s with different `guid`s are two histories, and
/// which one survives is decided by epoch and rank, the other being kept as
/// diverged by replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub guid: u64,
}

/// What a node's copy of a site is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Claims to be the master at [`CopyState::epoch`].
    Master,
    /// Follows the master of [`CopyState::epoch`].
    Replica,
    /// Holds a history the cluster left (the loser of a split). Kept, never
    /// destroyed, and never elected.
    Diverged,
}

/// What a node gossips about its copy of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CopyState {
    pub role: Role,
    /// The highest master epoch this copy knows: its own claim for a master,
    /// the epoch of the master it last followed for a replica, the last one
    /// before it diverged for a diverged copy. Every copy carries it, so a
    /// fence survives the death of the master that set it.
    pub epoch: Epoch,
    pub head: Head,
}

/// One node's copy of a site as the local view sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub node: NodeName,
    /// Whether the failure detector considers the node alive.
    pub alive: bool,
    pub copy: CopyState,
}

/// Whether `alive` of `known_members` is a majority: strictly more than
/// half, so two disjoint sides can never both have it.
///
/// # Panics
///
/// If `alive > known_members`: every alive member is a known member.
pub fn has_quorum(known_members: usize, alive: usize) -> bool {
    assert!(
        alive <= known_members,
        "alive members {alive} exceed known members {known_members}"
    );
    // alive > known / 2 (integer division) is 2 * alive > known without overflow.
    alive > known_members / 2
}

/// The cluster-wide membership that the quorum guard looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    /// Members the cluster knows, alive or not.
    pub known_members: usize,
    /// Of those, the ones the failure detector considers alive.
    pub alive_members: usize,
    /// Whether promotion needs [`has_quorum`]; `false` (the `quorum_guard`
    /// setting) lets a minority elect, for clusters that prefer availability
    /// to a single history.
    pub guard: bool,
}

impl Quorum {
    /// Whether a new master may be promoted under this membership.
    pub fn allows_promotion(&self) -> bool {
        !self.guard || has_quorum(self.known_members, self.alive_members)
    }
}

/// The outcome of [`master`] for one site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MasterDecision {
    /// `node` holds a live master claim at the fence `epoch`: it stays.
    Keep { node: NodeName, epoch: Epoch },
    /// No live claim at the fence: `node` should claim `epoch` (the fence
    /// plus one). Only `node` acts; the others wait for its claim to arrive
    /// through gossip, when the decision becomes `Keep`.
    Elect { node: NodeName, epoch: Epoch },
    /// A master is needed, but no live node holds a copy that is not
    /// diverged: the site is unavailable until one returns.
    NoCandidate,
    /// A master is needed, but the quorum guard is on and a majority of the
    /// known members is not alive: nothing may be promoted on this side.
    NoQuorum,
}

impl MasterDecision {
    /// The node that is or is to become master, if any.
    pub fn node(&self) -> Option<&NodeName> {
        match self {
            MasterDecision::Keep { node, .. } | MasterDecision::Elect { node, .. } => Some(node),
            MasterDecision::NoCandidate | MasterDecision::NoQuorum => None,
        }
    }

    /// The epoch of that node's claim, if any.
    pub fn epoch(&self) -> Option<Epoch> {
        match self {
            MasterDecision::Keep { epoch, .. } | MasterDecision::Elect { epoch, .. } => {
                Some(*epoch)
            }
            MasterDecision::NoCandidate | MasterDecision::NoQuorum => None,
        }
    }
}

/// Decides the master of `site` from the `holders` of its copies (every
/// node with a copy in the view, alive or not, each once) and the cluster's
/// membership. See the module docs for the rule.
///
/// # Panics
///
/// If a node appears twice in `holders`.
pub fn master(site: &SiteName, holders: &[Holder], quorum: Quorum) -> MasterDecision {
    assert_unique(holders);
    if let Some(kept) = standing_master(site, holders) {
        return MasterDecision::Keep {
            node: kept.node.clone(),
            epoch: kept.copy.epoch,
        };
    }
    if !quorum.allows_promotion() {
        return MasterDecision::NoQuorum;
    }
    let epoch = fence(holders).next();
    holders
        .iter()
        .filter(|h| h.alive && h.copy.role != Role::Diverged)
        .max_by_key(|h| (h.copy.head.seq, h.copy.epoch, Rank::new(site, &h.node)))
        .map_or(MasterDecision::NoCandidate, |h| MasterDecision::Elect {
            node: h.node.clone(),
            epoch,
        })
}

/// Whether `me` holds a master claim for `site` that no longer stands: a
/// claim below the fence, or one at the fence that loses the tie to a
/// higher-ranked live claim. Such a node must stop serving the site as
/// master at once. Quorum plays no part: it gates promotion only.
///
/// # Panics
///
/// If a node appears twice in `holders`.
pub fn should_step_down(site: &SiteName, me: &NodeName, holders: &[Holder]) -> bool {
    assert_unique(holders);
    let Some(mine) = holders.iter().find(|h| &h.node == me) else {
        return false;
    };
    mine.copy.role == Role::Master
        && standing_master(site, holders).is_none_or(|kept| &kept.node != me)
}

/// The highest epoch in the view; `Epoch(0)` when no copy exists yet, so the
/// first master claims epoch 1.
fn fence(holders: &[Holder]) -> Epoch {
    holders
        .iter()
        .map(|h| h.copy.epoch)
        .max()
        .unwrap_or_default()
}

/// The live master claim at the fence that stands, if any.
fn standing_master<'a>(site: &SiteName, holders: &'a [Holder]) -> Option<&'a Holder> {
    let fence = fence(holders);
    holders
        .iter()
        .filter(|h| h.alive && h.copy.role == Role::Master && h.copy.epoch == fence)
        .max_by_key(|h| Rank::new(site, &h.node))
}

fn assert_unique(holders: &[Holder]) {
    let mut seen = BTreeSet::new();
    for h in holders {
        assert!(
            seen.insert(&h.node),
            "node {} listed twice among the holders",
            h.node
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteName {
        s.parse().expect("test site names are valid")
    }

    fn node(s: &str) -> NodeName {
        s.parse().expect("test node names are valid")
    }

    /// One holder written as `<name><+|-><m|r|d><epoch>@<seq>`: `a+m2@5` is
    /// live node `a` claiming master at epoch 2 with head seq 5; `b-r1@7` a
    /// dead replica. The guid is derived from the name and seq: election
    /// ignores it.
    fn holder(tok: &str) -> Holder {
        let split = tok.find(['+', '-']).expect("alive flag");
        let (name, rest) = tok.split_at(split);
        let alive = rest.starts_with('+');
        let role = match &rest[1..2] {
            "m" => Role::Master,
            "r" => Role::Replica,
            "d" => Role::Diverged,
            other => panic!("bad role {other} in {tok}"),
        };
        let (epoch, seq) = rest[2..].split_once('@').expect("epoch@seq");
        let seq: u64 = seq.parse().expect("seq");
        Holder {
            node: node(name),
            alive,
            copy: CopyState {
                role,
                epoch: Epoch(epoch.parse().expect("epoch")),
                head: Head {
                    seq,
                    guid: seq << 8 | name.len() as u64,
                },
            },
        }
    }

    fn holders(spec: &str) -> Vec<Holder> {
        spec.split_whitespace().map(holder).collect()
    }

    fn show(d: &MasterDecision) -> String {
        match d {
            MasterDecision::Keep { node, epoch } => format!("keep {node} {epoch}"),
            MasterDecision::Elect { node, epoch } => format!("elect {node} {epoch}"),
            MasterDecision::NoCandidate => "no candidate".into(),
            MasterDecision::NoQuorum => "no quorum".into(),
        }
    }

    fn kind(d: &MasterDecision) -> &'static str {
        match d {
            MasterDecision::Keep { .. } => "keep",
            MasterDecision::Elect { .. } => "elect",
            MasterDecision::NoCandidate => "no candidate",
            MasterDecision::NoQuorum => "no quorum",
        }
    }

    const NO_GUARD: Quorum = Quorum {
        known_members: 0,
        alive_members: 0,
        guard: false,
    };

    /// The decision for site `blog` on `spec`, with the quorum guard off.
    fn check(spec: &str, expected: &str) {
        check_q(spec, NO_GUARD, expected);
    }

    fn check_q(spec: &str, quorum: Quorum, expected: &str) {
        let got = master(&site("blog"), &holders(spec), quorum);
        assert_eq!(show(&got), expected, "view [{spec}] {quorum:?}");
    }

    fn guarded(known_members: usize, alive_members: usize) -> Quorum {
        Quorum {
            known_members,
            alive_members,
            guard: true,
        }
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        for (known, alive, want) in [
            (0, 0, false),
            (1, 0, false),
            (1, 1, true),
            (2, 1, false),
            (2, 2, true),
            (3, 1, false),
            (3, 2, true),
            (4, 2, false),
            (4, 3, true),
            (5, 2, false),
            (5, 3, true),
            (usize::MAX, usize::MAX / 2, false),
            (usize::MAX, usize::MAX / 2 + 1, true),
        ] {
            assert_eq!(has_quorum(known, alive), want, "{alive} of {known}");
        }
    }

    #[test]
    #[should_panic(expected = "alive members 3 exceed known members 2")]
    fn more_alive_than_known_is_a_bug() {
        has_quorum(2, 3);
    }

    #[test]
    fn examples() {
        // A live master at the fence stays, even behind a fresher replica.
        check("a+m2@5 b+r2@9", "keep a 2");
        // Its death elects the freshest live copy at fence + 1.
        check("a-m2@5 b+r2@4 c+r2@6", "elect c 3");
        // A returning stale master is fenced by the newer claim...
        check("a+m2@5 b+m3@6", "keep b 3");
        // ...and by a replica that followed a newer master, even when that
        // master's own claim is gone from the view.
        check("a+m2@9 b+r3@6", "elect a 4");
        // Dead and diverged copies are never candidates.
        check("a-m2@5 b-r2@9 c+d2@9 d+r2@1", "elect d 3");
        check("a-m2@5 b+d2@9", "no candidate");
        check("", "no candidate");
        // The first master of a new site claims epoch 1.
        check("a+r0@1", "elect a 1");
    }

    #[test]
    fn ties_go_to_the_rendezvous_rank() {
        // The pinned outcomes below follow from the pinned hash; the
        // exhaustive test checks the rule itself.
        let s = site("blog");
        let a_ranks_higher = Rank::new(&s, &node("a")) > Rank::new(&s, &node("b"));
        let (win, lose) = if a_ranks_higher {
            ("a", "b")
        } else {
            ("b", "a")
        };
        check("a+r1@4 b+r1@4 c-m1@4", &format!("elect {win} 2"));
        check("a+m1@4 b+m1@7", &format!("keep {win} 1"));
        let hs = holders("a+m1@4 b+m1@7");
        assert!(should_step_down(&s, &node(lose), &hs));
        assert!(!should_step_down(&s, &node(win), &hs));
    }

    #[test]
    fn equal_seqs_go_to_the_newer_epoch_before_the_rank() {
        // The simulator's case (site sweep args, --fault-gap 4s, seed 10):
        // n5, master at epoch 1, is killed; n9 takes over at epoch 2 and
        // takes snapshot 51, which reaches n3; n9 dies; n5 comes back,
        // steps down and snapshots its writes after its snapshot 50 as its
        // own 51. Electing n5 (`old` here) would put epoch 2's acknowledged
        // writes in a stash; n3 (`new`) holds the newer history. Whichever
        // ranks higher, `new` wins.
        for (old, new) in [("a", "b"), ("b", "a")] {
            check(
                &format!("{old}+r1@51 {new}+r2@51 c-m2@51"),
                &format!("elect {new} 3"),
            );
        }
        // A higher seq still wins over a newer epoch.
        check("a+r1@52 b+r2@51 c-m2@51", "elect a 3");
    }

    #[test]
    fn quorum_gates_promotion_only() {
        check_q("a-m1@1 b+r1@1", guarded(3, 1), "no quorum");
        check_q("a-m1@1 b+r1@1", guarded(3, 2), "elect b 2");
        check_q(
            "a-m1@1 b+r1@1",
            Quorum {
                guard: false,
                ..guarded(3, 1)
            },
            "elect b 2",
        );
        // A standing master is kept without quorum: keeping is no promotion.
        check_q("a+m1@1 b-r1@1", guarded(5, 1), "keep a 1");
        // The guard is checked before candidates are looked for.
        check_q("a-m1@1", guarded(3, 1), "no quorum");
    }

    #[test]
    fn step_down() {
        let s = site("blog");
        let hs = holders("a+m1@4 b+m2@3 c+r2@3 d+d1@9");
        assert!(should_step_down(&s, &node("a"), &hs), "below the fence");
        assert!(
            !should_step_down(&s, &node("b"), &hs),
            "the standing master"
        );
        assert!(!should_step_down(&s, &node("c"), &hs), "not a master");
        assert!(!should_step_down(&s, &node("d"), &hs), "not a master");
        assert!(!should_step_down(&s, &node("e"), &hs), "no copy");
        // Fenced by a replica's epoch: the claim no longer stands, even
        // though this node may well be elected again at epoch 3.
        let hs = holders("a+m1@4 c+r2@3");
        assert!(should_step_down(&s, &node("a"), &hs));
    }

    #[test]
    #[should_panic(expected = "node a listed twice among the holders")]
    fn duplicate_holders_are_a_bug() {
        master(&site("blog"), &holders("a+r1@1 b+r1@1 a+m1@1"), NO_GUARD);
    }

    /// Everything one node can be in the exhaustive tests: absent (no copy),
    /// or any role with epoch in 1..=2 and seq in 1..=2, alive or dead.
    fn node_states() -> Vec<Option<(bool, CopyState)>> {
        let mut out = vec![None];
        for alive in [true, false] {
            for role in [Role::Master, Role::Replica, Role::Diverged] {
                for epoch in 1..=2 {
                    for seq in 1..=2 {
                        out.push(Some((
                            alive,
                            CopyState {
                                role,
                                epoch: Epoch(epoch),
                                head: Head { seq, guid: seq },
                            },
                        )));
                    }
                }
            }
        }
        out
    }

    /// The rule, restated independently of the implementation, as the set
    /// of properties the decision must satisfy.
    fn check_properties(s: &SiteName, hs: &[Holder], quorum: Quorum) -> MasterDecision {
        let d = master(s, hs, quorum);
        let ctx = || format!("view {hs:?} {quorum:?} gave {d:?}");
        let fence = hs.iter().map(|h| h.copy.epoch).max().unwrap_or_default();
        let live_at_fence: Vec<&Holder> = hs
            .iter()
            .filter(|h| h.alive && h.copy.role == Role::Master && h.copy.epoch == fence)
            .collect();
        let candidates: Vec<&Holder> = hs
            .iter()
            .filter(|h| h.alive && h.copy.role != Role::Diverged)
            .collect();
        let find = |n: &NodeName| {
            hs.iter()
                .find(|h| &h.node == n)
                .expect("decided node is a holder")
        };

        if !live_at_fence.is_empty() {
            // A live highest-epoch master is never replaced.
            let MasterDecision::Keep { node, epoch } = &d else {
                panic!("live master at the fence replaced: {}", ctx())
            };
            assert_eq!(*epoch, fence, "{}", ctx());
            assert!(live_at_fence.iter().any(|h| &h.node == node), "{}", ctx());
        } else if !quorum.allows_promotion() {
            assert_eq!(d, MasterDecision::NoQuorum, "{}", ctx());
        } else if candidates.is_empty() {
            assert_eq!(d, MasterDecision::NoCandidate, "{}", ctx());
        } else {
            let MasterDecision::Elect { node, epoch } = &d else {
                panic!("no election: {}", ctx())
            };
            assert_eq!(*epoch, fence.next(), "{}", ctx());
            let h = find(node);
            assert!(h.alive, "dead node elected: {}", ctx());
            assert_ne!(
                h.copy.role,
                Role::Diverged,
                "diverged copy elected: {}",
                ctx()
            );
            let newest = candidates.iter().map(|c| c.copy.head.seq).max();
            assert_eq!(
                Some(h.copy.head.seq),
                newest,
                "stale copy elected: {}",
                ctx()
            );
            for c in candidates
                .iter()
                .filter(|c| c.copy.head.seq == h.copy.head.seq)
            {
                assert!(
                    (h.copy.epoch, Rank::new(s, node)) >= (c.copy.epoch, Rank::new(s, &c.node)),
                    "tie: {}",
                    ctx()
                );
            }
        }
        if quorum.guard && !has_quorum(quorum.known_members, quorum.alive_members) {
            assert!(
                !matches!(d, MasterDecision::Elect { .. }),
                "elected without quorum: {}",
                ctx()
            );
        }

        // At most one master: every live claim but the kept one steps down.
        let staying: Vec<&NodeName> = hs
            .iter()
            .filter(|h| h.alive && h.copy.role == Role::Master)
            .filter(|h| !should_step_down(s, &h.node, hs))
            .map(|h| &h.node)
            .collect();
        match &d {
            MasterDecision::Keep { node, .. } => assert_eq!(staying, [node], "{}", ctx()),
            _ => assert!(staying.is_empty(), "{:?} stay: {}", staying, ctx()),
        }

        // Independent of input order.
        let mut rev = hs.to_vec();
        rev.reverse();
        assert_eq!(master(s, &rev, quorum), d, "reversed: {}", ctx());
        if hs.len() > 2 {
            let mut rot = hs.to_vec();
            rot.rotate_left(1);
            assert_eq!(master(s, &rot, quorum), d, "rotated: {}", ctx());
        }
        d
    }

    /// Calls `f` with every assignment of `states` to the nodes `names`,
    /// nodes in state `None` left out of the holders.
    fn for_each_view(
        names: &[NodeName],
        states: &[Option<(bool, CopyState)>],
        mut f: impl FnMut(&[Holder]),
    ) {
        let n = names.len();
        let mut idx = vec![0usize; n];
        let mut hs = Vec::with_capacity(n);
        loop {
            hs.clear();
            for (name, &i) in names.iter().zip(&idx) {
                if let Some((alive, copy)) = states[i] {
                    hs.push(Holder {
                        node: name.clone(),
                        alive,
                        copy,
                    });
                }
            }
            f(&hs);
            // Next assignment, like an odometer.
            let mut k = 0;
            loop {
                if k == n {
                    return;
                }
                idx[k] += 1;
                if idx[k] < states.len() {
                    break;
                }
                idx[k] = 0;
                k += 1;
            }
        }
    }

    /// Every view of up to four nodes, each absent or holding any role,
    /// epoch, head and liveness from small domains; quorum off, and on with
    /// one more known member (dead, without a copy) so both outcomes occur.
    #[test]
    fn exhaustive_small_clusters() {
        let s = site("blog");
        let names: Vec<NodeName> = ["a", "b", "c", "d"].map(node).to_vec();
        let states = node_states();
        let mut seen = BTreeSet::new();
        for_each_view(&names, &states, |hs| {
            let d = check_properties(&s, hs, NO_GUARD);
            seen.insert(kind(&d));
            let alive = hs.iter().filter(|h| h.alive).count();
            let d = check_properties(&s, hs, guarded(names.len() + 1, alive));
            seen.insert(kind(&d));
        });
        assert_eq!(seen.len(), 4, "every kind of decision was exercised");
    }

    /// Five nodes, with a smaller domain per node to keep the run short.
    #[test]
    fn exhaustive_five_nodes() {
        let s = site("shop");
        let names: Vec<NodeName> = ["n1", "n2", "n3", "n4", "n5"].map(node).to_vec();
        let states: Vec<_> = holders("x+m1@1 x+m2@1 x+r2@2 x+d2@2 x-m2@2 x-r1@2")
            .into_iter()
            .map(|h| Some((h.alive, h.copy)))
            .chain([None])
            .collect();
        for_each_view(&names, &states, |hs| {
            check_properties(&s, hs, NO_GUARD);
            let alive = hs.iter().filter(|h| h.alive).count();
            check_properties(&s, hs, guarded(names.len(), alive));
        });
    }

    /// No flapping: once a master stands, a live node joining with a copy
    /// that knows no newer epoch changes nothing (a node joining without a
    /// copy is not a holder at all).
    #[test]
    fn joins_never_move_a_standing_master() {
        let s = site("blog");
        let names: Vec<NodeName> = ["a", "b", "c"].map(node).to_vec();
        let joiner = node("z");
        let states = node_states();
        for_each_view(&names, &states, |hs| {
            let d = master(&s, hs, NO_GUARD);
            let MasterDecision::Keep { epoch: fence, .. } = d else {
                return;
            };
            for (_, copy) in states.iter().flatten() {
                // A second claim at the fence is a healed split, not a join.
                if copy.epoch > fence || (copy.role == Role::Master && copy.epoch == fence) {
                    continue;
                }
                let mut more = hs.to_vec();
                more.push(Holder {
                    node: joiner.clone(),
                    alive: true,
                    copy: *copy,
                });
                assert_eq!(master(&s, &more, NO_GUARD), d, "{copy:?} joined {hs:?}");
            }
        });
    }
}
