//! `ringhost site ...`: client commands that talk to the local node's
//! admin API.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};

use crate::admin::client::{ClientBody, EmptyBody, call, call_with, say};
use crate::admin::sites::{CreateSite, SiteInfo, SiteList};
use crate::cli::SiteCommand;
use crate::fail::{EXIT_CONFIG, EXIT_RUNTIME, Fail, FailCode};

pub const EXIT_REFUSED: u8 = 7;

fn refused(code: StatusCode, body: &[u8]) -> Fail {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    Fail {
        code: EXIT_REFUSED,
        err: anyhow::anyhow!("{msg} ({code})"),
    }
}

fn check(code: StatusCode, body: &Bytes) -> Result<(), Fail> {
    if code.is_success() {
        Ok(())
    } else {
        Err(refused(code, body))
    }
}

pub fn run(cmd: SiteCommand) -> Result<(), Fail> {
    match cmd {
        SiteCommand::Create {
            name,
            domains,
            replicas,
            runtime,
            cmd,
            target,
            json,
        } => {
            let runtime = match (runtime.as_str(), cmd) {
                ("static", None) => model::Runtime::Static,
                ("static", Some(_)) => {
                    return Err(anyhow::anyhow!("--cmd needs --runtime command")).code(EXIT_CONFIG);
                }
                (_, Some(cmd)) => model::Runtime::Command { cmd },
                (_, None) => {
                    return Err(anyhow::anyhow!("--runtime command needs --cmd")).code(EXIT_CONFIG);
                }
            };
            let req = CreateSite {
                name,
                domains,
                replicas: Some(replicas),
                runtime: Some(runtime),
            };
            let body = serde_json::to_vec(&req).code(EXIT_RUNTIME)?;
            let (code, body) = call_with(
                &target.data_dir,
                Method::POST,
                "/v1/sites",
                Some("application/json"),
                ClientBody::bytes(body),
            )?;
            check(code, &body)?;
            if json {
                say(String::from_utf8_lossy(&body).trim_end());
            } else {
                let info: SiteInfo = serde_json::from_slice(&body)
                    .context("unexpected answer")
                    .code(EXIT_RUNTIME)?;
                say(&format!(
                    "created site '{}' (master {}, {} cop{} wanted)",
                    info.name,
                    info.master.as_deref().unwrap_or("-"),
                    info.replicas,
                    if info.replicas == 1 { "y" } else { "ies" }
                ));
            }
            Ok(())
        }
        SiteCommand::Push { name, dir, target } => push(&target.data_dir, &name, &dir),
        SiteCommand::List { target, json } => {
            let (code, body) = call(&target.data_dir, Method::GET, "/v1/sites")?;
            check(code, &body)?;
            if json {
                say(String::from_utf8_lossy(&body).trim_end());
                return Ok(());
            }
            let list: SiteList = serde_json::from_slice(&body)
                .context("unexpected answer")
                .code(EXIT_RUNTIME)?;
            let mut out = format!(
                "{:<20} {:<8} {:>5} {:>6} {:>6}  DOMAINS",
                "SITE", "MASTER", "EPOCH", "COPIES", "HEAD"
            );
            for s in &list.sites {
                let head = s
                    .copies
                    .iter()
                    .find(|c| Some(&c.node) == s.master.as_ref())
                    .map(|c| c.head.seq.to_string())
                    .unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "\n{:<20} {:<8} {:>5} {:>3}/{:<2} {:>6}  {}",
                    s.name,
                    s.master.as_deref().unwrap_or("-"),
                    s.epoch,
                    s.copies.len(),
                    s.replicas,
                    head,
                    s.domains.join(" ")
                ));
            }
            say(&out);
            Ok(())
        }
        SiteCommand::Show { name, target, json } => {
            let (code, body) = call(&target.data_dir, Method::GET, &format!("/v1/sites/{name}"))?;
            check(code, &body)?;
            if json {
                say(String::from_utf8_lossy(&body).trim_end());
                return Ok(());
            }
            let s: SiteInfo = serde_json::from_slice(&body)
                .context("unexpected answer")
                .code(EXIT_RUNTIME)?;
            let mut out = format!(
                "site {}  domains: {}\nmaster: {}  epoch: {}  copies: {} of {}\n",
                s.name,
                s.domains.join(" "),
                s.master.as_deref().unwrap_or("none"),
                s.epoch,
                s.copies.len(),
                s.replicas
            );
            out.push_str(&format!(
                "{:<10} {:<9} {:<6} {:>6} {:>22} {:>8}",
                "NODE", "ROLE", "ALIVE", "SEQ", "GUID", "LAG"
            ));
            for c in &s.copies {
                out.push_str(&format!(
                    "\n{:<10} {:<9} {:<6} {:>6} {:>22} {:>7.1}s",
                    c.node, c.role, c.alive, c.head.seq, c.head.guid, c.lag_s
                ));
            }
            for st in &s.stashes {
                out.push_str(&format!("\nstash on {}: {}", st.node, st.name));
            }
            if !s.migrations.is_empty() {
                out.push_str("\nmigrations (last first):");
            }
            for m in s.migrations.iter().rev() {
                out.push_str(&format!("\n  {}", migration_line(m)));
            }
            if let Some(l) = &s.local {
                out.push_str(&format!(
                    "\nthis node ({}): {} at epoch {}{}; election: {}; alive {}, warm {}",
                    l.node,
                    l.role,
                    l.epoch,
                    if l.busy { ", busy" } else { "" },
                    l.election,
                    l.alive,
                    l.warm
                ));
                if l.failures > 0 {
                    out.push_str(&format!(
                        "; {} failures, next try in {} ms",
                        l.failures, l.retry_in_ms
                    ));
                }
            }
            say(&out);
            Ok(())
        }
        SiteCommand::Log { name, target } => {
            let (code, body) = call(
                &target.data_dir,
                Method::GET,
                &format!("/v1/sites/{name}/log"),
            )?;
            check(code, &body)?;
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            out.write_all(&body)
                .and_then(|()| out.flush())
                .context("cannot write the log to stdout")
                .code(EXIT_RUNTIME)?;
            Ok(())
        }
        SiteCommand::Migrate {
            name,
            to,
            target,
            json,
        } => migrate(&target.data_dir, &name, &to, json),
        SiteCommand::Delete { name, yes, target } => {
            if !yes {
                return Err(anyhow::anyhow!(
                    "deleting site '{name}' destroys every copy of it; pass --yes to confirm"
                ))
                .code(EXIT_CONFIG);
            }
            let (code, body) = call(
                &target.data_dir,
                Method::DELETE,
                &format!("/v1/sites/{name}"),
            )?;
            check(code, &body)?;
            say(&format!(
                "site '{name}' is being deleted: every node destroys its copy as it learns of it"
            ));
            Ok(())
        }
    }
}

