//! Live migration: a serving site moves to another node with its requests
//! paused, not failed.
//!
//! The site's master runs it ([`orchestrate`]); any node can start it (the
//! admin API relays to the master over the mesh, [`start`]):
//!
//! 1. **pre-copy**: the target pins a copy (pulling a full one if it has
//!    none); the master snapshots now and waits until the target holds
//!    that snapshot, round after round, until a round's delta is at most
//!    [`PRECOPY_SMALL`] bytes or [`PRECOPY_ROUNDS`] rounds ran;
//! 2. **pause**: the site's gate on the master holds new requests and
//!    connections (local and tunneled ones) in its bounded queue while
//!    in-flight ones finish, for at most [`DRAIN_TIMEOUT`]; then what is
//!    still open (a WebSocket, a TLS stream) is asked to close. A static
//!    site does not wait: its in-flight requests read files the final
//!    snapshot holds too, and finish from this copy;
//! 3. the site's command stops, and the master takes the final snapshot;
//! 4. the target pulls that last delta, claims `epoch + 1` and starts
//!    serving (`Request::MigrateTakeOver`);
//! 5. **release**: the gate sends the queue, in order, and every later
//!    arrival to the target, until every view shows the new master.
//!
//! If the hand-over fails (the target died, the final send broke, a
//! timeout), the site resumes on the master: its command restarts and the
//! queue is released there. Epochs fence a migration that races a failover.
//!
//! Each migration the master ran is recorded ([`Record`], the last
//! [`HISTORY_KEPT`] per site in `DATA_DIR/migrations.json`) and gossiped
//! under `migrations:<site>`, so that `site show` on any node lists them.

use std::time::{Duration, Instant};

use model::election::{Head, Role};
use model::{Epoch, NodeName, SiteName};
use proxy::{Backend, Target};
use tracing::{info, warn};

use crate::migration_log::{HISTORY_KEPT, HISTORY_PREFIX, Log, Progress, Record, Report};
use crate::rpc::{self, CopyReply, Reply, Request};
use crate::sites::{MigrationEvent, Sites};

/// A pre-copy round that sent at most this many bytes ends the pre-copy.
pub const PRECOPY_SMALL: u64 = 1 << 20;
/// Pre-copy rounds at most.
pub const PRECOPY_ROUNDS: u32 = 8;
/// How long the pause waits for in-flight requests to finish before it
/// asks long-lived connections (WebSockets, TLS streams) to close.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long closed connections get to end after the drain timeout.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// The target's time to pull the last delta and serve.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// One pre-copy round (a full copy of a large site takes a while).
const ROUND_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a failed hand-over waits for this node's lease, before the
/// queue is released (to wait for it in the gate, then be refused).
const RESUME_LEASE_WAIT: Duration = Duration::from_secs(10);
/// How long the old master forwards arrivals after every view caught up.
const REDIRECT_LINGER: Duration = Duration::from_secs(30);
/// How often a pre-copy round reports the bytes sent so far.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

fn record(sites: &Sites, site: &SiteName, p: &Progress) {
    let mut m = sites.migrations.lock().expect("migrations lock");
    let log = m.entry(site.clone()).or_default();
    if matches!(p, Progress::Copying { .. }) {
        log.copying = Some(p.clone());
        return;
    }
    log.copying = None;
    if matches!(p, Progress::Done(_) | Progress::Failed { .. }) {
        log.done = true;
    }
    log.events.push(p.clone());
}

/// What [`orchestrate`] saw of its own events, for the record.
#[derive(Default)]
struct Seen {
    epoch: u64,
    rounds: u32,
    precopy_bytes: u64,
    paused: Option<Instant>,
}

impl Seen {
    fn note(&mut self, p: &Progress) {
        match p {
            Progress::Started { epoch, .. } => self.epoch = *epoch,
            Progress::Copied { bytes, .. } => {
                self.rounds += 1;
                self.precopy_bytes += bytes;
            }
            Progress::Paused { .. } => self.paused = Some(now()),
            _ => {}
        }
    }
}

