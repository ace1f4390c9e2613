//! The seam every runtime kind implements.

use std::net::SocketAddr;
use std::path::PathBuf;

use model::{Epoch, NodeName, Runtime, SiteName};
use proxy::{BoxFuture, Target};
use tokio::sync::Notify;

/// What starting a runtime is given.
pub struct Start<'a> {
    pub site: &'a SiteName,
    pub node: &'a NodeName,
    /// The claim it starts under.
    pub epoch: Epoch,
    /// The site's incarnation.
    pub spec_id: u64,
    /// The promotion it starts under (`Sites::ready_since`).
    pub ready_since: Option<u64>,
    /// The site's mountpoint on this node.
    pub dir: PathBuf,
    /// The runtime's log file.
    pub log: PathBuf,
    /// Woken whenever the runtime's state changes.
    pub wake: std::sync::Arc<Notify>,
}

/// A kind of runtime.
pub trait Kind: Send + Sync {
    /// Starts one instance for a site this node now serves as master.
    fn start(&self, s: Start<'_>) -> Result<Box<dyn Running>, String>;
    /// Whether it runs the site's own code, which writes to the copy by
    /// itself (the node looks for changes every snapshot interval), starts
    /// again on new content (a push), and must see its in-flight requests
    /// end before a migration's final snapshot. A site served from its
    /// files alone needs none of that: its in-flight reads finish from
    /// this copy, which the final snapshot holds too.
    fn runs_site_code(&self) -> bool;
    /// The target while a migration holds the site and no instance runs:
    /// `None` (the gate holds the requests) unless the copy can serve
    /// without one.
    fn target_without_instance(&self, dir: PathBuf) -> Option<Target> {
        let _ = dir;
        None
    }
}

/// One started runtime of one site.
pub trait Running: Send {
    /// Where the gate sends the site's requests; `None` while it is not
    /// ready (starting, or exited and restarting).
    fn target(&self) -> Option<Target>;
    /// Whether it was started for this `runtime` of this incarnation
    /// (`spec_id`) and this promotion (`ready_since`); else it is replaced.
    fn is_for(&self, runtime: &Runtime, spec_id: u64, ready_since: Option<u64>) -> bool;
    /// The addresses its requests went to (HTTP, TLS), kept while a
    /// migration holds the site.
    fn addrs(&self) -> Option<(SocketAddr, SocketAddr)> {
        None
    }
    /// The process group to stop should a later run of this node find it
    /// still running.
    fn pid(&self) -> Option<u32> {
        None
    }
    /// Stops it; the future ends once it is gone.
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}
