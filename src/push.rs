//! Uploads: a tar stream that replaces a site's content on its master.
//!
//! The CLI streams the tar to its local node, which streams it on to the
//! master over the mesh when it is not the master itself. The master
//! unpacks into `.ringhost/incoming/` inside the site, and only when the
//! whole upload is there swaps it in, so a broken upload (cut stream, full
//! pool, bad archive) leaves the site as it was. Entries under `.ringhost/`
//! are never taken from an upload. The answer comes once a snapshot holds
//! the upload.

use std::fs;
use std::io::Read;
use std::path::{Component, Path};
use std::time::Duration;

use model::SiteName;
use model::election::Role;
use tokio::io::AsyncRead;

use crate::rpc::{self, Reply, Request};
use crate::sites::{Sites, model_view};

/// How long an upload waits for the site's master to become known.
const MASTER_WAIT: Duration = Duration::from_secs(5);
/// How long an upload may wait for the snapshot that holds it.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// Unpacks and swaps in an upload on this node, which must be the master.
pub async fn receive_local(
    sites: &Sites,
    site: &SiteName,
    reader: Box<dyn AsyncRead + Send + Unpin>,
) -> Reply {
    match sites.local_copy(site).await {
        Some((Role::Master, _, _)) => {}
        Some(_) => return Reply::err(409, format!("this node is not the master of site '{site}'")),
        None => return Reply::err(404, format!("no site '{site}' here")),
    }
    // A copy just promoted may still be being made writable and remounted:
    // wait for that (bounded) rather than write beside the dataset.
    for _ in 0..200 {
        if sites.is_ready(site) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    if !sites.is_ready(site) {
        return Reply::err(
            503,
            format!("site '{site}' is still being promoted here; retry shortly"),
        );
    }
    let store = sites.store.clone();
    let s2 = site.clone();
    let bridge = tokio_util::io::SyncIoBridge::new(reader);
    let unpacked = tokio::task::spawn_blocking(move || {
        let root = store.mountpoint(&s2).map_err(|e| (500, e.to_string()))?;
        unpack(&root, bridge)
    })
    .await;
    match unpacked {
        Ok(Ok(())) => crate::serving::note_push(site),
        Ok(Err((status, e))) => return Reply::err(status, e),
        Err(e) => return Reply::err(500, format!("upload task failed: {e}")),
    }
    match tokio::time::timeout(SNAPSHOT_WAIT, sites.written(site.clone())).await {
        Ok(Ok(_head)) => Reply::ok(),
        Ok(Err(e)) => Reply::err(
            500,
            format!("the upload is in place but the snapshot failed: {e}"),
        ),
        Err(_) => Reply::err(
            504,
            "the upload is in place but no snapshot took it within 60 s",
        ),
    }
}

/// Sends an upload to the site's master, wherever it is.
pub async fn push(
    sites: &Sites,
    site: &SiteName,
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
) -> Reply {
    // A site created a moment ago through another node may not have
    // reached this node's view yet: wait a little for its master.
    let mut rx = sites.gossip.view();
    let deadline = tokio::time::Instant::now() + MASTER_WAIT;
    let mut view = model_view(&rx.borrow_and_update());
    while model::serving_master(&view, site).is_none()
        && tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_ok_and(|r| r.is_ok())
    {
        view = model_view(&rx.borrow_and_update());
    }
    let Some((master, _)) = model::serving_master(&view, site) else {
        let known = view.members.values().any(|m| {
            m.keys
                .iter()
                .any(|k| matches!(k, model::SiteKey::Spec(s, _) if s == site))
        });
        return if known {
            Reply::err(
                503,
                format!("site '{site}' has no master right now; try again shortly"),
            )
        } else {
            Reply::err(404, format!("no site '{site}'"))
        };
    };
    if master == sites.me {
        return receive_local(sites, site, reader).await;
    }
    let forward = async {
        let mut s = sites
            .gossip
            .open_stream(&master)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach master {master}: {e}"))?;
        rpc::write_frame(&mut s.writer, &Request::Push { site: site.clone() }).await?;
        tokio::io::copy(&mut reader, &mut s.writer).await?;
        tokio::io::AsyncWriteExt::shutdown(&mut s.writer).await?;
        rpc::read_frame::<Reply>(&mut s.reader).await
    };
    match forward.await {
        Ok(r) => r,
        Err(e) => Reply::err(502, format!("upload through master {master} failed: {e:#}")),
    }
}

fn io_status(e: &std::io::Error) -> u16 {
    use std::io::ErrorKind;
    // ENOSPC and EDQUOT (tar keeps the kind when it wraps the error).
    if matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || e.to_string().contains("No space left")
    {
        507
    } else {
        500
    }
}

/// Unpacks a tar stream into `root/.ringhost/incoming`, then replaces the
/// site's content with it. On error the site is untouched.
fn unpack(root: &Path, reader: impl Read) -> Result<(), (u16, String)> {
    let own = root.join(".ringhost");
    if !own.join("site.toml").exists() {
        return Err((500, format!("{} is not a mounted site", root.display())));
    }
    let incoming = own.join("incoming");
    let fail = |what: &str, e: std::io::Error| {
        let status = io_status(&e);
        if status == 507 {
            (
                status,
                format!(
                    "{what}: the pool is full (No space left on device); the site is unchanged"
                ),
            )
        } else {
            (status, format!("{what}: {e}"))
        }
    };
    if incoming.exists() {
        fs::remove_dir_all(&incoming).map_err(|e| fail("cannot clear an old upload", e))?;
    }
    fs::create_dir_all(&incoming).map_err(|e| fail("cannot prepare the upload", e))?;
    let result = (|| {
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(false);
        archive.set_overwrite(true);
        let entries = archive
            .entries()
            .map_err(|e| fail("the upload is not a tar stream", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| fail("the upload is cut or corrupt", e))?;
            let path = entry
                .path()
                .map_err(|e| fail("bad path in upload", e))?
                .into_owned();
            let first = path.components().find(|c| !matches!(c, Component::CurDir));
            if let Some(Component::Normal(n)) = first
                && n == ".ringhost"
            {
                continue; // ringhost's own directory is never uploaded
            }
            entry
                .unpack_in(&incoming)
                .map_err(|e| fail(&format!("cannot write '{}'", path.display()), e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&incoming);
        return Err(e);
    }
    // Swap: the old content goes, the new content moves in (renames within
    // one filesystem).
    let swap = || -> std::io::Result<()> {
        for old in fs::read_dir(root)? {
            let old = old?;
            if old.file_name() == ".ringhost" {
                continue;
            }
            if old.file_type()?.is_dir() {
                fs::remove_dir_all(old.path())?;
            } else {
                fs::remove_file(old.path())?;
            }
        }
        for new in fs::read_dir(&incoming)? {
            let new = new?;
            fs::rename(new.path(), root.join(new.file_name()))?;
        }
        fs::remove_dir(&incoming)
    };
    swap().map_err(|e| fail("cannot swap the upload in", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).expect("append");
        }
        b.into_inner().expect("finish")
    }

    fn site_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join(".ringhost")).expect("dir");
        fs::write(d.path().join(".ringhost/site.toml"), "spec").expect("spec");
        fs::write(d.path().join("old.html"), "old").expect("old");
        d
    }

    #[test]
    fn an_upload_replaces_content_but_never_ringhost_own_files() {
        let d = site_dir();
        let tar = tarball(&[
            ("index.html", b"hello"),
            ("a/b/c.txt", b"deep"),
            (".ringhost/site.toml", b"evil"),
        ]);
        unpack(d.path(), &tar[..]).expect("unpack");
        assert_eq!(
            fs::read(d.path().join("index.html")).expect("file"),
            b"hello"
        );
        assert_eq!(fs::read(d.path().join("a/b/c.txt")).expect("file"), b"deep");
        assert!(!d.path().join("old.html").exists());
        assert_eq!(
            fs::read(d.path().join(".ringhost/site.toml")).expect("spec"),
            b"spec"
        );
        assert!(!d.path().join(".ringhost/incoming").exists());
    }

    #[test]
    fn a_cut_upload_leaves_the_site_as_it_was() {
        let d = site_dir();
        let tar = tarball(&[("index.html", &[7u8; 10_000])]);
        let err = unpack(d.path(), &tar[..5_000]).expect_err("cut");
        assert!(
            err.1.contains("cut or corrupt") || err.1.contains("cannot write"),
            "{err:?}"
        );
        assert_eq!(fs::read(d.path().join("old.html")).expect("old"), b"old");
        assert!(!d.path().join("index.html").exists());
        assert!(!d.path().join(".ringhost/incoming").exists());
    }
}
