//! Node settings: a TOML file (`--config`) and command-line flags, checked
//! into [`NodeSettings`] before anything binds a port or writes a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use gossip::GossipSettings;
use model::{NodeName, Zone};
use serde::Deserialize;

/// The node section of a config file. Every field may also come from a
/// flag; a flag wins over the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub certs: Option<PathBuf>,
    pub mesh: Option<String>,
    #[serde(default)]
    pub seeds: Vec<String>,
    pub zone: Option<String>,
    pub capacity: Option<u32>,
    #[serde(default)]
    pub gossip: GossipFile,
    #[serde(default)]
    pub storage: StorageFile,
    #[serde(default)]
    pub proxy: ProxyFile,
    #[serde(default)]
    pub election: ElectionFile,
}

/// `[election]`: how a node decides to take over a site.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectionFile {
    pub quorum_guard: Option<bool>,
}

/// `[proxy]`: where the node takes client traffic. Each key is one
/// address or a list of addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFile {
    #[serde(default)]
    pub http: OneOrMany,
    #[serde(default)]
    pub https: OneOrMany,
    pub max_connections: Option<usize>,
}

/// A TOML value that is one string or a list of strings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    pub kind: Option<String>,
    pub pool: Option<String>,
    pub pool_size: Option<String>,
    pub snapshot_interval: Option<String>,
    pub keep_all: Option<String>,
    pub keep_hourly: Option<String>,
    pub keep_daily: Option<String>,
}

/// Where a node keeps its sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKind {
    /// A ZFS pool: `Some(name)` an existing one, `None` the file-backed
    /// pool at `DATA_DIR/pool.img` of the given size.
    Zfs { pool: Option<String>, size: u64 },
    /// In memory: nothing survives a restart (for membership tests).
    Memory,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipFile {
    pub interval: Option<String>,
    pub phi_threshold: Option<f64>,
    pub dead_node_grace: Option<String>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines with a caret; keep the
            // first line, which names the key and the problem.
            let msg = e.message().to_owned();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            anyhow::anyhow!("invalid config {}{at}: {msg}", path.display())
        })
    }
}

/// Checked node settings.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: NodeName,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    pub mesh: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub zone: Option<Zone>,
    pub capacity: u32,
    pub gossip: GossipSettings,
    pub storage: StorageKind,
    pub snapshot_interval: Duration,
    pub prune: model::PrunePolicy,
    /// HTTP proxy listen addresses (may be empty: no HTTP listener).
    pub http: Vec<SocketAddr>,
    /// TLS passthrough listen addresses (may be empty).
    pub https: Vec<SocketAddr>,
    /// Promote and serve only while a strict majority of the known members
    /// is alive (default on). Off: both sides of a split may serve, and the
    /// divergence is stashed when it heals.
    pub quorum_guard: bool,
    /// Client connections held at once over all listeners (before fitting
    /// to the file descriptor limit).
    pub max_connections: usize,
}

/// Flags of `ringhost node` that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub certs: Option<PathBuf>,
    pub mesh: Option<String>,
    pub seeds: Vec<String>,
    pub zone: Option<String>,
    pub capacity: Option<u32>,
    pub gossip_interval: Option<String>,
    pub phi_threshold: Option<f64>,
    pub dead_node_grace: Option<String>,
    pub storage: Option<String>,
    pub pool: Option<String>,
    pub pool_size: Option<String>,
    pub snapshot_interval: Option<String>,
    pub keep_all: Option<String>,
    pub keep_hourly: Option<String>,
    pub keep_daily: Option<String>,
    pub http: Vec<String>,
    pub https: Vec<String>,
    pub quorum_guard: Option<bool>,
    pub max_connections: Option<usize>,
}

/// Parses `512M`, `2G`, `1T` or a number of bytes.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("invalid size '{s}': use a number with K, M, G or T"))?;
    let bytes = n
        .checked_mul(mult)
        .with_context(|| format!("invalid size '{s}': too large"))?;
    if bytes < 64 << 20 {
        bail!("invalid size '{s}': a pool needs at least 64M");
    }
    Ok(bytes)
}

