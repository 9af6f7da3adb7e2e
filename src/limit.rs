//! Limits on what one source may take: a rate per source prefix
//! ([`RateLimiter`]), connections held per source address ([`PerSource`]),
//! and log lines about refusals ([`LogThrottle`]).
//!
//! The rate limiter serves DNS response rate limiting for UDP (RRL, as
//! Knot and NSD do it; the admin API uses it for registrations): a source
//! prefix (a /24 of IPv4, a /56 of IPv6) gets at most so many responses a
//! second; beyond that its queries are dropped, except every `slip`-th,
//! which is answered with an empty truncated reply (TC) so that a real
//! client, whose address was not spoofed, retries over TCP and is served.
//! That keeps signpost from amplifying floods sent with forged source
//! addresses. TCP is never limited here: its source cannot be forged.
//!
//! The counters live in one fixed table of atomic words shared by every UDP
//! thread (a source's queries may reach any of them): a word holds the
//! second it counts and how many responses that second had. Prefixes that
//! hash to the same word share it, which can only limit sooner, never let
//! more through; the hash is keyed at random per process, so a sender
//! cannot choose whom it collides with.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters in the table: 64 Ki words, 512 KiB.
const SLOTS: usize = 1 << 16;

/// What to do with one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Answer,
    Drop,
    /// Answer with an empty reply with TC set.
    Slip,
}

/// The rate limiter: settings and counters.
pub(crate) struct RateLimiter {
    per_second: u32,
    slip: u32,
    key: u64,
    counters: Box<[AtomicU64]>,
}

impl RateLimiter {
    /// A limiter of `per_second` responses per source prefix (at least 1),
    /// slipping every `slip`-th limited one (0: none).
    pub(crate) fn new(per_second: u32, slip: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second.max(1),
            slip,
            key: fastrand::u64(..) | 1,
            counters: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts a query from `source` in second `second` (of any monotonic
    /// clock) and says what to do with it.
    pub(crate) fn check(&self, source: IpAddr, second: u32) -> Verdict {
        let slot = &self.counters[self.slot(source)];
        let mut current = slot.load(Ordering::Relaxed);
        let count = loop {
            let (at, count) = ((current >> 32) as u32, current as u32);
            let count = if at == second {
                count.saturating_add(1)
            } else {
                1
            };
            let next = (u64::from(second) << 32) | u64::from(count);
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break count,
                Err(actual) => current = actual,
            }
        };
        if count <= self.per_second {
            Verdict::Answer
        } else if self.slip > 0 && (count - self.per_second).is_multiple_of(self.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }

    /// The counter of `source`'s prefix.
    fn slot(&self, source: IpAddr) -> usize {
        let prefix = match source {
            IpAddr::V4(v4) => u64::from(u32::from(v4) >> 8),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => u64::from(u32::from(v4) >> 8),
                None => (u128::from(v6) >> 72) as u64 | (1 << 63),
            },
        };
        // A multiplicative hash keyed per process; the top bits are the
        // best mixed.
        let mixed = (prefix ^ self.key).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - SLOTS.trailing_zeros())) as usize
    }
}

/// The connections each source address holds.
#[derive(Default, Clone)]
pub(crate) struct PerSource(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted against its source, until dropped.
pub(crate) struct Held {
    sources: PerSource,
    source: IpAddr,
}

impl PerSource {
    /// Counts a connection from `source`, unless it holds `most` already.
    pub(crate) fn take(&self, source: IpAddr, most: usize) -> Option<Held> {
        let source = source.to_canonical();
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(source).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        Some(Held {
            sources: self.clone(),
            source,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut held = self.sources.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.source);
            }
        }
    }
}

/// Log lines about refusals, at most one per [`LogThrottle::EVERY`]: a
/// flood of refused connections must not become a flood of log lines
/// (113 000 in 90 s once). The first refusal is logged at once; later
/// ones are counted and reported with the next line.
pub(crate) struct LogThrottle {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl LogThrottle {
    pub(crate) const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    pub(crate) const fn new() -> LogThrottle {
        LogThrottle {
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, how many refusals since the last line
    /// went unlogged.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now - last < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_gets_its_rate_then_slips_and_drops() {
        let limiter = RateLimiter::new(5, 2);
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        let neighbour: IpAddr = "192.0.2.200".parse().unwrap();
        let verdicts: Vec<Verdict> = (0..10).map(|_| limiter.check(source, 1)).collect();
        use Verdict::{Answer, Drop, Slip};
        assert_eq!(
            verdicts,
            [
                Answer, Answer, Answer, Answer, Answer, Drop, Slip, Drop, Slip, Drop
            ]
        );
        // The same /24 shares the count; the next second starts afresh.
        assert_eq!(limiter.check(neighbour, 1), Slip);
        assert_eq!(limiter.check(source, 2), Answer);
        // Another prefix is untouched (unless it shares the counter, which
        // only limits sooner).
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        if limiter.slot(other) != limiter.slot(source) {
            assert_eq!(limiter.check(other, 1), Answer);
        }
        let no_slip = RateLimiter::new(1, 0);
        assert_eq!(no_slip.check(source, 1), Answer);
        assert!((0..5).all(|_| no_slip.check(source, 1) == Drop));
    }

    #[test]
    fn a_source_holds_at_most_its_share_and_gets_it_back() {
        let sources = PerSource::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let first = sources.take(ip, 2).unwrap();
        let _second = sources.take(mapped, 2).expect("the same source, mapped");
        assert!(sources.take(ip, 2).is_none());
        assert!(sources.take("192.0.2.2".parse().unwrap(), 2).is_some());
        drop(first);
        assert!(sources.take(ip, 2).is_some());
    }

    #[test]
    fn the_log_throttle_logs_the_first_and_counts_the_rest() {
        let mut throttle = LogThrottle::new();
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        throttle.last = Some(std::time::Instant::now() - LogThrottle::EVERY);
        assert_eq!(throttle.allow(), Some(2));
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_56_bit_prefix() {
        let limiter = RateLimiter::new(1, 0);
        let a: IpAddr = "2001:db8:1:2300::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:23ff:ffff::9".parse().unwrap();
        assert_eq!(limiter.slot(a), limiter.slot(same));
        assert_eq!(limiter.check(a, 1), Verdict::Answer);
        assert_eq!(limiter.check(same, 1), Verdict::Drop);
    }
}
