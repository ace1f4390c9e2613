//! Simulation speed: simulated seconds per wall second at 20, 100 and 300
//! nodes, with production gossip settings (`cargo bench -p sim`).
//!
//! Each case runs the real `ringhost-sim` executable (the one with the
//! seeded `getrandom`), so the figures are those of the runs users and CI
//! make. Durations are picked so the whole bench takes well under a minute
//! on a 2-core machine. Targets (issue 6): ≥ 100× at 20 nodes, ≥ 5× at 100.

use std::io::{self, Write};
use std::process::Command;

const SIM: &str = env!("CARGO_BIN_EXE_ringhost-sim");

struct Case {
    name: &'static str,
    nodes: usize,
    duration: &'static str,
    extra: &'static [&'static str],
    /// Simulated seconds per wall second this case must reach, if any.
    target: Option<f64>,
}

const CASES: &[Case] = &[
    Case {
        name: "20 nodes, no faults",
        nodes: 20,
        duration: "120s",
        extra: &[],
        target: Some(100.0),
    },
    Case {
        name: "20 nodes, CI faults",
        nodes: 20,
        duration: "120s",
        extra: &["--faults", "crash,partition,loss", "--fault-gap", "15s"],
        target: Some(100.0),
    },
    Case {
        name: "20 nodes, heavy faults",
        nodes: 20,
        duration: "120s",
        extra: &["--faults", "crash,partition,loss", "--fault-gap", "4s"],
        target: None,
    },
    Case {
        name: "100 nodes, no faults",
        nodes: 100,
        duration: "30s",
        extra: &[],
        target: Some(5.0),
    },
    Case {
        name: "300 nodes, no faults",
        nodes: 300,
        duration: "10s",
        extra: &[],
        target: None,
    },
];

fn field<'a>(stdout: &'a str, name: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no '{name}' line in:\n{stdout}"))
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks cases by name.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let mut out = io::stdout().lock();
    let mut missed = Vec::new();
    let _ = writeln!(
        out,
        "{:<24} {:>9} {:>10} {:>9}  target",
        "case", "simulated", "wall", "speed"
    );
    for case in CASES {
        if filter
            .as_ref()
            .is_some_and(|f| !case.name.contains(f.as_str()))
        {
            continue;
        }
        let nodes = case.nodes.to_string();
        let output = Command::new(SIM)
            .args([
                "--seed",
                "1",
                "--nodes",
                &nodes,
                "--duration",
                case.duration,
            ])
            .args(case.extra)
            .output()
            .expect("the ringhost-sim binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: ringhost-sim failed:\n{stdout}{}",
            case.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let speed: f64 = field(&stdout, "speed")
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .expect("the speed line starts with a number");
        let verdict = match case.target {
            Some(target) if speed >= target => format!("≥ {target}× met"),
            Some(target) => {
                missed.push(case.name);
                format!("≥ {target}× MISSED")
            }
            None => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:>9} {:>10} {:>8.1}×  {verdict}",
            case.name,
            field(&stdout, "simulated"),
            field(&stdout, "wall"),
            speed
        );
    }
    if !missed.is_empty() {
        let _ = writeln!(out, "missed targets: {}", missed.join(", "));
        std::process::exit(1);
    }
}
