//! `EmbeddedPool`: a pool on a sparse file, created or imported at a
//! node's start and exported at its end.

use std::path::{Path, PathBuf};

use super::cli::{Cli, MOUNT_ATTEMPTS};
use crate::error::{Error, Result};

/// A pool on a sparse file: the embedded default, so a laptop needs no
/// spare disk.
#[derive(Debug)]
pub struct EmbeddedPool {
    pub name: String,
    pub image: Option<PathBuf>,
    pub(super) cli: Cli,
}

impl EmbeddedPool {
    /// Imports the pool if it is not imported and its image exists, or
    /// creates the image (sparse, `size` bytes) and the pool (`-m none`).
    pub fn create_or_import(
        zpool_bin: impl Into<PathBuf>,
        name: &str,
        image: &Path,
        size: u64,
    ) -> Result<Self> {
        let cli = Cli {
            zfs: "zfs".into(),
            zpool: zpool_bin.into(),
        };
        let image = std::path::absolute(image).map_err(|e| Error::Io {
            context: format!("cannot resolve pool image path '{}'", image.display()),
            source: e,
        })?;
        let pool = Self {
            name: name.to_owned(),
            image: Some(image.clone()),
            cli,
        };
        if pool.imported()? {
            return Ok(pool);
        }
        let img = image.display().to_string();
        if image.exists() {
            let dir = image
                .parent()
                .map_or_else(|| "/".to_owned(), |d| d.display().to_string());
            pool.cli.zpool(&["import", "-d", &dir, name])?;
        } else {
            let file = std::fs::File::create_new(&image).map_err(|e| Error::Io {
                context: format!("cannot create pool image '{img}'"),
                source: e,
            })?;
            file.set_len(size).map_err(|e| Error::Io {
                context: format!("cannot size pool image '{img}' to {size} bytes"),
                source: e,
            })?;
            if let Err(e) = pool.cli.zpool(&["create", "-m", "none", name, &img]) {
                // The image is ours and holds no pool: remove it.
                let _ = std::fs::remove_file(&image);
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// An existing, imported pool by name.
    pub fn open(zpool_bin: impl Into<PathBuf>, name: &str) -> Result<Self> {
        let pool = Self {
            name: name.to_owned(),
            image: None,
            cli: Cli {
                zfs: "zfs".into(),
                zpool: zpool_bin.into(),
            },
        };
        if !pool.imported()? {
            return Err(Error::Command {
                command: format!("zpool list {name}"),
                status: "not imported".into(),
                stderr: format!("no pool '{name}'"),
            });
        }
        Ok(pool)
    }

    pub(super) fn imported(&self) -> Result<bool> {
        let out = self
            .cli
            .output(&self.cli.zpool, &["list", "-H", "-o", "name", &self.name])?;
        Ok(out.status.success())
    }

    /// Exports the pool (it can be imported again from its image).
    pub fn export(&self) -> Result<()> {
        self.cli.zpool(&["export", &self.name]).map(drop)
    }

    /// Destroys the pool and removes its image file (explicit delete only).
    pub fn destroy(self) -> Result<()> {
        // zfs-fuse can call a just-unmounted pool busy; the next try works.
        let mut result = Ok(String::new());
        for _ in 0..MOUNT_ATTEMPTS {
            result = self.cli.zpool(&["destroy", "-f", &self.name]);
            if result.is_ok() || !self.imported()? {
                break;
            }
        }
        result?;
        if let Some(image) = &self.image {
            std::fs::remove_file(image).map_err(|e| Error::Io {
                context: format!("pool destroyed; cannot remove image '{}'", image.display()),
                source: e,
            })?;
        }
        Ok(())
    }
}
