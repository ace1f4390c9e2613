//! Master leases: a bound on how long a master that lost its majority goes
//! on acknowledging writes at its epoch.
//!
//! Votes ([`crate::vote`]) make sure two candidates never win one epoch.
//! They do not stop the master of epoch `e` from serving while a majority,
//! which no longer hears it, elects `e + 1`: a master whose packets are
//! dropped while it still receives the others' gossip sees them alive and
//! keeps its claim. The lease closes that gap, as Raft's leader lease does,
//! with gossip as the only channel:
//!
//! - **Beats.** Every node publishes a `beat` key every beat interval:
//!   its incarnation (a new one for each start of the daemon), a counter,
//!   and for each peer the last beat of that peer it has *read* (its
//!   echo). A key travels with the node's state, not in heartbeats relayed
//!   in digests: an echo proves that the peer received this node's state.
//! - **The lease.** A master remembers when it published each of its
//!   recent beats. A peer's echo of beat `c` proves the peer was in touch
//!   no earlier than `c` was published. The lease runs until the time the
//!   freshest strict majority of the known members (this node included)
//!   was last in touch, plus `lease` ([`deadline`]). Past it, the master
//!   acknowledges nothing: its gate holds new work, then refuses it.
//!   A peer's echo counts for a site only if the peer did not vote for
//!   another candidate above the master's epoch, and either voted for this
//!   master at its epoch or echoes a beat published after the promotion:
//!   such a peer knows of the claim, and so waits for the lease below
//!   before it votes against it.
//! - **The voter's wait.** Before a node votes for a candidate at epoch
//!   `E`, every other node that may hold a lease at a lower epoch (a
//!   master claim it can see, the candidate of its own last vote) must be
//!   out of its lease as far as this node's echoes go: the voter stops
//!   echoing that node (mutes it) and votes only `lease + drift` after the
//!   first beat it published without the echo, or after it first read the
//!   last beat it echoed, whichever is earlier. A master that consents
//!   (a live migration's hand-over: its own vote names the candidate at
//!   `E`) is not waited for.
//!
//! Why that is enough: a new master needs a majority's votes, the old one
//! a majority's fresh echoes; the two majorities share a voter, whose echo
//! of the old master was at least `lease + drift` old when it voted, so the
//! old master's lease had run out (clock rates differing by less than
//! `drift` over `lease`) before the new master could take office. The
//! voter's vote is published before its later echoes (gossip delivers one
//! node's keys in version order), so once it echoes the old master again,
//! that master also reads the vote that makes the echo not count.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ids::NodeName;
use crate::time::Time;

/// The gossip key of a node's beat.
pub const BEAT_KEY: &str = "beat";

/// One beat of one node: which start of the node, and which beat of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct BeatId {
    pub incarnation: u64,
    pub counter: u64,
}

/// A node's beat key: its own beat and its echoes of the others' beats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Beat {
    pub id: BeatId,
    pub echoes: BTreeMap<NodeName, BeatId>,
}

fn encode_id(id: BeatId) -> String {
    format!("{}.{}", id.incarnation, id.counter)
}

fn parse_id(s: &str) -> Option<BeatId> {
    let (i, c) = s.split_once('.')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(i) || !digits(c) {
        return None;
    }
    Some(BeatId {
        incarnation: i.parse().ok()?,
        counter: c.parse().ok()?,
    })
}

/// `INC.COUNTER NODE=INC.COUNTER ...`
pub fn encode_beat(b: &Beat) -> String {
    let mut out = encode_id(b.id);
    for (n, id) in &b.echoes {
        out.push(' ');
        out.push_str(n.as_str());
        out.push('=');
        out.push_str(&encode_id(*id));
    }
    out
}

/// The beat in a `beat` key's value; `None` when any part of it is
/// malformed (a beat is all or nothing: a half-read echo list would count
/// fewer peers, never more, but a malformed value says the sender is not
/// this version).
pub fn parse_beat(s: &str) -> Option<Beat> {
    let mut parts = s.split(' ');
    let id = parse_id(parts.next()?)?;
    let mut echoes = BTreeMap::new();
    for p in parts {
        let (n, e) = p.split_once('=')?;
        let node: NodeName = n.parse().ok()?;
        if echoes.insert(node, parse_id(e)?).is_some() {
            return None;
        }
    }
    Some(Beat { id, echoes })
}

