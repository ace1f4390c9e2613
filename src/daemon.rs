//! The node daemon: checks its settings, takes its data directory, joins
//! the mesh, serves the admin API and leaves politely on SIGTERM/SIGINT.
//!
//! Start-up order is what keeps bad input from leaving anything behind:
//! every check that can fail on input (config, certificates) runs before
//! the data directory is locked or a port is bound, and each later step
//! undoes the earlier ones when it fails.

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use gossip::{Gossip, MeshConfig, ProxyAddrs};
use serde::Serialize;
use tracing::info;

use crate::admin;
use crate::cli::NodeArgs;
use crate::config::{FileConfig, NodeSettings, Overrides, StorageKind};
use crate::fail::{EXIT_BIND, EXIT_CERT, EXIT_CONFIG, EXIT_RUNTIME, EXIT_STORAGE, Fail, FailCode};
use crate::files::write_atomic;

/// What `DIR/ready.json` holds once the node serves: the addresses it
/// actually bound (useful when it was given port 0).
#[derive(Debug, Serialize)]
pub struct Ready {
    pub node: String,
    pub cluster: String,
    pub pid: u32,
    pub generation: u64,
    /// The ZFS pool the node's sites live in (null with memory storage).
    pub pool: Option<String>,
    pub mesh: std::net::SocketAddr,
    pub admin_socket: PathBuf,
    pub http: Vec<std::net::SocketAddr>,
    pub https: Vec<std::net::SocketAddr>,
}

pub fn check_config(path: &Path) -> Result<(), Fail> {
    let file = FileConfig::load(path).code(EXIT_CONFIG)?;
    let s = NodeSettings::resolve(file, Overrides::default()).code(EXIT_CONFIG)?;
    gossip::pki::load_identity(&s.certs, &s.name).code(EXIT_CERT)?;
    admin::say(&format!(
        "{}: valid (node {}, mesh {}, {} seed(s))",
        path.display(),
        s.name,
        s.mesh,
        s.seeds.len()
    ));
    Ok(())
}

fn settings(args: NodeArgs) -> anyhow::Result<NodeSettings> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    NodeSettings::resolve(
        file,
        Overrides {
            name: args.name,
            data_dir: args.data_dir,
            certs: args.certs,
            mesh: args.mesh,
            seeds: args.seeds,
            zone: args.zone,
            capacity: args.capacity,
            gossip_interval: args.gossip_interval,
            phi_threshold: args.phi_threshold,
            dead_node_grace: args.dead_node_grace,
            storage: args.storage,
            pool: args.pool,
            pool_size: args.pool_size,
            snapshot_interval: args.snapshot_interval,
            keep_all: args.keep_all,
            keep_hourly: args.keep_hourly,
            keep_daily: args.keep_daily,
            http: args.http,
            https: args.https,
            quorum_guard: args.quorum_guard,
            max_connections: args.max_connections,
        },
    )
}

pub fn run(args: NodeArgs) -> Result<(), Fail> {
    let s = settings(args).code(EXIT_CONFIG)?;
    let identity = gossip::pki::load_identity(&s.certs, &s.name).code(EXIT_CERT)?;
    let dir = DataDir::take(&s.data_dir)?;
    let generation = dir.next_generation().code(EXIT_RUNTIME)?;
    let storage = open_storage(&s, &dir, generation).code(EXIT_STORAGE)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .code(EXIT_RUNTIME)?;
    let result = rt.block_on(serve(s, identity, &dir, generation, &storage));
    drop(rt);
    storage.close();
    result
}

/// The node's storage, and the embedded pool to export when it stops.
struct OpenStorage {
    store: crate::sites::Store,
    pool: Option<storage::EmbeddedPool>,
    pool_name: Option<String>,
}

impl OpenStorage {
    fn close(self) {
        drop(self.store);
        if let Some(pool) = self.pool
            && let Err(e) = pool.export()
        {
            tracing::warn!(pool = %pool.name, error = %e, "cannot export the pool");
        }
    }
}

