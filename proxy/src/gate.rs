//! The per-site gate on a site's master: every HTTP request and TLS
//! connection this node serves for the site as its master passes here just
//! before it reaches the local backend (see `Proxy::gate`).
//!
//! A gate is
//!
//! - **open**: work goes through, counted as in flight until it ends;
//! - **paused**: new work waits in a bounded FIFO queue (the pause that
//!   live migration measures) while in-flight work finishes; `drain`
//!   waits for that, and at its timeout asks long-lived work (WebSockets,
//!   TLS connections) to close;
//! - **redirected** to another node: queued work is released to it in
//!   arrival order, and later arrivals go there too.
//!
//! Work that waits longer than the queue timeout, or finds the queue full,
//! is refused (the caller answers 503 with `Retry-After`): a pause is
//! bounded, never a hang.
//!
//! An open gate also keeps the master's lease (`model::lease`): past it,
//! new work waits up to `lease_hold` for the lease to be renewed (a late
//! echo, a short stall of gossip), then is refused. A master cut off from
//! its majority so acknowledges nothing once its lease ran out, strictly
//! before another node can take over at the next epoch.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

/// Bounds of a paused gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Requests and connections a paused gate holds; more are refused.
    pub max_queue: usize,
    /// How long one may wait in a paused gate before it is refused.
    pub queue_timeout: Duration,
    /// How long new work waits for an expired lease to be renewed before
    /// it is refused.
    pub lease_hold: Duration,
}

impl Default for GateLimits {
    fn default() -> Self {
        GateLimits {
            max_queue: 10_000,
            queue_timeout: Duration::from_secs(30),
            lease_hold: Duration::from_secs(3),
        }
    }
}

/// What the gate says about one request or connection.
#[derive(Debug)]
pub enum Pass {
    /// Serve it locally; the guard counts it in flight until dropped.
    Open(InFlight),
    /// Send it to this node instead.
    Redirect(String),
    /// The pause outlasted the queue timeout, or the queue is full.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Open,
    Paused,
    Redirect(String),
}

#[derive(Debug)]
struct State {
    mode: Mode,
    in_flight: usize,
    queue: VecDeque<oneshot::Sender<Pass>>,
    /// Counts the gate's mode changes: a [`Redirect`] token names one.
    changes: u64,
    /// The master's lease ends then (`None`: no end).
    lease: Option<Instant>,
}

/// One redirect of a gate ([`Gates::redirect`]): [`Gates::clear_redirect`]
/// ends that one only, not a later pause or redirect of the same site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirect(u64);

#[derive(Debug)]
struct Gate {
    state: Mutex<State>,
    /// Woken when the in-flight count drops to zero.
    idle: Notify,
    /// Set to true to ask long-lived in-flight work to close.
    closing: watch::Sender<bool>,
    /// Woken when the lease is renewed.
    renewed: Notify,
}

/// Counts one request or connection in flight; dropping it ends it.
#[derive(Debug)]
pub struct InFlight {
    gate: Arc<Gate>,
    closing: watch::Receiver<bool>,
}

impl InFlight {
    /// Resolves when the gate asks in-flight work to close (a migration's
    /// drain timeout): long-lived work (a WebSocket, a TLS stream) should
    /// end cleanly then.
    pub async fn closing(&mut self) {
        let _ = self.closing.wait_for(|c| *c).await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.gate.state.lock().expect("gate lock");
        s.in_flight -= 1;
        if s.in_flight == 0 {
            self.gate.idle.notify_waiters();
        }
    }
}

fn enter(gate: &Arc<Gate>, s: &mut State) -> InFlight {
    s.in_flight += 1;
    InFlight {
        gate: gate.clone(),
        closing: gate.closing.subscribe(),
    }
}

fn open_locked(gate: &Arc<Gate>, s: &mut State) {
    s.mode = Mode::Open;
    s.changes += 1;
    gate.closing.send_replace(false);
    while let Some(tx) = s.queue.pop_front() {
        let pass = enter(gate, s);
        // A waiter that gave up drops its guard at once.
        let _ = tx.send(Pass::Open(pass));
    }
}

