//! Membership of a real cluster on loopback: joining, crash detection,
//! restart as a new generation, and a polite leave.
#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes: wall-clock deadlines, figures on stderr

mod common;

use std::time::{Duration, Instant};

use common::{Env, wait_for};

#[test]
fn five_nodes_seeded_with_the_first_all_list_each_other_alive_within_5s() {
    let env = Env::new("demo", &["n1", "n2", "n3", "n4", "n5"]);
    let start = Instant::now();
    let nodes = env.start_cluster(5, &[]);
    let names: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
    wait_for(
        "every node to list all 5 alive",
        Duration::from_secs(5),
        || {
            nodes
                .iter()
                .all(|n| {
                    let Some(members) = n.members() else {
                        return false;
                    };
                    members.len() == 5
                        && names
                            .iter()
                            .all(|name| members.iter().any(|(m, s, _)| m == name && s == "alive"))
                })
                .then_some(())
        },
    );
    eprintln!(
        "5 nodes converged {:?} after the first start",
        start.elapsed()
    );
    // The JSON contract's fields are all there.
    let st = nodes[2].status().expect("status");
    assert_eq!(st["node"], "n3");
    assert_eq!(st["cluster"], "demo");
    for m in st["members"].as_array().expect("members") {
        for field in ["name", "state", "generation", "mesh_addr", "zone"] {
            assert!(m.get(field).is_some(), "member lacks {field}: {m}");
        }
    }
}

#[test]
fn a_killed_node_is_seen_dead_and_rejoins_as_a_new_generation() {
    let env = Env::new("demo", &["n1", "n2", "n3"]);
    let mut nodes = env.start_cluster(3, &[]);
    wait_for("3 alive", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|n| {
                n.members()
                    .is_some_and(|m| m.iter().filter(|x| x.1 == "alive").count() == 3)
            })
            .then_some(())
    });
    let old_generation = nodes[2].generation();
    let seed = nodes[0].mesh();
    nodes[2].kill9();
    let killed = Instant::now();
    wait_for("n3 dead on n1 and n2", Duration::from_secs(10), || {
        nodes[..2]
            .iter()
            .all(|n| n.state_of("n3").is_some_and(|(s, _)| s == "dead"))
            .then_some(())
    });
    eprintln!("n3 seen dead by all after {:?}", killed.elapsed());

    let restarted = env.start("n3", &[seed], &[]);
    assert!(restarted.generation() > old_generation);
    wait_for(
        "n3 alive again with its new generation",
        Duration::from_secs(5),
        || {
            nodes[..2]
                .iter()
                .all(|n| {
                    n.state_of("n3")
                        .is_some_and(|(s, g)| s == "alive" && g == restarted.generation())
                })
                .then_some(())
        },
    );
}

#[test]
fn sigterm_leaves_politely_peers_see_left_within_2s_and_exit_is_0() {
    let env = Env::new("demo", &["n1", "n2", "n3"]);
    let mut nodes = env.start_cluster(3, &[]);
    wait_for("3 alive", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|n| {
                n.members()
                    .is_some_and(|m| m.iter().filter(|x| x.1 == "alive").count() == 3)
            })
            .then_some(())
    });
    let sent = Instant::now();
    let status = nodes[1].terminate();
    assert_eq!(status.code(), Some(0), "{}", nodes[1].log_text());
    wait_for("n2 listed as left", Duration::from_secs(2), || {
        [&nodes[0], &nodes[2]]
            .iter()
            .all(|n| n.state_of("n2").is_some_and(|(s, _)| s == "left"))
            .then_some(())
    });
    eprintln!("n2 seen left by all {:?} after SIGTERM", sent.elapsed());
    // Nothing left behind in its data dir but its state.
    assert!(!nodes[1].data_dir.join("ready.json").exists());
    assert!(!nodes[1].data_dir.join("admin.sock").exists());
}