/// The end of a master's lease: `lease` after the time by which the
/// freshest `need` of the peers whose echoes count were in touch (`fresh`:
/// when each one's echoed beat was published). `need == 0` (this node
/// alone is a majority): no end. Fewer than `need` peers: over already
/// (`Time(0)`).
pub fn deadline(mut fresh: Vec<Time>, need: usize, lease: Duration) -> Time {
    if need == 0 {
        return Time::NEVER;
    }
    if fresh.len() < need {
        return Time(0);
    }
    fresh.sort_unstable_by(|a, b| b.cmp(a));
    fresh[need - 1].plus(lease)
}

/// A peer this node stopped echoing, to wait out its lease before a vote
/// against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Muted {
    /// When the first beat without its echo was published.
    pub since: Time,
    /// The mute ends then, unless a blocked vote asks for it again. It
    /// outlives the wait by `lease + drift`, so that a wait that lapses in
    /// a flap of the membership (the election gives way to the old master,
    /// then comes back) keeps its start.
    pub until: Time,
}

/// This node's side of the beats: what it published, what it read, whom
/// it mutes.
#[derive(Debug, Clone, Default)]
pub struct Beats {
    pub incarnation: u64,
    /// The counter of the next beat.
    pub next: u64,
    /// When the next beat is due.
    pub next_at: Time,
    /// Recent beats of this node and when each was published, oldest first.
    pub sent: std::collections::VecDeque<(u64, Time)>,
    /// Each peer's newest beat read, and when it was first read.
    pub heard: BTreeMap<NodeName, (BeatId, Time)>,
    pub muted: BTreeMap<NodeName, Muted>,
    /// A mute began since the last beat: publish one now.
    pub urgent: bool,
}

impl Beats {
    pub fn new(incarnation: u64) -> Beats {
        Beats {
            incarnation,
            ..Beats::default()
        }
    }

    /// When this node published beat `counter` of its incarnation, if it
    /// is recent enough to be remembered.
    pub fn sent_at(&self, id: BeatId) -> Option<Time> {
        if id.incarnation != self.incarnation {
            return None;
        }
        let i = self
            .sent
            .binary_search_by_key(&id.counter, |(c, _)| *c)
            .ok()?;
        Some(self.sent[i].1)
    }

