//! The command runtime: the master runs the site's command (`sh -c`) in
//! the site's directory, with `PORT`, `TLS_PORT`, `RINGHOST_SITE`,
//! `RINGHOST_NODE` and `RINGHOST_EPOCH` in its environment, supervised by
//! `proxy::runtime::CommandRuntime` (restarted when it exits, its process
//! group stopped on demotion), and the gate forwards to its ports.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use model::Runtime;
use proxy::runtime::{CommandRuntime, CommandSpec, RuntimeState};
use proxy::{Backend, BoxFuture, Target};
use tokio::task::JoinHandle;
use tracing::info;

use super::kind::{Kind, Running, Start};

pub struct Command {
    pub cmd: String,
}

/// A command this node runs as a site's master.
struct Process {
    spec_id: u64,
    /// The promotion the command was started under (`Sites::ready_since`):
    /// a master that claims its site again at a later epoch (after a failed
    /// hand-over) keeps its command; one that stepped down and was promoted
    /// again starts a new one.
    ready_since: Option<u64>,
    cmd: String,
    rt: CommandRuntime,
    tls: SocketAddr,
    watcher: JoinHandle<()>,
}

fn pick_port() -> io::Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

impl Kind for Command {
    fn start(&self, s: Start<'_>) -> Result<Box<dyn Running>, String> {
        let tls_port = pick_port().map_err(|e| format!("cannot pick a TLS port: {e}"))?;
        let mut spec = CommandSpec::new(&self.cmd, s.dir, s.log);
        spec.env = vec![
            ("TLS_PORT".into(), tls_port.to_string()),
            ("RINGHOST_SITE".into(), s.site.to_string()),
            ("RINGHOST_NODE".into(), s.node.to_string()),
            ("RINGHOST_EPOCH".into(), s.epoch.to_string()),
        ];
        spec.stop_timeout = Duration::from_secs(3);
        let rt = CommandRuntime::start(spec)
            .map_err(|e| format!("cannot start the site's command: {e}"))?;
        info!(site = %s.site, port = rt.port(), tls_port, "starting the site's command");
        let mut rx = rt.subscribe();
        let wake = s.wake;
        let watcher = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                wake.notify_one();
            }
        });
        Ok(Box::new(Process {
            spec_id: s.spec_id,
            ready_since: s.ready_since,
            cmd: self.cmd.clone(),
            rt,
            tls: SocketAddr::from((Ipv4Addr::LOCALHOST, tls_port)),
            watcher,
        }))
    }

    fn runs_site_code(&self) -> bool {
        true
    }
}

impl Running for Process {
    fn target(&self) -> Option<Target> {
        match self.rt.state() {
            RuntimeState::Running { .. } => Some(Target::Local {
                backend: Backend::Tcp(self.rt.addr()),
                tls: Some(self.tls),
            }),
            _ => None,
        }
    }

    fn is_for(&self, runtime: &Runtime, spec_id: u64, ready_since: Option<u64>) -> bool {
        matches!(runtime, Runtime::Command { cmd } if *cmd == self.cmd)
            && self.spec_id == spec_id
            && self.ready_since == ready_since
    }

    fn addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some((self.rt.addr(), self.tls))
    }

    fn pid(&self) -> Option<u32> {
        match self.rt.state() {
            RuntimeState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.watcher.abort();
        Box::pin(self.rt.stop())
    }
}
