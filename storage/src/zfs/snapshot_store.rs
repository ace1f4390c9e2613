//! `SnapshotStore` for `ZfsStore`: the operations the driver calls.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use model::SiteName;

use super::cli::{RO_PROP, classify, io_error, is_fuse_mount};
use super::store::ZfsStore;
use crate::error::{Error, Result};
use crate::rules::check_rel_path;
use crate::store::{SendStream, SnapshotStore};
use crate::types::{Changed, Guid, Snapshot, Stash, snapshot_name};

impl SnapshotStore for ZfsStore {
    fn create_site(&self, site: &SiteName) -> Result<()> {
        let ds = self.dataset(site);
        if self.cli.exists(&ds)? {
            return Err(Error::SiteExists { site: site.clone() });
        }
        self.cli
            .zfs(&[
                "create",
                "-o",
                "readonly=off",
                "-o",
                &format!("{RO_PROP}=off"),
                &ds,
            ])
            .map_err(|e| classify(e, &ds))?;
        self.ensure_mounted(site, &ds).map(drop)
    }

    fn sites(&self) -> Result<Vec<SiteName>> {
        let mut sites: Vec<SiteName> = self
            .list_children(&format!("{}/sites", self.root))?
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        sites.sort();
        Ok(sites)
    }

    fn snapshots(&self, site: &SiteName) -> Result<Vec<Snapshot>> {
        let ds = self.existing(site)?;
        self.chain(&ds)
    }

    fn snapshot(&self, site: &SiteName, seq: u64) -> Result<Snapshot> {
        let ds = self.existing(site)?;
        let name = snapshot_name(seq);
        if self.chain(&ds)?.iter().any(|s| s.name == name) {
            return Err(Error::SnapshotExists {
                site: site.clone(),
                name,
            });
        }
        let full = format!("{ds}@{name}");
        // Before the snapshot: a write in between makes the next `changed`
        // say yes (one snapshot too many), never no.
        let print = self.live_fingerprint(site);
        self.cli
            .zfs(&["snapshot", &full])
            .map_err(|e| classify(e, &full))?;
        self.set_baseline(&ds, print);
        self.exact_snapshots(&ds, &[&full])?
            .pop()
            .ok_or_else(|| Error::NoSuchSnapshot {
                site: site.clone(),
                what: format!("'{name}' right after taking it"),
            })
    }

    fn changed(&self, site: &SiteName) -> Result<Changed> {
        if !self.features.written {
            return self.changed_without_written(site);
        }
        let ds = self.existing(site)?;
        if self.chain(&ds)?.is_empty() {
            return Ok(Changed::Yes);
        }
        Ok(if self.cli.get_u64("written", &ds)? > 0 {
            Changed::Yes
        } else {
            Changed::No
        })
    }

    fn send(&self, site: &SiteName, from: Option<Guid>, to: Guid) -> Result<SendStream> {
        let ds = self.existing(site)?;
        let chain = self.chain(&ds)?;
        self.spawn_send(site, &ds, &chain, from, to)
    }

    fn send_listed(
        &self,
        site: &SiteName,
        chain: &[Snapshot],
        from: Option<Guid>,
        to: Guid,
    ) -> Result<SendStream> {
        self.spawn_send(site, &self.dataset(site), chain, from, to)
    }

    fn receive(&self, site: &SiteName, stream: &mut dyn Read) -> Result<Snapshot> {
        self.receive_inner(site, None, stream)
    }

    fn receive_listed(
        &self,
        site: &SiteName,
        chain: Option<&[Snapshot]>,
        stream: &mut dyn Read,
    ) -> Result<Snapshot> {
        self.receive_inner(site, Some(chain), stream)
    }

    fn set_readonly(&self, site: &SiteName) -> Result<()> {
        let ds = self.existing(site)?;
        self.cli.zfs(&["set", "atime=off", &ds])?;
        self.cli.zfs(&["set", &format!("{RO_PROP}=on"), &ds])?;
        self.cli.zfs(&["set", "readonly=on", &ds]).map(drop)
    }

    fn set_writable(&self, site: &SiteName) -> Result<()> {
        let ds = self.existing(site)?;
        self.cli.zfs(&["set", "readonly=off", &ds])?;
        self.cli.zfs(&["set", &format!("{RO_PROP}=off"), &ds])?;
        // A promoted copy is about to be served: on zfs-fuse the kernel may
        // still cache files of an older snapshot (receives do not
        // invalidate it), so remount once, now.
        let mp = self.cli.get("mountpoint", &ds)?;
        if is_fuse_mount(&mp) {
            self.remount(site, &ds)?;
        }
        // A read-only copy holds its newest snapshot, no more.
        let print = self.live_fingerprint(site);
        self.set_baseline(&ds, print);
        Ok(())
    }

    fn is_readonly(&self, site: &SiteName) -> Result<bool> {
        let ds = self.existing(site)?;
        let row = self
            .cli
            .zfs(&["get", "-H", "-p", "-o", "value,source", "readonly", &ds])?;
        let mut cols = row.trim_end().split('\t');
        let (value, source) = (cols.next(), cols.next());
        if source == Some("temporary") {
            // See RO_PROP: the reported value is not what is in force.
            return Ok(self.cli.get(RO_PROP, &ds)? != "off");
        }
        Ok(value == Some("on"))
    }