/// Parses `250ms`, `2s`, `5m`, `1h` (a number and a unit).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .with_context(|| format!("invalid duration '{s}': add a unit (ms, s, m or h)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid duration '{s}': '{num}' is not a number"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration '{s}': unknown unit '{unit}' (use ms, s, m or h)"),
    };
    if !(secs.is_finite() && secs > 0.0) {
        bail!("invalid duration '{s}': must be greater than zero");
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_addr(what: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse::<SocketAddr>().map_err(|_| {
        anyhow::anyhow!("invalid {what} '{s}': expected IP:PORT such as 127.0.0.1:7001 (host names are not accepted)")
    })
}

impl NodeSettings {
    /// Merges the file and the flags and checks every value.
    pub fn resolve(file: FileConfig, o: Overrides) -> anyhow::Result<NodeSettings> {
        let name = o
            .name
            .or(file.name)
            .context("no node name: pass --name or set `name` in the config")?;
        let name: NodeName = name.parse()?;
        let data_dir = o
            .data_dir
            .or(file.data_dir)
            .context("no data directory: pass --data-dir or set `data_dir`")?;
        let certs = o
            .certs
            .or(file.certs)
            .context("no certificate directory: pass --certs or set `certs`")?;
        let mesh = o
            .mesh
            .or(file.mesh)
            .context("no mesh address: pass --mesh IP:PORT or set `mesh`")?;
        let mesh = parse_addr("mesh address", &mesh)?;
        if mesh.ip().is_unspecified() {
            bail!(
                "invalid mesh address '{mesh}': peers must reach the node at this exact address; give a concrete IP, not {}",
                mesh.ip()
            );
        }
        let seeds = if o.seeds.is_empty() {
            file.seeds
        } else {
            o.seeds
        };
        let seeds = seeds
            .iter()
            .map(|s| parse_addr("seed", s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let zone = o
            .zone
            .or(file.zone)
            .map(|z| z.parse::<Zone>())
            .transpose()?;
        let capacity = o.capacity.or(file.capacity).unwrap_or(100);
        if capacity == 0 {
            bail!("invalid capacity '0': must be at least 1");
        }
        let defaults = GossipSettings::default();
        let interval = o
            .gossip_interval
            .or(file.gossip.interval)
            .map(|s| parse_duration(&s))
            .transpose()?
            .unwrap_or(defaults.interval);
        let phi_threshold = o
            .phi_threshold
            .or(file.gossip.phi_threshold)
            .unwrap_or(defaults.phi_threshold);
        if !(phi_threshold.is_finite() && phi_threshold > 0.0) {
            bail!("invalid phi threshold '{phi_threshold}': must be a positive number");
        }
        let dead_node_grace = o
            .dead_node_grace
            .or(file.gossip.dead_node_grace)
            .map(|s| parse_duration(&s))
            .transpose()?
            .unwrap_or(defaults.dead_node_grace);
        let pool = o.pool.or(file.storage.pool);
        let size = o
            .pool_size
            .or(file.storage.pool_size)
            .map(|s| parse_size(&s))
            .transpose()?
            .unwrap_or(2 << 30);
        let storage = match o.storage.or(file.storage.kind).as_deref() {
            None | Some("zfs") => StorageKind::Zfs { pool, size },
            Some("memory") => {
                if pool.is_some() {
                    bail!("--pool needs --storage zfs");
                }
                StorageKind::Memory
            }
            Some(other) => bail!("invalid storage '{other}': use zfs or memory"),
        };
        if let StorageKind::Zfs { pool: Some(p), .. } = &storage
            && (p.is_empty() || p.contains(['/', '@', ' ']))
        {
            bail!("invalid pool name '{p}'");
        }
        let snapshot_interval = o
            .snapshot_interval
            .or(file.storage.snapshot_interval)
            .map(|s| parse_duration(&s))
            .transpose()?
            .unwrap_or(Duration::from_secs(1));
        let dflt = model::PrunePolicy::default();
        let keep = |flag: Option<String>, file: Option<String>, d: Duration| {
            flag.or(file)
                .map(|s| parse_duration(&s))
                .transpose()
                .map(|v| v.unwrap_or(d))
        };
        let prune = model::PrunePolicy {
            keep_all: keep(o.keep_all, file.storage.keep_all, dflt.keep_all)?,
            keep_hourly: keep(o.keep_hourly, file.storage.keep_hourly, dflt.keep_hourly)?,
            keep_daily: keep(o.keep_daily, file.storage.keep_daily, dflt.keep_daily)?,
        };
        let listen = |what: &str, flag: Vec<String>, file: OneOrMany| {
            let v = if flag.is_empty() {
                file.into_vec()
            } else {
                flag
            };
            v.iter()
                .map(|a| parse_addr(what, a))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        let http = listen("HTTP address", o.http, file.proxy.http)?;
        let https = listen("HTTPS address", o.https, file.proxy.https)?;
        let quorum_guard = o
            .quorum_guard
            .or(file.election.quorum_guard)
            .unwrap_or(true);
        let max_connections = o
            .max_connections
            .or(file.proxy.max_connections)
            .unwrap_or(proxy::DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            bail!("invalid max_connections 0: at least 1");
        }
        Ok(NodeSettings {
            quorum_guard,
            http,
            https,
            max_connections,
            storage,
            snapshot_interval,
            prune,
            name,
            data_dir,
            certs,
            mesh,
            seeds,
            zone,
            capacity,
            gossip: GossipSettings {
                interval,
                phi_threshold,
                dead_node_grace,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Overrides {
        Overrides {
            name: Some("n1".into()),
            data_dir: Some("/tmp/x".into()),
            certs: Some("/tmp/c".into()),
            mesh: Some("127.0.0.1:7001".into()),
            ..Overrides::default()
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("250ms").expect("valid"),
            Duration::from_millis(250)
        );
        assert_eq!(parse_duration("2s").expect("valid"), Duration::from_secs(2));
        assert_eq!(
            parse_duration("1h").expect("valid"),
            Duration::from_secs(3600)
        );
        for bad in ["", "5", "ms", "0s", "1d", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_win_and_defaults_apply() {
        let file: FileConfig =
            toml::from_str("name = \"file\"\nmesh = \"127.0.0.1:1\"\n[gossip]\ninterval = \"1s\"")
                .expect("valid toml");
        let s = NodeSettings::resolve(file, minimal()).expect("valid");
        assert_eq!(s.name.as_str(), "n1");
        assert_eq!(s.mesh.port(), 7001);
        assert_eq!(s.gossip.interval, Duration::from_secs(1));
        assert_eq!(s.capacity, 100);
    }

    #[test]
    fn errors_name_the_bad_value() {
        let cases: [(&str, Overrides); 4] = [
            (
                "'localhost:1'",
                Overrides {
                    seeds: vec!["localhost:1".into()],
                    ..minimal()
                },
            ),
            (
                "'0.0.0.0:7001'",
                Overrides {
                    mesh: Some("0.0.0.0:7001".into()),
                    ..minimal()
                },
            ),
            (
                "'Bad_Name'",
                Overrides {
                    name: Some("Bad_Name".into()),
                    ..minimal()
                },
            ),
            (
                "'fast'",
                Overrides {
                    gossip_interval: Some("fast".into()),
                    ..minimal()
                },
            ),
        ];
        for (needle, o) in cases {
            let err = NodeSettings::resolve(FileConfig::default(), o).expect_err(needle);
            assert!(format!("{err:#}").contains(needle), "{err:#}");
        }
    }

    #[test]
    fn the_example_config_is_valid() {
        let file: FileConfig =
            toml::from_str(include_str!("../config.example.toml")).expect("example parses");
        let s = NodeSettings::resolve(file, Overrides::default()).expect("example is valid");
        assert_eq!(s.seeds.len(), 2);
        assert_eq!(s.gossip, GossipSettings::default());
        assert_eq!(s.http.len(), 1);
        assert_eq!(s.https.len(), 1);
        assert!(s.quorum_guard);
    }

    #[test]
    fn the_quorum_guard_is_on_unless_turned_off() {
        let s = NodeSettings::resolve(FileConfig::default(), minimal()).expect("valid");
        assert!(s.quorum_guard);
        let file: FileConfig =
            toml::from_str("[election]\nquorum_guard = false").expect("valid toml");
        let s = NodeSettings::resolve(file, minimal()).expect("valid");
        assert!(!s.quorum_guard);
        let file: FileConfig =
            toml::from_str("[election]\nquorum_guard = false").expect("valid toml");
        let o = Overrides {
            quorum_guard: Some(true),
            ..minimal()
        };
        assert!(NodeSettings::resolve(file, o).expect("valid").quorum_guard);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<FileConfig>("name = \"n1\"\nmesh_addr = \"x\"")
            .expect_err("unknown key");
        assert!(err.message().contains("mesh_addr"), "{err}");
    }
}
