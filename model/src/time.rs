//! The model's clock: milliseconds handed in by the driver.

use std::time::Duration;

/// Milliseconds on the driver's monotonic clock (any origin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// Never reached: a lease that no one has to renew.
    pub const NEVER: Time = Time(u64::MAX);

    pub fn plus(self, d: Duration) -> Time {
        Time(self.0.saturating_add(d.as_millis() as u64))
    }
}
