//! Serving: wires the proxy engine (`proxy/`) into the daemon.
//!
//! - **Listeners**: `--http` / `--https` addresses, bound after the mesh
//!   and before `ready.json`; their bound addresses are gossiped as
//!   `node:http` / `node:https`.
//! - **Routes**: one task turns every gossip view into a `proxy::Routes`
//!   snapshot: every site with a spec gets a target — this node's local
//!   backend when this node is its serving master, a tunnel to the master
//!   when another node is, 503 with `Retry-After: 1` when no master serves.
//! - **Runtimes**: the same task starts a command site's process when this
//!   node becomes its master and stops it as soon as the view says this
//!   node no longer is (demotion, deletion). A push restarts it on the new
//!   content. A command site's own writes are found by polling the store
//!   every snapshot interval and handed to the site driver.
//! - **Tunnels**: `proxy::Tunnels` over mesh streams. A tunnel stream
//!   starts with [`rpc::TUNNEL_STREAM`], then the proxy's `TunnelHeader`;
//!   `mesh_server::dispatch_stream` tells it from a request stream (which starts with
//!   0) and hands it to `Proxy::serve_tunnel`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use gossip::Gossip;
use model::{NodeName, SiteKey, SiteName, SiteSpec, View};
use proxy::{Backend, BoxFuture, BoxRead, BoxWrite, Proxy, ProxyConfig, Routes, Target};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::rpc;
use crate::runtimes::{self, Kind, Start};
use crate::sites::{Sites, model_view};

/// What a site's 503 tells clients while no master serves it.
const RETRY_AFTER_S: u32 = 1;
/// Sites whose content a push replaced on this node (their command
/// restarts on the new content).
static PUSHED: LazyLock<broadcast::Sender<SiteName>> = LazyLock::new(|| broadcast::channel(64).0);

/// Called by `push` once an upload is swapped in on the master.
pub fn note_push(site: &SiteName) {
    let _ = PUSHED.send(site.clone());
}

/// The bound proxy listeners.
#[derive(Debug)]
pub struct Listeners {
    http: Vec<TcpListener>,
    https: Vec<TcpListener>,
}

/// Pending connections the kernel may queue per listener (it caps this at
/// `net.core.somaxconn`). Larger than tokio's 1024: when many clients
/// connect at once, or the connection limit holds new ones back, a full
/// queue drops handshakes, and clients then wait for SYN-ACK retransmits
/// (1 s, 2 s, 4 s ...).
const LISTEN_BACKLOG: u32 = 4096;

/// A listener bound like `TcpListener::bind` (with `SO_REUSEADDR`), with
/// a deeper accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(LISTEN_BACKLOG)
}

impl Listeners {
    /// Binds every address; on error nothing stays bound.
    pub async fn bind(http: &[SocketAddr], https: &[SocketAddr]) -> anyhow::Result<Listeners> {
        let mut l = Listeners {
            http: Vec::new(),
            https: Vec::new(),
        };
        for (what, addrs, out) in [("HTTP", http, &mut l.http), ("HTTPS", https, &mut l.https)] {
            for a in addrs {
                let sock = listen(*a)
                    .map_err(|e| anyhow::anyhow!("cannot bind {what} address {a}: {e}"))?;
                out.push(sock);
            }
        }
        Ok(l)
    }

    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    pub fn https_addrs(&self) -> Vec<SocketAddr> {
        self.https
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }
}

/// Gossips the bound proxy addresses (the `node:http` / `node:https` keys
/// that `MeshConfig.proxy` fills at start).
pub async fn publish_addrs(gossip: &Gossip, l: &Listeners) {
    let join = |v: Vec<SocketAddr>| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    gossip.set(gossip::keys::HTTP, &join(l.http_addrs())).await;
    gossip
        .set(gossip::keys::HTTPS, &join(l.https_addrs()))
        .await;
}

/// Proxy tunnels over the QUIC mesh.
struct MeshTunnels {
    gossip: Arc<Gossip>,
}

