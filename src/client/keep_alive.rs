//! [`Client::register`] and [`Client::keep_registered`]: a registration
//! that keeps itself alive in the background until it is closed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::api::{Client, NewService};
use super::backoff::Backoff;
use super::error::Error;
use crate::service::{Health, ServiceView};

/// Longest wait between two attempts to register while the registry is
/// away (heartbeats retry within a third of the TTL).
const MAX_RETRY_WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Registers `service`, then keeps it registered in the background
    /// until [`Registration::close`] (or, best effort, until the handle is
    /// dropped): a heartbeat every third of its TTL; when a heartbeat is
    /// answered 404 (the registry restarted on a memory store, or the
    /// instance expired while the registry was out of reach) it registers
    /// again; while the registry cannot be reached it retries, waiting
    /// longer each time (half a second, doubling, at most a third of the
    /// TTL). Fails, registering nothing, when this first registration
    /// does. Needs a tokio runtime, where the heartbeats run.
    pub async fn register(&self, service: NewService) -> Result<Registration, Error> {
        let view = self.register_once(&service).await?;
        tracing::info!("registered {} with {}", describe(&view), self.address());
        Ok(Registration::start(self.clone(), service, Some(view)))
    }

    /// Like [`Client::register`], but returns at once and registers in the
    /// background, retrying (and saying so in the log) until the registry
    /// accepts: for a program that must start whether or not the registry
    /// is up. [`Registration::registered`] waits for it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn keep_registered(&self, service: NewService) -> Registration {
        Registration::start(self.clone(), service, None)
    }
}

/// `type/name (id …)` for the log.
fn describe(view: &ServiceView) -> String {
    format!("{}/{} (id {})", view.service_type, view.name, view.id)
}

/// A registration kept alive in the background; see [`Client::register`].
#[must_use = "dropping a Registration deregisters it"]
pub struct Registration {
    client: Client,
    state: Arc<watch::Sender<Option<ServiceView>>>,
    report: Arc<watch::Sender<Report>>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// The health the next heartbeats report.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Report {
    health: Health,
    output: Option<String>,
}

/// Sets what a [`Registration`]'s heartbeats report, from wherever that is
/// decided (a task checking the program, say); cheap to clone.
#[derive(Clone)]
pub struct Reporter(Arc<watch::Sender<Report>>);

impl Reporter {
    /// From now on heartbeats report `health` (with `output` saying why);
    /// a change is sent at once rather than at the next heartbeat.
    pub fn report(&self, health: Health, output: Option<String>) {
        self.0.send_if_modified(|report| {
            let next = Report { health, output };
            let changed = *report != next;
            *report = next;
            changed
        });
    }
}

