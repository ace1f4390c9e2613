//! Membership figures of a real cluster on loopback, with default settings:
//!
//! - failure detection: `kill -9` of one node of 5 → every other node lists
//!   it `dead` (median and max over the trials), and the gossip bandwidth
//!   that buys;
//! - idle gossip bandwidth per node for clusters of 5 and 20 nodes.
//!
//! Run: `cargo bench --bench membership` (options after `--`:
//! `--trials N`, default 7).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{Env, Node, wait_for};

#[allow(clippy::print_stdout)]
fn say(s: &str) {
    println!("{s}");
}

fn all_alive(nodes: &[Node], n: usize) -> Option<()> {
    nodes
        .iter()
        .all(|x| {
            x.members()
                .is_some_and(|m| m.iter().filter(|(_, s, _)| s == "alive").count() == n)
        })
        .then_some(())
}

/// (udp bytes sent, chitchat bytes sent) per node, summed over `nodes`.
fn bytes_sent(nodes: &[Node]) -> (u64, u64) {
    nodes.iter().fold((0, 0), |(u, g), n| {
        let st = n.status().expect("status");
        (
            u + st["gossip"]["udp_bytes_sent"].as_u64().unwrap_or(0),
            g + st["gossip"]["gossip_bytes_sent"].as_u64().unwrap_or(0),
        )
    })
}

/// Idle bandwidth per node over `secs` seconds: (UDP B/s, gossip B/s).
#[allow(clippy::disallowed_methods)] // benchmarks measure wall time
fn idle_bandwidth(nodes: &[Node], secs: u64) -> (f64, f64) {
    let (u0, g0) = bytes_sent(nodes);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (u1, g1) = bytes_sent(nodes);
    let dt = t0.elapsed().as_secs_f64() * nodes.len() as f64;
    ((u1 - u0) as f64 / dt, (g1 - g0) as f64 / dt)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[allow(clippy::disallowed_methods)] // benchmarks measure wall time
fn detection(trials: usize) {
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let env = Env::new("bench", &names);
    let mut nodes = env.start_cluster(5, &[]);
    let seed = nodes[0].mesh();
    wait_for("5 alive", Duration::from_secs(10), || all_alive(&nodes, 5));
    // Let the failure detector learn the heartbeat rhythm, as in a running
    // cluster.
    std::thread::sleep(Duration::from_secs(3));
    let (udp, chitchat) = idle_bandwidth(&nodes, 5);
    let mut times = Vec::new();
    for t in 0..trials {
        let victim = 1 + t % 4;
        let name = nodes[victim].name.clone();
        nodes[victim].kill9();
        let killed = Instant::now();
        wait_for(
            &format!("{name} dead everywhere"),
            Duration::from_secs(30),
            || {
                nodes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != victim)
                    .all(|(_, n)| n.state_of(&name).is_some_and(|(s, _)| s == "dead"))
                    .then_some(())
            },
        );
        let took = killed.elapsed().as_secs_f64();
        say(&format!(
            "  trial {}: {name} seen dead by all 4 peers after {took:.2} s",
            t + 1
        ));
        times.push(took);
        nodes[victim] = env.start(&name, std::slice::from_ref(&seed), &[]);
        wait_for("5 alive again", Duration::from_secs(10), || {
            all_alive(&nodes, 5)
        });
        std::thread::sleep(Duration::from_secs(3));
    }
    let max = times.iter().cloned().fold(0.0, f64::max);
    let med = median(&mut times);
    say(&format!(
        "detection (5 nodes, kill -9, default settings, {trials} trials): median {med:.2} s, max {max:.2} s (target: median <= 2 s)"
    ));
    say(&format!(
        "  bandwidth at these settings: {:.0} B/s UDP ({:.0} B/s chitchat payload) sent per node",
        udp, chitchat
    ));
}

#[allow(clippy::disallowed_methods)] // benchmarks measure wall time
fn bandwidth(n: usize) {
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let env = Env::new("bench", &refs);
    let nodes = env.start_cluster(n, &[]);
    wait_for(&format!("{n} alive"), Duration::from_secs(30), || {
        all_alive(&nodes, n)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (udp, chitchat) = idle_bandwidth(&nodes, 10);
    say(&format!(
        "idle gossip, {n} nodes: {udp:.0} B/s UDP sent per node ({chitchat:.0} B/s chitchat payload), over 10 s"
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let trials = args
        .iter()
        .position(|a| a == "--trials")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list; nothing to list
    }
    detection(trials);
    bandwidth(5);
    bandwidth(20);
}
