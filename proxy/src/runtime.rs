//! The `command` runtime: a supervised process that serves a site over
//! HTTP on a loopback port.
//!
//! [`CommandRuntime::start`] picks a free loopback port, runs `sh -c CMD`
//! in the site's directory with `PORT` in its environment, waits until the
//! port accepts connections, and restarts the process with exponential
//! backoff whenever it exits. Its stdout and stderr, and one line per
//! start and exit from the supervisor, are appended to a log file.
//!
//! Each start runs in a process group of its own, so that signals reach
//! the whole tree `sh` started (servers fork); processes are signalled by
//! that group's id, never by name, and every child is reaped. Stopping
//! sends SIGTERM, then SIGKILL after [`CommandSpec::stop_timeout`]. Dropping
//! the handle stops the process in the background; [`CommandRuntime::stop`]
//! waits for it.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

/// What to run and how to supervise it.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Run as `sh -c COMMAND`.
    pub command: String,
    /// The working directory (the site's mountpoint).
    pub cwd: PathBuf,
    /// Output goes here, appended.
    pub log_path: PathBuf,
    /// Extra environment (`PORT` is always set).
    pub env: Vec<(String, String)>,
    /// How long a start may take to accept connections before it counts as
    /// failed (and is killed and retried).
    pub ready_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A process that ran this long resets the backoff.
    pub stable_after: Duration,
    /// Between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
}

impl CommandSpec {
    pub fn new(
        command: impl Into<String>,
        cwd: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
    ) -> Self {
        CommandSpec {
            command: command.into(),
            cwd: cwd.into(),
            log_path: log_path.into(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            stable_after: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// What the supervised process is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeState {
    /// Started, not yet accepting connections.
    Starting { attempt: u32, pid: u32 },
    /// Accepting connections on the port.
    Running { attempt: u32, pid: u32 },
    /// Exited or failed to start; the next start is after `delay`.
    Backoff {
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// Stopped on request; it will not start again.
    Stopped,
}

/// A handle on a supervised command. Dropping it stops the process.
#[derive(Debug)]
pub struct CommandRuntime {
    port: u16,
    state: watch::Receiver<RuntimeState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Why [`CommandRuntime::start`] failed. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot pick a loopback port: {0}")]
    Port(std::io::Error),
    #[error("cannot open log file '{path}': {err}")]
    Log { path: PathBuf, err: std::io::Error },
}

impl CommandRuntime {
    /// Starts supervising. Must be called within a tokio runtime.
    pub fn start(spec: CommandSpec) -> Result<CommandRuntime, StartError> {
        let port = pick_port().map_err(StartError::Port)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .map_err(|err| StartError::Log {
                path: spec.log_path.clone(),
                err,
            })?;
        let (state_tx, state) = watch::channel(RuntimeState::Backoff {
            attempt: 0,
            delay: Duration::ZERO,
            reason: "not started yet".into(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(supervise(spec, port, log, state_tx, stop_rx));
        Ok(CommandRuntime {
            port,
            state,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The loopback port the process is told to listen on (the same across
    /// restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    pub fn state(&self) -> RuntimeState {
        self.state.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<RuntimeState> {
        self.state.clone()
    }

    /// Waits until the process accepts connections; its pid. `None` if it
    /// does not within `within` (it keeps being supervised).
    pub async fn wait_running(&self, within: Duration) -> Option<u32> {
        let mut rx = self.state.clone();
        let wait = rx.wait_for(|s| matches!(s, RuntimeState::Running { .. }));
        match tokio::time::timeout(within, wait).await {
            Ok(Ok(s)) => match *s {
                RuntimeState::Running { pid, .. } => Some(pid),
                _ => None,
            },
            _ => None,
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL) and waits until it and
    /// the supervisor are gone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for CommandRuntime {
    fn drop(&mut self) {
        // The supervisor task stops the process and reaps it on its own;
        // if the tokio runtime itself is shutting down, kill_on_drop on the
        // child still kills the group leader.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn pick_port() -> std::io::Result<u16> {
    // Bind and release: the process binds it right after. Another binder
    // could take it in between; the start then fails and is retried.
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

fn log_line(log: &mut std::fs::File, line: &str) {
    // Small appends to a local file; an error here must not stop serving.
    let _ = writeln!(log, "[ringhost] {line}");
}

fn signal_group(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (already gone) is fine.
        let _ = killpg(Pid::from_raw(pid), sig);
    }
}

async fn stop_child(child: &mut Child, pid: u32, timeout: Duration) {
    signal_group(pid, Signal::SIGTERM);
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Whatever the leader left behind in its group goes too.
    signal_group(pid, Signal::SIGKILL);
}

async fn supervise(
    spec: CommandSpec,
    port: u16,
    mut log: std::fs::File,
    state: watch::Sender<RuntimeState>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = spec.backoff_min;
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        log_line(
            &mut log,
            &format!("start #{attempt}: sh -c {:?} (PORT={port})", spec.command),
        );
        let spawned = spawn(&spec, port, &log);
        let reason = match spawned {
            Err(e) => format!("cannot start: {e}"),
            Ok((mut child, pid)) => {
                let _ = state.send(RuntimeState::Starting { attempt, pid });
                let started = Instant::now();
                let outcome = tokio::select! {
                    r = wait_ready(port, spec.ready_timeout) => if r { None } else { Some("not accepting connections in time".to_owned()) },
                    status = child.wait() => Some(format!("exited before accepting connections: {}", exit_text(status))),
                    _ = &mut stop => {
                        stop_child(&mut child, pid, spec.stop_timeout).await;
                        break;
                    }
                };
                match outcome {
                    Some(reason) => {
                        stop_child(&mut child, pid, spec.stop_timeout).await;
                        reason
                    }
                    None => {
                        info!(pid, port, "command runtime running");
                        let _ = state.send(RuntimeState::Running { attempt, pid });
                        tokio::select! {
                            status = child.wait() => {
                                // Clean up anything the leader left in its group.
                                signal_group(pid, Signal::SIGKILL);
                                if started.elapsed() >= spec.stable_after {
                                    backoff = spec.backoff_min;
                                }
                                format!("exited: {}", exit_text(status))
                            }
                            _ = &mut stop => {
                                stop_child(&mut child, pid, spec.stop_timeout).await;
                                break;
                            }
                        }
                    }
                }
            }
        };
        warn!(%reason, attempt, delay_ms = backoff.as_millis() as u64, "command runtime down; restarting");
        log_line(&mut log, &format!("{reason}; restarting in {backoff:?}"));
        let _ = state.send(RuntimeState::Backoff {
            attempt,
            delay: backoff,
            reason,
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = &mut stop => break,
        }
        backoff = (backoff * 2).min(spec.backoff_max);
    }
    log_line(&mut log, "stopped");
    let _ = state.send(RuntimeState::Stopped);
}

fn spawn(spec: &CommandSpec, port: u16, log: &std::fs::File) -> std::io::Result<(Child, u32)> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(&spec.command)
        .current_dir(&spec.cwd)
        .env("PORT", port.to_string())
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log.try_clone()?))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("child exited before its pid was read"))?;
    Ok((child, pid))
}

fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

async fn wait_ready(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .is_ok()
        {
            return true;
        }
        // A refused connect on loopback costs microseconds; polling often
        // shortens a live migration's pause by the command's start.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}