/// The gates of every site this node serves.
#[derive(Debug, Default)]
pub struct Gates {
    sites: Mutex<HashMap<String, Arc<Gate>>>,
    limits: GateLimits,
}

impl Gates {
    pub fn new(limits: GateLimits) -> Gates {
        Gates {
            sites: Mutex::default(),
            limits,
        }
    }

    fn gate(&self, site: &str) -> Arc<Gate> {
        let mut sites = self.sites.lock().expect("gates lock");
        if let Some(g) = sites.get(site) {
            return g.clone();
        }
        let g = Arc::new(Gate {
            state: Mutex::new(State {
                mode: Mode::Open,
                in_flight: 0,
                queue: VecDeque::new(),
                changes: 0,
                lease: None,
            }),
            idle: Notify::new(),
            closing: watch::channel(false).0,
            renewed: Notify::new(),
        });
        sites.insert(site.to_owned(), g.clone());
        g
    }

    /// Whether this node's lease of `site` runs now (no lease set: yes).
    pub fn leased(&self, site: &str) -> bool {
        let gate = self.gate(site);
        let s = gate.state.lock().expect("gate lock is never poisoned");
        s.lease.is_none_or(|t| Instant::now() < t)
    }

    /// Sets the end of this node's lease as `site`'s master (`None`: no
    /// end), and releases the work that waited for it if it is renewed.
    pub fn set_lease(&self, site: &str, until: Option<Instant>) {
        let gate = self.gate(site);
        let mut s = gate.state.lock().expect("gate lock");
        if s.lease != until {
            s.lease = until;
            gate.renewed.notify_waiters();
        }
    }

    /// Passes one request or connection for `site`, waiting while paused
    /// or out of its lease.
    pub async fn pass(&self, site: &str) -> Pass {
        let gate = self.gate(site);
        let hold_until = Instant::now() + self.limits.lease_hold;
        loop {
            let renewed = gate.renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            {
                let s = gate.state.lock().expect("gate lock");
                let out = s.lease.is_some_and(|t| Instant::now() >= t);
                if !(out && s.mode == Mode::Open) {
                    break;
                }
            }
            if tokio::time::timeout_at(hold_until, renewed).await.is_err() {
                return Pass::Refused;
            }
        }
        let rx = {
            let mut s = gate.state.lock().expect("gate lock");
            match &s.mode {
                Mode::Open => return Pass::Open(enter(&gate, &mut s)),
                Mode::Redirect(node) => return Pass::Redirect(node.clone()),
                Mode::Paused => {
                    if s.queue.len() >= self.limits.max_queue {
                        return Pass::Refused;
                    }
                    let (tx, rx) = oneshot::channel();
                    s.queue.push_back(tx);
                    rx
                }
            }
        };
        match tokio::time::timeout(self.limits.queue_timeout, rx).await {
            Ok(Ok(pass)) => pass,
            _ => Pass::Refused,
        }
    }

    /// Where `site`'s work goes while redirected, if it is.
    pub fn redirected(&self, site: &str) -> Option<String> {
        let sites = self.sites.lock().expect("gates lock");
        let g = sites.get(site)?;
        match &g.state.lock().expect("gate lock").mode {
            Mode::Redirect(node) => Some(node.clone()),
            _ => None,
        }
    }

    /// Whether `site`'s gate holds new work now.
    pub fn paused(&self, site: &str) -> bool {
        let sites = self.sites.lock().expect("gates lock");
        sites
            .get(site)
            .is_some_and(|g| matches!(g.state.lock().expect("gate lock").mode, Mode::Paused))
    }

    /// Holds new work for `site` from now on.
    pub fn pause(&self, site: &str) {
        let gate = self.gate(site);
        let mut s = gate.state.lock().expect("gate lock");
        s.mode = Mode::Paused;
        s.changes += 1;
        gate.closing.send_replace(false);
    }

