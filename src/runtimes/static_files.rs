//! The static runtime: the node's proxy serves the site's files from its
//! mountpoint itself; nothing runs.

use std::path::PathBuf;

use model::Runtime;
use proxy::{Backend, BoxFuture, Target};

use super::kind::{Kind, Running, Start};

pub struct StaticFiles;

struct Serving {
    dir: PathBuf,
}

fn target(dir: PathBuf) -> Target {
    Target::Local {
        backend: Backend::Static(dir),
        tls: None,
    }
}

impl Kind for StaticFiles {
    fn start(&self, s: Start<'_>) -> Result<Box<dyn Running>, String> {
        Ok(Box::new(Serving { dir: s.dir }))
    }

    fn runs_site_code(&self) -> bool {
        false
    }

    fn target_without_instance(&self, dir: PathBuf) -> Option<Target> {
        Some(target(dir))
    }
}

impl Running for Serving {
    fn target(&self) -> Option<Target> {
        Some(target(self.dir.clone()))
    }

    fn is_for(&self, runtime: &Runtime, _spec_id: u64, _ready_since: Option<u64>) -> bool {
        *runtime == Runtime::Static
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
