//! Helpers of the node's unit tests (each module's tests are at its end).

use super::state::Node;
use super::types::{Action, Event, LocalCopy, MemberView, NodeConfig, View};
use crate::time::Time;
use std::time::Duration;

use crate::election::{Epoch, Head, Role};
use crate::ids::{NodeName, SiteName};
use crate::lease::{self, Beat};
use crate::site::Runtime;
use crate::site::{CopyKey, SiteKey, SiteSpec, Vote};

/// A node without beats: the tests of the other rules count actions
/// and timeouts exactly.
pub(super) fn quiet(name: NodeName) -> NodeConfig {
    let mut cfg = NodeConfig::new(name);
    cfg.beat_interval = Duration::ZERO;
    cfg
}

pub(super) fn n(s: &str) -> NodeName {
    s.parse().expect("node name")
}

pub(super) fn s(x: &str) -> SiteName {
    x.parse().expect("site name")
}

pub(super) fn spec(site: &str, replicas: u8) -> SiteSpec {
    SiteSpec {
        name: s(site),
        domains: vec![format!("{site}.example").parse().expect("domain")],
        replicas,
        runtime: Runtime::Static,
        id: 7,
        version: 1,
    }
}

pub(super) fn head(seq: u64) -> Head {
    Head {
        seq,
        guid: 1000 + seq,
    }
}

pub(super) fn member(alive: bool, keys: Vec<SiteKey>) -> MemberView {
    MemberView {
        alive,
        left: false,
        zone: None,
        keys,
        beat: None,
    }
}

pub(super) fn copy_key(role: Role, epoch: u64, seq: u64) -> CopyKey {
    CopyKey {
        role,
        epoch: Epoch(epoch),
        seq,
        guid: 1000 + seq,
        spec_id: 7,
    }
}

/// `voter`'s vote for `candidate` at `epoch`, among its keys in `v`.
pub(super) fn add_vote(v: &mut View, voter: &str, epoch: u64, candidate: &str) {
    v.members
        .get_mut(&n(voter))
        .expect("a member")
        .keys
        .push(SiteKey::Vote(
            s("blog"),
            Vote {
                epoch: Epoch(epoch),
                candidate: n(candidate),
            },
        ));
}

pub(super) fn demotes(acts: &[Action], site: &str) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Demote { site: x, .. } if *x == s(site)))
}

pub(super) fn drain(node: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| node.poll_action()).collect()
}

/// A local copy of site "blog" (its spec with `replicas`).
pub(super) fn blog_copy(role: Role, epoch: u64, chain: Vec<Head>, replicas: u8) -> LocalCopy {
    LocalCopy {
        site: s("blog"),
        role,
        epoch: Epoch(epoch),
        chain,
        spec: Some(spec("blog", replicas)),
        changed: false,
    }
}

pub(super) fn started(name: &str, copies: Vec<LocalCopy>) -> Node {
    started_with(quiet(n(name)), copies)
}

pub(super) fn started_with(cfg: NodeConfig, copies: Vec<LocalCopy>) -> Node {
    let mut node = Node::new(cfg);
    node.handle(Time(0), Event::Start(copies));
    drain(&mut node);
    node
}

pub(super) fn promotes(acts: &[Action], site: &str) -> bool {
    acts.iter()
        .any(|a| matches!(a, Action::Promote { site: x, .. } if x.as_str() == site))
}

pub(super) fn master_view(master_alive: bool) -> View {
    let mut v = View::default();
    v.members.insert(
        n("a"),
        member(
            master_alive,
            vec![
                SiteKey::Copy(s("blog"), copy_key(Role::Master, 1, 5)),
                SiteKey::Spec(s("blog"), spec("blog", 3)),
            ],
        ),
    );
    v.members.insert(n("b"), member(true, vec![]));
    v.members.insert(n("c"), member(true, vec![]));
    v
}

pub(super) fn beat_of(incarnation: u64, counter: u64, echoes: &[(&str, u64, u64)]) -> Beat {
    Beat {
        id: lease::BeatId {
            incarnation,
            counter,
        },
        echoes: echoes
            .iter()
            .map(|(p, i, c)| {
                (
                    n(p),
                    lease::BeatId {
                        incarnation: *i,
                        counter: *c,
                    },
                )
            })
            .collect(),
    }
}

/// A node with beats, as in production (incarnation 7).
pub(super) fn beating(name: &str, copies: Vec<LocalCopy>) -> Node {
    let mut cfg = NodeConfig::new(n(name));
    cfg.incarnation = 7;
    started_with(cfg, copies)
}

/// Ticks `node` whenever it asks, until it casts a vote (when, and
/// which) or `until` passes.
pub(super) fn first_vote(node: &mut Node, until: Time) -> Option<(Time, Vote)> {
    while let Some(t) = node.poll_timeout().filter(|t| *t < until) {
        node.handle(t, Event::Tick);
        let vote = drain(node).into_iter().find_map(|x| match x {
            Action::PersistVote { vote, .. } => Some(vote),
            _ => None,
        });
        if let Some(v) = vote {
            return Some((t, v));
        }
    }
    None
}

pub(super) fn one_copy_view() -> View {
    let mut v = View::default();
    v.members.insert(
        n("a"),
        member(
            true,
            vec![
                SiteKey::Copy(s("blog"), copy_key(Role::Master, 1, 5)),
                SiteKey::Spec(s("blog"), spec("blog", 1)),
            ],
        ),
    );
    v.members.insert(n("b"), member(true, vec![]));
    v.members.insert(n("c"), member(true, vec![]));
    // a hands the site over to b at epoch 2 (`Node::hand_over`).
    add_vote(&mut v, "a", 2, "b");
    v
}

/// The actions but the votes (their keeping and publishing).
pub(super) fn drain_but_votes(node: &mut Node) -> Vec<Action> {
    drain(node)
        .into_iter()
        .filter(|a| match a {
            Action::PersistVote { .. } => false,
            Action::Publish { key, .. } => !key.starts_with("vote:"),
            _ => true,
        })
        .collect()
}
