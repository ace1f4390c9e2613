//! Per-thread entropy for code the simulator does not control.
//!
//! chitchat seeds its RNG from `rand::rng()` and iterates `HashSet`s whose
//! order comes from std's per-thread hash keys; tokio's `select!` draws from
//! a generator seeded the same way. All of them end in glibc's `getrandom`.
//! The `ringhost-sim` executable defines that C symbol itself (see its
//! `entropy_shim` module) and asks [`fill`] for the bytes: a thread with an
//! installed seed gets the simulation's stream, any other thread gets the
//! operating system's.
//!
//! Invariant: [`install`] runs first on a fresh thread, before anything on
//! that thread touches a `HashMap` or `rand` (both cache what they draw for
//! the thread's lifetime), and one thread runs one simulation.

use std::cell::{Cell, RefCell};

use crate::rng::SimRng;

thread_local! {
    static SEEDED: RefCell<Option<SimRng>> = const { RefCell::new(None) };
    static DRAWN: Cell<u64> = const { Cell::new(0) };
}

/// Seeds this thread's entropy. Panics if the thread already has a seed:
/// the second simulation on a thread would see the first one's cached hash
/// keys and RNG state, and so a different trace.
pub fn install(seed: u64) {
    SEEDED.with(|cell| {
        let mut slot = cell.borrow_mut();
        assert!(
            slot.is_none(),
            "one simulation per fresh thread: this thread already has an entropy seed"
        );
        *slot = Some(SimRng::derive(seed, 0xE47));
    });
}

/// Whether this thread has a simulation seed.
pub fn is_installed() -> bool {
    SEEDED
        .try_with(|cell| cell.try_borrow().map(|s| s.is_some()).unwrap_or(false))
        .unwrap_or(false)
}

/// Fills `buf` from this thread's seeded stream. Returns false (and leaves
/// `buf` alone) on a thread without a seed, so the caller can fall back to
/// the operating system.
pub fn fill(buf: &mut [u8]) -> bool {
    SEEDED
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => match slot.as_mut() {
                Some(rng) => {
                    rng.fill_bytes(buf);
                    DRAWN.with(|d| d.set(d.get() + buf.len() as u64));
                    true
                }
                None => false,
            },
            Err(_) => false,
        })
        .unwrap_or(false)
}

/// Bytes handed out by [`fill`] on this thread so far.
pub fn bytes_drawn() -> u64 {
    DRAWN.try_with(Cell::get).unwrap_or(0)
}