/// The name of the file-backed pool of this data dir: unique per data dir,
/// since one ZFS daemon may serve the pools of several nodes.
fn embedded_pool_name(node: &model::NodeName, dir: &Path) -> String {
    let h = model::hash::hash_fields(
        "ringhost/pool-name/v1",
        &[dir.as_os_str().as_encoded_bytes()],
    );
    format!("rh-{node}-{:08x}", h as u32)
}

fn open_storage(s: &NodeSettings, dir: &DataDir, seed: u64) -> anyhow::Result<OpenStorage> {
    match &s.storage {
        StorageKind::Memory => Ok(OpenStorage {
            store: std::sync::Arc::new(storage::MemStore::new(seed)),
            pool: None,
            pool_name: None,
        }),
        StorageKind::Zfs { pool, size } => {
            let (root, embedded) = match pool {
                Some(p) => (p.clone(), None),
                None => {
                    let name = embedded_pool_name(&s.name, &dir.path);
                    let pool = storage::EmbeddedPool::create_or_import(
                        "zpool",
                        &name,
                        &dir.path.join("pool.img"),
                        *size,
                    )
                    .with_context(|| format!("cannot create or import pool {name}"))?;
                    (name, Some(pool))
                }
            };
            let mount_root = dir.path.join("mnt");
            let store = storage::ZfsStore::open(storage::ZfsConfig::new(root.clone(), mount_root));
            match store {
                Ok(store) => Ok(OpenStorage {
                    store: std::sync::Arc::new(store),
                    pool: embedded,
                    pool_name: Some(root),
                }),
                Err(e) => {
                    if let Some(p) = embedded {
                        let _ = p.export();
                    }
                    Err(e).with_context(|| format!("cannot open ZFS storage in pool {root}"))
                }
            }
        }
    }
}

async fn serve(
    s: NodeSettings,
    identity: gossip::Identity,
    dir: &DataDir,
    generation: u64,
    storage: &OpenStorage,
) -> Result<(), Fail> {
    let cluster = identity.cluster.clone();
    let gossip = Gossip::start(MeshConfig {
        identity,
        generation,
        listen: s.mesh,
        seeds: s.seeds.clone(),
        zone: s.zone.clone(),
        capacity: s.capacity,
        proxy: ProxyAddrs::default(),
        settings: s.gossip.clone(),
    })
    .await
    .map_err(|e| {
        let code = match e {
            gossip::StartError::Mesh(gossip::MeshError::Bind { .. }) => EXIT_BIND,
            _ => EXIT_RUNTIME,
        };
        Fail {
            code,
            err: e.into(),
        }
    })?;
    let mesh = gossip.local_addr();
    let listeners = match crate::serving::Listeners::bind(&s.http, &s.https).await {
        Ok(l) => l,
        Err(e) => {
            gossip.shutdown().await;
            return Err(e).code(EXIT_BIND);
        }
    };
    crate::serving::publish_addrs(&gossip, &listeners).await;
    let (http, https) = (listeners.http_addrs(), listeners.https_addrs());
    let gossip = std::sync::Arc::new(gossip);
    let mut node_cfg = model::NodeConfig::new(s.name.clone());
    node_cfg.snapshot_interval = s.snapshot_interval;
    node_cfg.quorum_guard = s.quorum_guard;
    // Remembered members count as long as gossip keeps a dead one.
    node_cfg.remember_for = s.gossip.dead_node_grace;
    // A new incarnation for every start: the wall clock's milliseconds
    // (a beat of an earlier start must not pass for one of this one).
    #[allow(clippy::disallowed_methods)] // the daemon owns the clock
    let started = std::time::SystemTime::now();
    node_cfg.incarnation = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    node_cfg.beat_interval = s.gossip.interval;
    let (sites, driver) = match crate::driver::start(
        node_cfg,
        s.prune,
        storage.store.clone(),
        gossip.clone(),
        dir.path.clone(),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            gossip.leave().await;
            return Err(e).code(EXIT_STORAGE);
        }
    };
    // The migrations this node ran, as `site show` lists them.
    crate::migrate::publish_history(&sites).await;
    let serving = match crate::serving::Serving::start(
        sites.clone(),
        listeners,
        &dir.path,
        s.snapshot_interval,
        s.quorum_guard,
        s.max_connections,
    ) {
        Ok(v) => v,
        Err(e) => {
            driver.abort();
            gossip.leave().await;
            return Err(e).code(EXIT_RUNTIME);
        }
    };
    let _ = sites.proxy.set(serving.proxy.clone());
    let mut incoming = gossip.incoming_streams();
    let stream_sites = sites.clone();
    let stream_proxy = serving.proxy.clone();
    let streams = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                s = incoming.recv() => {
                    let Some(s) = s else { break };
                    let sites = stream_sites.clone();
                    let proxy = stream_proxy.clone();
                    tasks.spawn(crate::mesh_server::dispatch_stream(s, sites, proxy));
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    });
    let admin = match admin::Server::start(&dir.admin_socket(), sites.clone()) {
        Ok(a) => a,
        Err(e) => {
            streams.abort();
            serving.shutdown().await;
            driver.abort();
            gossip.leave().await;
            return Err(e).code(EXIT_BIND);
        }
    };
    let ready = Ready {
        node: s.name.to_string(),
        cluster,
        pid: std::process::id(),
        generation,
        pool: storage.pool_name.clone(),
        mesh,
        admin_socket: dir.admin_socket(),
        http,
        https,
    };
    if let Err(e) = dir.write_ready(&ready) {
        admin.shutdown().await;
        streams.abort();
        serving.shutdown().await;
        driver.abort();
        gossip.leave().await;
        return Err(e).code(EXIT_RUNTIME);
    }
    info!(node = %s.name, generation, mesh = %mesh, "node ready");

    let signal = wait_for_signal().await;
    info!(signal, "leaving the cluster");
    dir.remove_ready();
    admin.shutdown().await;
    serving.shutdown().await;
    streams.abort();
    driver.abort();
    let _ = driver.await;
    gossip.leave().await;
    info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the node could not stop cleanly; waiting
        // forever would be worse than saying so.
        tracing::error!("cannot install signal handlers");
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The node's data directory, held with an exclusive lock for the node's
/// lifetime so that two nodes never share one.
#[derive(Debug)]
struct DataDir {
    path: PathBuf,
    _lock: fs::File,
}

