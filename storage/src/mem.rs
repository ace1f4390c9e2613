//! `MemStore`: a `SnapshotStore` in memory with the same chain, guid and
//! receive rules as ZFS, for the simulator and fast tests.
//!
//! Files are a map path → bytes. Blocks are modelled per file: a snapshot
//! shares the live dataset's `Arc`s, so space (for the optional capacity)
//! is the sum of distinct file contents held anywhere. Guids come from a
//! seeded generator, so the same seed gives the same guids.
//!
//! Time: the store reads no clock. It has a logical clock, set by its owner
//! with [`MemStore::set_clock`] (Unix seconds, 0 until set), whose value
//! stamps each snapshot it takes as [`Snapshot::created`]. A received
//! snapshot keeps the sender's `created`, carried in the stream like the
//! guid, as `zfs receive` keeps the sender's `creation`; its `createtxg`
//! is the receiver's own, as on ZFS.
//!
//! Stream format (little-endian): `b"RHM2"`, from guid `u64` (0: full), to
//! guid `u64`, to's creation time `u64` (Unix seconds), snapshot name (`u32`
//! length + UTF-8), file count `u32`, then per file path (`u32` + UTF-8)
//! and data (`u64` + bytes), and last an
//! FNV-1a 64 checksum `u64` of everything before it. An incremental stream
//! carries the whole file map of its target; only its base check makes it
//! incremental.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use model::SiteName;

use crate::error::{Error, Result};
use crate::rules::{check_receive, check_rel_path};
use crate::store::{SendStream, SnapshotStore};
use crate::types::{Changed, Guid, Snapshot, Stash, StreamHeader, snapshot_name};

type Files = BTreeMap<PathBuf, Arc<Vec<u8>>>;

#[derive(Clone, Debug, Default)]
struct Dataset {
    live: Files,
    snaps: Vec<(Snapshot, Files)>,
    readonly: bool,
    /// Written since the newest snapshot.
    dirty: bool,
}

impl Dataset {
    fn chain(&self) -> Vec<Snapshot> {
        self.snaps.iter().map(|(s, _)| s.clone()).collect()
    }
}

#[derive(Clone, Debug)]
struct StashDs {
    site: SiteName,
    ds: Dataset,
    origin: Option<Guid>,
}

#[derive(Debug)]
struct Inner {
    rng: u64,
    txg: u64,
    /// The logical clock (Unix seconds) that stamps new snapshots.
    clock: u64,
    capacity: Option<u64>,
    sites: BTreeMap<SiteName, Dataset>,
    stashes: BTreeMap<String, StashDs>,
}

impl Inner {
    /// splitmix64: small, seeded, and the same on every platform.
    fn next_guid(&mut self) -> Guid {
        loop {
            self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            if z != 0 {
                return Guid(z);
            }
        }
    }

    fn next_txg(&mut self) -> u64 {
        self.txg += 1;
        self.txg
    }

    fn site(&self, site: &SiteName) -> Result<&Dataset> {
        self.sites
            .get(site)
            .ok_or_else(|| Error::NoSuchSite { site: site.clone() })
    }

    fn site_mut(&mut self, site: &SiteName) -> Result<&mut Dataset> {
        self.sites
            .get_mut(site)
            .ok_or_else(|| Error::NoSuchSite { site: site.clone() })
    }

    /// Bytes held: each distinct file content once.
    fn used(&self) -> u64 {
        let mut seen = BTreeSet::new();
        let mut total = 0u64;
        let all = self
            .sites
            .values()
            .chain(self.stashes.values().map(|s| &s.ds));
        for ds in all {
            for files in std::iter::once(&ds.live).chain(ds.snaps.iter().map(|(_, f)| f)) {
                for data in files.values() {
                    if seen.insert(Arc::as_ptr(data) as usize) {
                        total += data.len() as u64;
                    }
                }
            }
        }
        total
    }