impl Registration {
    fn start(client: Client, service: NewService, first: Option<ServiceView>) -> Registration {
        let state = Arc::new(watch::Sender::new(first));
        let report = Arc::new(watch::Sender::new(Report {
            health: Health::Passing,
            output: None,
        }));
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_alive(
            client.clone(),
            service,
            state.clone(),
            report.clone(),
            stop.clone(),
        ));
        Registration {
            client,
            state,
            report,
            stop,
            task: Some(task),
        }
    }

    /// The instance's id while it is registered (a new one after each
    /// registration again), `None` until then.
    pub fn id(&self) -> Option<Uuid> {
        self.state.borrow().as_ref().map(|view| view.id)
    }

    /// The service object as the last answer had it.
    pub fn service(&self) -> Option<ServiceView> {
        self.state.borrow().clone()
    }

    /// Waits until the instance is registered; returns its service object.
    pub async fn registered(&self) -> ServiceView {
        let mut state = self.state.subscribe();
        let view = state
            .wait_for(Option::is_some)
            .await
            .expect("the registration holds the sender");
        view.clone().expect("waited for it")
    }

    /// From now on heartbeats report `health` (with `output` saying why);
    /// a change is sent at once. See [`Reporter`] to do it from elsewhere.
    pub fn report(&self, health: Health, output: Option<String>) {
        self.reporter().report(health, output);
    }

    /// A handle that sets what heartbeats report.
    pub fn reporter(&self) -> Reporter {
        Reporter(self.report.clone())
    }

    /// Stops heartbeating and deregisters (once a request in flight has
    /// finished). An instance the registry no longer knows counts as
    /// deregistered.
    pub async fn close(mut self) -> Result<(), Error> {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let Some(view) = self.state.send_replace(None) else {
            return Ok(());
        };
        match self.client.deregister(view.id).await {
            Ok(()) => {
                tracing::info!("deregistered {}", describe(&view));
                Ok(())
            }
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Drop for Registration {
    /// Best effort: stops heartbeating and, when a tokio runtime is there
    /// to run it, deregisters in a task of its own.
    fn drop(&mut self) {
        self.stop.cancel();
        let Some(task) = self.task.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            task.abort();
            return;
        };
        let (client, state) = (self.client.clone(), self.state.clone());
        runtime.spawn(async move {
            let _ = task.await;
            if let Some(view) = state.send_replace(None) {
                let _ = client.deregister(view.id).await;
            }
        });
    }
}

/// Registers when not registered, heartbeats when registered, until
/// `stop`. Stops only between attempts, so that an attempt in flight
/// always lands in `state`.
async fn keep_alive(
    client: Client,
    service: NewService,
    state: Arc<watch::Sender<Option<ServiceView>>>,
    report: Arc<watch::Sender<Report>>,
    stop: CancellationToken,
) {
    let label = format!("{}/{}", service.service_type(), service.name());
    let mut reports = report.subscribe();
    let mut backoff = Backoff::new(MAX_RETRY_WAIT);
    let mut failing = Failing::default();
    let mut wait = match &*state.borrow() {
        Some(view) => beat_period(view),
        None => Duration::ZERO,
    };
    loop {
        let registered = state.borrow().is_some();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            _ = reports.changed(), if registered => {}
        }
        let now = reports.borrow_and_update().clone();
        let current = state.borrow().clone();
        wait = match current {
            None => match client.register_once(&service).await {
                Ok(view) => {
                    failing.recovered(&label);
                    tracing::info!("registered {} with {}", describe(&view), client.address());
                    backoff.reset();
                    let wait = if now.health == Health::Passing && now.output.is_none() {
                        beat_period(&view)
                    } else {
                        Duration::ZERO // report what is known at once
                    };
                    state.send_replace(Some(view));
                    wait
                }
                Err(error) => {
                    failing.note(&format!("cannot register {label}"), &error);
                    backoff.next_wait()
                }
            },
            Some(view) => {
                let beat = client.heartbeat(view.id, now.health, now.output.as_deref());
                match beat.await {
                    Ok(view) => {
                        failing.recovered(&label);
                        backoff.reset();
                        let wait = beat_period(&view);
                        state.send_replace(Some(view));
                        wait
                    }
                    Err(error) if error.is_not_found() => {
                        tracing::warn!(
                            "the registry no longer knows {} (it restarted, or the \
                             instance expired): registering again",
                            describe(&view)
                        );
                        state.send_replace(None);
                        Duration::ZERO
                    }
                    Err(error) => {
                        failing.note(&format!("heartbeat for {label} failed"), &error);
                        backoff.next_wait().min(beat_period(&view))
                    }
                }
            }
        };
    }
}

/// A third of the instance's TTL.
fn beat_period(view: &ServiceView) -> Duration {
    Duration::from_millis(u64::from(view.ttl.max(1)) * 1000 / 3)
}

/// What failed last, so that a run of the same failure is logged once.
#[derive(Default)]
struct Failing(Option<String>);

impl Failing {
    fn note(&mut self, what: &str, error: &Error) {
        let line = format!("{what}: {error}");
        if self.0.as_ref() != Some(&line) {
            tracing::warn!("{line}; retrying");
            self.0 = Some(line);
        }
    }

    fn recovered(&mut self, label: &str) {
        if self.0.take().is_some() {
            tracing::info!("{label}: the registry answers again");
        }
    }
}