    /// Work for `site` in flight now.
    pub fn in_flight(&self, site: &str) -> usize {
        self.gate(site).state.lock().expect("gate lock").in_flight
    }

    /// Queued work for `site`.
    pub fn queued(&self, site: &str) -> usize {
        self.gate(site).state.lock().expect("gate lock").queue.len()
    }

    /// Waits until no work for `site` is in flight. At `timeout`, asks what
    /// is still in flight to close and waits up to `grace` more. Returns
    /// whether everything ended.
    pub async fn drain(&self, site: &str, timeout: Duration, grace: Duration) -> bool {
        let gate = self.gate(site);
        let idle = async {
            loop {
                let notified = gate.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if gate.state.lock().expect("gate lock").in_flight == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::pin!(idle);
        if tokio::time::timeout(timeout, &mut idle).await.is_ok() {
            return true;
        }
        gate.closing.send_replace(true);
        tokio::time::timeout(grace, &mut idle).await.is_ok()
    }

    /// Opens `site`'s gate here again, releasing the queue in order.
    pub fn open(&self, site: &str) {
        let gate = self.gate(site);
        let mut s = gate.state.lock().expect("gate lock");
        open_locked(&gate, &mut s);
    }

    /// Sends `site`'s queued and future work to `node`, queue first, in
    /// arrival order. The token lets [`Gates::clear_redirect`] end this
    /// redirect, and no later state of the gate.
    pub fn redirect(&self, site: &str, node: &str) -> Redirect {
        let gate = self.gate(site);
        let mut s = gate.state.lock().expect("gate lock");
        s.mode = Mode::Redirect(node.to_owned());
        s.changes += 1;
        while let Some(tx) = s.queue.pop_front() {
            let _ = tx.send(Pass::Redirect(node.to_owned()));
        }
        Redirect(s.changes)
    }

    /// Forgets `site`'s redirect (every view has caught up): open again.
    pub fn clear(&self, site: &str) {
        self.open(site);
    }

    /// Opens `site`'s gate if it is redirected, whichever redirect it is:
    /// this node serves the site again (it became master at a newer
    /// epoch), so an old redirect points away from the master. Returns
    /// whether it did.
    pub fn end_redirect(&self, site: &str) -> bool {
        let gate = self.gate(site);
        let mut s = gate.state.lock().expect("gate lock");
        if !matches!(s.mode, Mode::Redirect(_)) {
            return false;
        }
        open_locked(&gate, &mut s);
        true
    }

    /// Forgets the redirect `r` of `site` if the gate is still in it: the
    /// gate may since have been opened (this node serves the site again)
    /// and even paused and redirected again by a later migration, which
    /// an old redirect's end must not cut short. Returns whether it did.
    pub fn clear_redirect(&self, site: &str, r: Redirect) -> bool {
        let gate = self.gate(site);
        let mut s = gate.state.lock().expect("gate lock");
        if !matches!(s.mode, Mode::Redirect(_)) || s.changes != r.0 {
            return false;
        }
        open_locked(&gate, &mut s);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates() -> Arc<Gates> {
        Arc::new(Gates::new(GateLimits {
            max_queue: 3,
            queue_timeout: Duration::from_secs(5),
            lease_hold: Duration::from_secs(3),
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_gate_counts_work_in_flight() {
        let g = gates();
        let a = g.pass("s").await;
        let b = g.pass("s").await;
        assert!(matches!(a, Pass::Open(_)) && matches!(b, Pass::Open(_)));
        assert_eq!(g.in_flight("s"), 2);
        drop(a);
        assert_eq!(g.in_flight("s"), 1);
        drop(b);
        assert_eq!(g.in_flight("s"), 0);
        assert_eq!(g.in_flight("other"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_gate_queues_then_redirects_in_arrival_order() {
        let g = gates();
        g.pause("s");
        let mut waiters = Vec::new();
        for i in 0..3 {
            let g = g.clone();
            waiters.push(tokio::spawn(async move {
                let p = g.pass("s").await;
                (i, p)
            }));
            // Let each one queue before the next.
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        }
        assert_eq!(g.queued("s"), 3);
        // The queue is full: the next one is refused at once.
        assert!(matches!(g.pass("s").await, Pass::Refused));
        g.redirect("s", "n2");
        for w in waiters {
            let (_, p) = w.await.expect("waiter");
            assert!(matches!(p, Pass::Redirect(ref n) if n == "n2"), "{p:?}");
        }
        assert!(matches!(g.pass("s").await, Pass::Redirect(_)));
        assert_eq!(g.redirected("s").as_deref(), Some("n2"));
        g.clear("s");
        assert!(matches!(g.pass("s").await, Pass::Open(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_an_old_redirect_leaves_a_later_state_alone() {
        let g = gates();
        g.pause("s");
        let first = g.redirect("s", "n2");
        // The site comes back here, and moves to n2 again.
        g.open("s");
        g.pause("s");
        let second = g.redirect("s", "n2");
        assert!(!g.clear_redirect("s", first), "a later redirect stays");
        assert_eq!(g.redirected("s").as_deref(), Some("n2"));
        assert!(g.clear_redirect("s", second));
        assert!(matches!(g.pass("s").await, Pass::Open(_)));
        // Opened meanwhile: nothing to end.
        let third = g.redirect("s", "n3");
        g.open("s");
        g.pause("s");
        assert!(!g.clear_redirect("s", third), "a pause stays");
        assert!(!g.end_redirect("s"), "a pause stays");
        g.redirect("s", "n3");
        assert!(g.end_redirect("s"));
        assert!(matches!(g.pass("s").await, Pass::Open(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn opening_again_releases_the_queue_here() {
        let g = gates();
        g.pause("s");
        let g2 = g.clone();
        let w = tokio::spawn(async move { g2.pass("s").await });
        tokio::task::yield_now().await;
        g.open("s");
        let p = w.await.expect("waiter");
        assert!(matches!(p, Pass::Open(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_lease_work_waits_for_a_renewal_then_is_refused() {
        let g = gates();
        let t0 = Instant::now();
        g.set_lease("s", Some(t0 + Duration::from_secs(1)));
        assert!(
            matches!(g.pass("s").await, Pass::Open(_)),
            "within the lease"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Out of the lease: held, then renewed after 500 ms, then let in.
        let g2 = g.clone();
        let w = tokio::spawn(async move { g2.pass("s").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!w.is_finished(), "held while the lease is over");
        g.set_lease("s", Some(Instant::now() + Duration::from_secs(2)));
        assert!(matches!(w.await.expect("waiter"), Pass::Open(_)));
        // Not renewed: refused after the hold.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        assert!(matches!(g.pass("s").await, Pass::Refused));
        assert_eq!(t1.elapsed(), Duration::from_secs(3));
        // No end: open.
        g.set_lease("s", None);
        assert!(matches!(g.pass("s").await, Pass::Open(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_queue_timeout_refuses() {
        let g = gates();
        g.pause("s");
        let t0 = tokio::time::Instant::now();
        assert!(matches!(g.pass("s").await, Pass::Refused));
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_work_in_flight_and_asks_the_rest_to_close() {
        let g = gates();
        let Pass::Open(quick) = g.pass("s").await else {
            panic!("open")
        };
        let Pass::Open(mut long) = g.pass("s").await else {
            panic!("open")
        };
        g.pause("s");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(quick);
        });
        // The long one ends only when asked to close.
        tokio::spawn(async move {
            long.closing().await;
            drop(long);
        });
        let t0 = tokio::time::Instant::now();
        assert!(
            g.drain("s", Duration::from_secs(2), Duration::from_secs(1))
                .await
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert_eq!(g.in_flight("s"), 0);
        // Nothing in flight: drain returns at once.
        assert!(
            g.drain("s", Duration::from_secs(2), Duration::from_secs(1))
                .await
        );
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }
}
