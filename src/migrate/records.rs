//! A migration's progress, as the node that runs it keeps it (the log
//! the admin API shows) and the records it leaves (on disk and gossiped).

use std::time::Instant;

use model::SiteName;
use tracing::warn;

use super::common::now;
use crate::migration_log::{HISTORY_KEPT, HISTORY_PREFIX, Progress, Record};
use crate::sites::Sites;

pub(super) fn record(sites: &Sites, site: &SiteName, p: &Progress) {
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
pub(super) struct Seen {
    pub(super) epoch: u64,
    pub(super) rounds: u32,
    pub(super) precopy_bytes: u64,
    pub(super) paused: Option<Instant>,
}

impl Seen {
    pub(super) fn note(&mut self, p: &Progress) {
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
pub(super) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Keeps `r` among the site's last [`HISTORY_KEPT`] migrations here, on
/// disk and in gossip.
pub(super) async fn remember(sites: &Sites, site: &SiteName, r: Record) {
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