    /// Refuses a change that would bring usage to `extra` more bytes than
    /// the capacity.
    fn check_space(&self, target: &str, extra: u64) -> Result<()> {
        match self.capacity {
            Some(cap) if self.used() + extra > cap => Err(Error::OutOfSpace {
                target: target.to_owned(),
                stderr: format!("out of space: {} + {extra} bytes > {cap}", self.used()),
            }),
            _ => Ok(()),
        }
    }
}

/// The in-memory `SnapshotStore`.
#[derive(Debug)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

impl MemStore {
    /// An unbounded store whose guids come from `seed`. Give every node of a
    /// simulation its own seed so guids differ between them.
    pub fn new(seed: u64) -> Self {
        Self::build(seed, None)
    }

    /// A store that refuses to hold more than `bytes` of file content.
    pub fn with_capacity(seed: u64, bytes: u64) -> Self {
        Self::build(seed, Some(bytes))
    }

    fn build(seed: u64, capacity: Option<u64>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                rng: seed,
                txg: 0,
                clock: 0,
                capacity,
                sites: BTreeMap::new(),
                stashes: BTreeMap::new(),
            }),
        }
    }

    /// Sets the logical clock (Unix seconds) that stamps the snapshots
    /// this store takes from now on as [`Snapshot::created`]; it is 0 until
    /// set. The store never reads a real clock, so the simulator owns time.
    /// Setting it backwards is allowed, as a wall clock can step back; a
    /// chain is then no longer ordered by `created` (it still is by
    /// `createtxg`). Received snapshots keep the sender's time instead.
    pub fn set_clock(&self, unix_seconds: u64) {
        self.lock().clock = unix_seconds;
    }

    /// The logical clock's current value (Unix seconds).
    pub fn clock(&self) -> u64 {
        self.lock().clock
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug in this module; the data
        // is still consistent because every change is applied at the end.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `RHM1` had no creation time; such streams are refused as bad magic.
const MAGIC: &[u8; 4] = b"RHM2";

fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn encode(from: Option<Guid>, snap: &Snapshot, files: &Files) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&from.map_or(0, |g| g.0).to_le_bytes());
    out.extend_from_slice(&snap.guid.0.to_le_bytes());
    out.extend_from_slice(&snap.created.to_le_bytes());
    let put_str = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    put_str(&mut out, &snap.name);
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (path, data) in files {
        put_str(&mut out, &path.to_string_lossy());
        out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        out.extend_from_slice(data);
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

struct Decoded {
    header: StreamHeader,
    /// The sent snapshot's creation time, kept by the receiver.
    created: u64,
    name: String,
    files: Vec<(PathBuf, Vec<u8>)>,
}

fn decode(buf: &[u8]) -> std::result::Result<Decoded, String> {
    if buf.len() < 4 + 24 + 8 || &buf[..4] != MAGIC {
        return Err("not a memstore stream (bad magic or too short)".to_owned());
    }
    let (body, sum) = buf.split_at(buf.len() - 8);
    let mut s = [0u8; 8];
    s.copy_from_slice(sum);
    if fnv1a(body) != u64::from_le_bytes(s) {
        return Err("checksum mismatch (truncated or corrupt)".to_owned());
    }
    let mut r = Cursor::new(&body[4..]);
    let mut take = |n: usize| -> std::result::Result<Vec<u8>, String> {
        let mut v = vec![0u8; n.min(body.len())];
        if n > body.len() {
            return Err("stream ends inside a record".to_owned());
        }
        r.read_exact(&mut v)
            .map_err(|_| "stream ends inside a record".to_owned())?;
        Ok(v)
    };
    fn to_u64(b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    }
    fn to_u32(b: &[u8]) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        u32::from_le_bytes(a)
    }
    let from = to_u64(&take(8)?);
    let to = to_u64(&take(8)?);
    if to == 0 {
        return Err("stream names no target snapshot".to_owned());
    }
    let created = to_u64(&take(8)?);
    let n = to_u32(&take(4)?) as usize;
    let name = String::from_utf8(take(n)?).map_err(|_| "name is not utf-8")?;
    let count = to_u32(&take(4)?);
    let mut files = Vec::new();
    for _ in 0..count {
        let n = to_u32(&take(4)?) as usize;
        let path = String::from_utf8(take(n)?).map_err(|_| "path is not utf-8")?;
        let len = usize::try_from(to_u64(&take(8)?)).map_err(|_| "file too large")?;
        files.push((PathBuf::from(path), take(len)?));
    }
    if take(1).is_ok() {
        return Err("trailing bytes after the last file".to_owned());
    }
    Ok(Decoded {
        header: StreamHeader {
            from: (from != 0).then_some(Guid(from)),
            to: Guid(to),
        },
        created,
        name,
        files,
    })
}