    /// Notes the peers' beats in a new view.
    pub fn read<'a>(
        &mut self,
        now: Time,
        beats: impl IntoIterator<Item = (&'a NodeName, &'a Beat)>,
    ) {
        for (n, b) in beats {
            match self.heard.get(n) {
                Some((id, _)) if *id == b.id => {}
                _ => {
                    self.heard.insert(n.clone(), (b.id, now));
                }
            }
        }
    }

    /// Mutes `peer` until `until` at least (from now, if it was not).
    pub fn mute(&mut self, peer: &NodeName, now: Time, until: Time) {
        match self.muted.get_mut(peer) {
            Some(m) => m.until = m.until.max(until),
            None => {
                self.muted.insert(peer.clone(), Muted { since: now, until });
                self.urgent = true;
            }
        }
    }

    /// The earliest time a vote against `peer` may be cast, as far as this
    /// node's echoes of it go: `wait` after the last echo it published of
    /// that peer could have been taken (its first read of the beat it last
    /// echoed, or the mute's start). A peer never heard since `started` is
    /// taken as heard then (echoes of an earlier start of this node may
    /// still be on their way).
    pub fn vote_ready(&self, peer: &NodeName, started: Time, wait: Duration) -> Time {
        let heard = self
            .heard
            .get(peer)
            .map_or(started, |(_, t)| *t)
            .max(started);
        let last_echo = match self.muted.get(peer) {
            Some(m) => heard.min(m.since),
            None => heard,
        };
        last_echo.plus(wait)
    }

    /// Publishes the next beat at `now`: ends the mutes whose time is
    /// over, and forgets beats older than `keep`.
    pub fn beat(&mut self, now: Time, interval: Duration, keep: Duration) -> Beat {
        self.muted.retain(|_, m| m.until > now);
        let echoes = self
            .heard
            .iter()
            .filter(|(n, _)| !self.muted.contains_key(*n))
            .map(|(n, (id, _))| (n.clone(), *id))
            .collect();
        let id = BeatId {
            incarnation: self.incarnation,
            counter: self.next,
        };
        self.sent.push_back((self.next, now));
        while self.sent.front().is_some_and(|(_, t)| t.plus(keep) < now) {
            self.sent.pop_front();
        }
        self.next += 1;
        self.next_at = now.plus(interval);
        self.urgent = false;
        Beat { id, echoes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        s.parse().expect("node name")
    }

    #[test]
    fn a_beat_round_trips_and_garbage_is_refused() {
        let b = Beat {
            id: BeatId {
                incarnation: 17,
                counter: 4,
            },
            echoes: [
                (
                    n("a"),
                    BeatId {
                        incarnation: 3,
                        counter: 9,
                    },
                ),
                (
                    n("b"),
                    BeatId {
                        incarnation: 1,
                        counter: 0,
                    },
                ),
            ]
            .into(),
        };
        assert_eq!(encode_beat(&b), "17.4 a=3.9 b=1.0");
        assert_eq!(parse_beat(&encode_beat(&b)), Some(b));
        assert_eq!(parse_beat("5.6").map(|b| b.echoes.len()), Some(0));
        for bad in [
            "",
            " ",
            "5",
            "5.",
            ".6",
            "5.6 ",
            "5.6 a",
            "5.6 a=",
            "5.6 a=1",
            "5.6 a=1.2 a=1.3",
            "-1.2",
            "+1.2",
            "1.2 A!=1.2",
            "99999999999999999999.1",
            "1.2  b=1.1",
        ] {
            assert_eq!(parse_beat(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_lease_ends_lease_after_the_freshest_majority() {
        let l = Duration::from_secs(2);
        assert_eq!(deadline(vec![], 0, l), Time::NEVER);
        assert_eq!(deadline(vec![Time(5)], 2, l), Time(0));
        assert_eq!(
            deadline(vec![Time(100), Time(900), Time(500)], 2, l),
            Time(2500)
        );
    }

    #[test]
    fn a_voter_waits_from_its_last_echo() {
        let mut b = Beats::new(1);
        let w = Duration::from_millis(2500);
        // Never heard: from the start.
        assert_eq!(b.vote_ready(&n("m"), Time(1000), w), Time(3500));
        let beat = Beat {
            id: BeatId {
                incarnation: 9,
                counter: 1,
            },
            echoes: BTreeMap::new(),
        };
        b.read(Time(2000), [(&n("m"), &beat)]);
        assert_eq!(b.vote_ready(&n("m"), Time(1000), w), Time(4500));
        // The same beat read again is no news.
        b.read(Time(3000), [(&n("m"), &beat)]);
        assert_eq!(b.vote_ready(&n("m"), Time(1000), w), Time(4500));
        // Muted at 3000; newer beats heard later do not move the wait.
        b.mute(&n("m"), Time(3000), Time(9000));
        assert!(b.urgent);
        let mut newer = beat.clone();
        newer.id.counter = 2;
        b.read(Time(6000), [(&n("m"), &newer)]);
        assert_eq!(b.vote_ready(&n("m"), Time(1000), w), Time(5500));
        let out = b.beat(Time(6000), Duration::from_millis(200), l2());
        assert!(!out.echoes.contains_key(&n("m")));
        // The mute ends at its `until`: echoed again.
        let out = b.beat(Time(9000), Duration::from_millis(200), l2());
        assert_eq!(out.echoes.get(&n("m")), Some(&newer.id));
        assert_eq!(b.sent_at(out.id), Some(Time(9000)));
        assert_eq!(
            b.sent_at(BeatId {
                incarnation: 2,
                ..out.id
            }),
            None
        );
    }

    fn l2() -> Duration {
        Duration::from_secs(5)
    }
}