#[allow(clippy::disallowed_methods)] // a record's start time is wall time, shown to people
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Keeps `r` among the site's last [`HISTORY_KEPT`] migrations here, on
/// disk and in gossip.
async fn remember(sites: &Sites, site: &SiteName, r: Record) {
    let snapshot = {
        let mut h = sites.history.lock().expect("history lock");
        let list = h.entry(site.clone()).or_default();
        list.push(r);
        let extra = list.len().saturating_sub(HISTORY_KEPT);
        list.drain(..extra);
        h.clone()
    };
    let path = sites.history_path.clone();
    let write = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&snapshot)?)?;
        std::fs::rename(&tmp, &path)
    })
    .await;
    if !matches!(write, Ok(Ok(()))) {
        warn!(%site, "cannot persist the migration history: {write:?}");
    }
    publish_history(sites).await;
}

/// Gossips `migrations:<site>` for every site this node keeps records of.
pub async fn publish_history(sites: &Sites) {
    let h = sites.history.lock().expect("history lock").clone();
    for (site, list) in h {
        let value = serde_json::to_string(&list).unwrap_or_default();
        sites
            .gossip
            .set(&format!("{HISTORY_PREFIX}{site}"), &value)
            .await;
    }
}

/// Bytes of the files under `dir` (a site's size, for a full copy's
/// progress), counting at most 200 000 entries.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut seen = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > 200_000 {
                return total;
            }
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

/// The bytes a first pre-copy round sends, if known: the site's size when
/// the target has no copy yet.
async fn first_round_total(sites: &Sites, site: &SiteName, to: &NodeName) -> Option<u64> {
    let c: CopyReply = call(sites, to, &Request::MigrateStatus { site: site.clone() })
        .await
        .ok()?;
    if c.guid.is_some() {
        return None;
    }
    let store = sites.store.clone();
    let site = site.clone();
    tokio::task::spawn_blocking(move || store.mountpoint(&site).ok().map(|p| dir_bytes(&p)))
        .await
        .ok()
        .flatten()
}

/// [`wait_copy`] for pre-copy round `round`, reporting the bytes sent to
/// `to` since `before` every [`PROGRESS_EVERY`].
#[allow(clippy::too_many_arguments)]
async fn wait_copy_reporting(
    sites: &Sites,
    to: &NodeName,
    site: &SiteName,
    head: Head,
    round: u32,
    before: u64,
    total: Option<u64>,
    emit: &(dyn Fn(Progress) + Sync),
) -> Result<(), String> {
    // A pre-copy round may be long (a full copy); a target that dies
    // meanwhile ends it at once, not at the round's timeout.
    let copy = async {
        tokio::select! {
            r = wait_copy(sites, to, site, head, ROUND_TIMEOUT) => r,
            why = died(sites, to, "the pre-copy") => Err(why),
        }
    };
    let report = async {
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            emit(Progress::Copying {
                round,
                bytes: sent_to(sites, site, to).saturating_sub(before),
                total,
            });
        }
    };
    tokio::select! {
        r = copy => r,
        () = report => unreachable!("the report loop never ends"),
    }
}

fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[allow(clippy::disallowed_methods)] // migration phases are timed for real
fn now() -> Instant {
    Instant::now()
}

/// Starts moving `site` to `to` from this node (the admin API): runs it
/// here if this node is the master, else relays it to the master. Returns
/// once it started; progress goes to `sites.migrations`.
pub async fn start(sites: &Sites, site: SiteName, to: NodeName) -> Result<(), (u16, String)> {
    {
        let mut m = sites.migrations.lock().expect("migrations lock");
        if m.get(&site).is_some_and(|l| !l.done) {
            return Err((409, format!("site '{site}' is already being migrated")));
        }
        m.insert(site.clone(), Log::default());
    }
    let view = crate::sites::model_view(&sites.gossip.view().borrow());
    let Some((master, _)) = model::serving_master(&view, &site) else {
        sites
            .migrations
            .lock()
            .expect("migrations lock")
            .remove(&site);
        return Err((
            503,
            format!("site '{site}' has no master right now; retry shortly"),
        ));
    };
    if !view.members.get(&to).is_some_and(|m| m.alive && !m.left) {
        sites
            .migrations
            .lock()
            .expect("migrations lock")
            .remove(&site);
        return Err((400, format!("node '{to}' is not a live member")));
    }
    if master == to {
        sites
            .migrations
            .lock()
            .expect("migrations lock")
            .remove(&site);
        return Err((400, format!("site '{site}' is already served by '{to}'")));
    }
    let sites = sites.clone();
    tokio::spawn(async move {
        if master == sites.me {
            let emit = |p: Progress| record(&sites, &site, &p);
            let _ = orchestrate(&sites, &site, &to, &emit).await;
        } else {
            relay(&sites, &site, &master, &to).await;
        }
    });
    Ok(())
}

