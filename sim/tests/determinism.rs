//! Same seed ⇒ same trace, across processes; different seeds ⇒ different
//! traces. Each run is a separate `ringhost-sim` process, so nothing cached
//! in one process (hash keys, RNG state) can make two runs agree by accident.

use std::process::{Command, Output};

const SIM: &str = env!("CARGO_BIN_EXE_ringhost-sim");

/// A small run with every kind of fault: about a second of wall time in a
/// debug build.
fn run(seed: u64, extra: &[&str]) -> Output {
    let seed = seed.to_string();
    let mut args = vec!["--seed", &seed];
    args.extend_from_slice(extra);
    sim(&args)
}

/// `ringhost-sim` with the small run's arguments after `args`.
fn sim(args: &[&str]) -> Output {
    let mut args = args.to_vec();
    args.extend_from_slice(&[
        "--nodes",
        "6",
        "--duration",
        "30s",
        "--faults",
        "all",
        "--fault-gap",
        "2s",
    ]);
    Command::new(SIM)
        .args(&args)
        .output()
        .expect("the ringhost-sim binary runs")
}

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no '{name}' line in:\n{stdout}"))
}

fn trace_hash(seed: u64) -> String {
    let output = run(seed, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "seed {seed} failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The simulation's thread drew its randomness from the seed, through
    // the executable's own `getrandom`.
    let entropy = field(&stdout, "entropy");
    assert_ne!(entropy, "0 bytes drawn", "the getrandom shim is not in use");
    field(&stdout, "trace hash").to_string()
}

#[test]
fn same_seed_same_trace_across_processes() {
    for seed in [1, 7] {
        assert_eq!(trace_hash(seed), trace_hash(seed), "seed {seed}");
    }
}

#[test]
fn different_seeds_different_traces() {
    let hashes: Vec<String> = (1..=3).map(trace_hash).collect();
    assert_ne!(hashes[0], hashes[1]);
    assert_ne!(hashes[1], hashes[2]);
    assert_ne!(hashes[0], hashes[2]);
}

#[test]
fn broken_invariant_prints_seed_and_replay_command() {
    // No view can converge within a millisecond of a fault.
    let output = run(4, &["--converge-bound", "1ms"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("SIM_SEED=4"), "{stdout}");
    let replay = field(&stdout, "replay:");
    assert!(
        replay.starts_with("ringhost-sim --seed 4 --nodes 6 --duration 30s --faults "),
        "{replay}"
    );
    assert!(replay.contains("--converge-bound 1ms"), "{replay}");
    assert!(replay.contains("--fault-gap 2s"), "{replay}");
    // The trace leading to the violation, and the violation.
    let tail: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("trace before the violation"))
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .collect();
    assert!(!tail.is_empty(), "{stdout}");
    assert!(tail.iter().any(|l| l.contains(" violation ")), "{stdout}");
    // The replay reproduces the failure exactly (all but wall time).
    let again = run(4, &["--converge-bound", "1ms"]);
    let simulated_only = |out: &Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("wall") && !l.starts_with("speed"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(simulated_only(&output), simulated_only(&again));
}

#[test]
fn parallel_sweep_prints_seed_order_and_the_single_runs_hashes() {
    let output = sim(&["--seeds", "1..=4", "--jobs", "3"]);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}");
    let lines: Vec<(u64, String)> = stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("seed ")?;
            let mut words = rest.split_whitespace();
            let seed = words.next()?.parse().ok()?;
            assert_eq!(words.next(), Some("hash"), "{line}");
            Some((seed, words.next()?.to_string()))
        })
        .collect();
    let seeds: Vec<u64> = lines.iter().map(|(seed, _)| *seed).collect();
    assert_eq!(seeds, [1, 2, 3, 4], "{stdout}");
    // Runs in parallel threads of one process trace as separate processes do.
    for (seed, hash) in [&lines[0], &lines[3]] {
        assert_eq!(*hash, trace_hash(*seed), "seed {seed}");
    }
    assert!(
        stdout.contains("runs             4 (0 failed), 3 at a time"),
        "{stdout}"
    );
}

#[test]
fn wire_check_finds_every_message_round_trips() {
    // Encodes, decodes and compares every message of a run with all faults;
    // a mismatch panics the simulation.
    let output = run(5, &["--wire-check"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn runs_with_sites_are_deterministic_across_processes() {
    // The model, disks, transfers and clients draw only from the seed too.
    let hash = |seed: u64| {
        let output = run(seed, &["--sites", "6", "--write-rate", "10"]);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "seed {seed}: {stdout}");
        assert!(!stdout.contains("writes           0 sent"), "{stdout}");
        field(&stdout, "trace hash").to_string()
    };
    assert_eq!(hash(3), hash(3));
    assert_ne!(hash(3), hash(4));
}
