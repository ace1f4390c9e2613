//! `ringhost-sim`: runs seeded simulations of a ringhost cluster and prints
//! what happened; on a broken invariant prints `SIM_SEED=<n>` and the one
//! command that replays it.
//!
//! Exit codes: 0 all runs held their invariants; 1 an invariant broke;
//! 2 bad arguments or a simulator error.

mod entropy_shim;

use std::io::{self, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use sim::{Faults, Report, SimConfig};

/// Deterministic simulator of a ringhost cluster: real chitchat on a
/// simulated network and clock, under seeded faults.
#[derive(Debug, Parser)]
#[command(
    name = "ringhost-sim",
    after_help = "Exit codes: 0 every run held its invariants; 1 an invariant broke \
                  (SIM_SEED and the replay command are printed); 2 bad arguments or an error."
)]
struct Cli {
    /// The seed of a single run.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep the seeds A..B (B excluded) or A..=B, one run each.
    #[arg(long, value_parser = parse_seeds)]
    seeds: Option<Range<u64>>,
    /// Number of nodes.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Simulated duration of each run (e.g. 60s, 1500ms, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults to inject: crash, partition, loss, leave, all or none.
    #[arg(long, default_value = "none")]
    faults: Faults,
    /// chitchat's gossip interval.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    gossip_interval: Duration,
    /// Mean time between two fault starts.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    fault_gap: Duration,
    /// Loss on every link all the time, from 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Longest a live, reachable node may be reported dead (default: 10s +
    /// 20 gossip intervals).
    #[arg(long, value_parser = parse_duration)]
    suspect_bound: Option<Duration>,
    /// Longest the views may disagree after the last fault event (default:
    /// 15s + 40 gossip intervals).
    #[arg(long, value_parser = parse_duration)]
    converge_bound: Option<Duration>,
    /// The failure detector's prior heartbeat interval (chitchat's default:
    /// 5s).
    #[arg(long, value_parser = parse_duration)]
    fd_initial_interval: Option<Duration>,
    /// Write the trace of a single run to this file.
    #[arg(long, conflicts_with = "seeds")]
    trace: Option<PathBuf>,
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => bail!("invalid duration '{s}': expected a unit (ms, s, m)"),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("invalid duration '{s}'"))?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => bail!("invalid duration '{s}': unknown unit '{unit}' (us, ms, s, m, h)"),
    };
    if !seconds.is_finite() || seconds < 0.0 {
        bail!("invalid duration '{s}'");
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_seeds(s: &str) -> anyhow::Result<Range<u64>> {
    let (start, end, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        bail!("invalid seed range '{s}': expected A..B or A..=B");
    };
    let start: u64 = start
        .parse()
        .with_context(|| format!("invalid seed range '{s}'"))?;
    let mut end: u64 = end
        .parse()
        .with_context(|| format!("invalid seed range '{s}'"))?;
    if inclusive {
        end = end
            .checked_add(1)
            .with_context(|| format!("invalid seed range '{s}'"))?;
    }
    if end <= start {
        bail!("invalid seed range '{s}': it is empty");
    }
    Ok(start..end)
}

/// Formats a duration the way the parser reads it back.
fn arg_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

impl Cli {
    fn config(&self, seed: u64) -> SimConfig {
        let mut config = SimConfig::new(seed, self.nodes, self.duration);
        config.gossip_interval = self.gossip_interval;
        config.faults = self.faults;
        config.fault_gap = self.fault_gap;
        config.link.loss = self.loss;
        config.suspect_bound = self.suspect_bound;
        config.converge_bound = self.converge_bound;
        if let Some(d) = self.fd_initial_interval {
            config.failure_detector.initial_interval = d;
        }
        config.trace_path = self.trace.clone();
        config
    }

    /// The command that replays `seed` alone.
    fn replay(&self, seed: u64) -> String {
        let mut cmd = format!(
            "ringhost-sim --seed {seed} --nodes {} --duration {} --faults {} --gossip-interval {}",
            self.nodes,
            arg_duration(self.duration),
            self.faults,
            arg_duration(self.gossip_interval),
        );
        if self.fault_gap != Duration::from_secs(4) {
            cmd += &format!(" --fault-gap {}", arg_duration(self.fault_gap));
        }
        if self.loss != 0.0 {
            cmd += &format!(" --loss {}", self.loss);
        }
        if let Some(d) = self.fd_initial_interval {
            cmd += &format!(" --fd-initial-interval {}", arg_duration(d));
        }
        if let Some(d) = self.suspect_bound {
            cmd += &format!(" --suspect-bound {}", arg_duration(d));
        }
        if let Some(d) = self.converge_bound {
            cmd += &format!(" --converge-bound {}", arg_duration(d));
        }
        cmd
    }
}

/// Runs one seed and measures its wall time.
fn run_timed(config: SimConfig) -> anyhow::Result<(Report, Duration)> {
    // The only wall-clock read in the simulator: it reports wall time and
    // speed and never reaches a simulation.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let report = sim::run_on_fresh_thread(config)?;
    Ok((report, started.elapsed()))
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// `n=3 p50 1.234s max 2.345s` over sorted `times`.
fn spread(times: &[Duration]) -> String {
    match times.last() {
        None => "n=0".to_string(),
        Some(&max) => {
            let p50 = times[(times.len() - 1) / 2];
            format!("n={} p50 {} max {}", times.len(), secs(p50), secs(max))
        }
    }
}

fn speed(simulated: Duration, wall: Duration) -> f64 {
    simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9)
}

fn print_report(out: &mut impl Write, report: &Report, wall: Duration) -> io::Result<()> {
    let net = &report.net;
    let f = &report.faults;
    let simulated = report.simulated.as_secs_f64().max(1e-9);
    writeln!(out, "seed             {}", report.seed)?;
    writeln!(out, "nodes            {}", report.nodes)?;
    writeln!(out, "simulated        {}", secs(report.simulated))?;
    writeln!(out, "wall             {}", secs(wall))?;
    writeln!(
        out,
        "speed            {:.1} simulated s per wall s",
        speed(report.simulated, wall)
    )?;
    writeln!(
        out,
        "messages         sent {}, delivered {}, dropped {} (loss {}, cut {}, down {}, full {}), \
         reordered {}",
        net.sent,
        net.delivered,
        net.dropped(),
        net.dropped_loss,
        net.dropped_cut,
        net.dropped_down,
        net.dropped_full,
        net.reordered
    )?;
    writeln!(
        out,
        "bytes            sent {}, {:.0} B/s simulated ({:.0} B/s per node), largest message {} B",
        net.sent_bytes,
        net.sent_bytes as f64 / simulated,
        net.sent_bytes as f64 / simulated / report.nodes as f64,
        net.largest
    )?;
    writeln!(
        out,
        "faults           crash {}, restart {}, leave {}, partition {} ({} one-way), loss {}",
        f.crashes, f.restarts, f.leaves, f.partitions, f.one_way_partitions, f.loss_episodes
    )?;
    writeln!(
        out,
        "crash detection  {} (crash until every other live node sees it dead)",
        spread(&report.crash_detection())
    )?;
    if f.leaves > 0 {
        writeln!(
            out,
            "leave detection  {}",
            spread(&report.leave_detection())
        )?;
    }
    writeln!(out, "undetected       {}", report.undetected())?;
    let mut heal = report.heal_convergence.clone();
    heal.sort();
    writeln!(out, "heal→converged   {}", spread(&heal))?;
    writeln!(out, "entropy          {} bytes drawn", report.entropy_bytes)?;
    writeln!(out, "trace lines      {}", report.trace_lines)?;
    writeln!(out, "trace hash       {:016x}", report.trace_hash)?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            let _ = writeln!(io::stderr(), "ringhost-sim: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs what the command line asks; returns whether every invariant held.
fn run(cli: &Cli) -> anyhow::Result<bool> {
    let mut out = io::stdout().lock();
    if cli.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if !(0.0..=1.0).contains(&cli.loss) {
        bail!("--loss must be between 0 and 1");
    }
    if let Some(seeds) = &cli.seeds {
        let mut crash = Vec::new();
        let mut heal = Vec::new();
        let (mut simulated, mut wall) = (Duration::ZERO, Duration::ZERO);
        let (mut messages, mut bytes, mut faults) = (0u64, 0u64, 0u64);
        let mut failed = Vec::new();
        for seed in seeds.clone() {
            let (report, took) = run_timed(cli.config(seed))?;
            simulated += report.simulated;
            wall += took;
            messages += report.net.sent;
            bytes += report.net.sent_bytes;
            faults += report.faults.total();
            crash.extend(report.crash_detection());
            heal.extend(report.heal_convergence.iter().copied());
            writeln!(
                out,
                "seed {seed:>6}  hash {:016x}  sim {}  wall {}  speed {:.1}x  msgs {}  faults {}  \
                 crash-detect {}  {}",
                report.trace_hash,
                secs(report.simulated),
                secs(took),
                speed(report.simulated, took),
                report.net.sent,
                report.faults.total(),
                spread(&report.crash_detection()),
                if report.violation.is_some() {
                    "FAIL"
                } else {
                    "ok"
                },
            )?;
            if let Some(violation) = &report.violation {
                writeln!(out, "  invariant broken {violation}")?;
                failed.push(seed);
            }
        }
        crash.sort();
        heal.sort();
        writeln!(out, "runs             {}", seeds.end - seeds.start)?;
        writeln!(out, "nodes            {}", cli.nodes)?;
        writeln!(
            out,
            "simulated        {}, wall {}, speed {:.1} simulated s per wall s",
            secs(simulated),
            secs(wall),
            speed(simulated, wall)
        )?;
        writeln!(out, "messages         {messages}, bytes {bytes}")?;
        writeln!(out, "faults           {faults}")?;
        writeln!(out, "crash detection  {}", spread(&crash))?;
        writeln!(out, "heal→converged   {}", spread(&heal))?;
        for &seed in &failed {
            writeln!(out, "SIM_SEED={seed}")?;
            writeln!(out, "replay: {}", cli.replay(seed))?;
        }
        return Ok(failed.is_empty());
    }
    let seed = cli.seed.unwrap_or(0);
    let (report, took) = run_timed(cli.config(seed))?;
    print_report(&mut out, &report, took)?;
    if let Some(violation) = &report.violation {
        writeln!(out, "invariant broken {violation}")?;
        writeln!(out, "SIM_SEED={seed}")?;
        writeln!(out, "replay: {}", cli.replay(seed))?;
        return Ok(false);
    }
    Ok(true)
}
