//! `ringhost-sim`: runs seeded simulations of a ringhost cluster and prints
//! what happened; on a broken invariant prints `SIM_SEED=<n>` and the one
//! command that replays it.
//!
//! Exit codes: 0 all runs held their invariants; 1 an invariant broke;
//! 2 bad arguments or a simulator error.

mod entropy_shim;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::ops::Range;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use sim::{Faults, Report, SimConfig};

/// Deterministic simulator of a ringhost cluster: real chitchat on a
/// simulated network and clock, under seeded faults. Gossip timing is the
/// daemon's (`model::GossipSettings`) unless overridden.
#[derive(Debug, Parser)]
#[command(
    name = "ringhost-sim",
    args_override_self = true,
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
    /// Simulations to run at once in a sweep, each on its own fresh thread.
    /// Output stays in seed order.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Number of nodes.
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Number of sites, each created through placement's first node and
    /// run by every node's `model::Node` (0: membership only).
    #[arg(long, default_value_t = 0)]
    sites: usize,
    /// Client writes per simulated second over all sites, each through a
    /// random node to the site's master.
    #[arg(long, default_value_t = 50.0)]
    write_rate: f64,
    /// Longest a site may lack a single master or copies once faults have
    /// healed.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    site_settle: Duration,
    /// Overrides the model's election settle time (`NodeConfig::
    /// election_settle`), for experiments.
    #[arg(long, value_parser = parse_duration)]
    election_settle: Option<Duration>,
    /// Runs a deliberately broken variant (simulator-side only), to show
    /// the invariants catch it: ignore-epochs or blind-rollback.
    #[arg(long)]
    broken: Option<sim::Broken>,
    /// Simulated duration of each run (e.g. 60s, 1500ms, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Faults to inject: crash, partition, loss, leave, all or none.
    #[arg(long, default_value = "none")]
    faults: Faults,
    /// Overrides the production gossip interval (200ms).
    #[arg(long, value_parser = parse_duration)]
    gossip_interval: Option<Duration>,
    /// Mean time between two fault starts.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    fault_gap: Duration,
    /// The loss rate of a loss episode, uniform in LO..HI.
    #[arg(long, default_value = "0.01..0.05", value_parser = parse_rate_range)]
    episode_loss: (f64, f64),
    /// Loss on every link all the time, from 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Longest a live, reachable node may be reported dead (default: 10s +
    /// 20 gossip intervals).
    #[arg(long, value_parser = parse_duration)]
    suspect_bound: Option<Duration>,
    /// Longest the views may disagree after the last fault event (default:
    /// 10s + 20 gossip intervals, more with a longer detector prior).
    #[arg(long, value_parser = parse_duration)]
    converge_bound: Option<Duration>,
    /// Overrides the failure detector's prior heartbeat interval
    /// (production: one gossip interval; chitchat's own default: 5s).
    #[arg(long, value_parser = parse_duration)]
    fd_initial_interval: Option<Duration>,
    /// Encode and decode every message and check the copy equals the
    /// original (slower; a different trace, as decoding draws std hash
    /// keys).
    #[arg(long)]
    wire_check: bool,
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

