//! Pure parsers for `zfs` output and the ZFS send stream header. No I/O.

use crate::error::{Error, Result};
use crate::types::{Guid, Snapshot, StreamHeader};

/// Parses `zfs list -H -p -o name,guid,createtxg,creation -t snapshot -r
/// DATASET` output (tab-separated, exact numbers; `creation` in Unix
/// seconds) into `dataset`'s chain, oldest first. Snapshots of other
/// datasets (children under `-r`) are skipped.
pub fn parse_snapshot_list(text: &str, dataset: &str) -> Result<Vec<Snapshot>> {
    let prefix = format!("{dataset}@");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = |reason: &str| Error::Parse {
            line: line.to_owned(),
            reason: reason.to_owned(),
        };
        let mut cols = line.split('\t');
        let (Some(name), Some(guid), Some(txg), Some(creation), None) = (
            cols.next(),
            cols.next(),
            cols.next(),
            cols.next(),
            cols.next(),
        ) else {
            return Err(bad("expected 4 tab-separated columns"));
        };
        let Some(snap) = name.strip_prefix(&prefix) else {
            continue;
        };
        if snap.is_empty() || snap.contains(['@', '/']) {
            return Err(bad("bad snapshot name"));
        }
        let guid = guid
            .parse::<u64>()
            .map_err(|_| bad("guid is not an exact integer"))?;
        let createtxg = txg
            .parse::<u64>()
            .map_err(|_| bad("createtxg is not an exact integer"))?;
        let created = creation
            .parse::<u64>()
            .map_err(|_| bad("creation is not an exact integer (Unix seconds)"))?;
        out.push(Snapshot {
            name: snap.to_owned(),
            guid: Guid(guid),
            createtxg,
            created,
        });
    }
    out.sort_by_key(|s| s.createtxg);
    Ok(out)
}

/// Parses `zfs get -H -p -o name,property,value ...` output into
/// `(name, property, value)` rows.
pub fn parse_get_output(text: &str) -> Result<Vec<(String, String, String)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut cols = line.splitn(3, '\t');
            match (cols.next(), cols.next(), cols.next()) {
                (Some(n), Some(p), Some(v)) => Ok((n.to_owned(), p.to_owned(), v.to_owned())),
                _ => Err(Error::Parse {
                    line: line.to_owned(),
                    reason: "expected 3 tab-separated columns".to_owned(),
                }),
            }
        })
        .collect()
}

/// The snapshot part of `toname` (`pool/fs@snap` → `snap`) in a complete
/// first record of a ZFS send stream: the name the received snapshot gets.
/// None when absent or not a plain name.
pub fn stream_snapshot_name(head: &[u8]) -> Option<&str> {
    let toname = head.get(56..STREAM_HEADER_LEN)?;
    let end = toname.iter().position(|&b| b == 0).unwrap_or(toname.len());
    let (_, snap) = std::str::from_utf8(&toname[..end]).ok()?.rsplit_once('@')?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
    (!snap.is_empty() && snap.chars().all(plain)).then_some(snap)
}

/// Length of the first record (DRR_BEGIN) of a ZFS send stream.
pub const STREAM_HEADER_LEN: usize = 312;

const DMU_BACKUP_MAGIC: u64 = 0x2_F5BA_CBAC;
const DRR_BEGIN: u32 = 0;
/// Low two bits of `versioninfo`: 1 = a single stream, 2 = compound (`-R`).
const DMU_SUBSTREAM: u64 = 1;

