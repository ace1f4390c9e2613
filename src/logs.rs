//! Site runtime logs on this node (`DATA_DIR/logs/<site>.log`): where
//! they are, their end as the admin API shows it, and the master side of
//! `Request::Log`, which other nodes' admin APIs ask for.

use std::io;
use std::path::PathBuf;
use std::sync::OnceLock;

use gossip::MeshStream;
use model::SiteName;
use tokio::io::AsyncWriteExt;

use crate::rpc::{self, Reply};

/// The most of a runtime log the admin API shows (its end).
pub const LOG_TAIL: u64 = 1 << 20;

/// Where runtime logs live (`DATA_DIR/logs`), set once at start-up.
static LOG_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets where runtime logs live; the first call wins.
pub fn set_dir(dir: PathBuf) {
    let _ = LOG_DIR.set(dir);
}

/// The log file of a site's runtime on this node.
pub fn log_path(site: &SiteName) -> Option<PathBuf> {
    LOG_DIR.get().map(|d| d.join(format!("{site}.log")))
}

/// Reads the end of a site's runtime log on this node: `None` if there is
/// none.
pub fn read_log_tail(site: &SiteName) -> io::Result<Option<Vec<u8>>> {
    use std::io::{Read, Seek, SeekFrom};
    let Some(path) = log_path(site) else {
        return Ok(None);
    };
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len > LOG_TAIL {
        f.seek(SeekFrom::Start(len - LOG_TAIL))?;
    }
    let mut out = Vec::new();
    f.take(LOG_TAIL).read_to_end(&mut out)?;
    Ok(Some(out))
}

/// The master side of [`rpc::Request::Log`].
pub async fn serve_log(site: &SiteName, s: &mut MeshStream) -> anyhow::Result<()> {
    let site2 = site.clone();
    let tail = tokio::task::spawn_blocking(move || read_log_tail(&site2)).await?;
    match tail {
        Ok(Some(bytes)) => {
            rpc::write_frame(&mut s.writer, &Reply::ok()).await?;
            s.writer.write_all(&bytes).await?;
        }
        Ok(None) => {
            rpc::write_frame(
                &mut s.writer,
                &Reply::err(
                    404,
                    format!("site '{site}' has no runtime log on this node"),
                ),
            )
            .await?;
        }
        Err(e) => {
            rpc::write_frame(
                &mut s.writer,
                &Reply::err(500, format!("cannot read the log of site '{site}': {e}")),
            )
            .await?;
        }
    }
    Ok(())
}