    fn stash(&self, site: &SiteName, common: Option<Guid>) -> Result<Stash> {
        let ds = self.existing(site)?;
        let chain = self.chain(&ds)?;
        let common = common.map(|g| Self::find(site, &chain, g)).transpose()?;
        let tag = chain
            .last()
            .map_or_else(|| "empty".to_owned(), |s| s.guid.to_string());
        // The same head can diverge twice (changes after it, stashed, then
        // again): never reuse a stash's name.
        let mut name = format!("{site}-{tag}");
        let mut n = 1;
        while self.cli.exists(&self.stash_dataset(&name))? {
            n += 1;
            name = format!("{site}-{tag}-{n}");
        }
        let stash = self.stash_dataset(&name);
        self.set_baseline(&ds, None);
        self.cli.unmount(&ds)?;
        let renamed = self.rename_to_stash(&ds, &stash);
        // Whatever the rename did, every stash is mounted again after it:
        // the renamed copy comes out unmounted (zfs-fuse), and on "busy"
        // the earlier stashes were unmounted for the rename. A mount that
        // fails does not stop the stash half-way (the copy is under the
        // stash already): `stashes()`, which runs after every stash, tries
        // again.
        self.remount_stashes();
        renamed?;
        // From here on the copy is safe under the stash; make it read-only.
        self.cli.zfs(&["set", "readonly=on", &stash])?;
        self.cli.zfs(&["set", &format!("{RO_PROP}=on"), &stash])?;
        if let Some(common) = common {
            let origin = format!("{stash}@{}", common.name);
            self.cli
                .zfs(&["clone", &origin, &ds])
                .map_err(|e| classify(e, &ds))?;
            self.cli.zfs(&["promote", &ds])?;
            self.ensure_mounted(site, &ds)?;
            // The promote moved the other stashes' origins to `ds`.
            self.remount_stashes();
        }
        self.read_stash(&name)?.ok_or(Error::NoSuchSnapshot {
            site: site.clone(),
            what: format!("stash '{name}'"),
        })
    }

    fn stashes(&self) -> Result<Vec<Stash>> {
        // A stash left unmounted (a stash interrupted by a kill, or by
        // zfs-fuse's rename) is readable again once listed.
        self.remount_stashes();
        let mut out = Vec::new();
        let mut names = self.list_children(&format!("{}/stash", self.root))?;
        names.sort();
        for name in names {
            out.extend(self.read_stash(&name)?);
        }
        Ok(out)
    }

    fn destroy_snapshot(&self, site: &SiteName, guid: Guid) -> Result<()> {
        let ds = self.existing(site)?;
        let snap = Self::find(site, &self.chain(&ds)?, guid)?;
        let full = format!("{ds}@{}", snap.name);
        match self.cli.zfs(&["destroy", &full]) {
            Err(Error::Command { stderr, .. }) if stderr.contains("dependent clones") => {
                Err(Error::HasDependents {
                    site: site.clone(),
                    guid,
                    stderr,
                })
            }
            r => r.map(drop),
        }
    }

    fn destroy_site(&self, site: &SiteName) -> Result<()> {
        let ds = self.existing(site)?;
        self.set_baseline(&ds, None);
        self.cli.unmount(&ds)?;
        self.cli.zfs_unbusy(&["destroy", "-r", &ds]).map(drop)
    }

    fn mountpoint(&self, site: &SiteName) -> Result<PathBuf> {
        let ds = self.existing(site)?;
        // Whoever asks is about to read the files: make them current.
        self.fresh(site, &ds)?;
        Ok(PathBuf::from(self.cli.get("mountpoint", &ds)?))
    }

    fn write_file(&self, site: &SiteName, path: &Path, data: &[u8]) -> Result<()> {
        check_rel_path(site, path)?;
        let ds = self.existing(site)?;
        let full = self.ensure_mounted(site, &ds)?.join(path);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(site, path, "cannot create", e))?;
        }
        let write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&full)?;
            f.write_all(data)?;
            f.sync_all()
        };
        write().map_err(|e| io_error(site, path, "cannot write", e))
    }

    fn read_stash_file(&self, stash: &Stash, path: &Path) -> Result<Vec<u8>> {
        check_rel_path(&stash.site, path)?;
        let ds = self.stash_dataset(&stash.name);
        let mp = self.cli.get("mountpoint", &ds)?;
        if !self.cli.mounted(&ds)? {
            return Err(Error::NotMounted {
                site: stash.site.clone(),
                mountpoint: mp,
            });
        }
        std::fs::read(Path::new(&mp).join(path))
            .map_err(|e| io_error(&stash.site, path, "cannot read", e))
    }

    fn read_file(&self, site: &SiteName, path: &Path) -> Result<Vec<u8>> {
        check_rel_path(site, path)?;
        let ds = self.existing(site)?;
        self.fresh(site, &ds)?;
        let full = self.ensure_mounted(site, &ds)?.join(path);
        std::fs::read(full).map_err(|e| io_error(site, path, "cannot read", e))
    }
}
