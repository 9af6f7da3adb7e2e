//! The one task that runs every active check.
//!
//! It keeps a heap of due times, starts each due check as its own small task
//! (at most `max_in_flight` at once), and hands results to the registrar as
//! they come back: it decides the verdict (`checks::thresholds`), the
//! registrar applies it.
//! The loop itself only does bookkeeping, so a slow or hanging target can
//! never stall it: every check is bounded by its timeout, and a check that is
//! still running when the next one falls due simply delays that one. A new
//! check's first run is placed at a random point of its first interval, so
//! thousands registered at once spread out instead of firing together, and
//! every later run moves by up to ±2 % of the interval, so checks that a
//! stall bunched together drift apart again.
//!
//! Fairness: one target host gets at most `max_per_target` of the slots, so
//! thousands of checks against a host that never answers (each holding its
//! slot for its whole timeout) cannot starve everyone else's; a due check
//! whose host is at its share waits in that host's queue. And a check that
//! is due but cannot run for want of a slot holds its instance's lifetime
//! (see [`HOLD_EVERY`]): an instance kept alive only by its check is never
//! expired because the scheduler was busy.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CheckSpec;
use super::checker::{CheckerInbox, Command};
use super::probe::{self, Outcome};
use super::target::TargetPolicy;
use super::thresholds::{Streak, verdict};
use crate::events::DeregisterReason;
use crate::registrar::Registrar;
use crate::service::Instance;

/// How often instances whose checks wait for a slot have their lifetime
/// renewed, as a passing result would: a wait is no verdict.
const HOLD_EVERY: Duration = Duration::from_secs(1);

/// How many checks may run at once: in all, and against one target host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slots {
    pub max_in_flight: usize,
    pub max_per_target: usize,
}

/// One watched instance.
struct Watched {
    instance: Arc<Instance>,
    /// Tells this registration's heap entries and results from those of an
    /// earlier one with the same id.
    epoch: u64,
    streak: Streak,
    in_flight: Option<AbortHandle>,
}

impl Watched {
    fn check(&self) -> &CheckSpec {
        self.instance
            .spec
            .check
            .as_ref()
            .expect("only instances with a check are watched")
    }
}

/// A finished check.
struct Done {
    id: Uuid,
    epoch: u64,
    started: Instant,
    outcome: Outcome,
}

/// An instance to remove: it stayed critical for its `deregister_after`.
type Removal = (Arc<Instance>, DeregisterReason);

/// What the scheduler keeps between events: the watched instances and
/// when each is next due.
struct Schedule {
    registrar: Registrar,
    /// The addresses checks may reach.
    targets: Arc<TargetPolicy>,
    watched: HashMap<Uuid, Watched>,
    due: BinaryHeap<Reverse<(Instant, u64, Uuid)>>,
    next_epoch: u64,
    slots: Slots,
    /// Checks running against each target host.
    per_target: HashMap<Arc<str>, usize>,
    /// Due checks waiting for their host's share, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<(u64, Uuid)>>,
    /// Whether the last `start_due` left due checks for want of a slot.
    starved: bool,
    /// The target host of each running check's task.
    hosts_by_task: HashMap<tokio::task::Id, Arc<str>>,
}

/// Runs checks until `shutdown`.
pub(crate) async fn run(
    CheckerInbox(mut inbox): CheckerInbox,
    registrar: Registrar,
    slots: Slots,
    targets: TargetPolicy,
    shutdown: CancellationToken,
) {
    let mut schedule = Schedule::new(registrar.clone(), slots);
    schedule.targets = Arc::new(targets);
    let mut running: JoinSet<Done> = JoinSet::new();
    let mut hold = tokio::time::interval(HOLD_EVERY);
    hold.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        schedule.start_due(&mut running);
        let next_due = (running.len() < slots.max_in_flight)
            .then(|| schedule.next_due())
            .flatten();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            command = inbox.recv() => match command {
                Some(Command::Watch(instance)) => schedule.watch(instance),
                Some(Command::Forget(id)) => schedule.forget(id),
                None => break,
            },
            Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                // An aborted check (forgotten instance) ends in a JoinError.
                let done = match joined {
                    Ok((task, done)) => {
                        schedule.reaped(task);
                        Some(done)
                    }
                    Err(error) => {
                        schedule.reaped(error.id());
                        None
                    }
                };
                if let Some(done) = done
                    && let Some((instance, reason)) = schedule.apply(done)
                {
                    let registrar = registrar.clone();
                    tokio::spawn(async move {
                        let _ = registrar.deregister_critical(&instance, reason).await;
                    });
                }
            }
            _ = sleep_until(next_due), if next_due.is_some() => {}
            _ = hold.tick() => schedule.hold_waiting(),
        }
    }
    running.shutdown().await;
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

fn abort(entry: Watched) {
    if let Some(handle) = entry.in_flight {
        handle.abort();
    }
}

impl Schedule {
    fn new(registrar: Registrar, slots: Slots) -> Schedule {
        Schedule {
            registrar,
            targets: Default::default(),
            watched: HashMap::new(),
            due: BinaryHeap::new(),
            next_epoch: 0,
            slots,
            per_target: HashMap::new(),
            waiting: HashMap::new(),
            starved: false,
            hosts_by_task: HashMap::new(),
        }
    }

