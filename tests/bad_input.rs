//! Bad input gets a one-line error naming the problem, a documented exit
//! code, and leaves nothing half-started: no ready.json, no admin socket, no
//! lock held, no process running.
#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes: wall-clock deadlines, figures on stderr

mod common;

use std::process::Command;

use common::{Env, bin, p};

struct Outcome {
    code: Option<i32>,
    stderr: String,
}

fn node(env: &Env, args: &[&str]) -> Outcome {
    let out = Command::new(bin())
        .arg("node")
        .args(args)
        .args(["--storage", "memory"])
        .env("RUST_LOG", "info")
        .env_remove("RINGHOST_DATA_DIR")
        .output()
        .expect("ringhost runs");
    let _ = env;
    Outcome {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Exactly one line, `ringhost: ...`, containing every needle.
fn assert_one_line(o: &Outcome, code: i32, needles: &[&str]) {
    assert_eq!(o.code, Some(code), "exit code; stderr: {}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected: {:?}", o.stderr);
    assert!(lines[0].starts_with("ringhost: "), "{}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing in: {}", lines[0]);
    }
}

fn assert_nothing_started(env: &Env, node_name: &str) {
    let dir = env.data_dir(node_name);
    assert!(!dir.join("ready.json").exists(), "ready.json left behind");
    assert!(!dir.join("admin.sock").exists(), "admin socket left behind");
}

#[test]
fn invalid_configs_are_refused_with_exit_2() {
    let env = Env::new("demo", &["n1"]);
    let certs = env.certs();
    let data = env.data_dir("n1");
    let base = ["--name", "n1", "--data-dir", p(&data), "--certs", p(&certs)];

    // Unreadable config.
    let missing = env.path().join("nope.toml");
    let o = node(&env, &["--config", p(&missing)]);
    assert_one_line(&o, 2, &["cannot read config", "nope.toml"]);

    // Unknown key, with its line.
    let bad = env.path().join("bad.toml");
    std::fs::write(&bad, "name = \"n1\"\nmesh_address = \"127.0.0.1:1\"\n").expect("write");
    let o = node(&env, &["--config", p(&bad)]);
    assert_one_line(&o, 2, &["invalid config", "mesh_address", "line 2"]);
    let o = Command::new(bin())
        .args(["check-config", "--config", p(&bad)])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));

    // Not TOML at all.
    std::fs::write(&bad, "name = [").expect("write");
    let o = node(&env, &["--config", p(&bad)]);
    assert_one_line(&o, 2, &["invalid config"]);

    // A seed that is not an address; a host name instead of an IP.
    for seed in ["not-an-address", "localhost:7001"] {
        let mut args = base.to_vec();
        args.extend(["--mesh", "127.0.0.1:0", "--seed", seed]);
        let o = node(&env, &args);
        assert_one_line(&o, 2, &["invalid seed", seed]);
    }
    // A mesh address peers could not reach.
    let mut args = base.to_vec();
    args.extend(["--mesh", "0.0.0.0:7001"]);
    assert_one_line(&node(&env, &args), 2, &["invalid mesh address"]);
    // A bad node name.
    let o = node(
        &env,
        &[
            "--name",
            "N_1",
            "--data-dir",
            p(&data),
            "--certs",
            p(&certs),
            "--mesh",
            "127.0.0.1:0",
        ],
    );
    assert_one_line(&o, 2, &["invalid node name 'N_1'"]);
    assert!(
        !data.exists(),
        "a refused config must not create the data dir"
    );

    // A valid file passes check-config.
    let good = env.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "name = \"n1\"\ndata_dir = \"{}\"\ncerts = \"{}\"\nmesh = \"127.0.0.1:7001\"\nseeds = [\"127.0.0.1:7002\"]\n[gossip]\ninterval = \"200ms\"\n",
            p(&data),
            p(&certs)
        ),
    )
    .expect("write");
    let o = Command::new(bin())
        .args(["check-config", "--config", p(&good)])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("valid"));
}

#[test]
fn certificate_problems_are_refused_with_exit_3() {
    let env = Env::new("demo", &["n1", "n2"]);
    let certs = env.certs();
    let run_as = |name: &str, certs: &std::path::Path| {
        node(
            &env,
            &[
                "--name",
                name,
                "--data-dir",
                p(&env.data_dir(name)),
                "--certs",
                p(certs),
                "--mesh",
                "127.0.0.1:0",
            ],
        )
    };
    // No certificate for this node.
    let o = run_as("n9", &certs);
    assert_one_line(&o, 3, &["n9.pem"]);
    assert_nothing_started(&env, "n9");
    // A certificate directory that does not exist.
    let o = run_as("n1", &env.path().join("missing"));
    assert_one_line(&o, 3, &["ca.pem"]);
    // n2's certificate saved as n3's.
    std::fs::copy(certs.join("n2.pem"), certs.join("n3.pem")).expect("copy");
    std::fs::copy(certs.join("n2.key"), certs.join("n3.key")).expect("copy");
    let o = run_as("n3", &certs);
    assert_one_line(&o, 3, &["names node 'n2'", "'n3'"]);
    // A certificate from another CA.
    let other = env.path().join("other");
    assert!(
        common::run(&["tls", "init", "--dir", p(&other), "--cluster", "demo"])
            .status
            .success()
    );
    assert!(
        common::run(&["tls", "issue", "--dir", p(&other), "--node", "n1"])
            .status
            .success()
    );
    std::fs::copy(certs.join("ca.pem"), other.join("ca.pem")).expect("copy");
    let o = run_as("n1", &other);
    assert_one_line(&o, 3, &["not signed by the cluster CA"]);
    // tls issue never overwrites silently.
    let o = common::run(&["tls", "issue", "--dir", p(&certs), "--node", "n1"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
}

#[test]
fn a_mesh_port_in_use_is_refused_with_exit_4_and_nothing_left() {
    let env = Env::new("demo", &["n1", "n2"]);
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = env.data_dir("n1");
    let o = node(
        &env,
        &[
            "--name",
            "n1",
            "--data-dir",
            p(&data),
            "--certs",
            p(&env.certs()),
            "--mesh",
            &addr,
        ],
    );
    assert_one_line(&o, 4, &["cannot bind mesh address", &addr]);
    assert_nothing_started(&env, "n1");
    // The data dir is not left locked: the same node starts once the port is free.
    drop(taken);
    let n1 = env.start("n1", &[], &[]);
    // A second node on the same data dir is refused while the first runs.
    let o = node(
        &env,
        &[
            "--name",
            "n1",
            "--data-dir",
            p(&data),
            "--certs",
            p(&env.certs()),
            "--mesh",
            "127.0.0.1:0",
        ],
    );
    assert_one_line(&o, 4, &["another ringhost node is running"]);
    assert!(n1.status().is_some(), "the running node is untouched");
}

#[test]
fn status_without_a_node_says_so_with_exit_5() {
    let env = Env::new("demo", &[]);
    let o = common::run(&["status", "--data-dir", p(env.path())]);
    assert_eq!(o.status.code(), Some(5));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no ringhost node answers"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
