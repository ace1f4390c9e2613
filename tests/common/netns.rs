//! Hosts as network namespaces: a multi-host test bed on one machine.
//!
//! `Net::new(n)` creates, all owned by the test:
//!
//! - a switch namespace holding a bridge;
//! - `n` host namespaces, each with one veth into the bridge and the
//!   address `10.213.X.k/24` (`k` = 1..=n, `X` chosen per net and checked
//!   unused on this machine);
//! - one veth from the test's own namespace into the bridge, with the
//!   address `10.213.X.254`, so the test's clients (curl) reach every host
//!   directly. Traffic goes nowhere else: the subnet has no gateway.
//!
//! Partitions drop packets between groups of hosts with iptables rules
//! inside the host namespaces (the test's own address stays reachable from
//! every side, so clients can see what each side answers). Everything is
//! removed when the `Net` drops.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs a command, panicking with its stderr when it fails.
fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Whether this machine can run multi-host tests (root, `ip netns`,
/// iptables). In CI they must run; elsewhere they skip with a reason.
pub fn netns_available(test: &str) -> bool {
    let probe = format!("rh-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .output()
        .is_ok_and(|o| o.status.success());
    let iptables = ok
        && Command::new("ip")
            .args(["netns", "exec", &probe, "iptables", "-S"])
            .output()
            .is_ok_and(|o| o.status.success());
    if ok {
        let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    }
    let ok = ok && iptables;
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: network namespaces and iptables are required in CI (run as root; apt install iproute2 iptables)"
        );
        eprintln!("{test}: skipped: needs root, `ip netns` and iptables");
    }
    ok
}

static NETS: AtomicU32 = AtomicU32::new(0);

/// N hosts on one bridge. See the module docs.
#[derive(Debug)]
pub struct Net {
    /// Prefix of every name this net created.
    tag: String,
    subnet: u8,
    hosts: usize,
    /// Host namespaces with partition rules installed.
    cut: std::sync::Mutex<Vec<usize>>,
}