    /// When the earliest check is due.
    fn next_due(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Starts whatever is due, as far as the slots allow: first checks
    /// that waited for their host's share and may run now, then the heap.
    fn start_due(&mut self, running: &mut JoinSet<Done>) {
        let now = Instant::now();
        let hosts: Vec<Arc<str>> = self.waiting.keys().cloned().collect();
        for host in hosts {
            while running.len() < self.slots.max_in_flight && self.host_has_room(&host) {
                let Some((epoch, id)) = self.waiting.get_mut(&host).and_then(VecDeque::pop_front)
                else {
                    break;
                };
                self.start(running, epoch, id, now);
            }
            if self.waiting.get(&host).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&host);
            }
        }
        while running.len() < self.slots.max_in_flight {
            let Some(&Reverse((at, epoch, id))) = self.due.peek() else {
                break;
            };
            if at > now {
                break;
            }
            self.due.pop();
            self.start(running, epoch, id, now);
        }
        self.starved = running.len() >= self.slots.max_in_flight
            && self
                .due
                .peek()
                .is_some_and(|Reverse((at, _, _))| *at <= now);
    }

    fn host_has_room(&self, host: &str) -> bool {
        self.per_target.get(host).copied().unwrap_or(0) < self.slots.max_per_target
    }

    /// Starts the check of `id` (as of `epoch`), or queues it behind its
    /// host's share.
    fn start(&mut self, running: &mut JoinSet<Done>, epoch: u64, id: Uuid, now: Instant) {
        let Some(entry) = self.watched.get(&id) else {
            return;
        };
        if entry.epoch != epoch || entry.in_flight.is_some() {
            return; // stale entry, or the previous run is still going
        }
        if !self.registrar.owns_check(id) {
            // Another node of the cluster runs it; look again in an
            // interval, in case its owner left.
            let next = now + entry.check().interval;
            self.due.push(Reverse((next, epoch, id)));
            return;
        }
        let check = entry.check().clone();
        let host: Arc<str> = Arc::from(check.target.host());
        if !self.host_has_room(&host) {
            self.waiting.entry(host).or_default().push_back((epoch, id));
            return;
        }
        *self.per_target.entry(host.clone()).or_default() += 1;
        let targets = self.targets.clone();
        let handle = running.spawn(async move {
            Done {
                id,
                epoch,
                started: now,
                outcome: probe::run(&check.target, check.timeout, &targets).await,
            }
        });
        self.hosts_by_task.insert(handle.id(), host);
        if let Some(entry) = self.watched.get_mut(&id) {
            entry.in_flight = Some(handle);
        }
    }

    /// Renews the lifetime of every instance whose check is due but waits
    /// for a slot: its host's share, or (when every slot was taken) any.
    fn hold_waiting(&mut self) {
        let now = Instant::now();
        let overdue = self
            .due
            .iter()
            .filter(|_| self.starved)
            .filter(|Reverse((at, _, _))| *at <= now)
            .map(|Reverse((_, epoch, id))| (*epoch, *id));
        let queued = self.waiting.values().flatten().copied();
        for (epoch, id) in overdue.chain(queued) {
            if let Some(entry) = self.watched.get(&id)
                && entry.epoch == epoch
            {
                self.registrar.hold_for_check(&entry.instance);
            }
        }
    }

    /// A check's task was reaped (finished or aborted): its host's slot
    /// is free.
    fn reaped(&mut self, task: tokio::task::Id) {
        let Some(host) = self.hosts_by_task.remove(&task) else {
            return;
        };
        if let Some(count) = self.per_target.get_mut(&host) {
            *count -= 1;
            if *count == 0 {
                self.per_target.remove(&host);
            }
        }
    }

    /// Starts checking `instance` (or starts again, if it replaced one),
    /// first at a random point of its interval.
    fn watch(&mut self, instance: Arc<Instance>) {
        self.next_epoch += 1;
        let id = instance.id;
        let interval = instance
            .spec
            .check
            .as_ref()
            .map_or(Duration::ZERO, |c| c.interval);
        let first = Instant::now() + interval.mul_f64(fastrand::f64());
        let entry = Watched {
            instance,
            epoch: self.next_epoch,
            streak: Streak::default(),
            in_flight: None,
        };
        if let Some(old) = self.watched.insert(id, entry) {
            abort(old);
        }
        self.due.push(Reverse((first, self.next_epoch, id)));
    }

    fn forget(&mut self, id: Uuid) {
        if let Some(old) = self.watched.remove(&id) {
            abort(old);
        }
    }

    /// Applies one result: the thresholds give the verdict, the registrar
    /// records it (health, renewal, event); then the next run is queued.
    /// Returns the instance to remove when it has now been critical for
    /// its `deregister_after` (and stops checking it).
    fn apply(&mut self, done: Done) -> Option<Removal> {
        let entry = self.watched.get_mut(&done.id)?;
        if entry.epoch != done.epoch {
            return None;
        }
        entry.in_flight = None;
        let instance = entry.instance.clone();
        let check = entry.check().clone();
        let verdict = verdict(
            instance.check_health(),
            &mut entry.streak,
            done.outcome.health,
            &check,
        );
        let Some(recorded) = self
            .registrar
            .record_check(&instance, verdict, done.outcome)
        else {
            // Expired, deregistered or replaced without us being told: stop.
            self.watched.remove(&done.id);
            return None;
        };
        if let (Some(critical_for), Some(deregister_after)) = (
            entry
                .streak
                .critical_for(recorded.health, recorded.at_ms, &check),
            check.deregister_after,
        ) {
            self.watched.remove(&done.id);
            let reason = DeregisterReason::Critical {
                critical_for,
                deregister_after,
            };
            return Some((instance, reason));
        }
        // ±2 % of jitter on every run, not only the first: checks bunched by a
        // stall would otherwise fire together every interval for ever.
        let interval = check.interval.mul_f64(0.98 + 0.04 * fastrand::f64());
        let next = (done.started + interval).max(Instant::now());
        self.due.push(Reverse((next, entry.epoch, done.id)));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Caller;
    use crate::registrar::RegistrarError;
    use crate::registrar::tests::{outcome, setup, spec};
    use crate::service::Health::{Critical, Passing};

    const TEST_SLOTS: Slots = Slots {
        max_in_flight: 8,
        max_per_target: 8,
    };

    fn done(schedule: &Schedule, id: Uuid, health: crate::service::Health) -> Done {
        Done {
            id,
            epoch: schedule.watched[&id].epoch,
            started: Instant::now(),
            outcome: outcome(health),
        }
    }

    /// `deregister_after` counted on the registry's clock, from the first
    /// critical verdict of a run; a good result starts the count again.
    #[tokio::test]
    async fn deregister_after_removes_an_instance_critical_that_long_and_no_sooner() {
        let mut s = setup();
        let mut spec = spec("a", 300, true);
        spec.check.as_mut().unwrap().deregister_after = Some(Duration::from_secs(2));
        let instance = s
            .registrar
            .register(spec, &Caller::Anyone)
            .await
            .unwrap()
            .instance;
        let id = instance.id;
        let mut schedule = Schedule::new(s.registrar.clone(), TEST_SLOTS);
        schedule.watch(instance.clone());

        for (at, result) in [
            (0, Critical),
            (1_000, Passing),
            (1_500, Critical),
            (2_500, Critical),
            (3_499, Critical),
        ] {
            s.time.set_ms(1_000_000 + at);
            let removal = schedule.apply(done(&schedule, id, result));
            assert!(removal.is_none(), "not at {at} ms");
        }
        s.time.set_ms(1_003_500);
        let (doomed, reason) = schedule
            .apply(done(&schedule, id, Critical))
            .expect("critical for 2 s");
        assert!(Arc::ptr_eq(&doomed, &instance));
        assert!(!schedule.watched.contains_key(&id), "no longer checked");
        assert_eq!(
            reason.to_string(),
            "critical for 2 s (deregister_after 2 s)"
        );

        let removed = s
            .registrar
            .deregister_critical(&doomed, reason)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&removed, &instance));
        assert!(s.registry.get(id).is_none());
        assert_eq!(s.metrics.deregistered_critical.get(), 1);
        assert_eq!(s.metrics.deregistrations.get(), 0, "not a DELETE");
        let events = s.published();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            ["register", "health", "health", "health", "deregister"]
        );
        assert_eq!(
            events[4]["data"]["reason"],
            "critical for 2 s (deregister_after 2 s)"
        );
    }

    /// A removal decided for an instance that was replaced meanwhile
    /// removes nothing.
    #[tokio::test]
    async fn a_replaced_instance_is_not_removed_for_its_predecessor() {
        let s = setup();
        let mut spec = spec("a", 300, true);
        spec.check.as_mut().unwrap().deregister_after = Some(Duration::from_secs(1));
        let old = s
            .registrar
            .register(spec.clone(), &Caller::Anyone)
            .await
            .unwrap()
            .instance;
        let mut schedule = Schedule::new(s.registrar.clone(), TEST_SLOTS);
        schedule.watch(old.clone());
        assert!(schedule.apply(done(&schedule, old.id, Critical)).is_none());
        s.time.advance_ms(1_000);
        let (doomed, reason) = schedule.apply(done(&schedule, old.id, Critical)).unwrap();
        let new = s
            .registrar
            .register(spec, &Caller::Anyone)
            .await
            .unwrap()
            .instance;
        assert!(matches!(
            s.registrar.deregister_critical(&doomed, reason).await,
            Err(RegistrarError::NotFound)
        ));
        assert!(Arc::ptr_eq(&s.registry.get(new.id).unwrap(), &new));
        // And results for the old one, should any still come, stop there.
        schedule.watch(old.clone());
        assert!(schedule.apply(done(&schedule, old.id, Passing)).is_none());
        assert!(!schedule.watched.contains_key(&old.id));
    }
}
