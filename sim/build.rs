//! Exports the simulator's `getrandom` from the `ringhost-sim` executable so
//! that glibc-level callers (std's hash keys through a weak symbol, the
//! getrandom crate through `dlsym`) receive the simulation's seeded bytes.
//! See `src/bin/ringhost-sim/entropy_shim.rs`. Only this package's binaries
//! get the flag; no production binary does.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=getrandom");
    println!("cargo:rerun-if-changed=build.rs");
}
