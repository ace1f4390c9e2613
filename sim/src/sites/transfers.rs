//! Pulls and stashes as the daemon's protocol runs them, over simulated
//! messages and streams: request, reply, transfer, receive.

use std::io::Read;
use std::time::Duration;

use model::{Head, Outcome, PullError, SiteName};
use storage::{Guid, SnapshotStore};

use super::settings::Broken;
use super::state::{Op, OpKind, Reply, SiteLayer, failure, heads};
use crate::addr::node_ip;
use crate::node::SimNode;
use crate::world::{Shared, lock};

impl SiteLayer {
    /// A protocol message from node `i` to node `j`, carrying `op` to its
    /// next stage; a lost or cut message fails the operation at its
    /// timeout.
    pub(super) fn send(&mut self, i: usize, j: usize, now: Duration, world: &Shared, mut op: Op) {
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

    pub(super) fn bandwidth(&mut self, i: usize, j: usize) -> u64 {
        let key = (i.min(j), i.max(j));
        let (lo, hi) = self.settings.bandwidth;
        let rng = &mut self.rng;
        *self
            .bandwidth
            .entry(key)
            .or_insert_with(|| lo + rng.below(hi - lo + 1))
    }

    pub(super) async fn run_op(
        &mut self,
        op: Op,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
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
    pub(super) fn serve_pull(&self, j: usize, site: &SiteName, have: &[u64]) -> Reply {
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
    pub(super) fn receive(
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
    pub(super) fn stash(
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
}