/// Asks the master to migrate and records its progress here.
async fn relay(sites: &Sites, site: &SiteName, master: &NodeName, to: &NodeName) {
    let failed = |e: String| Progress::Failed {
        error: format!("lost contact with the master {master}: {e}"),
        resumed_on: master.to_string(),
    };
    let mut s = match sites.gossip.open_stream(master).await {
        Ok(s) => s,
        Err(e) => return record(sites, site, &failed(e)),
    };
    let req = Request::Migrate {
        site: site.clone(),
        to: to.clone(),
    };
    if let Err(e) = rpc::write_frame(&mut s.writer, &req).await {
        return record(sites, site, &failed(format!("{e:#}")));
    }
    loop {
        match rpc::read_frame::<Progress>(&mut s.reader).await {
            Ok(p) => {
                let last = matches!(p, Progress::Done(_) | Progress::Failed { .. });
                record(sites, site, &p);
                if last {
                    return;
                }
            }
            Err(e) => return record(sites, site, &failed(format!("{e:#}"))),
        }
    }
}

/// The master's side of a relayed migration: runs it, streaming progress.
pub async fn serve_migrate(
    sites: &Sites,
    site: SiteName,
    to: NodeName,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let busy = {
        let mut m = sites.migrations.lock().expect("migrations lock");
        let busy = m.get(&site).is_some_and(|l| !l.done);
        if !busy {
            m.insert(site.clone(), Log::default());
        }
        busy
    };
    if busy {
        let p = Progress::Failed {
            error: format!("site '{site}' is already being migrated"),
            resumed_on: sites.me.to_string(),
        };
        return rpc::write_frame(&mut s.writer, &p).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let emit = |p: Progress| {
        record(sites, &site, &p);
        let _ = tx.send(p);
    };
    let run = async {
        let _ = orchestrate(sites, &site, &to, &emit).await;
    };
    let forward = async {
        while let Some(p) = rx.recv().await {
            let last = matches!(p, Progress::Done(_) | Progress::Failed { .. });
            // The migration goes on even if the asker went away.
            let _ = rpc::write_frame(&mut s.writer, &p).await;
            if last {
                break;
            }
        }
    };
    tokio::join!(run, forward);
    Ok(())
}

async fn call<T: serde::de::DeserializeOwned>(
    sites: &Sites,
    node: &NodeName,
    req: &Request,
) -> Result<T, String> {
    let mut s = sites.gossip.open_stream(node).await?;
    rpc::write_frame(&mut s.writer, req)
        .await
        .map_err(|e| format!("{e:#}"))?;
    rpc::read_frame(&mut s.reader)
        .await
        .map_err(|e| format!("{e:#}"))
}

async fn call_ok(sites: &Sites, node: &NodeName, req: &Request) -> Result<(), String> {
    let r: Reply = call(sites, node, req).await?;
    if r.ok {
        Ok(())
    } else {
        Err(r.error.unwrap_or_else(|| "refused".into()))
    }
}

/// Bytes of `site`'s snapshot streams this node has sent to `to`.
fn sent_to(sites: &Sites, site: &SiteName, to: &NodeName) -> u64 {
    sites
        .sent
        .lock()
        .expect("sent lock is never poisoned")
        .get(&(site.clone(), to.to_string()))
        .copied()
        .unwrap_or(0)
}

/// Waits until `to`'s copy of `site` holds `head`: its head is `head`, or
/// a later snapshot of this master's chain (under writes the master
/// snapshots again while the target pulls, and a replica that lags pulls
/// the newest snapshot, past `head`).
async fn wait_copy(
    sites: &Sites,
    to: &NodeName,
    site: &SiteName,
    head: Head,
    within: Duration,
) -> Result<(), String> {
    let t0 = now();
    loop {
        let r: Result<CopyReply, String> =
            call(sites, to, &Request::MigrateStatus { site: site.clone() }).await;
        if let Ok(c) = &r
            && (c.guid.as_deref() == Some(head.guid.to_string().as_str())
                || (c.role.as_deref() == Some("replica") && c.seq.is_some_and(|s| s > head.seq)))
        {
            return Ok(());
        }
        if t0.elapsed() > within {
            return Err(format!(
                "{to} did not receive snapshot {} within {within:?} ({r:?})",
                head.seq
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves once the failure detector sees `to` dead (or gone): a
/// migration stops waiting for it then, rather than at a timeout.
async fn died(sites: &Sites, to: &NodeName, during: &str) -> String {
    let mut view_rx = sites.gossip.view();
    loop {
        let alive = {
            let v = crate::sites::model_view(&view_rx.borrow_and_update());
            v.members.get(to).is_some_and(|m| m.alive && !m.left)
        };
        if !alive {
            return format!("{to} died during {during}");
        }
        if view_rx.changed().await.is_err() {
            return "the node is shutting down".to_owned();
        }
    }
}

/// Stops the site's command on this node and keeps it stopped.
async fn freeze(sites: &Sites, site: &SiteName) -> Result<(), String> {
    sites
        .frozen
        .lock()
        .expect("frozen lock is never poisoned")
        .insert(site.clone(), false);
    sites.wake_serving.notify_one();
    let t0 = now();
    loop {
        if sites
            .frozen
            .lock()
            .expect("frozen lock is never poisoned")
            .get(site)
            .copied()
            == Some(true)
        {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(15) {
            return Err("the site's command did not stop within 15 s".into());
        }
        sites.wake_serving.notify_one();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn thaw(sites: &Sites, site: &SiteName) {
    sites
        .frozen
        .lock()
        .expect("frozen lock is never poisoned")
        .remove(site);
    sites.wake_serving.notify_one();
}

/// Waits (bounded) until this node's routes serve `site` locally with its
/// backend accepting connections.
async fn wait_serving(sites: &Sites, site: &SiteName, within: Duration) -> bool {
    let Some(proxy) = sites.proxy.get() else {
        return false;
    };
    let t0 = now();
    while t0.elapsed() < within {
        let frozen = sites
            .frozen
            .lock()
            .expect("frozen lock is never poisoned")
            .contains_key(site);
        let target = proxy.routes().target(site.as_str()).cloned();
        let up = match target {
            Some(Target::Local {
                backend: Backend::Static(_),
                ..
            }) => true,
            Some(Target::Local {
                backend: Backend::Tcp(addr),
                ..
            }) => tokio::net::TcpStream::connect(addr).await.is_ok(),
            _ => false,
        };
        if up && !frozen {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// Runs a migration of `site` (mastered here) to `to`; see the module docs.
pub async fn orchestrate(
    sites: &Sites,
    site: &SiteName,
    to: &NodeName,
    emit: &(dyn Fn(Progress) + Sync),
) -> Result<Report, String> {
    let started_ms = unix_ms();
    let t0 = now();
    let spec_id = {
        let view = crate::sites::model_view(&sites.gossip.view().borrow());
        crate::serving::current_specs(&view)
            .get(site)
            .map_or(0, |s| s.id)
    };
    let seen = std::sync::Mutex::new(Seen::default());
    let track = |p: Progress| {
        seen.lock().expect("seen lock").note(&p);
        emit(p);
    };
    let r = run(sites, site, to, &track).await;
    if let Err(e) = &r {
        warn!(%site, %to, error = %e, "migration failed; the site stays here");
        track(Progress::Failed {
            error: e.clone(),
            resumed_on: sites.me.to_string(),
        });
    }
    let seen = seen.into_inner().expect("seen lock");
    let record = match &r {
        Ok(rep) => Record {
            from: rep.from.clone(),
            to: rep.to.clone(),
            started_ms,
            outcome: "done".into(),
            error: None,
            resumed_on: None,
            epoch: rep.epoch,
            pause_ms: Some(rep.pause_ms),
            final_delta_bytes: Some(rep.final_delta_bytes),
            precopy_rounds: rep.precopy_rounds,
            precopy_bytes: rep.precopy_bytes,
            total_ms: rep.total_ms,
            spec_id,
        },
        Err(e) => Record {
            from: sites.me.to_string(),
            to: to.to_string(),
            started_ms,
            outcome: "failed".into(),
            error: Some(e.clone()),
            resumed_on: Some(sites.me.to_string()),
            epoch: seen.epoch,
            pause_ms: seen.paused.map(|p| p.elapsed().as_secs_f64() * 1000.0),
            final_delta_bytes: None,
            precopy_rounds: seen.rounds,
            precopy_bytes: seen.precopy_bytes,
            total_ms: t0.elapsed().as_secs_f64() * 1000.0,
            spec_id,
        },
    };
    remember(sites, site, record).await;
    r
}

async fn run(
    sites: &Sites,
    site: &SiteName,
    to: &NodeName,
    emit: &(dyn Fn(Progress) + Sync),
) -> Result<Report, String> {
    let t0 = now();
    let proxy = sites
        .proxy
        .get()
        .ok_or("this node does not serve sites yet")?
        .clone();
    let (role, epoch, _) = sites
        .local_copy(site)
        .await
        .ok_or_else(|| format!("this node holds no copy of '{site}'"))?;
    if role != Role::Master {
        return Err(format!("this node is not the master of '{site}'"));
    }
    if *to == sites.me {
        return Err(format!("site '{site}' is already served by '{to}'"));
    }
    info!(%site, %to, %epoch, "migrating");
    emit(Progress::Started {
        site: site.to_string(),
        from: sites.me.to_string(),
        to: to.to_string(),
        epoch: epoch.0,
    });
    let pin = Request::MigratePin {
        site: site.clone(),
        unpin: false,
    };
    call_ok(sites, to, &pin)
        .await
        .map_err(|e| format!("{to} cannot take a copy: {e}"))?;

    let first_total = first_round_total(sites, site, to).await;
    // 1. Pre-copy while the site serves.
    let mut rounds = 0;
    let mut precopy_bytes = 0;
    loop {
        rounds += 1;
        let r0 = now();
        let before = sent_to(sites, site, to);
        let head = sites.flush(site.clone()).await?;
        let total = if rounds == 1 { first_total } else { None };
        let waited = wait_copy_reporting(sites, to, site, head, rounds, before, total, emit).await;
        if let Err(e) = waited {
            unpin(sites, site, to).await;
            return Err(e);
        }
        let bytes = sent_to(sites, site, to).saturating_sub(before);
        precopy_bytes += bytes;
        emit(Progress::Copied {
            round: rounds,
            bytes,
            seq: head.seq,
            ms: ms(r0),
        });
        if bytes <= PRECOPY_SMALL || rounds >= PRECOPY_ROUNDS {
            break;
        }
    }

    // 2. Pause: hold new work, let in-flight work finish.
    let paused = now();
    let gates = proxy.gates();
    gates.pause(site.as_str());
    emit(Progress::Paused {
        in_flight: gates.in_flight(site.as_str()),
    });
    // A static site's in-flight requests are reads of files that the
    // final snapshot holds too: they go on from this copy (a slow download
    // completes) and the pause need not wait for them. A command's
    // in-flight requests must end before it stops.
    let view = crate::sites::model_view(&sites.gossip.view().borrow());
    let is_static = crate::serving::current_specs(&view)
        .get(site)
        .is_some_and(|s| s.runtime == model::Runtime::Static);
    let all_ended = if is_static {
        gates.in_flight(site.as_str()) == 0
    } else {
        gates.drain(site.as_str(), DRAIN_TIMEOUT, DRAIN_GRACE).await
    };
    emit(Progress::Drained {
        ms: ms(paused),
        all_ended,
    });

    // 3. Stop the command; the final snapshot.
    let before = sent_to(sites, site, to);
    let last = async {
        freeze(sites, site).await?;
        sites.flush(site.clone()).await
    }
    .await;
    let head = match last {
        Ok(h) => h,
        Err(e) => {
            resume(sites, site, to).await;
            return Err(e);
        }
    };
    emit(Progress::Stopped {
        seq: head.seq,
        ms: ms(paused),
    });

    // 4. The target pulls the last delta, claims the epoch this node votes
    // for it in (the next free one) once a majority followed, serves.
    let next = match sites.hand_over(site.clone(), to.clone()).await {
        Ok(e) => e,
        Err(e) => {
            resume(sites, site, to).await;
            return Err(format!("hand-over to {to} failed: {e}"));
        }
    };
    let take = Request::MigrateTakeOver {
        site: site.clone(),
        epoch: next.0,
        seq: head.seq,
        guid: head.guid.to_string(),
        within_ms: TAKEOVER_TIMEOUT.as_millis() as u64,
    };
    // A target that dies is seen dead by the failure detector long before
    // its connection times out: the site resumes here at once.
    let took = tokio::select! {
        r = tokio::time::timeout(TAKEOVER_TIMEOUT + Duration::from_secs(2), call_ok(sites, to, &take)) => {
            r.unwrap_or_else(|_| Err(format!("{to} did not take over within {TAKEOVER_TIMEOUT:?}")))
        }
        why = died(sites, to, "the hand-over") => Err(why),
    };
    if let Err(e) = took {
        resume(sites, site, to).await;
        return Err(format!("hand-over to {to} failed: {e}"));
    }

    // 5. Release: the queue, in order, then later arrivals go to the target.
    let redirect = gates.redirect(site.as_str(), to.as_str());
    let pause = paused.elapsed();
    let final_bytes = sent_to(sites, site, to).saturating_sub(before);
    emit(Progress::HandedOver {
        final_bytes,
        ms: pause.as_millis() as u64,
    });
    info!(%site, %to, epoch = %next, pause_ms = pause.as_millis() as u64, final_bytes, "site handed over");
    let report = Report {
        site: site.to_string(),
        from: sites.me.to_string(),
        to: to.to_string(),
        epoch: next.0,
        pause_ms: pause.as_secs_f64() * 1000.0,
        final_delta_bytes: final_bytes,
        precopy_rounds: rounds,
        precopy_bytes,
        total_ms: t0.elapsed().as_secs_f64() * 1000.0,
    };
    let sites2 = sites.clone();
    let (site2, to2) = (site.clone(), to.clone());
    tokio::spawn(async move { after_handover(&sites2, &site2, &to2, next, redirect).await });
    emit(Progress::Done(report.clone()));
    Ok(report)
}

/// Once this node's view shows the target as master, the frozen command
/// may go (this node is no longer master, so it does not restart); the
/// redirect stays a while longer for peers whose views lag. It ends
/// sooner if this node serves the site again meanwhile (`Sites::ready`
/// opens the gate); its end leaves a later migration's gate alone.
async fn after_handover(
    sites: &Sites,
    site: &SiteName,
    to: &NodeName,
    epoch: Epoch,
    redirect: proxy::Redirect,
) {
    let t0 = now();
    let mut view_rx = sites.gossip.view();
    while t0.elapsed() < Duration::from_secs(60) {
        let view = crate::sites::model_view(&view_rx.borrow_and_update());
        if model::serving_master(&view, site).is_some_and(|(n, e)| n == *to && e >= epoch) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), view_rx.changed()).await;
    }
    thaw(sites, site);
    unpin(sites, site, to).await;
    tokio::time::sleep(REDIRECT_LINGER).await;
    if let Some(p) = sites.proxy.get() {
        p.gates().clear_redirect(site.as_str(), redirect);
    }
}

async fn unpin(sites: &Sites, site: &SiteName, to: &NodeName) {
    let req = Request::MigratePin {
        site: site.clone(),
        unpin: true,
    };
    if let Err(e) = call_ok(sites, to, &req).await {
        warn!(%site, %to, error = %e, "cannot unpin the migration target's copy");
    }
}

/// The hand-over failed: the site serves here again, queue released here,
/// once this node holds the site's lease again (the nodes that followed
/// its vote for the target echo it only once they voted for it again, at
/// a later epoch, out of the target's lease).
async fn resume(sites: &Sites, site: &SiteName, to: &NodeName) {
    sites.abort_hand_over(site.clone()).await;
    thaw(sites, site);
    if !wait_serving(sites, site, Duration::from_secs(15)).await {
        warn!(%site, "the site's command did not come back within 15 s");
    }
    if let Some(p) = sites.proxy.get() {
        let gates = p.gates();
        let t0 = now();
        while !gates.leased(site.as_str()) && t0.elapsed() < RESUME_LEASE_WAIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !gates.leased(site.as_str()) {
            warn!(%site, "no lease {RESUME_LEASE_WAIT:?} after the failed hand-over: work waits for it, then is refused");
        }
        gates.open(site.as_str());
    }
    // The target may be dead: unpinning it must not hold up the report.
    let (sites, site, to) = (sites.clone(), site.clone(), to.clone());
    tokio::spawn(async move { unpin(&sites, &site, &to).await });
}

/// The target's side: pin or unpin a copy.
pub async fn serve_pin(
    sites: &Sites,
    site: SiteName,
    unpin: bool,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let ev = if unpin {
        MigrationEvent::Unpin(site)
    } else {
        MigrationEvent::Pin(site)
    };
    let reply = match sites.migration(ev).await {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::err(500, e),
    };
    rpc::write_frame(&mut s.writer, &reply).await
}

/// The target's side: where its copy is.
pub async fn serve_status(
    sites: &Sites,
    site: SiteName,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let c = sites.local_copy(&site).await;
    let reply = CopyReply {
        role: c.map(|(r, _, _)| {
            match r {
                Role::Master => "master",
                Role::Replica => "replica",
                Role::Diverged => "diverged",
            }
            .to_owned()
        }),
        epoch: c.map_or(0, |(_, e, _)| e.0),
        seq: c.and_then(|(_, _, h)| h).map(|h| h.seq),
        guid: c.and_then(|(_, _, h)| h).map(|h| h.guid.to_string()),
    };
    rpc::write_frame(&mut s.writer, &reply).await
}

/// The target's side of the hand-over: catch up with `head` from `peer`,
/// claim `epoch`, and answer once the site is served here.
pub async fn serve_takeover(
    sites: &Sites,
    peer: &str,
    site: SiteName,
    epoch: u64,
    head: Option<Head>,
    within_ms: u64,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let reply = takeover(sites, peer, site, epoch, head, within_ms).await;
    rpc::write_frame(&mut s.writer, &reply).await
}

async fn takeover(
    sites: &Sites,
    peer: &str,
    site: SiteName,
    epoch: u64,
    head: Option<Head>,
    within_ms: u64,
) -> Reply {
    let Some(head) = head else {
        return Reply::err(400, "malformed snapshot guid");
    };
    let Ok(from) = peer.parse::<NodeName>() else {
        return Reply::err(400, "the asker has no node name");
    };
    let within = Duration::from_millis(within_ms);
    let t0 = now();
    // A copy that cannot take over says so at once, rather than let the
    // source wait out the whole hand-over timeout with its site paused.
    match sites.local_copy(&site).await {
        Some((Role::Replica, e, _)) if e.0 < epoch => {}
        Some((Role::Master, e, _)) if e.0 == epoch => {}
        None => return Reply::err(409, format!("this node holds no copy of '{site}'")),
        Some((role, e, _)) => {
            return Reply::err(
                409,
                format!(
                    "this node's copy of '{site}' is {role:?} at epoch {e}; cannot claim epoch {epoch}"
                ),
            );
        }
    }
    let ev = MigrationEvent::TakeOver {
        site: site.clone(),
        from,
        epoch: Epoch(epoch),
        head,
        within,
    };
    if let Err(e) = sites.migration(ev).await {
        return Reply::err(500, e);
    }
    loop {
        match sites.local_copy(&site).await {
            Some((Role::Master, e, _)) if e.0 == epoch => break,
            Some((_, e, _)) if e.0 > epoch => {
                return Reply::err(409, format!("site '{site}' moved on to epoch {e}"));
            }
            _ => {}
        }
        if t0.elapsed() > within {
            return Reply::err(504, "the final snapshot did not arrive in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let left = within.saturating_sub(t0.elapsed());
    if !wait_serving(sites, &site, left).await {
        return Reply::err(
            504,
            "promoted, but the site's command did not start in time",
        );
    }
    info!(%site, epoch, ms = t0.elapsed().as_millis() as u64, "took the site over");
    Reply::ok()
}
