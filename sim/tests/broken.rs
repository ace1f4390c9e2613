//! The site invariants have teeth: each deliberately broken variant
//! (`--broken`, simulator-side only) fails the simulator within 50 seeds,
//! and the replay command it prints reproduces the failure exactly.

#![allow(clippy::print_stderr)] // which seed caught each variant, on stderr

use std::process::{Command, Output};

const SIM: &str = env!("CARGO_BIN_EXE_ringhost-sim");

/// A small cluster with sites, writes and the CI's fault kinds, one fault
/// every 4 s on average.
const ARGS: &[&str] = &[
    "--nodes",
    "10",
    "--sites",
    "10",
    "--write-rate",
    "10",
    "--duration",
    "90s",
    "--faults",
    "crash,partition,bridge,loss",
    "--fault-gap",
    "4s",
];

fn sim(args: &[String]) -> Output {
    Command::new(SIM)
        .args(args)
        .output()
        .expect("the ringhost-sim binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn field<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// Runs seeds 1..=50 until one fails; returns the seed and its output.
fn first_failure(broken: &str) -> (u64, String) {
    for seed in 1..=50u64 {
        let mut args = vec!["--seed".to_string(), seed.to_string()];
        args.extend(ARGS.iter().map(|s| s.to_string()));
        args.extend(["--broken".to_string(), broken.to_string()]);
        let out = sim(&args);
        let text = stdout(&out);
        match out.status.code() {
            Some(0) => continue,
            Some(1) => return (seed, text),
            other => panic!(
                "seed {seed}: exit {other:?}\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
    panic!("--broken {broken} survived 50 seeds");
}

fn caught_and_replayed(broken: &str, expect: &str) {
    let (seed, text) = first_failure(broken);
    assert!(text.contains(&format!("SIM_SEED={seed}")), "{text}");
    let violation = field(&text, "invariant broken").unwrap_or_else(|| panic!("{text}"));
    assert!(violation.contains(expect), "{broken}: {violation}");
    let replay = field(&text, "replay:").unwrap_or_else(|| panic!("{text}"));
    assert!(replay.contains(&format!("--broken {broken}")), "{replay}");
    assert!(
        text.contains("trace before the violation"),
        "no trace tail: {text}"
    );
    // The printed command, run as printed, fails the same way.
    let args: Vec<String> = replay
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let again = sim(&args);
    let again_text = stdout(&again);
    assert_eq!(again.status.code(), Some(1), "{again_text}");
    assert_eq!(
        field(&again_text, "invariant broken"),
        Some(violation),
        "{again_text}"
    );
    assert_eq!(
        field(&again_text, "trace hash"),
        field(&text, "trace hash"),
        "{again_text}"
    );
    assert!(seed <= 50);
    eprintln!("--broken {broken}: caught at seed {seed}: {violation}");
}

#[test]
fn election_that_ignores_epochs_is_caught() {
    // Two masters acknowledging at one epoch, or a fenced master serving.
    caught_and_replayed("ignore-epochs", "master");
}

#[test]
fn blind_rollback_receive_is_caught() {
    caught_and_replayed("blind-rollback", "is lost");
}

#[test]
fn promotion_without_a_majority_of_votes_is_caught() {
    // Every member's vote read as cast for whoever the election names:
    // a side that cannot hear the rest promotes on aliveness alone.
    caught_and_replayed("no-votes", "master");
}

#[test]
fn a_master_that_ignores_its_lease_is_caught() {
    // A master cut off from the majority's echoes goes on acknowledging
    // at its epoch after the next master took office.
    caught_and_replayed("ignore-lease", "took office");
}
