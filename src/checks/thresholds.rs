//! The thresholds: what a run of check results adds up to. Pure functions
//! of the results and the times they came in, so every rule is tested by
//! table, without a clock or a probe; the scheduler feeds them.

use std::time::Duration;

use super::CheckSpec;
use crate::service::Health;

/// What the thresholds remember of one instance's recent checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Streak {
    /// Consecutive critical results.
    pub failures: u32,
    /// Consecutive passing or warning results.
    pub successes: u32,
    /// When the instance's served health last turned critical (unix ms),
    /// while it stays critical.
    pub critical_since: Option<u64>,
}

/// The check's verdict once one more result, `outcome`, is in, given the
/// verdict it had (`previous`) and the results before (`streak`, which this
/// updates):
///
/// - a failure turns the check critical only as the
///   `failures_before_critical`-th in a row; until then the verdict stays
///   what it was;
/// - a success (passing or warning) counts at once, except from critical,
///   which it leaves only as the `successes_before_passing`-th in a row.
///
/// No clock and no I/O: the scheduler calls it with each probe's result.
pub(crate) fn verdict(
    previous: Health,
    streak: &mut Streak,
    outcome: Health,
    check: &CheckSpec,
) -> Health {
    if outcome == Health::Critical {
        streak.successes = 0;
        streak.failures = streak.failures.saturating_add(1);
        if streak.failures >= check.failures_before_critical {
            Health::Critical
        } else {
            previous
        }
    } else {
        streak.failures = 0;
        streak.successes = streak.successes.saturating_add(1);
        if previous != Health::Critical || streak.successes >= check.successes_before_passing {
            outcome
        } else {
            Health::Critical
        }
    }
}

impl Streak {
    /// Notes the health the instance is served with (`served`) at `now_ms`,
    /// after a check; returns how long it has been critical once that
    /// reaches the check's `deregister_after` (then it is to be removed).
    pub(crate) fn critical_for(
        &mut self,
        served: Health,
        now_ms: u64,
        check: &CheckSpec,
    ) -> Option<Duration> {
        if served != Health::Critical {
            self.critical_since = None;
            return None;
        }
        let since = *self.critical_since.get_or_insert(now_ms);
        let critical_for = Duration::from_millis(now_ms.saturating_sub(since));
        check
            .deregister_after
            .filter(|limit| critical_for >= *limit)?;
        Some(critical_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::CheckRegistration;

    /// A check with these thresholds (and `deregister_after`, seconds).
    fn thresholds(failures: u32, successes: u32, deregister_after: Option<u64>) -> CheckSpec {
        let mut spec = CheckRegistration {
            http: None,
            tcp: Some("h:1".into()),
            interval: None,
            timeout: None,
            failures_before_critical: None,
            successes_before_passing: None,
            deregister_after: None,
            tls_skip_verify: None,
        }
        .validate()
        .unwrap();
        spec.failures_before_critical = failures;
        spec.successes_before_passing = successes;
        spec.deregister_after = deregister_after.map(Duration::from_secs);
        spec
    }

    #[test]
    fn verdicts_follow_the_thresholds() {
        use Health::{Critical as C, Passing as P, Warning as W};
        // (failures_before_critical, successes_before_passing, verdict
        // before, results in order, the verdict after each)
        type Row = (u32, u32, Health, &'static [Health], &'static [Health]);
        let table: &[Row] = &[
            // The defaults: every result counts at once.
            (1, 1, P, &[C, P, W, C, W, P], &[C, P, W, C, W, P]),
            // Failures before critical: only the third in a row counts.
            (3, 1, P, &[C, C, C], &[P, P, C]),
            (3, 1, P, &[C, C, P, C, C, C], &[P, P, P, P, P, C]),
            // Below the threshold the verdict stays what it was, warning too.
            (2, 1, W, &[C, C], &[W, C]),
            (2, 1, P, &[W, C, P], &[W, W, P]),
            // Successes before passing: recovery takes two in a row.
            (1, 2, C, &[P, P], &[C, P]),
            (1, 2, C, &[P, C, P, P], &[C, C, C, P]),
            // Warning counts as a success, and recovers to warning.
            (1, 2, C, &[W, W, P], &[C, W, P]),
            // Successes only hold back recovery, never a good verdict.
            (1, 3, P, &[W, P, P], &[W, P, P]),
            (1, 3, P, &[C, P, P, P], &[C, C, C, P]),
            // Both at once.
            (2, 2, P, &[C, C, P, C, P, P], &[P, C, C, C, C, P]),
        ];
        for (row, &(failures, successes, start, results, expected)) in table.iter().enumerate() {
            let check = thresholds(failures, successes, None);
            let mut streak = Streak::default();
            let mut previous = start;
            let mut verdicts = Vec::new();
            for &result in results {
                previous = verdict(previous, &mut streak, result, &check);
                verdicts.push(previous);
            }
            assert_eq!(verdicts, expected, "row {row}: {results:?} from {start:?}");
        }
    }

    #[test]
    fn critical_for_reaches_deregister_after() {
        use Health::{Critical as C, Passing as P, Warning as W};
        let check = thresholds(1, 1, Some(2));
        // (served health, at ms) in order, and what each returns.
        type Row = (&'static [(Health, u64)], &'static [Option<u64>]);
        let table: &[Row] = &[
            (
                &[(C, 0), (C, 1000), (C, 1999), (C, 2000), (C, 3000)],
                &[None, None, None, Some(2000), Some(3000)],
            ),
            // Any serving health starts the count again.
            (
                &[
                    (C, 0),
                    (C, 1500),
                    (P, 2000),
                    (C, 2500),
                    (C, 4000),
                    (C, 4500),
                ],
                &[None, None, None, None, None, Some(2000)],
            ),
            (
                &[(C, 0), (W, 1000), (C, 1500), (C, 3499), (C, 3500)],
                &[None, None, None, None, Some(2000)],
            ),
        ];
        for (row, &(seen, expected)) in table.iter().enumerate() {
            let mut streak = Streak::default();
            let got: Vec<Option<u64>> = seen
                .iter()
                .map(|&(served, at)| {
                    streak
                        .critical_for(served, 1_000_000 + at, &check)
                        .map(|d| d.as_millis() as u64)
                })
                .collect();
            assert_eq!(got, expected, "row {row}");
        }
        // Without deregister_after, never.
        let mut streak = Streak::default();
        let check = thresholds(1, 1, None);
        assert_eq!(streak.critical_for(C, 0, &check), None);
        assert_eq!(streak.critical_for(C, 10_000_000, &check), None);
    }
}
