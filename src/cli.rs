//! The command line: clap definitions and the exit codes they promise.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  runtime failure (the message says what failed)
  2  invalid usage or configuration (nothing was started)
  3  certificate problem: missing, unreadable, not from the cluster CA,
     naming another node, or refusing to overwrite (nothing was started)
  4  cannot bind an address, or another node already uses the data dir
     (nothing was left running)
  5  no running node answers at the data dir's admin socket
  6  storage unavailable: no zfs/zpool, or the pool cannot be created,
     imported or opened (nothing was left running)
  7  the node refused the request (the message says why: unknown site,
     duplicate name, full pool, no master, ...)";

/// ringhost: leaderless, gossip-based peer-to-peer web hosting on ZFS.
///
/// Every node is equal. Start nodes with `ringhost node`, seeding each with
/// the mesh address of one or more others; they find each other by gossip
/// over QUIC with mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "ringhost", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the daemon) in the foreground until SIGTERM or SIGINT.
    #[command(after_help = EXIT_CODES)]
    Node(Box<NodeArgs>),
    /// Check a config file without starting anything.
    #[command(after_help = EXIT_CODES)]
    CheckConfig {
        /// The TOML file to check (see config.example.toml).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the cluster as the local node sees it.
    #[command(after_help = EXIT_CODES)]
    Status {
        #[command(flatten)]
        target: DataDirArg,
        /// Print the documented JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage the cluster's certificates.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Create, fill, inspect and delete sites (through the local node).
    #[command(subcommand)]
    Site(SiteCommand),
}

#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Create a site. Placement (the ring hash) picks its master; replicas
    /// follow on the next nodes of the ring.
    #[command(after_help = EXIT_CODES)]
    Create {
        /// Site name: a-z, 0-9 and '-' (also its dataset name).
        name: String,
        /// A domain the site answers to (repeat; `*.example.com` matches one label).
        #[arg(long = "domain", value_name = "DOMAIN", required = true)]
        domains: Vec<String>,
        /// Copies to keep, the master's included (1 to 9).
        #[arg(long, default_value_t = 3)]
        replicas: u8,
        /// How the site is served: `static` (files) or `command` (see --cmd).
        #[arg(long, default_value = "static", value_parser = ["static", "command"])]
        runtime: String,
        /// For `--runtime command`: the command (run by `sh -c`, with PORT set).
        #[arg(long, value_name = "CMD")]
        cmd: Option<String>,
        #[command(flatten)]
        target: DataDirArg,
        #[arg(long)]
        json: bool,
    },
    /// Replace a site's content with a local directory tree, streamed to the
    /// master through the local node; returns once a snapshot holds it.
    #[command(after_help = EXIT_CODES)]
    Push {
        name: String,
        /// The directory to upload.
        dir: PathBuf,
        #[command(flatten)]
        target: DataDirArg,
    },
    /// List sites with their master, copies and stashes.
    #[command(after_help = EXIT_CODES)]
    List {
        #[command(flatten)]
        target: DataDirArg,
        /// Print the documented JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one site: master, epoch, every copy's head and lag, stashes.
    #[command(after_help = EXIT_CODES)]
    Show {
        name: String,
        #[command(flatten)]
        target: DataDirArg,
        /// Print the documented JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the output of a command site's process (kept by its master).
    #[command(after_help = EXIT_CODES)]
    Log {
        name: String,
        #[command(flatten)]
        target: DataDirArg,
    },
    /// Move a serving site to another node, its requests paused, not failed.
    ///
    /// Pre-copies the site to NODE while it serves, until a round's delta is
    /// at most 1 MiB (8 rounds at most); then the site's gate on its master
    /// holds new requests and connections in a bounded queue while those in
    /// flight finish (at most 5 s; then WebSockets and TLS streams still
    /// open are closed), the site's command stops, the final snapshot goes
    /// to NODE, NODE claims the next epoch and serves, and the queue is
    /// released to it in order. If the hand-over fails, the site resumes on
    /// its master with nothing lost. Works from any node; prints each phase
    /// and a report (pause, final delta, pre-copy rounds, total time).
    #[command(after_help = EXIT_CODES)]
    Migrate {
        name: String,
        /// The node to move the site to.
        #[arg(long, value_name = "NODE")]
        to: String,
        #[command(flatten)]
        target: DataDirArg,
        /// Print one JSON event per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a site and every copy of it (stashes are kept).
    #[command(after_help = EXIT_CODES)]
    Delete {
        name: String,
        /// Confirm: the copies are destroyed.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        target: DataDirArg,
    },
}

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The data directory of the node to ask (its admin socket lives there).
    #[arg(
        long,
        value_name = "DIR",
        env = "RINGHOST_DATA_DIR",
        default_value = "/var/lib/ringhost"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create the cluster CA (ca.pem, and ca.key with mode 0600) in DIR.
    #[command(after_help = EXIT_CODES)]
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The cluster's name; nodes of other clusters are never heard.
        #[arg(long, value_name = "NAME")]
        cluster: String,
        /// Replace an existing CA (every node certificate must be reissued).
        #[arg(long)]
        force: bool,
    },
    /// Issue NAME.pem and NAME.key (mode 0600) for a node, signed by the CA in DIR.
    #[command(after_help = EXIT_CODES)]
    Issue {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "NAME")]
        node: String,
        /// Replace an existing certificate and key for this node.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A TOML config file; flags given here override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's stable name: a-z, 0-9 and '-', as in its certificate.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where the node keeps its state, admin socket and ready.json.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Directory with ca.pem, NAME.pem and NAME.key.
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// UDP address of the QUIC mesh, IP:PORT (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    pub mesh: Option<String>,
    /// Mesh address of a node to join through; repeat for more.
    #[arg(long = "seed", value_name = "ADDR")]
    pub seeds: Vec<String>,
    /// Failure domain that placement spreads copies over.
    #[arg(long, value_name = "ZONE")]
    pub zone: Option<String>,
    /// Relative capacity of this node (default 100).
    #[arg(long, value_name = "N")]
    pub capacity: Option<u32>,
    /// How often to gossip with up to three peers (default 200ms).
    #[arg(long, value_name = "DURATION")]
    pub gossip_interval: Option<String>,
    /// Failure-detector threshold: higher is slower and surer (default 8).
    #[arg(long, value_name = "PHI")]
    pub phi_threshold: Option<f64>,
    /// How long a dead node stays listed before it is forgotten (default 1h).
    #[arg(long, value_name = "DURATION")]
    pub dead_node_grace: Option<String>,
    /// Where sites live: `zfs` (default) or `memory` (nothing survives a
    /// restart and uploads are refused; for tests of membership alone).
    #[arg(long, value_name = "KIND")]
    pub storage: Option<String>,
    /// Use this existing ZFS pool (sites under POOL/sites). Without it the
    /// node creates, or re-imports, a file-backed pool at DATA_DIR/pool.img.
    #[arg(long, value_name = "NAME")]
    pub pool: Option<String>,
    /// Size of the file-backed pool when it is created (sparse; default 2G).
    #[arg(long, value_name = "SIZE")]
    pub pool_size: Option<String>,
    /// How often a master snapshots a changed site (default 1s).
    #[arg(long, value_name = "DURATION")]
    pub snapshot_interval: Option<String>,
    /// Retention: keep every snapshot younger than this (default 1h).
    #[arg(long, value_name = "DURATION")]
    pub keep_all: Option<String>,
    /// Retention: keep the newest snapshot of each hour younger than this (default 24h).
    #[arg(long, value_name = "DURATION")]
    pub keep_hourly: Option<String>,
    /// Retention: keep the newest snapshot of each day younger than this (default 168h).
    #[arg(long, value_name = "DURATION")]
    pub keep_daily: Option<String>,
    /// Serve HTTP/1.1 for every site here, IP:PORT (repeat for more; port 0
    /// picks a free one, reported in ready.json).
    #[arg(long = "http", value_name = "ADDR")]
    pub http: Vec<String>,
    /// Pass TLS through to every site's own TLS server here, routed by SNI,
    /// IP:PORT (repeat for more).
    #[arg(long = "https", value_name = "ADDR")]
    pub https: Vec<String>,
    /// `on` (default): promote and serve only while a strict majority of
    /// the known members is alive, so a minority side of a split answers
    /// 503. `off`: both sides may serve; divergence is stashed on heal.
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    pub quorum_guard: Option<bool>,
    /// Client connections held at once over all listeners (default 16384,
    /// lowered to fit the open-file limit); past it, new clients wait.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("'{s}' is not on or off")),
    }
}