impl SnapshotStore for MemStore {
    fn create_site(&self, site: &SiteName) -> Result<()> {
        let mut inner = self.lock();
        if inner.sites.contains_key(site) {
            return Err(Error::SiteExists { site: site.clone() });
        }
        inner.sites.insert(site.clone(), Dataset::default());
        Ok(())
    }

    fn sites(&self) -> Result<Vec<SiteName>> {
        Ok(self.lock().sites.keys().cloned().collect())
    }

    fn snapshots(&self, site: &SiteName) -> Result<Vec<Snapshot>> {
        Ok(self.lock().site(site)?.chain())
    }

    fn snapshot(&self, site: &SiteName, seq: u64) -> Result<Snapshot> {
        let mut inner = self.lock();
        let name = snapshot_name(seq);
        if inner.site(site)?.snaps.iter().any(|(s, _)| s.name == name) {
            return Err(Error::SnapshotExists {
                site: site.clone(),
                name,
            });
        }
        let snap = Snapshot {
            name,
            guid: inner.next_guid(),
            createtxg: inner.next_txg(),
            created: inner.clock,
        };
        let ds = inner.site_mut(site)?;
        let files = ds.live.clone();
        ds.snaps.push((snap.clone(), files));
        ds.dirty = false;
        Ok(snap)
    }

    fn changed(&self, site: &SiteName) -> Result<Changed> {
        let inner = self.lock();
        let ds = inner.site(site)?;
        Ok(if ds.snaps.is_empty() || ds.dirty {
            Changed::Yes
        } else {
            Changed::No
        })
    }

    fn send(&self, site: &SiteName, from: Option<Guid>, to: Guid) -> Result<SendStream> {
        let inner = self.lock();
        let ds = inner.site(site)?;
        let find = |g: Guid| {
            ds.snaps
                .iter()
                .find(|(s, _)| s.guid == g)
                .ok_or_else(|| Error::NoSuchSnapshot {
                    site: site.clone(),
                    what: format!("with guid {g}"),
                })
        };
        if let Some(from) = from {
            find(from)?;
        }
        let (snap, files) = find(to)?;
        Ok(Box::new(Cursor::new(encode(from, snap, files))))
    }

    fn receive(&self, site: &SiteName, stream: &mut dyn Read) -> Result<Snapshot> {
        let corrupt = |reason: String| Error::CorruptStream {
            site: site.clone(),
            reason,
        };
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .map_err(|e| corrupt(format!("reading the stream failed: {e}")))?;
        let d = decode(&buf).map_err(corrupt)?;
        let mut inner = self.lock();
        let existing = inner.sites.get(site);
        let chain = existing.map(Dataset::chain);
        check_receive(site, chain.as_deref(), d.header)?;
        let base: Files = match (existing, d.header.from) {
            (Some(ds), Some(from)) => {
                if ds.dirty {
                    return Err(Error::Modified {
                        site: site.clone(),
                        stderr: "written since its newest snapshot".to_owned(),
                    });
                }
                ds.snaps
                    .iter()
                    .find(|(s, _)| s.guid == from)
                    .map(|(_, f)| f.clone())
                    .unwrap_or_default()
            }
            _ => Files::new(),
        };
        let mut files = Files::new();
        let mut extra = 0u64;
        for (path, data) in d.files {
            let arc = match base.get(&path) {
                Some(old) if **old == data => Arc::clone(old),
                _ => {
                    extra += data.len() as u64;
                    Arc::new(data)
                }
            };
            files.insert(path, arc);
        }
        inner.check_space(&format!("sites/{site}"), extra)?;
        let snap = Snapshot {
            name: d.name,
            guid: d.header.to,
            createtxg: inner.next_txg(),
            // As `zfs receive`: the sender's creation time, not this clock.
            created: d.created,
        };
        let ds = inner.sites.entry(site.clone()).or_insert_with(|| Dataset {
            readonly: true,
            ..Dataset::default()
        });
        ds.live = files.clone();
        ds.snaps.push((snap.clone(), files));
        ds.dirty = false;
        Ok(snap)
    }