/// A `std::io::Write` that hands chunks to an async body stream.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<hyper::body::Frame<Bytes>, std::io::Error>>,
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(buf))))
            .map_err(|_| std::io::Error::other("the upload was cut off"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams `dir` as a tar archive to the node.
fn push(data_dir: &Path, name: &str, dir: &Path) -> Result<(), Fail> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read {}", dir.display()))
        .code(EXIT_CONFIG)?;
    if !meta.is_dir() {
        return Err(anyhow::anyhow!("{} is not a directory", dir.display())).code(EXIT_CONFIG);
    }
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let dir = dir.to_owned();
    let packer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(256 * 1024, ChunkWriter { tx: tx.clone() });
        let result = (|| {
            let mut b = tar::Builder::new(&mut w);
            b.follow_symlinks(false);
            b.append_dir_all(".", &dir)?;
            b.finish()
        })();
        if let Err(e) = &result {
            // Cut the body so the node sees a broken upload, not a short one.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        drop(b_flush(w));
        result
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let body = http_body_util::StreamBody::new(stream).boxed_unsync();
    let (code, resp) = call_with(
        data_dir,
        Method::PUT,
        &format!("/v1/sites/{name}/content"),
        Some("application/x-tar"),
        body,
    )?;
    let packed = packer
        .join()
        .map_err(|_| anyhow::anyhow!("the packing thread panicked"))
        .code(EXIT_RUNTIME)?;
    // The node's answer first: when it refuses early, the packer only
    // sees its body cut off.
    check(code, &resp)?;
    packed
        .context("cannot pack the directory")
        .code(EXIT_CONFIG)?;
    say(&format!("pushed to site '{name}'; a snapshot holds it"));
    Ok(())
}

fn b_flush(mut w: std::io::BufWriter<ChunkWriter>) -> std::io::Result<()> {
    std::io::Write::flush(&mut w)
}

/// `2024-05-01 12:00:03 UTC` for Unix milliseconds.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One migration of `site show`'s list.
fn migration_line(m: &crate::migration_log::Record) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let outcome = match (&m.outcome[..], &m.resumed_on, &m.error) {
        ("done", ..) => format!("done (epoch {})", m.epoch),
        (_, Some(on), Some(e)) => format!("failed, resumed on {on}: {e}"),
        (o, _, e) => format!("{o}: {}", e.as_deref().unwrap_or("-")),
    };
    let pause = m
        .pause_ms
        .map_or_else(|| "no pause".to_owned(), |p| format!("pause {p:.0} ms"));
    let delta = m
        .final_delta_bytes
        .map_or_else(String::new, |b| format!(", final delta {:.2} MiB", mib(b)));
    format!(
        "{} {} -> {}: {outcome}; {pause}{delta}, {} pre-copy round{} ({:.1} MiB), total {:.2} s",
        utc(m.started_ms),
        m.from,
        m.to,
        m.precopy_rounds,
        if m.precopy_rounds == 1 { "" } else { "s" },
        mib(m.precopy_bytes),
        m.total_ms / 1000.0
    )
}

/// The pre-copy progress bar on a terminal: `round 1 [#####     ] 40.0/80.0 MiB`.
fn progress_bar(round: u32, bytes: u64, total: Option<u64>) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    const WIDTH: usize = 30;
    match total {
        Some(t) if t > 0 => {
            let frac = (bytes as f64 / t as f64).clamp(0.0, 1.0);
            let fill = (frac * WIDTH as f64).round() as usize;
            format!(
                "pre-copy round {round} [{}{}] {:.1}/{:.1} MiB {:>3.0}%",
                "#".repeat(fill),
                " ".repeat(WIDTH - fill),
                mib(bytes),
                mib(t),
                frac * 100.0
            )
        }
        _ => format!("pre-copy round {round}: {:.1} MiB sent", mib(bytes)),
    }
}

