//! The one task that runs every active check.
//!
//! It keeps a heap of due times, starts each due check as its own small task
//! (at most `max_in_flight` at once), and applies results as they come back.
//! The loop itself only does bookkeeping, so a slow or hanging target can
//! never stall it: every check is bounded by its timeout, and a check that is
//! still running when the next one falls due simply delays that one. A new
//! check's first run is placed at a random point of its first interval, so
//! thousands registered at once spread out instead of firing together, and
//! every later run moves by up to ±2 % of the interval, so checks that a
//! stall bunched together drift apart again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CheckSpec;
use super::probe::{self, Outcome};
use super::thresholds::{Streak, verdict};
use crate::events::{Change, DeregisterReason, HealthSource};
use crate::registrar::Registrar;
use crate::service::{Health, Instance};

/// What the scheduler is told.
enum Command {
    /// Start checking this instance (or restart, if it replaced one).
    Watch(Arc<Instance>),
    /// Stop checking this id at once, aborting a check in flight.
    Forget(Uuid),
}

/// A cheap handle for telling the scheduler about instances. Sending never
/// waits.
#[derive(Clone)]
pub struct Checker {
    commands: mpsc::UnboundedSender<Command>,
}

/// The scheduler's end of the [`Checker`] channel.
pub struct CheckerInbox(mpsc::UnboundedReceiver<Command>);

impl Checker {
    pub fn new() -> (Checker, CheckerInbox) {
        let (commands, inbox) = mpsc::unbounded_channel();
        (Checker { commands }, CheckerInbox(inbox))
    }

    /// Starts checking `instance` if it has a check; otherwise stops
    /// checking its id (a replacement may have dropped the check).
    pub fn watch(&self, instance: &Arc<Instance>) {
        let command = match instance.spec.check {
            Some(_) => Command::Watch(instance.clone()),
            None => Command::Forget(instance.id),
        };
        let _ = self.commands.send(command);
    }

    /// Stops checking `id`.
    pub fn forget(&self, id: Uuid) {
        let _ = self.commands.send(Command::Forget(id));
    }
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

/// Runs checks until `shutdown`.
pub async fn run(
    CheckerInbox(mut inbox): CheckerInbox,
    registrar: Registrar,
    max_in_flight: usize,
    shutdown: CancellationToken,
) {
    let mut watched: HashMap<Uuid, Watched> = HashMap::new();
    let mut due: BinaryHeap<Reverse<(Instant, u64, Uuid)>> = BinaryHeap::new();
    let mut running: JoinSet<Done> = JoinSet::new();
    let mut next_epoch = 0u64;
    loop {
        // Start whatever is due, as far as the bound allows.
        let now = Instant::now();
        while running.len() < max_in_flight {
            let Some(&Reverse((at, epoch, id))) = due.peek() else {
                break;
            };
            if at > now {
                break;
            }
            due.pop();
            let Some(entry) = watched.get_mut(&id) else {
                continue;
            };
            if entry.epoch != epoch || entry.in_flight.is_some() {
                continue; // stale entry, or the previous run is still going
            }
            let check = entry.check().clone();
            entry.in_flight = Some(running.spawn(async move {
                Done {
                    id,
                    epoch,
                    started: now,
                    outcome: probe::run(&check.target, check.timeout).await,
                }
            }));
        }
        let next_due = (running.len() < max_in_flight)
            .then(|| due.peek().map(|Reverse((at, _, _))| *at))
            .flatten();
        tokio::select! {
            _ = shutdown.cancelled() => break,
            command = inbox.recv() => match command {
                Some(Command::Watch(instance)) => {
                    next_epoch += 1;
                    let id = instance.id;
                    let interval = instance.spec.check.as_ref().map_or(Duration::ZERO, |c| c.interval);
                    let first = Instant::now() + interval.mul_f64(fastrand::f64());
                    let entry = Watched {
                        instance,
                        epoch: next_epoch,
                        streak: Streak::default(),
                        in_flight: None,
                    };
                    if let Some(old) = watched.insert(id, entry) {
                        abort(old);
                    }
                    due.push(Reverse((first, next_epoch, id)));
                }
                Some(Command::Forget(id)) => {
                    if let Some(old) = watched.remove(&id) {
                        abort(old);
                    }
                }
                None => break,
            },
            Some(done) = running.join_next(), if !running.is_empty() => {
                // An aborted check (forgotten instance) ends in a JoinError.
                if let Ok(done) = done {
                    apply(&registrar, &mut watched, &mut due, done);
                }
            }
            _ = sleep_until(next_due), if next_due.is_some() => {}
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

/// Applies one result: thresholds, health change and its event, renewal,
/// `deregister_after`; then schedules the next run.
fn apply(
    registrar: &Registrar,
    watched: &mut HashMap<Uuid, Watched>,
    due: &mut BinaryHeap<Reverse<(Instant, u64, Uuid)>>,
    done: Done,
) {
    let Some(entry) = watched.get_mut(&done.id) else {
        return;
    };
    if entry.epoch != done.epoch {
        return;
    }
    entry.in_flight = None;
    let instance = entry.instance.clone();
    // Expired, deregistered or replaced without us being told: stop.
    let current = registrar.registry.get(done.id);
    if !current.is_some_and(|c| Arc::ptr_eq(&c, &instance)) {
        watched.remove(&done.id);
        return;
    }
    let metrics = registrar.metrics();
    metrics.checks_run.inc();
    let outcome = done.outcome;
    if let Some(kind) = outcome.failure {
        metrics.count_check_failure(kind);
    }
    let check = entry.check().clone();
    let before = instance.health();
    let verdict = verdict(
        instance.check_health(),
        &mut entry.streak,
        outcome.health,
        &check,
    );
    let now = registrar.registry.now_ms();
    if outcome.health != Health::Critical {
        instance.renew(now);
    }
    registrar
        .registry
        .record_check(&instance, verdict, outcome.output);
    let after = instance.health();
    if after != before {
        tracing::info!(
            id = %instance.id,
            name = %instance.spec.name,
            service_type = %instance.spec.service_type,
            from = %before,
            to = %after,
            output = instance.check_output().unwrap_or_default(),
            "health changed by check"
        );
        registrar.events.publish(
            &Change::HealthChanged {
                instance: instance.clone(),
                previous: before,
                source: HealthSource::Check,
            },
            now,
        );
    }
    if let (Some(critical_for), Some(limit)) = (
        entry.streak.critical_for(after, now, &check),
        check.deregister_after,
    ) {
        watched.remove(&done.id);
        let registrar = registrar.clone();
        let reason = DeregisterReason::Critical {
            critical_for,
            deregister_after: limit,
        };
        tokio::spawn(async move {
            registrar.deregister_critical(instance, reason).await;
        });
        return;
    }
    // ±2 % of jitter on every run, not only the first: checks bunched by a
    // stall would otherwise fire together every interval for ever.
    let interval = check.interval.mul_f64(0.98 + 0.04 * fastrand::f64());
    let next = (done.started + interval).max(Instant::now());
    due.push(Reverse((next, entry.epoch, done.id)));
}