    fn set_readonly(&self, site: &SiteName) -> Result<()> {
        self.lock().site_mut(site)?.readonly = true;
        Ok(())
    }

    fn set_writable(&self, site: &SiteName) -> Result<()> {
        self.lock().site_mut(site)?.readonly = false;
        Ok(())
    }

    fn is_readonly(&self, site: &SiteName) -> Result<bool> {
        Ok(self.lock().site(site)?.readonly)
    }

    fn stash(&self, site: &SiteName, common: Option<Guid>) -> Result<Stash> {
        let mut inner = self.lock();
        let ds = inner.site(site)?;
        let split =
            match common {
                Some(g) => Some(ds.snaps.iter().position(|(s, _)| s.guid == g).ok_or_else(
                    || Error::NoSuchSnapshot {
                        site: site.clone(),
                        what: format!("with guid {g}"),
                    },
                )?),
                None => None,
            };
        let name = format!(
            "{site}-{}",
            ds.snaps
                .last()
                .map_or_else(|| "empty".to_owned(), |(s, _)| s.guid.to_string())
        );
        // Invariant: `site` was found just above under the same lock.
        let mut ds = inner.sites.remove(site).expect("site exists");
        ds.readonly = true;
        let origin = split.map(|i| {
            let kept: Vec<_> = ds.snaps.drain(..=i).collect();
            let (snap, files) = kept.last().cloned().expect("drained at least one");
            inner.sites.insert(
                site.clone(),
                Dataset {
                    live: files,
                    snaps: kept,
                    readonly: true,
                    dirty: false,
                },
            );
            snap.guid
        });
        let stash = Stash {
            name: name.clone(),
            site: site.clone(),
            snapshots: ds.chain(),
            origin,
        };
        inner.stashes.insert(
            name,
            StashDs {
                site: site.clone(),
                ds,
                origin,
            },
        );
        Ok(stash)
    }

    fn stashes(&self) -> Result<Vec<Stash>> {
        Ok(self
            .lock()
            .stashes
            .iter()
            .map(|(name, s)| Stash {
                name: name.clone(),
                site: s.site.clone(),
                snapshots: s.ds.chain(),
                origin: s.origin,
            })
            .collect())
    }

    fn destroy_snapshot(&self, site: &SiteName, guid: Guid) -> Result<()> {
        let mut inner = self.lock();
        if inner.stashes.values().any(|s| s.origin == Some(guid)) {
            return Err(Error::HasDependents {
                site: site.clone(),
                guid,
                stderr: "a stash is a clone of it".to_owned(),
            });
        }
        let ds = inner.site_mut(site)?;
        let i = ds
            .snaps
            .iter()
            .position(|(s, _)| s.guid == guid)
            .ok_or_else(|| Error::NoSuchSnapshot {
                site: site.clone(),
                what: format!("with guid {guid}"),
            })?;
        ds.snaps.remove(i);
        Ok(())
    }

