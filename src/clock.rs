//! The clock that lifetimes are measured by: the system's in the server, a
//! hand-moved one in tests, so that expiry, renewal and check thresholds can
//! be tested to the millisecond without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The system's time as unix milliseconds, read from a monotonic clock
/// anchored once to the wall clock, so that a wall-clock step never expires
/// or revives instances.
pub(crate) fn system_now_ms() -> u64 {
    static ANCHOR: OnceLock<(Instant, u64)> = OnceLock::new();
    let (instant, unix_ms) = ANCHOR.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), unix.as_millis() as u64)
    });
    unix_ms + instant.elapsed().as_millis() as u64
}

/// Where a registry reads the time (see `Registry::with_clock`).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// [`system_now_ms`].
    #[default]
    System,
    /// A [`ManualClock`]: time moves only when a test moves it.
    Manual(ManualClock),
}

impl Clock {
    /// Now, as unix milliseconds. A branch and then either the system
    /// clock or one atomic load: no lock, no allocation, so the answer and
    /// heartbeat paths can read it as often as they like.
    #[inline]
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Manual(manual) => manual.now_ms(),
        }
    }
}

/// A clock moved by hand. Clones share one time, so a test keeps one and
/// gives the registry another:
///
/// ```
/// # use signpost::clock::ManualClock;
/// let time = ManualClock::new(1_000_000);
/// let clock = time.clock(); // for Registry::with_clock
/// time.advance_ms(999);
/// assert_eq!(clock.now_ms(), 1_000_999);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `start_ms` (unix milliseconds).
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(start_ms)))
    }

    pub fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Moves the time on by `ms`; returns the new time.
    pub fn advance_ms(&self, ms: u64) -> u64 {
        self.0.fetch_add(ms, Ordering::AcqRel) + ms
    }

    /// Sets the time to `ms`.
    pub fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::Release);
    }

    /// A [`Clock`] reading this time.
    pub fn clock(&self) -> Clock {
        Clock::Manual(self.clone())
    }
}

impl From<ManualClock> for Clock {
    fn from(manual: ManualClock) -> Clock {
        Clock::Manual(manual)
    }
}
