//! The master's side: pre-copy, pause and drain, freeze, final
//! snapshot, hand-over, release, and the resume when the hand-over fails.

use std::time::Duration;

use model::election::{Head, Role};
use model::{Epoch, NodeName, SiteName};
use tracing::{info, warn};

use super::common::{
    PRECOPY_ROUNDS, PRECOPY_SMALL, call, call_ok, died, ms, now, sent_to, wait_serving,
};
use super::records::{Seen, remember, unix_ms};
use crate::migration_log::{Progress, Record, Report};
use crate::rpc::{CopyReply, Request};
use crate::sites::Sites;

/// How long the pause waits for in-flight requests to finish before it
/// asks long-lived connections (WebSockets, TLS streams) to close.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long closed connections get to end after the drain timeout.
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The target's time to pull the last delta and serve.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// One pre-copy round (a full copy of a large site takes a while).
pub(super) const ROUND_TIMEOUT: Duration = Duration::from_secs(900);

/// How long a failed hand-over waits for this node's lease, before the
/// queue is released (to wait for it in the gate, then be refused).
pub(super) const RESUME_LEASE_WAIT: Duration = Duration::from_secs(10);

/// How long the old master forwards arrivals after every view caught up.
pub(super) const REDIRECT_LINGER: Duration = Duration::from_secs(30);

/// How often a pre-copy round reports the bytes sent so far.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Bytes of the files under `dir` (a site's size, for a full copy's
/// progress), counting at most 200 000 entries.
pub(super) fn dir_bytes(dir: &std::path::Path) -> u64 {
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
pub(super) async fn first_round_total(
    sites: &Sites,
    site: &SiteName,
    to: &NodeName,
) -> Option<u64> {
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
pub(super) async fn wait_copy_reporting(
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

/// Waits until `to`'s copy of `site` holds `head`: its head is `head`, or
/// a later snapshot of this master's chain (under writes the master
/// snapshots again while the target pulls, and a replica that lags pulls
/// the newest snapshot, past `head`).
pub(super) async fn wait_copy(
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

/// Stops the site's command on this node and keeps it stopped.
pub(super) async fn freeze(sites: &Sites, site: &SiteName) -> Result<(), String> {
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

pub(super) fn thaw(sites: &Sites, site: &SiteName) {
    sites
        .frozen
        .lock()
        .expect("frozen lock is never poisoned")
        .remove(site);
    sites.wake_serving.notify_one();
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

pub(super) async fn run(
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
        .is_some_and(|s| !crate::runtimes::kind_of(&s.runtime).runs_site_code());
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
pub(super) async fn after_handover(
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

pub(super) async fn unpin(sites: &Sites, site: &SiteName, to: &NodeName) {
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
pub(super) async fn resume(sites: &Sites, site: &SiteName, to: &NodeName) {
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
