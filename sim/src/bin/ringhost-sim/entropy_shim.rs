//! The C function `getrandom(buf, len, flags)`, defined by this executable.
//!
//! Why unsafe: glibc's `getrandom` is where std's hash keys, the getrandom
//! crate (and so `rand`, and so chitchat's RNG) and tokio's `select!` seed
//! come from, and none of them can be handed a seed otherwise (see
//! docs in `sim::entropy`). Defining the symbol in the executable, exported
//! through build.rs's `--export-dynamic-symbol=getrandom`, makes all of them
//! call this function instead; it must have glibc's exact C signature and
//! write through the raw pointer it is given.
//!
//! On a thread with a simulation seed the bytes come from the seeded stream;
//! on any other thread this makes the real system call, so the executable's
//! own start-up and non-simulation threads keep real randomness.
#![allow(unsafe_code)]

use std::ffi::c_void;

/// # Safety
///
/// glibc's contract: `buf` points to `len` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getrandom(
    buf: *mut c_void,
    len: libc::size_t,
    flags: libc::c_uint,
) -> libc::ssize_t {
    if !buf.is_null() && len > 0 && len <= isize::MAX as usize {
        // SAFETY: the caller guarantees `buf` points to `len` writable
        // bytes; nothing else refers to them during this call.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        if sim::entropy::fill(bytes) {
            return len as libc::ssize_t;
        }
    }
    // SAFETY: the same contract as ours, passed through unchanged.
    unsafe { libc::syscall(libc::SYS_getrandom, buf, len, flags) as libc::ssize_t }
}
