//! What a migration reports and leaves behind: the progress events a
//! client follows (`site migrate --json`), the log of them a node keeps,
//! and the records of finished migrations that `site show` lists (kept in
//! the data dir and gossiped under `migrations:<site>`). Values and pure
//! functions only; the migration itself is in `migrate/`.

use model::SiteName;
use serde::{Deserialize, Serialize};

/// Migrations of a site a node keeps (those it ran as the site's master),
/// and `site show` lists.
pub const HISTORY_KEPT: usize = 5;
/// Where a node keeps them, in its data dir.
pub const HISTORY_FILE: &str = "migrations.json";
/// The gossip key that publishes them: `migrations:<site>`.
pub const HISTORY_PREFIX: &str = "migrations:";
/// One step of a migration, as `site migrate --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    Started {
        site: String,
        from: String,
        to: String,
        epoch: u64,
    },
    /// A pre-copy round under way: `bytes` sent to the target so far in
    /// this round, of about `total` (the site's size, when the target
    /// takes a full copy; unknown for an incremental round). Sent every
    /// 250 ms; a log keeps only the latest (`Log::copying`).
    Copying {
        round: u32,
        bytes: u64,
        total: Option<u64>,
    },
    /// A pre-copy round: the target holds snapshot `seq`; `bytes` went to
    /// it in this round.
    Copied {
        round: u32,
        bytes: u64,
        seq: u64,
        ms: u64,
    },
    /// The gate holds new work; `in_flight` requests are still running.
    Paused {
        in_flight: usize,
    },
    /// In-flight work ended (`all_ended`), or was asked to close.
    Drained {
        ms: u64,
        all_ended: bool,
    },
    /// The command stopped and the final snapshot was taken.
    Stopped {
        seq: u64,
        ms: u64,
    },
    /// The target serves at the next epoch; the queue goes to it.
    HandedOver {
        final_bytes: u64,
        ms: u64,
    },
    Done(Report),
    Failed {
        error: String,
        resumed_on: String,
    },
}

/// The figures of a finished migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub site: String,
    pub from: String,
    pub to: String,
    pub epoch: u64,
    /// From the gate's pause to its release to the target.
    pub pause_ms: f64,
    pub final_delta_bytes: u64,
    pub precopy_rounds: u32,
    pub precopy_bytes: u64,
    pub total_ms: f64,
}

/// A migration's events as this node saw them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Log {
    pub events: Vec<Progress>,
    pub done: bool,
    /// The running pre-copy round's bytes so far (a `copying` event), until
    /// the round ends.
    #[serde(default)]
    pub copying: Option<Progress>,
}

/// One migration as `site show` lists it: recorded by the node that ran it
/// (the site's master when it began).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub from: String,
    pub to: String,
    /// When it began, Unix milliseconds (the source's clock).
    pub started_ms: u64,
    /// `"done"` (the target serves), or `"failed"` (nothing moved: the
    /// site resumed on `resumed_on`, its queue released there).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_on: Option<String>,
    /// The target's new epoch (done), or the source's (failed).
    pub epoch: u64,
    /// How long the gate held requests; null if it never paused.
    pub pause_ms: Option<f64>,
    /// Bytes of the last delta; null unless done.
    pub final_delta_bytes: Option<u64>,
    pub precopy_rounds: u32,
    pub precopy_bytes: u64,
    pub total_ms: f64,
    /// The site's incarnation (its spec id): a site deleted and created
    /// again under the same name does not inherit the old one's records.
    pub spec_id: u64,
}

/// The last [`HISTORY_KEPT`] migrations of `site` (incarnation `spec_id`,
/// if known) that any member gossips, oldest first.
pub fn history_of(raw: &gossip::ClusterView, site: &SiteName, spec_id: Option<u64>) -> Vec<Record> {
    let key = format!("{HISTORY_PREFIX}{site}");
    let mut all: Vec<Record> = Vec::new();
    for m in &raw.members {
        if let Some(v) = m.keys.get(&key)
            && let Ok(list) = serde_json::from_str::<Vec<Record>>(v)
        {
            for r in list {
                if spec_id.is_none_or(|id| id == r.spec_id) && !all.contains(&r) {
                    all.push(r);
                }
            }
        }
    }
    all.sort_by(|a, b| (a.started_ms, &a.from).cmp(&(b.started_ms, &b.from)));
    let extra = all.len().saturating_sub(HISTORY_KEPT);
    all.drain(..extra);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(from: &str, started_ms: u64, spec_id: u64) -> Record {
        Record {
            from: from.into(),
            to: "x".into(),
            started_ms,
            outcome: "done".into(),
            error: None,
            resumed_on: None,
            epoch: 1,
            pause_ms: Some(1.0),
            final_delta_bytes: Some(1),
            precopy_rounds: 1,
            precopy_bytes: 1,
            total_ms: 2.0,
            spec_id,
        }
    }

    fn member(name: &str, records: &[Record]) -> gossip::Member {
        gossip::Member {
            name: name.parse().expect("name"),
            state: gossip::MemberState::Alive,
            generation: 1,
            mesh_addr: "127.0.0.1:1".parse().expect("addr"),
            zone: None,
            version: String::new(),
            proxy: gossip::ProxyAddrs::default(),
            capacity: 100,
            is_self: false,
            keys: [(
                format!("{HISTORY_PREFIX}s"),
                serde_json::to_string(records).expect("json"),
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn history_merges_every_members_records_newest_last_bounded_and_of_one_incarnation() {
        let site: SiteName = "s".parse().expect("site");
        let a: Vec<Record> = (0..4).map(|i| rec("a", 10 * i, 7)).collect();
        let mut b: Vec<Record> = (0..4).map(|i| rec("b", 10 * i + 5, 7)).collect();
        // An older incarnation's record, and one relayed twice.
        b.push(rec("b", 1_000, 6));
        b.push(a[3].clone());
        let view = gossip::ClusterView {
            members: vec![member("n1", &a), member("n2", &b)],
        };
        let h = history_of(&view, &site, Some(7));
        let got: Vec<(&str, u64)> = h.iter().map(|r| (r.from.as_str(), r.started_ms)).collect();
        assert_eq!(
            got,
            [("b", 15), ("a", 20), ("b", 25), ("a", 30), ("b", 35)],
            "the last {HISTORY_KEPT}, oldest first, once each, of incarnation 7"
        );
        // Unknown incarnation: every record counts.
        let h = history_of(&view, &site, None);
        assert_eq!(h.last().map(|r| r.started_ms), Some(1_000));
        assert_eq!(h.len(), HISTORY_KEPT);
    }
}
