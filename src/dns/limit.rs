//! Response rate limiting for UDP (RRL, as Knot and NSD do it): a source
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

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// The empty reply that tells a client to ask again over TCP: the query's
/// header and question, with QR and TC set and no records. `None` for a
/// packet whose question cannot be read (it is dropped instead).
pub(crate) fn truncated_reply(query: &[u8], out: &mut Vec<u8>) -> bool {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return false;
    }
    let mut at = 12;
    loop {
        let Some(&len) = query.get(at) else {
            return false;
        };
        if len == 0 {
            at += 1;
            break;
        }
        if len > 63 {
            return false; // a pointer or garbage: nothing to echo
        }
        at += 1 + usize::from(len);
    }
    let end = at + 4;
    if end > query.len() {
        return false;
    }
    out.clear();
    out.extend_from_slice(&query[..end]);
    // QR and TC, the opcode and RD as asked; RA, AD clear, CD as asked,
    // NOERROR; one question, nothing else.
    out[2] = 0x80 | (query[2] & 0x79) | 0x02;
    out[3] = query[3] & 0x10;
    out[6..12].fill(0);
    true
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
    fn ipv6_sources_are_counted_by_their_56_bit_prefix() {
        let limiter = RateLimiter::new(1, 0);
        let a: IpAddr = "2001:db8:1:2300::1".parse().unwrap();
        let same: IpAddr = "2001:db8:1:23ff:ffff::9".parse().unwrap();
        assert_eq!(limiter.slot(a), limiter.slot(same));
        assert_eq!(limiter.check(a, 1), Verdict::Answer);
        assert_eq!(limiter.check(same, 1), Verdict::Drop);
    }

    #[test]
    fn the_truncated_reply_echoes_the_question_with_tc() {
        let query = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1, 0,
            0, 41, 4, 208, 0, 0, 0, 0, 0, 0,
        ];
        let mut out = Vec::new();
        assert!(truncated_reply(&query, &mut out));
        assert_eq!(
            out,
            [
                0x12, 0x34, 0x83, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w', b'e', b'b', 0, 0, 1, 0, 1
            ]
        );
        assert!(!truncated_reply(&query[..15], &mut out));
        let mut response = query;
        response[2] |= 0x80;
        assert!(!truncated_reply(&response, &mut out));
    }
}
