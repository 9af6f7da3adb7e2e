//! Waits between attempts while the registry is away: doubling from half
//! a second up to a cap, each with ±20 % jitter so that many clients cut
//! off together do not come back in lockstep.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// Waits of half a second, then one, two… up to `cap`.
    pub(crate) fn new(cap: Duration) -> Backoff {
        Backoff {
            next: FIRST.min(cap),
            cap,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.cap);
        wait.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    /// After a success: the next failure waits the shortest time again.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST.min(self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(4));
        let waits: Vec<f64> = (0..6).map(|_| backoff.next_wait().as_secs_f64()).collect();
        for (wait, nominal) in waits.iter().zip([0.5, 1.0, 2.0, 4.0, 4.0, 4.0]) {
            assert!((nominal * 0.8..=nominal * 1.2).contains(wait), "{waits:?}");
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_millis(600));
    }
}