impl proxy::Tunnels for MeshTunnels {
    fn open<'a>(
        &'a self,
        node: &'a str,
        header: proxy::TunnelHeader,
    ) -> BoxFuture<'a, io::Result<(BoxRead, BoxWrite)>> {
        Box::pin(async move {
            let name: NodeName = node
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{e}")))?;
            let wire = header
                .encode()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let mut s = self
                .gossip
                .open_stream(&name)
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::ConnectionRefused, e))?;
            let mut first = Vec::with_capacity(1 + wire.len());
            first.push(rpc::TUNNEL_STREAM);
            first.extend_from_slice(&wire);
            s.writer.write_all(&first).await?;
            Ok((s.reader, s.writer))
        })
    }
}

/// The running serving side of a node.
pub struct Serving {
    pub proxy: Proxy,
    listeners: Vec<JoinHandle<()>>,
    manager: JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").finish_non_exhaustive()
    }
}

impl Serving {
    /// Starts the routes/runtimes task and serves the listeners.
    pub fn start(
        sites: Sites,
        listeners: Listeners,
        data_dir: &Path,
        snapshot_interval: Duration,
        quorum_guard: bool,
        max_connections: usize,
    ) -> anyhow::Result<Serving> {
        let logs = data_dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", logs.display()))?;
        crate::logs::set_dir(logs.clone());
        let run_dir = data_dir.join("run");
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", run_dir.display()))?;
        stop_leftovers(&run_dir, &sites.me);
        let (routes_tx, routes_rx) = watch::channel(Arc::new(Routes::new()));
        let fd_limit = match proxy::raise_fd_limit() {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "cannot read the open-file limit; assuming 1024");
                1024
            }
        };
        let fitted = proxy::fit_to_fd_limit(max_connections, fd_limit);
        if fitted < max_connections {
            warn!(
                max_connections,
                fd_limit,
                fitted,
                "the open-file limit holds fewer client connections; raise it (ulimit -n, LimitNOFILE)"
            );
        }
        let proxy = Proxy::new(
            ProxyConfig {
                max_connections: fitted,
                ..ProxyConfig::default()
            },
            routes_rx,
            Arc::new(MeshTunnels {
                gossip: sites.gossip.clone(),
            }),
        );
        let mut tasks = Vec::new();
        for l in listeners.http {
            let p = proxy.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = p.serve_http(l).await {
                    warn!(error = %e, "HTTP listener failed");
                }
            }));
        }
        for l in listeners.https {
            let p = proxy.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = p.serve_https(l).await {
                    warn!(error = %e, "HTTPS listener failed");
                }
            }));
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let manager = Manager {
            me: sites.me.clone(),
            sites,
            logs,
            run_dir,
            routes_tx,
            last: None,
            runtimes: BTreeMap::new(),
            mounts: HashMap::new(),
            wake: Arc::new(Notify::new()),
            frozen_at: HashMap::new(),
            known_specs: BTreeMap::new(),
            snapshot_interval,
            quorum_guard,
            polling: None,
            fingerprints: Arc::default(),
            held: BTreeSet::new(),
        };
        let manager = tokio::spawn(manager.run(stop_rx));
        Ok(Serving {
            proxy,
            listeners: tasks,
            manager,
            stop: Some(stop_tx),
        })
    }

    /// Closes the listeners (and their connections) and stops every
    /// runtime, waiting for the processes to exit.
    pub async fn shutdown(mut self) {
        for t in &self.listeners {
            t.abort();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.manager).await;
        for t in self.listeners.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        for t in &self.listeners {
            t.abort();
        }
        // Dropping the stop sender ends the manager, which stops runtimes.
    }
}

/// A runtime this node runs as a site's master, with its kind.
struct Instance {
    kind: Box<dyn Kind>,
    running: Box<dyn crate::runtimes::Running>,
}

/// A route entry in comparable form, to publish only real changes.
type RouteKey = Vec<(String, Vec<String>, Target)>;

