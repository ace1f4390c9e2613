//! Site runtimes behind one seam: what serves a site's requests on its
//! master. Serving (`serving.rs`) starts a runtime when this node becomes
//! the site's serving master, asks it for the gate's target, and stops it
//! on demotion, deletion or a migration's freeze; it never looks at the
//! kind of runtime.
//!
//! A kind is a module implementing [`Kind`] (how to start it, what it
//! needs) and [`Running`] (one started instance); [`kind_of`] is the one
//! place that maps a spec's `model::Runtime` to its kind. Adding a kind:
//! its module, a line in [`kind_of`], and its variant in the spec.

mod command;
mod kind;
mod static_files;

use model::Runtime;

pub use kind::{Kind, Running, Start};

/// The kind of a spec's runtime: the registration of every kind.
pub fn kind_of(runtime: &Runtime) -> Box<dyn Kind> {
    match runtime {
        Runtime::Static => Box::new(static_files::StaticFiles),
        Runtime::Command { cmd } => Box::new(command::Command { cmd: cmd.clone() }),
    }
}