impl DataDir {
    fn take(path: &Path) -> Result<DataDir, Fail> {
        if !path.exists() {
            fs::create_dir_all(path)
                .with_context(|| format!("cannot create data dir {}", path.display()))
                .code(EXIT_RUNTIME)?;
            fs::set_permissions(path, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot set the mode of {}", path.display()))
                .code(EXIT_RUNTIME)?;
        }
        let lock_path = path.join("node.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))
            .code(EXIT_RUNTIME)?;
        lock.try_lock().map_err(|_| Fail {
            code: EXIT_BIND,
            err: anyhow::anyhow!(
                "another ringhost node is running with data dir {}",
                path.display()
            ),
        })?;
        // Absolute, so ready.json names paths that work from anywhere.
        let path = path
            .canonicalize()
            .with_context(|| format!("cannot resolve data dir {}", path.display()))
            .code(EXIT_RUNTIME)?;
        let dir = DataDir { path, _lock: lock };
        // Leftovers of a node that was killed: nobody holds them now.
        dir.remove_ready();
        let _ = fs::remove_file(dir.admin_socket());
        Ok(dir)
    }

    fn admin_socket(&self) -> PathBuf {
        self.path.join("admin.sock")
    }

    fn ready_path(&self) -> PathBuf {
        self.path.join("ready.json")
    }

    /// A generation larger than any this data dir has used: the start time
    /// in milliseconds, or one more than the last if the clock went back.
    fn next_generation(&self) -> anyhow::Result<u64> {
        let path = self.path.join("generation");
        let last: u64 = fs::read_to_string(&path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        #[allow(clippy::disallowed_methods)] // a generation is a start time by design
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let generation = now.max(last + 1);
        write_atomic(&path, generation.to_string().as_bytes())?;
        Ok(generation)
    }

    fn write_ready(&self, ready: &Ready) -> anyhow::Result<()> {
        let body = serde_json::to_vec_pretty(ready)?;
        write_atomic(&self.ready_path(), &body)
    }

    fn remove_ready(&self) {
        let _ = fs::remove_file(self.ready_path());
    }
}