struct Manager {
    me: NodeName,
    sites: Sites,
    logs: PathBuf,
    /// `<site>.pid`: the process group of each running command.
    run_dir: PathBuf,
    routes_tx: watch::Sender<Arc<Routes>>,
    last: Option<RouteKey>,
    runtimes: BTreeMap<SiteName, Instance>,
    mounts: HashMap<SiteName, PathBuf>,
    /// Woken when a runtime changes state.
    wake: Arc<Notify>,
    /// The sites routed last time (see `remember_specs`).
    known_specs: BTreeMap<SiteName, SiteSpec>,
    /// A frozen site's last command address (HTTP, TLS) while a migration
    /// holds it.
    frozen_at: HashMap<SiteName, (SocketAddr, SocketAddr)>,
    snapshot_interval: Duration,
    /// Serve only while a strict majority of the known members is alive.
    quorum_guard: bool,
    /// The write poll in flight, if any.
    polling: Option<JoinHandle<()>>,
    /// The last tree fingerprint of each local command site.
    fingerprints: Arc<std::sync::Mutex<HashMap<SiteName, Option<Fingerprint>>>>,
    /// Sites this node claims but cannot serve yet (the promotion or the
    /// command's start under way): their gates hold requests, which other
    /// nodes already send here, rather than answer 503.
    held: BTreeSet<SiteName>,
}

type Fingerprint = storage::TreeFingerprint;

/// The newest spec of every site in the view whose incarnation is not
/// deleted.
/// The sites to route: those whose spec the view shows, and those routed
/// before whose spec no member publishes now and that were not deleted: a
/// master that stepped down (cut off in a minority) stops publishing the
/// spec, and its site must answer 503 there, not 404.
fn remember_specs(
    known: &mut BTreeMap<SiteName, SiteSpec>,
    view: &View,
) -> BTreeMap<SiteName, SiteSpec> {
    let mut specs = current_specs(view);
    for (site, spec) in known.iter() {
        let deleted = view.members.values().any(|m| {
            m.keys
                .iter()
                .any(|k| matches!(k, SiteKey::Deleted(s, id) if s == site && *id == spec.id))
        });
        if !deleted && !specs.contains_key(site) {
            specs.insert(site.clone(), spec.clone());
        }
    }
    known.clone_from(&specs);
    specs
}

pub fn current_specs(view: &View) -> BTreeMap<SiteName, SiteSpec> {
    let mut specs: BTreeMap<SiteName, SiteSpec> = BTreeMap::new();
    let mut deleted: BTreeMap<SiteName, Vec<u64>> = BTreeMap::new();
    for m in view.members.values() {
        if m.left {
            continue;
        }
        for k in &m.keys {
            match k {
                SiteKey::Spec(s, spec) => {
                    if specs
                        .get(s)
                        .is_none_or(|b| (spec.id, spec.version) > (b.id, b.version))
                    {
                        specs.insert(s.clone(), spec.clone());
                    }
                }
                SiteKey::Deleted(s, id) => deleted.entry(s.clone()).or_default().push(*id),
                SiteKey::Copy(..) | SiteKey::Vote(..) => {}
            }
        }
    }
    specs.retain(|s, spec| !deleted.get(s).is_some_and(|ids| ids.contains(&spec.id)));
    specs
}

