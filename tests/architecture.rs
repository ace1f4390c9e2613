//! The layering of DESIGN.md, checked: the sans-I/O core depends on no
//! async runtime, network or TLS stack, and no library crate depends on the
//! simulator.

#![allow(clippy::print_stderr)] // reports what it found

use std::process::Command;

fn normal_deps(package: &str) -> String {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree -p {package}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn crate_names(tree: &str) -> Vec<String> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_model_crate_has_no_io_dependencies() {
    let deps = crate_names(&normal_deps("model"));
    for banned in [
        "tokio", "quinn", "rustls", "chitchat", "storage", "gossip", "proxy", "hyper",
    ] {
        assert!(
            !deps.iter().any(|d| d == banned),
            "model depends on {banned}: {deps:?}"
        );
    }
}

#[test]
fn nothing_depends_on_the_simulator_and_libraries_keep_their_lane() {
    for lib in ["model", "gossip", "storage", "proxy", "ringhost"] {
        let deps = crate_names(&normal_deps(lib));
        assert!(!deps.iter().any(|d| d == "sim"), "{lib} depends on sim");
    }
    // gossip, storage and proxy do not depend on each other.
    for (lib, others) in [
        ("gossip", ["storage", "proxy"]),
        ("storage", ["gossip", "proxy"]),
        ("proxy", ["gossip", "storage"]),
    ] {
        let deps = crate_names(&normal_deps(lib));
        for o in others {
            assert!(!deps.iter().any(|d| d == o), "{lib} depends on {o}");
        }
    }
}
