//! Starting a migration: on any node (the admin API), relayed to the
//! site's master, which runs it.

use model::{NodeName, SiteName};

use super::records::record;
use super::source::orchestrate;
use crate::migration_log::{Log, Progress};
use crate::rpc::{self, Request};
use crate::sites::Sites;

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
pub(super) async fn relay(sites: &Sites, site: &SiteName, master: &NodeName, to: &NodeName) {
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
