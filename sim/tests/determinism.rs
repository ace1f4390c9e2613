//! Same seed ⇒ same trace, across processes; different seeds ⇒ different
//! traces. Each run is a separate `ringhost-sim` process, so nothing cached
//! in one process (hash keys, RNG state) can make two runs agree by accident.

use std::process::{Command, Output};

const SIM: &str = env!("CARGO_BIN_EXE_ringhost-sim");

/// A small run with every kind of fault: about a second of wall time in a
/// debug build.
fn run(seed: u64, extra: &[&str]) -> Output {
    let seed = seed.to_string();
    let mut args = vec![
        "--seed",
        &seed,
        "--nodes",
        "6",
        "--duration",
        "30s",
        "--faults",
        "all",
        "--fault-gap",
        "2s",
    ];
    args.extend_from_slice(extra);
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