/// `site migrate`: starts the migration, then follows its events.
fn migrate(data_dir: &Path, name: &str, to: &str, json: bool) -> Result<(), Fail> {
    use crate::migration_log::{Log, Progress};
    let ask = serde_json::to_vec(&serde_json::json!({ "to": to }))
        .context("encoding")
        .code(EXIT_RUNTIME)?;
    let (code, body) = call_with(
        data_dir,
        Method::POST,
        &format!("/v1/sites/{name}/migrate"),
        Some("application/json"),
        ClientBody::bytes(ask),
    )?;
    check(code, &body)?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    // A bar on a terminal; scripts get a line per phase (and, with
    // --json, the `copying` events too).
    let tty = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut bar_shown = false;
    let mut last_copying = None;
    let mut seen = 0;
    loop {
        let (code, body) = call(
            data_dir,
            Method::GET,
            &format!("/v1/sites/{name}/migration"),
        )?;
        check(code, &body)?;
        let log: Log = serde_json::from_slice(&body)
            .context("malformed migration log")
            .code(EXIT_RUNTIME)?;
        let fresh = &log.events[seen.min(log.events.len())..];
        if bar_shown && !fresh.is_empty() {
            // The next line replaces the bar.
            use std::io::Write as _;
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            bar_shown = false;
        }
        for ev in fresh {
            if json {
                say(&serde_json::to_string(ev).unwrap_or_default());
                continue;
            }
            match ev {
                Progress::Started {
                    site,
                    from,
                    to,
                    epoch,
                } => say(&format!(
                    "migrating {site} from {from} to {to} (epoch {epoch})"
                )),
                // Kept apart from the events (`Log::copying`).
                Progress::Copying { .. } => {}
                Progress::Copied {
                    round,
                    bytes,
                    seq,
                    ms,
                } => say(&format!(
                    "pre-copy round {round}: {:.1} MiB in {:.2} s (snapshot {seq})",
                    mib(*bytes),
                    *ms as f64 / 1000.0
                )),
                Progress::Paused { in_flight } => {
                    say(&format!("paused: new requests held, {in_flight} in flight"))
                }
                Progress::Drained { ms, all_ended } => say(&format!(
                    "drained after {ms} ms{}",
                    if *all_ended {
                        ""
                    } else {
                        " (long-lived connections closed)"
                    }
                )),
                Progress::Stopped { seq, ms } => say(&format!(
                    "stopped; final snapshot {seq} ({ms} ms into the pause)"
                )),
                Progress::HandedOver { final_bytes, ms } => say(&format!(
                    "handed over: final delta {:.2} MiB; released after a {ms} ms pause",
                    mib(*final_bytes)
                )),
                Progress::Done(r) => say(&format!(
                    "done: {} now served by {} (epoch {}); pause {:.0} ms, final delta {} bytes, {} pre-copy rounds ({:.1} MiB), total {:.2} s",
                    r.site,
                    r.to,
                    r.epoch,
                    r.pause_ms,
                    r.final_delta_bytes,
                    r.precopy_rounds,
                    mib(r.precopy_bytes),
                    r.total_ms / 1000.0
                )),
                Progress::Failed { error, resumed_on } => say(&format!(
                    "failed: {error}; the site serves from {resumed_on}"
                )),
            }
        }
        seen = log.events.len();
        if let Some(
            c @ Progress::Copying {
                round,
                bytes,
                total,
            },
        ) = &log.copying
        {
            let key = Some((*round, *bytes));
            if key != last_copying {
                last_copying = key;
                if json {
                    say(&serde_json::to_string(c).unwrap_or_default());
                } else if tty {
                    use std::io::Write as _;
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[K{}", progress_bar(*round, *bytes, *total));
                    let _ = err.flush();
                    bar_shown = true;
                }
            }
        }
        if log.done {
            return match log.events.last() {
                Some(Progress::Done(_)) => Ok(()),
                _ => Err(Fail {
                    code: EXIT_REFUSED,
                    err: anyhow::anyhow!("migration of '{name}' to '{to}' failed"),
                }),
            };
        }
        #[allow(clippy::disallowed_methods)] // a client polling its node
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn the_progress_bar_fills_with_the_bytes_sent() {
        assert_eq!(
            progress_bar(1, 50 << 20, Some(100 << 20)),
            "pre-copy round 1 [###############               ] 50.0/100.0 MiB  50%"
        );
        assert!(
            progress_bar(1, 200 << 20, Some(100 << 20))
                .contains("[##############################] 200.0/100.0 MiB 100%")
        );
        assert_eq!(
            progress_bar(2, 3 << 20, None),
            "pre-copy round 2: 3.0 MiB sent"
        );
    }
}
