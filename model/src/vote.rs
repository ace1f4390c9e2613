//! Votes: a new master takes office only with a strict majority of the
//! known members' votes for it at its epoch.
//!
//! The election ([`crate::election::master`]) is a function of one node's
//! gossip view; two nodes with different views (a one-way partition, where
//! one side hears the other's heartbeats but not its keys; a bridge node
//! seen by both sides) can both find themselves elected at one epoch. A
//! vote turns that local decision into a claim others must grant:
//!
//! - Every node, holding a copy or not, votes for the candidate its own
//!   election names, at that candidate's epoch ([`may_vote`]): at most one
//!   candidate per epoch, and never for an epoch below its last vote. The
//!   vote is kept on disk before it is published (`vote:<site>`), so a
//!   restart does not let a node vote twice.
//! - The candidate promotes only when the votes for it at its epoch that it
//!   can *read* (keys that arrived, not heartbeats relayed in digests) come
//!   from a strict majority of the members it knows ([`has_majority`]).
//!   Two disjoint majorities of one member set do not exist, so two
//!   candidates cannot both win one epoch.
//! - Every candidate runs for the highest epoch any node voted in (or the
//!   one after it, if another candidate has votes there), never below the
//!   fence plus one ([`epoch_to_run`]): nodes that voted in different
//!   epochs meet at the highest one, and a dead or outvoted candidate does
//!   not block the site for good (found by the simulator: a vote replaced
//!   by a newer one no longer showed that its epoch was spent, and the
//!   candidate went back to an epoch most voters had left).
//!
//! What votes do not give: a bound on how long a master that lost its
//! majority goes on serving at its old epoch ([`crate::lease`] gives it), and
//! agreement on the member set itself (each node counts the members its
//! view and its memory hold; a cluster whose members change while a node
//! is cut off can count differently). ARCHITECTURE.md has the argument.

use crate::election::Epoch;
use crate::ids::NodeName;
use crate::site::Vote;

/// The epoch `candidate` runs for: `elected` (the fence plus one) unless
/// some node voted at `elected` or above; then the highest epoch voted in
/// if every vote there is for `candidate`, else the epoch after it.
pub fn epoch_to_run<'a>(
    elected: Epoch,
    candidate: &NodeName,
    votes: impl IntoIterator<Item = &'a Vote> + Clone,
) -> Epoch {
    let Some(top) = votes.clone().into_iter().map(|v| v.epoch).max() else {
        return elected;
    };
    if top < elected {
        return elected;
    }
    let contested = votes
        .into_iter()
        .any(|v| v.epoch == top && &v.candidate != candidate);
    if contested { top.next() } else { top }
}

/// Whether a node whose last vote is `last` may vote for `candidate` at
/// `epoch`: it has not voted at that epoch or above, or it voted for that
/// very candidate at that epoch (a vote is republished, not cast again).
pub fn may_vote(last: Option<&Vote>, epoch: Epoch, candidate: &NodeName) -> bool {
    match last {
        None => true,
        Some(v) => v.epoch < epoch || (v.epoch == epoch && &v.candidate == candidate),
    }
}

/// Whether `votes` (one per voting member) hold a strict majority of
/// `known_members` for `candidate` at `epoch`.
pub fn has_majority<'a>(
    votes: impl IntoIterator<Item = &'a Vote>,
    epoch: Epoch,
    candidate: &NodeName,
    known_members: usize,
) -> bool {
    let n = votes
        .into_iter()
        .filter(|v| v.epoch == epoch && &v.candidate == candidate)
        .count();
    2 * n > known_members
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        s.parse().expect("valid name")
    }

    fn v(epoch: u64, c: &str) -> Vote {
        Vote {
            epoch: Epoch(epoch),
            candidate: n(c),
        }
    }

    #[test]
    fn a_spent_epoch_is_skipped() {
        assert_eq!(epoch_to_run(Epoch(3), &n("a"), &[]), Epoch(3));
        // Votes below the elected epoch count for nothing; votes for a
        // at the top are joined.
        assert_eq!(
            epoch_to_run(Epoch(3), &n("a"), &[v(3, "a"), v(2, "b")]),
            Epoch(3)
        );
        assert_eq!(
            epoch_to_run(Epoch(3), &n("a"), &[v(4, "a"), v(3, "b")]),
            Epoch(4)
        );
        // c has a vote at 5, the top: a runs at 6.
        assert_eq!(
            epoch_to_run(Epoch(3), &n("a"), &[v(3, "b"), v(5, "c"), v(5, "a")]),
            Epoch(6)
        );
    }

    #[test]
    fn one_vote_per_epoch_and_never_back() {
        assert!(may_vote(None, Epoch(1), &n("a")));
        assert!(may_vote(Some(&v(1, "a")), Epoch(1), &n("a")));
        assert!(!may_vote(Some(&v(1, "a")), Epoch(1), &n("b")));
        assert!(may_vote(Some(&v(1, "a")), Epoch(2), &n("b")));
        assert!(!may_vote(Some(&v(3, "a")), Epoch(2), &n("a")));
    }

    #[test]
    fn a_strict_majority_of_the_known_members() {
        let votes = [v(4, "a"), v(4, "a"), v(4, "b"), v(3, "a")];
        assert!(!has_majority(&votes, Epoch(4), &n("a"), 4));
        assert!(has_majority(&votes, Epoch(4), &n("a"), 3));
        assert!(!has_majority(&votes, Epoch(3), &n("a"), 3));
    }

    /// Exhaustively over small clusters: whatever each voter sees, when
    /// every voter follows `may_vote` for a sequence of requests, no two
    /// candidates reach a majority at one epoch.
    #[test]
    fn two_candidates_never_both_win_an_epoch() {
        let cands = [n("a"), n("b")];
        for members in 1..=5usize {
            // Each voter's sequence of requests: 2 requests, each (epoch
            // 1..=2, candidate a|b): 16 sequences per voter.
            let seqs: Vec<Vec<(u64, usize)>> = (0..16)
                .map(|k| {
                    vec![
                        (1 + (k & 1) as u64, (k >> 1) & 1),
                        (1 + ((k >> 2) & 1) as u64, (k >> 3) & 1),
                    ]
                })
                .collect();
            let total = seqs.len().pow(members as u32);
            for mut pick in 0..total {
                let mut granted: Vec<Vec<Vote>> = vec![Vec::new(); members];
                for g in &mut granted {
                    let mut last: Option<Vote> = None;
                    for &(e, c) in &seqs[pick % seqs.len()] {
                        if may_vote(last.as_ref(), Epoch(e), &cands[c]) {
                            let vote = v(e, cands[c].as_str());
                            g.push(vote.clone());
                            last = Some(vote);
                        }
                    }
                    pick /= seqs.len();
                }
                for e in 1..=2 {
                    let winners = cands
                        .iter()
                        .filter(|c| {
                            let n = granted
                                .iter()
                                .filter(|g| {
                                    g.iter().any(|v| v.epoch == Epoch(e) && &v.candidate == *c)
                                })
                                .count();
                            2 * n > members
                        })
                        .count();
                    assert!(winners <= 1, "{members} members, epoch {e}: {granted:?}");
                }
            }
        }
    }
}