fn parse_rate_range(s: &str) -> anyhow::Result<(f64, f64)> {
    let (lo, hi) = s
        .split_once("..")
        .with_context(|| format!("invalid rate range '{s}': expected LO..HI"))?;
    let lo: f64 = lo
        .parse()
        .with_context(|| format!("invalid rate range '{s}'"))?;
    let hi: f64 = hi
        .parse()
        .with_context(|| format!("invalid rate range '{s}'"))?;
    if !(0.0..=1.0).contains(&lo) || !(lo..=1.0).contains(&hi) {
        bail!("invalid rate range '{s}': expected 0 <= LO <= HI <= 1");
    }
    Ok((lo, hi))
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
        config.site.sites = self.sites;
        config.site.write_rate = self.write_rate;
        config.site.settle = self.site_settle;
        config.site.broken = self.broken;
        config.site.election_settle = self.election_settle;
        if let Some(interval) = self.gossip_interval {
            config.gossip.interval = interval;
        }
        config.fd_initial_interval = self.fd_initial_interval;
        config.faults = self.faults;
        config.fault_gap = self.fault_gap;
        config.episode_loss = self.episode_loss;
        config.link.loss = self.loss;
        config.link.wire_check = self.wire_check;
        config.suspect_bound = self.suspect_bound;
        config.converge_bound = self.converge_bound;
        config.trace_path = self.trace.clone();
        config
    }

    /// The command that replays `seed` alone.
    fn replay(&self, seed: u64) -> String {
        let defaults = SimConfig::new(seed, self.nodes, self.duration);
        let mut cmd = format!(
            "ringhost-sim --seed {seed} --nodes {} --duration {} --faults {}",
            self.nodes,
            arg_duration(self.duration),
            self.faults,
        );
        if self.sites != 0 {
            cmd += &format!(" --sites {}", self.sites);
        }
        if self.write_rate != defaults.site.write_rate {
            cmd += &format!(" --write-rate {}", self.write_rate);
        }
        if self.site_settle != defaults.site.settle {
            cmd += &format!(" --site-settle {}", arg_duration(self.site_settle));
        }
        if let Some(d) = self.election_settle {
            cmd += &format!(" --election-settle {}", arg_duration(d));
        }
        if let Some(broken) = self.broken {
            cmd += &format!(" --broken {broken}");
        }
        if let Some(d) = self.gossip_interval {
            cmd += &format!(" --gossip-interval {}", arg_duration(d));
        }
        if self.fault_gap != defaults.fault_gap {
            cmd += &format!(" --fault-gap {}", arg_duration(self.fault_gap));
        }
        if self.episode_loss != defaults.episode_loss {
            let (lo, hi) = self.episode_loss;
            cmd += &format!(" --episode-loss {lo}..{hi}");
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
        if self.wire_check {
            cmd += " --wire-check";
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

/// The trace up to a violation.
fn print_tail(out: &mut impl Write, report: &Report) -> io::Result<()> {
    writeln!(
        out,
        "  trace before the violation (last {} lines):",
        report.trace_tail.len()
    )?;
    for line in &report.trace_tail {
        writeln!(out, "    {line}")?;
    }
    Ok(())
}

/// The figures that come with the model integration: failover time and
/// replication lag, measured the way the real cluster is.
fn print_model_figures(
    out: &mut impl Write,
    failover: &[Duration],
    replication_lag: &[Duration],
) -> io::Result<()> {
    for (name, times) in [
        ("failover         ", failover),
        ("replication lag  ", replication_lag),
    ] {
        if times.is_empty() {
            writeln!(out, "{name}n=0")?;
        } else {
            let mut sorted = times.to_vec();
            sorted.sort();
            writeln!(out, "{name}{}", spread(&sorted))?;
        }
    }
    Ok(())
}

fn print_site_stats(out: &mut impl Write, s: &sim::SiteStats) -> io::Result<()> {
    writeln!(
        out,
        "writes           {} sent, {} accepted, {} acknowledged; {} unroutable, {} lost, {} refused",
        s.writes,
        s.writes_accepted,
        s.writes_acked,
        s.writes_unroutable,
        s.writes_lost,
        s.writes_refused
    )?;
    writeln!(
        out,
        "site actions     created {}, snapshots {}, pulls {} ({} failed, {} diverged), stashes {}, \
         promotions {}, demotions {}, views fed {}",
        s.created,
        s.snapshots,
        s.pulls,
        s.pulls_failed,
        s.diverged,
        s.stashes,
        s.promotions,
        s.demotions,
        s.views_fed
    )
}

fn print_report(out: &mut impl Write, report: &Report, wall: Duration) -> io::Result<()> {
    let net = &report.net;
    let f = &report.faults;
    let simulated = report.simulated.as_secs_f64().max(1e-9);
    writeln!(out, "seed             {}", report.seed)?;
    writeln!(out, "nodes            {}", report.nodes)?;
    writeln!(out, "sites            {}", report.sites)?;
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
        "faults           crash {}, restart {}, leave {}, partition {} ({} one-way unheard, {} one-way deaf), bridge {}, loss {}",
        f.crashes,
        f.restarts,
        f.leaves,
        f.partitions,
        f.unheard_partitions,
        f.deaf_partitions,
        f.bridges,
        f.loss_episodes
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
    print_model_figures(out, &report.failover, &report.replication_lag)?;
    if report.sites > 0 {
        print_site_stats(out, &report.site_stats)?;
    }
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
    if cli.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    if let Some(seeds) = &cli.seeds {
        return sweep(cli, seeds.clone(), &mut out);
    }
    let seed = cli.seed.unwrap_or(0);
    let (report, took) = run_timed(cli.config(seed))?;
    print_report(&mut out, &report, took)?;
    if let Some(violation) = &report.violation {
        writeln!(out, "invariant broken {violation}")?;
        print_tail(&mut out, &report)?;
        writeln!(out, "SIM_SEED={seed}")?;
        writeln!(out, "replay: {}", cli.replay(seed))?;
        return Ok(false);
    }
    Ok(true)
}

/// Totals over the runs of a sweep.
#[derive(Default)]
struct Totals {
    runs: u64,
    simulated: Duration,
    /// Sum of the runs' wall times (more than the sweep's with `--jobs`).
    run_wall: Duration,
    messages: u64,
    bytes: u64,
    faults: u64,
    crash: Vec<Duration>,
    leave: Vec<Duration>,
    heal: Vec<Duration>,
    failover: Vec<Duration>,
    replication_lag: Vec<Duration>,
    undetected: usize,
    failed: Vec<u64>,
}

/// Runs `seeds` on `cli.jobs` threads and prints one line per seed, in
/// seed order whatever order they finish in, then the totals.
fn sweep(cli: &Cli, seeds: Range<u64>, out: &mut impl Write) -> anyhow::Result<bool> {
    // The sweep's wall time, for the report only.
    #[allow(clippy::disallowed_methods)]
    let started = std::time::Instant::now();
    let next = AtomicU64::new(seeds.start);
    let jobs = cli.jobs.min((seeds.end - seeds.start) as usize);
    let mut totals = Totals::default();
    let mut error = None;
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel();
        for _ in 0..jobs {
            let tx = tx.clone();
            let next = &next;
            let end = seeds.end;
            // A worker only hands out seeds: each simulation still gets its
            // own fresh thread (`run_on_fresh_thread`).
            scope.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= end || tx.send((seed, run_timed(cli.config(seed)))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        let mut done = BTreeMap::new();
        let mut expected = seeds.start;
        for (seed, result) in rx {
            done.insert(seed, result);
            while let Some(result) = done.remove(&expected) {
                match result {
                    Ok((report, took)) => print_run(out, &mut totals, &report, took)?,
                    Err(err) => {
                        writeln!(out, "seed {expected:>6}  ERROR {err:#}")?;
                        error.get_or_insert(err.context(format!("seed {expected}")));
                    }
                }
                expected += 1;
            }
        }
        Ok(())
    })?;
    let wall = started.elapsed();
    print_totals(out, cli, jobs, &mut totals, wall)?;
    if let Some(err) = error {
        return Err(err);
    }
    Ok(totals.failed.is_empty())
}

fn print_run(
    out: &mut impl Write,
    totals: &mut Totals,
    report: &Report,
    took: Duration,
) -> io::Result<()> {
    totals.runs += 1;
    totals.simulated += report.simulated;
    totals.run_wall += took;
    totals.messages += report.net.sent;
    totals.bytes += report.net.sent_bytes;
    totals.faults += report.faults.total();
    totals.crash.extend(report.crash_detection());
    totals.leave.extend(report.leave_detection());
    totals.heal.extend(report.heal_convergence.iter().copied());
    totals.failover.extend(report.failover.iter().copied());
    totals
        .replication_lag
        .extend(report.replication_lag.iter().copied());
    totals.undetected += report.undetected();
    writeln!(
        out,
        "seed {:>6}  hash {:016x}  sim {}  wall {}  speed {:.1}x  msgs {}  faults {}  \
         crash-detect {}  {}",
        report.seed,
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
        print_tail(out, report)?;
        totals.failed.push(report.seed);
    }
    Ok(())
}

fn print_totals(
    out: &mut impl Write,
    cli: &Cli,
    jobs: usize,
    totals: &mut Totals,
    wall: Duration,
) -> io::Result<()> {
    totals.crash.sort();
    totals.leave.sort();
    totals.heal.sort();
    writeln!(
        out,
        "runs             {} ({} failed), {jobs} at a time",
        totals.runs,
        totals.failed.len()
    )?;
    writeln!(
        out,
        "nodes            {}, sites {}, faults {}",
        cli.nodes, cli.sites, cli.faults
    )?;
    writeln!(
        out,
        "simulated        {}, wall {} ({} summed over runs)",
        secs(totals.simulated),
        secs(wall),
        secs(totals.run_wall)
    )?;
    writeln!(
        out,
        "speed            {:.1} simulated s per wall s per run, {:.1} for the sweep",
        speed(totals.simulated, totals.run_wall),
        speed(totals.simulated, wall)
    )?;
    writeln!(
        out,
        "messages         {}, bytes {}",
        totals.messages, totals.bytes
    )?;
    writeln!(out, "faults           {}", totals.faults)?;
    writeln!(out, "crash detection  {}", spread(&totals.crash))?;
    if !totals.leave.is_empty() {
        writeln!(out, "leave detection  {}", spread(&totals.leave))?;
    }
    writeln!(out, "undetected       {}", totals.undetected)?;
    writeln!(out, "heal→converged   {}", spread(&totals.heal))?;
    print_model_figures(out, &totals.failover, &totals.replication_lag)?;
    for &seed in &totals.failed {
        writeln!(out, "SIM_SEED={seed}")?;
        writeln!(out, "replay: {}", cli.replay(seed))?;
    }
    Ok(())
}
