//! The simulation trace: one line per delivered or dropped message, fault
//! and membership change, stamped with simulated time, folded into a 64-bit
//! XXH3 hash as it is written. Two runs with the same seed must produce the
//! same lines, hence the same hash. The last [`TAIL`] lines are kept so a
//! failure can show what led to it.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use xxhash_rust::xxh3::Xxh3;

/// How many of the last lines a trace keeps.
pub const TAIL: usize = 40;

pub struct Trace {
    hasher: Xxh3,
    /// The last `TAIL` lines; their buffers are reused, so keeping them
    /// costs a copy per line and no allocation once full.
    tail: VecDeque<String>,
    lines: u64,
    line: String,
    sink: Option<BufWriter<File>>,
    sink_error: Option<std::io::Error>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("lines", &self.lines)
            .field("hash", &format_args!("{:016x}", self.hash()))
            .finish()
    }
}

impl Trace {
    /// A trace that is only hashed.
    pub fn new() -> Self {
        Self {
            hasher: Xxh3::new(),
            tail: VecDeque::with_capacity(TAIL),
            lines: 0,
            line: String::with_capacity(128),
            sink: None,
            sink_error: None,
        }
    }

    /// A trace that is hashed and also written to `path`.
    pub fn to_file(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("cannot create trace file '{}'", path.display()))?;
        let mut trace = Self::new();
        trace.sink = Some(BufWriter::new(file));
        Ok(trace)
    }

    /// Appends one line: `<seconds>.<microseconds> <text>`.
    pub fn record(&mut self, at: Duration, text: fmt::Arguments<'_>) {
        self.line.clear();
        // Writing into a String cannot fail.
        let _ = writeln!(
            self.line,
            "{}.{:06} {}",
            at.as_secs(),
            at.subsec_micros(),
            text
        );
        self.hasher.update(self.line.as_bytes());
        self.lines += 1;
        let mut kept = if self.tail.len() == TAIL {
            self.tail.pop_front().unwrap_or_default()
        } else {
            String::with_capacity(128)
        };
        kept.clear();
        kept.push_str(self.line.trim_end());
        self.tail.push_back(kept);
        if let Some(sink) = &mut self.sink
            && let Err(err) = sink.write_all(self.line.as_bytes())
        {
            self.sink_error.get_or_insert(err);
            self.sink = None;
        }
    }

    pub fn hash(&self) -> u64 {
        self.hasher.digest()
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The last lines written (at most [`TAIL`]), oldest first.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    /// Flushes the trace file, reporting any write error seen on the way.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(err) = self.sink_error.take() {
            return Err(err).context("cannot write the trace file");
        }
        if let Some(sink) = &mut self.sink {
            sink.flush().context("cannot write the trace file")?;
        }
        Ok(())
    }
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}