    fn destroy_site(&self, site: &SiteName) -> Result<()> {
        let mut inner = self.lock();
        let chain = inner.site(site)?.chain();
        if let Some(s) = chain
            .iter()
            .find(|s| inner.stashes.values().any(|st| st.origin == Some(s.guid)))
        {
            return Err(Error::HasDependents {
                site: site.clone(),
                guid: s.guid,
                stderr: "a stash is a clone of it".to_owned(),
            });
        }
        inner.sites.remove(site);
        Ok(())
    }

    fn mountpoint(&self, site: &SiteName) -> Result<PathBuf> {
        self.lock().site(site)?;
        Ok(PathBuf::from(format!("/memstore/sites/{site}")))
    }

    fn write_file(&self, site: &SiteName, path: &Path, data: &[u8]) -> Result<()> {
        check_rel_path(site, path)?;
        let mut inner = self.lock();
        if inner.site(site)?.readonly {
            return Err(Error::ReadOnly { site: site.clone() });
        }
        inner.check_space(
            &format!("sites/{site}/{}", path.display()),
            data.len() as u64,
        )?;
        let ds = inner.site_mut(site)?;
        ds.live.insert(path.to_owned(), Arc::new(data.to_vec()));
        ds.dirty = true;
        Ok(())
    }

    fn read_stash_file(&self, stash: &Stash, path: &Path) -> Result<Vec<u8>> {
        check_rel_path(&stash.site, path)?;
        let inner = self.lock();
        inner
            .stashes
            .get(&stash.name)
            .and_then(|s| s.ds.live.get(path))
            .map(|d| d.to_vec())
            .ok_or_else(|| Error::NoSuchFile {
                site: stash.site.clone(),
                path: format!("{} in stash {}", path.display(), stash.name),
            })
    }

    fn read_file(&self, site: &SiteName, path: &Path) -> Result<Vec<u8>> {
        check_rel_path(site, path)?;
        let inner = self.lock();
        inner
            .site(site)?
            .live
            .get(path)
            .map(|d| d.to_vec())
            .ok_or_else(|| Error::NoSuchFile {
                site: site.clone(),
                path: path.display().to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_deterministic_per_seed() {
        let site: SiteName = "a".parse().expect("valid literal");
        let run = |seed| {
            let s = MemStore::new(seed);
            s.create_site(&site).expect("create");
            (1..=3)
                .map(|i| s.snapshot(&site, i).expect("snapshot").guid)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn every_truncation_is_rejected() {
        let snap = Snapshot {
            name: "ringhost-1".into(),
            guid: Guid(5),
            createtxg: 1,
            created: 1_795_624_207,
        };
        let mut files = Files::new();
        files.insert("a".into(), Arc::new(b"hello".to_vec()));
        let bytes = encode(Some(Guid(4)), &snap, &files);
        let d = decode(&bytes).expect("valid stream");
        assert_eq!(d.created, snap.created);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn clock_stamps_snapshots_and_receive_keeps_the_senders_time() {
        let site: SiteName = "a".parse().expect("valid literal");
        let (a, b) = (MemStore::new(1), MemStore::new(2));
        a.create_site(&site).expect("create");
        let s1 = a.snapshot(&site, 1).expect("snapshot");
        assert_eq!(s1.created, 0, "the clock is 0 until set");
        a.set_clock(1_000);
        let s2 = a.snapshot(&site, 2).expect("snapshot");
        a.set_clock(1_005);
        let s3 = a.snapshot(&site, 3).expect("snapshot");
        assert_eq!((s2.created, s3.created), (1_000, 1_005));

        b.set_clock(9_999);
        let mut from = None;
        for s in [&s1, &s2, &s3] {
            let mut stream = a.send(&site, from, s.guid).expect("send");
            let got = b.receive(&site, &mut stream).expect("receive");
            assert_eq!(got.created, s.created);
            from = Some(s.guid);
        }
        let created: Vec<u64> = b
            .snapshots(&site)
            .expect("chain")
            .iter()
            .map(|s| s.created)
            .collect();
        assert_eq!(created, [0, 1_000, 1_005]);
    }
}