impl Manager {
    async fn run(mut self, mut stop: tokio::sync::oneshot::Receiver<()>) {
        let mut view_rx = self.sites.gossip.view();
        let wake_serving = self.sites.wake_serving.clone();
        let mut pushed = PUSHED.subscribe();
        let mut tick = tokio::time::interval(self.snapshot_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let view = model_view(&view_rx.borrow_and_update());
            self.rebuild(&view).await;
            tokio::select! {
                changed = view_rx.changed() => if changed.is_err() { break },
                _ = self.wake.notified() => {}
                _ = wake_serving.notified() => {}
                p = pushed.recv() => match p {
                    Ok(site) => self.restart(&site).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = tick.tick() => self.poll_writes(),
                _ = &mut stop => break,
            }
        }
        self.routes_tx.send_replace(Arc::new(Routes::new()));
        let all: Vec<SiteName> = self.runtimes.keys().cloned().collect();
        for site in all {
            self.stop_runtime(&site, true).await;
        }
        if let Some(p) = self.polling.take() {
            p.abort();
        }
    }

    /// The site's mountpoint on this node (asked once, then remembered).
    async fn mount(&mut self, site: &SiteName) -> Option<PathBuf> {
        if let Some(p) = self.mounts.get(site) {
            return Some(p.clone());
        }
        let store = self.sites.store.clone();
        let s2 = site.clone();
        match tokio::task::spawn_blocking(move || store.mountpoint(&s2)).await {
            Ok(Ok(p)) => {
                self.mounts.insert(site.clone(), p.clone());
                Some(p)
            }
            Ok(Err(e)) => {
                warn!(%site, error = %e, "cannot find the site's mountpoint");
                None
            }
            Err(e) => {
                warn!(%site, error = %e, "mountpoint task failed");
                None
            }
        }
    }

    async fn rebuild(&mut self, view: &View) {
        let specs = remember_specs(&mut self.known_specs, view);
        let mut entries: RouteKey = Vec::new();
        let mut keep: Vec<SiteName> = Vec::new();
        let mut hold: BTreeSet<SiteName> = BTreeSet::new();
        let unavailable = Target::Unavailable {
            retry_after_s: RETRY_AFTER_S,
        };
        // A node that sees no majority alive is on the minority side of a
        // split, or alone: it serves nothing (503), so that a master cut
        // off from the majority stops taking writes while the majority
        // elects another. Its commands keep running, ready for the heal.
        let known = self
            .sites
            .known
            .lock()
            .expect("known lock is never poisoned")
            .clone();
        let fenced =
            !model::quorum_of(view, &self.me, self.quorum_guard, &known).allows_promotion();
        if fenced {
            keep.extend(self.runtimes.keys().cloned());
        }
        // Sites a live migration holds: their commands stay stopped.
        let frozen: BTreeMap<SiteName, bool> = self
            .sites
            .frozen
            .lock()
            .expect("frozen lock is never poisoned")
            .clone();
        for (site, spec) in &specs {
            let master = if fenced {
                None
            } else {
                model::serving_master(view, site)
            };
            let mine = master.as_ref().is_some_and(|(n, _)| *n == self.me);
            let target = match master {
                Some((node, _)) if node == self.me && frozen.contains_key(site) => {
                    // The route stays local, to the stopped command's
                    // address: the site's gate holds the requests.
                    let last = self
                        .runtimes
                        .get(site)
                        .and_then(|r| r.running.addrs())
                        .or_else(|| self.frozen_at.get(site).copied());
                    if let Some(r) = self.runtimes.get(site) {
                        if r.kind.runs_site_code() {
                            info!(%site, "stopping the site's command for a migration");
                        }
                        self.stop_runtime(site, true).await;
                    }
                    if let Some(l) = last {
                        self.frozen_at.insert(site.clone(), l);
                    }
                    self.sites
                        .frozen
                        .lock()
                        .expect("frozen lock is never poisoned")
                        .insert(site.clone(), true);
                    match last {
                        Some((addr, tls)) => Target::Local {
                            backend: Backend::Tcp(addr),
                            tls: Some(tls),
                        },
                        None => {
                            let kind = runtimes::kind_of(&spec.runtime);
                            match self.mount(site).await {
                                Some(dir) => kind
                                    .target_without_instance(dir)
                                    .unwrap_or_else(|| unavailable.clone()),
                                None => unavailable.clone(),
                            }
                        }
                    }
                }
                // Claimed, but the promotion (writable, remounted) has
                // not finished: nothing may touch the copy yet.
                Some((node, _)) if node == self.me && !self.sites.is_ready(site) => {
                    unavailable.clone()
                }
                Some((node, epoch)) if node == self.me => {
                    keep.push(site.clone());
                    self.ensure_runtime(site, spec, epoch).await
                }
                Some((node, _)) => Target::Remote {
                    node: node.to_string(),
                },
                None => unavailable.clone(),
            };
            if mine && matches!(target, Target::Unavailable { .. }) {
                hold.insert(site.clone());
            }
            entries.push((
                site.to_string(),
                spec.domains.iter().map(|d| d.to_string()).collect(),
                target,
            ));
        }
        // Hold what this node claims but cannot serve yet; release what it
        // serves now (or no longer claims) once the routes say where to go.
        let proxy = self.sites.proxy.get().cloned();
        if let Some(g) = proxy.as_ref().map(|p| p.gates()) {
            for site in hold.difference(&self.held) {
                debug!(%site, "holding requests until the claimed site is served here");
                g.pause(site.as_str());
            }
        }
        let release: Vec<SiteName> = self.held.difference(&hold).cloned().collect();
        self.held = hold;
        let gone: Vec<SiteName> = self
            .runtimes
            .keys()
            .filter(|s| !keep.contains(s))
            .cloned()
            .collect();
        let waiting: BTreeMap<SiteName, Vec<tokio::sync::oneshot::Sender<()>>> = std::mem::take(
            &mut *self
                .sites
                .quiesce
                .lock()
                .expect("quiesce lock is never poisoned"),
        );
        for site in gone {
            if self.runtimes[&site].kind.runs_site_code() {
                info!(%site, "no longer this site's master: stopping its runtime");
            }
            // A master stepping down waits for its command to be gone.
            self.stop_runtime(&site, waiting.contains_key(&site)).await;
        }
        for (site, waiters) in waiting {
            if let Some(r) = self.runtimes.get(&site) {
                // Kept (a fenced node keeps its commands for the heal),
                // but the copy steps down: the command stops now.
                if r.kind.runs_site_code() {
                    info!(%site, "stepping down: stopping the site's command");
                }
                self.stop_runtime(&site, true).await;
            }
            for w in waiters {
                let _ = w.send(());
            }
        }
        self.mounts.retain(|s, _| specs.contains_key(s));
        self.frozen_at.retain(|s, _| frozen.contains_key(s));
        if self.last.as_ref() != Some(&entries) {
            let mut routes = Routes::new();
            for (site, domains, target) in &entries {
                let d: Vec<&str> = domains.iter().map(String::as_str).collect();
                if let Err(e) = routes.insert_site(site, &d, target.clone()) {
                    warn!(%site, error = %e, "cannot route a site's domains");
                }
            }
            self.routes_tx.send_replace(Arc::new(routes));
            self.last = Some(entries);
        }
        if let Some(g) = proxy.as_ref().map(|p| p.gates()) {
            for site in release {
                debug!(%site, "releasing the requests held for the site");
                g.open(site.as_str());
            }
        }
    }

    /// Starts (or keeps) the site's runtime; its target.
    async fn ensure_runtime(
        &mut self,
        site: &SiteName,
        spec: &SiteSpec,
        epoch: model::Epoch,
    ) -> Target {
        let unavailable = Target::Unavailable {
            retry_after_s: RETRY_AFTER_S,
        };
        let ready_since = self.sites.ready_since(site);
        let stale = self
            .runtimes
            .get(site)
            .is_some_and(|r| !r.running.is_for(&spec.runtime, spec.id, ready_since));
        if stale {
            self.stop_runtime(site, false).await;
        }
        if !self.runtimes.contains_key(site) {
            let Some(dir) = self.mount(site).await else {
                return unavailable;
            };
            let kind = runtimes::kind_of(&spec.runtime);
            let started = kind.start(Start {
                site,
                node: &self.me,
                epoch,
                spec_id: spec.id,
                ready_since,
                dir,
                log: self.logs.join(format!("{site}.log")),
                wake: self.wake.clone(),
            });
            match started {
                Ok(running) => {
                    self.runtimes
                        .insert(site.clone(), Instance { kind, running });
                }
                Err(e) => {
                    warn!(%site, error = %e, "cannot start the site's runtime");
                    return unavailable;
                }
            }
        }
        let r = &self.runtimes[site].running;
        if let Some(pid) = r.pid() {
            record_pid(&self.run_dir, site, pid);
        }
        r.target().unwrap_or(unavailable)
    }

    /// Stops a runtime: at once in the background (routes no longer point
    /// to it), or waiting for the process to be gone.
    async fn stop_runtime(&mut self, site: &SiteName, wait: bool) {
        let Some(r) = self.runtimes.remove(site) else {
            return;
        };
        let _ = std::fs::remove_file(self.run_dir.join(format!("{site}.pid")));
        if wait {
            r.running.stop().await;
        } else {
            tokio::spawn(r.running.stop());
        }
    }

    /// A push replaced the site's content: the command starts again on it.
    async fn restart(&mut self, site: &SiteName) {
        if self
            .runtimes
            .get(site)
            .is_some_and(|r| r.kind.runs_site_code())
        {
            info!(%site, "content replaced: restarting the site's command");
            self.stop_runtime(site, true).await;
        }
    }

    /// Asks the store whether each local command site changed since its
    /// last snapshot, and tells the driver about the ones that did.
    fn poll_writes(&mut self) {
        if self.polling.as_ref().is_some_and(|p| !p.is_finished()) {
            return;
        }
        let sites: Vec<SiteName> = self
            .runtimes
            .iter()
            .filter(|(_, r)| r.kind.runs_site_code())
            .map(|(s, _)| s.clone())
            .collect();
        if sites.is_empty() {
            return;
        }
        let handle = self.sites.clone();
        let prints = self.fingerprints.clone();
        let mounts = self.mounts.clone();
        self.polling = Some(tokio::spawn(async move {
            let store = handle.store.clone();
            let changed = tokio::task::spawn_blocking(move || {
                let mut prints = prints.lock().unwrap_or_else(|e| e.into_inner());
                sites
                    .into_iter()
                    .filter(|s| {
                        // The store's answer where it has one; where it
                        // cannot tell (zfs-fuse accounts small writes only
                        // at a later txg), the tree's own fingerprint.
                        let print = mounts
                            .get(s)
                            .and_then(|m| storage::tree_fingerprint(m, &[".ringhost"]));
                        let before = prints.insert(s.clone(), print);
                        match store.changed(s) {
                            Ok(storage::Changed::Yes) => true,
                            Ok(storage::Changed::Unknown) => {
                                print.is_some() && before.is_some_and(|b| b != print)
                            }
                            _ => false,
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for site in changed {
                handle.mark_written(site);
            }
        }));
    }
}

/// Notes the process group of a site's running command, so that the next
/// start of this node stops it if this one dies without stopping it.
fn record_pid(run_dir: &Path, site: &SiteName, pid: u32) {
    let path = run_dir.join(format!("{site}.pid"));
    if std::fs::read_to_string(&path).is_ok_and(|t| t.trim() == pid.to_string()) {
        return;
    }
    if let Err(e) = std::fs::write(&path, pid.to_string()) {
        warn!(%site, error = %e, "cannot record the command's pid");
    }
}

/// Stops the commands a previous run of this node left running (it was
/// killed, not stopped): they would keep the site's files open and busy,
/// and no request reaches them any more. A recorded pid counts only if
/// that process still carries this node's and the site's names in its
/// environment (pids are reused).
fn stop_leftovers(run_dir: &Path, me: &NodeName) {
    let Ok(dir) = std::fs::read_dir(run_dir) else {
        return;
    };
    for e in dir.flatten() {
        let path = e.path();
        let site = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pid: Option<u32> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        let _ = std::fs::remove_file(&path);
        let Some(pid) = pid else { continue };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        let ours = vars.contains(&format!("RINGHOST_SITE={site}").as_bytes())
            && vars.contains(&format!("RINGHOST_NODE={me}").as_bytes());
        if !ours {
            continue;
        }
        info!(%site, pid, "stopping the site's command left running by a previous run");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
    }
}