impl Net {
    pub fn new(hosts: usize) -> Net {
        assert!((1..=200).contains(&hosts), "1..=200 hosts");
        let n = NETS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names are at most 15 bytes: "rh" + 5 hex + "h" + k + "a".
        let tag = format!(
            "rh{:05x}",
            (pid.wrapping_mul(31).wrapping_add(n)) & 0xf_ffff
        );
        let used = Command::new("ip")
            .args(["-4", "-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let start = u8::try_from((pid.wrapping_add(n * 37)) % 250).expect("< 250");
        let subnet = (0..250u8)
            .map(|i| ((u16::from(start) + u16::from(i)) % 250) as u8 + 1)
            .find(|x| !used.contains(&format!("10.213.{x}.")))
            .expect("a free 10.213.X.0/24");
        let net = Net {
            tag,
            subnet,
            hosts,
            cut: std::sync::Mutex::default(),
        };
        net.build();
        net
    }

    fn sw(&self) -> String {
        format!("{}-sw", self.tag)
    }

    /// The namespace of host `k` (0-based).
    pub fn ns(&self, k: usize) -> String {
        format!("{}-h{k}", self.tag)
    }

    /// The address of host `k` (0-based).
    pub fn ip(&self, k: usize) -> Ipv4Addr {
        Ipv4Addr::new(
            10,
            213,
            self.subnet,
            u8::try_from(k + 1).expect("≤ 200 hosts"),
        )
    }

    /// The address of the test itself on the bridge.
    pub fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    pub fn hosts(&self) -> usize {
        self.hosts
    }

    fn build(&self) {
        let sw = self.sw();
        sh(&["ip", "netns", "add", &sw]);
        sh(&["ip", "-n", &sw, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for k in 0..self.hosts {
            let ns = self.ns(k);
            let (a, b) = (format!("{}h{k}a", self.tag), format!("{}h{k}b", self.tag));
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &a, "netns", &ns, "type", "veth", "peer", "name", &b, "netns",
                &sw,
            ]);
            sh(&["ip", "-n", &sw, "link", "set", &b, "master", "br0", "up"]);
            let addr = format!("{}/24", self.ip(k));
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &a]);
            sh(&["ip", "-n", &ns, "link", "set", &a, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let (r, b) = (format!("{}r", self.tag), format!("{}rb", self.tag));
        sh(&[
            "ip", "link", "add", &r, "type", "veth", "peer", "name", &b, "netns", &sw,
        ]);
        sh(&["ip", "-n", &sw, "link", "set", &b, "master", "br0", "up"]);
        let addr = format!("{}/24", self.client_ip());
        sh(&["ip", "addr", "add", &addr, "dev", &r]);
        sh(&["ip", "link", "set", &r, "up"]);
    }

    /// Cuts the network between `groups` of hosts: packets between hosts of
    /// different groups are dropped both ways (hosts in no group keep
    /// talking to everyone). The test's client address reaches all.
    pub fn partition(&self, groups: &[&[usize]]) {
        self.heal();
        let mut cut = self.cut.lock().expect("cut list");
        for (gi, g) in groups.iter().enumerate() {
            for &k in *g {
                let ns = self.ns(k);
                for (gj, other) in groups.iter().enumerate() {
                    if gi == gj {
                        continue;
                    }
                    for &j in *other {
                        let ip = self.ip(j).to_string();
                        sh(&[
                            "ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &ip, "-j",
                            "DROP",
                        ]);
                        sh(&[
                            "ip", "netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", &ip,
                            "-j", "DROP",
                        ]);
                    }
                }
                cut.push(k);
            }
        }
    }

    /// Cuts one direction only: packets sent by a host in `from` to a host
    /// in `to` are dropped (on the way out of the sender, and again on the
    /// way into the receiver); packets from `to` to `from` pass. So `to`
    /// cannot hear `from`, while `from` still hears `to`. Replaces any
    /// earlier cut, as [`Net::partition`] does; [`Net::heal`] removes it.
    /// A connection-oriented exchange (a QUIC handshake, a TCP connection)
    /// between the two sides soon fails both ways, since one direction's
    /// acknowledgements are dropped: what still arrives is what `to` sends
    /// to `from` before its connection gives up waiting for an answer.
    pub fn partition_one_way(&self, from: &[usize], to: &[usize]) {
        self.heal();
        let mut cut = self.cut.lock().expect("cut list");
        for &k in from {
            let ns = self.ns(k);
            for &j in to.iter().filter(|&&j| j != k) {
                let ip = self.ip(j).to_string();
                sh(&[
                    "ip", "netns", "exec", &ns, "iptables", "-A", "OUTPUT", "-d", &ip, "-j", "DROP",
                ]);
            }
            cut.push(k);
        }
        for &j in to {
            let ns = self.ns(j);
            for &k in from.iter().filter(|&&k| k != j) {
                let ip = self.ip(k).to_string();
                sh(&[
                    "ip", "netns", "exec", &ns, "iptables", "-A", "INPUT", "-s", &ip, "-j", "DROP",
                ]);
            }
            cut.push(j);
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        let mut cut = self.cut.lock().expect("cut list");
        for k in cut.drain(..) {
            let ns = self.ns(k);
            sh(&["ip", "netns", "exec", &ns, "iptables", "-F", "INPUT"]);
            sh(&["ip", "netns", "exec", &ns, "iptables", "-F", "OUTPUT"]);
        }
    }

    /// The prefix that runs a program inside host `k`: in its network
    /// namespace only (`ip netns exec` would also give it a mount namespace
    /// of its own, where the ZFS mounts made by zfs-fuse are not seen).
    pub fn exec_prefix(&self, k: usize) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.ns(k)),
            "--".into(),
        ]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends inside it and so
        // their peers; the test's own end goes with the switch's.
        let _ = Command::new("ip")
            .args(["link", "del", &format!("{}r", self.tag)])
            .output();
        for k in 0..self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(k)])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.sw()])
            .output();
    }
}