/// Reads the guids out of a ZFS send stream's first record:
/// `drr_type u32, payloadlen u32, magic u64, versioninfo u64, creation u64,
/// type u32, flags u32, toguid u64, fromguid u64, toname[256]`, in the
/// sender's byte order (told by the magic). `Ok(None)`: need more bytes.
pub fn parse_zfs_stream_header(buf: &[u8]) -> std::result::Result<Option<StreamHeader>, String> {
    if buf.len() < 56 {
        return Ok(None);
    }
    let u64_at = |off: usize, le: bool| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[off..off + 8]);
        if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        }
    };
    let le = if u64_at(8, true) == DMU_BACKUP_MAGIC {
        true
    } else if u64_at(8, false) == DMU_BACKUP_MAGIC {
        false
    } else {
        return Err("not a zfs send stream (bad magic)".to_owned());
    };
    let mut t = [0u8; 4];
    t.copy_from_slice(&buf[0..4]);
    let drr_type = if le {
        u32::from_le_bytes(t)
    } else {
        u32::from_be_bytes(t)
    };
    if drr_type != DRR_BEGIN {
        return Err(format!("first record has type {drr_type}, not BEGIN"));
    }
    if u64_at(16, le) & 3 != DMU_SUBSTREAM {
        return Err("compound (replication) streams are not accepted".to_owned());
    }
    let to = u64_at(40, le);
    let from = u64_at(48, le);
    if to == 0 {
        return Err("stream names no target snapshot".to_owned());
    }
    Ok(Some(StreamHeader {
        from: (from != 0).then_some(Guid(from)),
        to: Guid(to),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_list_sorted_and_filtered() {
        let text = "tank/sites/a@ringhost-2\t3010373376199736997\t30\t1795624210\n\
                    tank/sites/a@ringhost-1\t9695577976190598292\t16\t1795624207\n\
                    tank/sites/a/child@x\t1\t2\t3\n\
                    tank/sites/ab@ringhost-1\t5\t3\t4\n\n";
        let chain = parse_snapshot_list(text, "tank/sites/a").expect("valid output");
        let names: Vec<_> = chain.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ringhost-1", "ringhost-2"]);
        assert_eq!(chain[0].guid, Guid(9695577976190598292));
        assert_eq!(chain[0].created, 1795624207);
        assert_eq!(chain[1].createtxg, 30);
        assert_eq!(chain[1].created, 1795624210);
    }

    #[test]
    fn snapshot_list_rejects_rounded_numbers() {
        // zfs-fuse's `zfs list` has no -p and prints guids as "8.41E".
        let err =
            parse_snapshot_list("t/a@s\t8.41E\t16\t1795624207\n", "t/a").expect_err("rounded guid");
        assert!(err.to_string().contains("8.41E"), "{err}");
        // Without -p, creation is a date ("Mon Nov 23 10:30 2026").
        let err = parse_snapshot_list("t/a@s\t1\t16\tMon Nov 23 10:30 2026\n", "t/a")
            .expect_err("formatted creation");
        assert!(err.to_string().contains("creation"), "{err}");
        assert!(parse_snapshot_list("t/a@s\t1\n", "t/a").is_err());
        // The listing before `creation` was added (3 columns) is refused.
        assert!(parse_snapshot_list("t/a@s\t1\t16\n", "t/a").is_err());
        assert!(parse_snapshot_list("t/a@s\t1\t16\t5\t6\n", "t/a").is_err());
        assert!(parse_snapshot_list("", "t/a").expect("empty").is_empty());
    }

    #[test]
    fn get_output_rows() {
        let rows = parse_get_output("t/a@s\tguid\t42\nt/a\tmountpoint\t/x y\n").expect("valid");
        assert_eq!(rows[0], ("t/a@s".into(), "guid".into(), "42".into()));
        assert_eq!(rows[1].2, "/x y");
        assert!(parse_get_output("t/a guid 42").is_err());
    }

    fn header(le: bool, from: u64, to: u64) -> Vec<u8> {
        let mut b = vec![0u8; STREAM_HEADER_LEN];
        let put = |b: &mut Vec<u8>, off: usize, v: u64| {
            let bytes = if le { v.to_le_bytes() } else { v.to_be_bytes() };
            b[off..off + 8].copy_from_slice(&bytes);
        };
        put(&mut b, 8, DMU_BACKUP_MAGIC);
        put(&mut b, 16, 0x11);
        put(&mut b, 40, to);
        put(&mut b, 48, from);
        b
    }

    #[test]
    fn stream_snapshot_name_from_toname() {
        let mut b = header(true, 7, 9);
        let name = b"rh-n2/sites/big@ringhost-12";
        b[56..56 + name.len()].copy_from_slice(name);
        assert_eq!(stream_snapshot_name(&b), Some("ringhost-12"));
        b[56 + name.len() - 2] = b' ';
        assert_eq!(stream_snapshot_name(&b), None);
        assert_eq!(stream_snapshot_name(&header(true, 7, 9)), None);
        assert_eq!(stream_snapshot_name(&b[..100]), None);
    }

    #[test]
    fn stream_header_both_byte_orders() {
        for le in [true, false] {
            let h = parse_zfs_stream_header(&header(le, 7, 9))
                .expect("valid")
                .expect("complete");
            assert_eq!(h.from, Some(Guid(7)));
            assert_eq!(h.to, Guid(9));
            let full = parse_zfs_stream_header(&header(le, 0, 9))
                .expect("valid")
                .expect("complete");
            assert_eq!(full.from, None);
        }
    }

    #[test]
    fn stream_header_short_and_bad() {
        assert_eq!(parse_zfs_stream_header(&header(true, 1, 2)[..55]), Ok(None));
        let mut bad = header(true, 1, 2);
        bad[8] ^= 0xff;
        assert!(parse_zfs_stream_header(&bad).is_err());
        assert!(parse_zfs_stream_header(&header(true, 1, 0)).is_err());
        // Arbitrary bytes never panic.
        for n in 0..STREAM_HEADER_LEN {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 % 251) as u8).collect();
            let _ = parse_zfs_stream_header(&junk);
        }
    }
}
