//! Live migration: a serving site moves to another node with its requests
//! paused, not failed.
//!
//! The site's master runs it (`source::orchestrate`); any node can start it (the
//! admin API relays to the master over the mesh, `start::start`):
//!
//! 1. **pre-copy**: the target pins a copy (pulling a full one if it has
//!    none); the master snapshots now and waits until the target holds
//!    that snapshot, round after round, until a round's delta is at most
//!    `PRECOPY_SMALL` bytes or `PRECOPY_ROUNDS` rounds ran;
//! 2. **pause**: the site's gate on the master holds new requests and
//!    connections (local and tunneled ones) in its bounded queue while
//!    in-flight ones finish, for at most `DRAIN_TIMEOUT`; then what is
//!    still open (a WebSocket, a TLS stream) is asked to close. A static
//!    site does not wait: its in-flight requests read files the final
//!    snapshot holds too, and finish from this copy;
//! 3. the site's command stops, and the master takes the final snapshot;
//! 4. the target pulls that last delta, claims `epoch + 1` and starts
//!    serving (`Request::MigrateTakeOver`);
//! 5. **release**: the gate sends the queue, in order, and every later
//!    arrival to the target, until every view shows the new master.
//!
//! If the hand-over fails (the target died, the final send broke, a
//! timeout), the site resumes on the master: its command restarts and the
//! queue is released there. Epochs fence a migration that races a failover.
//!
//! Each migration the master ran is recorded (`Record`, the last
//! `HISTORY_KEPT` per site in `DATA_DIR/migrations.json`) and gossiped
//! under `migrations:<site>`, so that `site show` on any node lists them.
//!
//! Files: `start.rs` (any node; relayed to the master), `source.rs` (the
//! master's side), `target.rs` (the target's side), `records.rs` (the log
//! and the records), `common.rs` (bounds, clock, requests, waits).

mod common;
mod records;
mod source;
mod start;
mod target;

pub use records::publish_history;
pub use start::{serve_migrate, start};
pub use target::{serve_pin, serve_status, serve_takeover};
