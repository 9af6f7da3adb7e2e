//! signpost: a DNS-based service discovery server.
//!
//! Services register over a small HTTP admin API and keep themselves alive
//! with heartbeats; any program finds them with plain DNS. The pieces:
//!
//! - [`config`]: settings from the TOML file and flags, validated once.
//! - [`access`]: tokens, roles and owners: who may change what.
//! - [`service`]: a registration, its validation, and the stored instance.
//! - [`validate`]: the label and host rules `service` and `checks` share.
//! - [`registry`]: every instance, indexed for the API and for DNS; expiry.
//! - [`registrar`]: the write path, store first and then the registry.
//! - [`dns`]: the authoritative DNS server, reading the registry.
//! - [`admin`]: the HTTP API, writing the registry.
//! - [`checks`]: active HTTP/TCP health checks and their scheduler.
//! - [`events`]: the live event stream behind `/v1/events`.
//! - [`clock`]: the time lifetimes are measured by (a manual one in tests).
//! - [`metrics`]: counters for `/metrics`.
//! - [`store`]: where registrations are kept: across restarts (SQLite), or
//!   shared by several nodes (etcd).
//! - [`client`]: a client of the admin API (register and keep alive,
//!   discover, list, events), async and blocking.
//! - [`cli`]: the binary's client commands, on [`client`].
//!
//! [`Server`] ties them together: bind every socket first (port 0 works and
//! the real addresses are known), then run until a shutdown future fires.

pub mod access;
pub(crate) mod admin;
pub(crate) mod checks;
#[doc(hidden)]
pub mod cli;
pub mod client;
pub(crate) mod clock;
pub mod config;
pub mod dns;
pub(crate) mod events;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod limit;
pub mod metrics;
pub(crate) mod names;
pub(crate) mod registrar;
pub mod registry;
pub(crate) mod select;
pub mod service;
pub(crate) mod store;
#[cfg(test)]
mod structure;
pub(crate) mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use checks::checker::{Checker, CheckerInbox};
pub use config::{Config, Settings};
use dns::forward::Forwarder;
use dns::{Responder, ZoneSettings};
use events::Events;
use metrics::Metrics;
use registrar::Registrar;
use registry::Registry;
use store::{Store, StoreKind};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen for dns on {addr}: {source}")]
    BindDns {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for the admin api on {addr}: {source}")]
    BindAdmin {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A signpost server whose sockets are bound, ready to [`run`](Server::run).
pub struct Server {
    settings: Settings,
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
    http: TcpListener,
    dns_addr: SocketAddr,
    admin_addr: SocketAddr,
    registry: Registry,
    registrar: Registrar,
    checks: CheckerInbox,
    metrics: Arc<Metrics>,
}

impl Server {
    /// Opens the store and loads the registry from it, then binds the DNS
    /// (UDP and TCP) and admin sockets: nothing answers before every stored
    /// registration is back. `settings` come from [`Config::validate`].
    pub async fn bind(settings: Settings) -> Result<Server, StartError> {
        let zone = settings.dns.zone.clone();
        let started = Instant::now();
        let registry = Registry::new(zone.clone());
        // Each stored row goes straight into the registry: a restore holds
        // no more than running does.
        let mut verdicts = Vec::new();
        let (store, restored) = if let StoreKind::Etcd(etcd) = &settings.store {
            let (store, stored) = Store::open_shared(etcd).await?;
            let mut restoring = registry.restoring();
            for instance in stored {
                if let Some(verdict) = instance.check.clone() {
                    verdicts.push((instance.id, verdict));
                }
                let (spec, identity, health) = instance.into_parts();
                restoring.add(spec, identity, health);
            }
            (store, restoring.finish())
        } else {
            let kind = settings.store.clone();
            let registry = registry.clone();
            tokio::task::spawn_blocking(move || {
                let mut restoring = registry.restoring();
                let store = Store::open(&kind, &mut |stored| {
                    let (spec, identity, health) = stored.into_parts();
                    restoring.add(spec, identity, health);
                })?;
                Ok::<_, store::StoreError>((store, restoring.finish()))
            })
            .await
            .expect("store open does not panic")?
        };
        let metrics = Arc::new(Metrics::default());
        let (checker, checks) = Checker::new();
        let events = Events::new(settings.admin.events_buffer);
        let steering = settings.dns.steering.clone();
        let registrar = Registrar::new(
            registry.clone(),
            store,
            events,
            checker,
            metrics.clone(),
            steering,
            settings.capacity,
        );
        registrar.restore_verdicts(verdicts);
        registrar.watch_restored_checks();
        tracing::info!(
            "store {}: restored {restored} registrations in {:?}",
            settings.store,
            started.elapsed()
        );
        let (udp, tcp) = dns::server::bind(settings.dns.listen, settings.dns.udp_threads)
            .await
            .map_err(|source| StartError::BindDns {
                addr: settings.dns.listen,
                source,
            })?;
        let http = TcpListener::bind(settings.admin.listen)
            .await
            .map_err(|source| StartError::BindAdmin {
                addr: settings.admin.listen,
                source,
            })?;
        let dns_addr = udp[0].local_addr().expect("bound socket has an address");
        let admin_addr = http.local_addr().expect("bound socket has an address");
        tracing::info!("dns listening on {dns_addr} (udp and tcp), zone {zone}");
        let scheme = if settings.admin.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!("admin listening on {scheme}://{admin_addr}");
        if settings.admin.tokens.is_empty() && !admin_addr.ip().is_loopback() {
            tracing::warn!(
                "the admin api listens on {admin_addr}, beyond loopback, with no token: anyone \
                 who can reach it can register, replace and remove any instance, and read \
                 every one (README \"Security\"); configure [[admin.tokens]]"
            );
        }
        Ok(Server {
            registry,
            registrar,
            checks,
            metrics,
            settings,
            udp,
            tcp,
            http,
            dns_addr,
            admin_addr,
        })
    }

    /// The bound DNS address (UDP and TCP).
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// The bound admin API address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The registry this server serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Serves DNS and the admin API until `shutdown` completes, then stops
    /// accepting, lets in-flight requests finish, and returns. Returns an
    /// error, having stopped everything, when a part of the server stopped
    /// on its own first.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
        let Server {
            settings,
            udp,
            tcp,
            http,
            registry,
            registrar,
            checks,
            metrics,
            ..
        } = self;
        let Settings {
            dns,
            admin,
            store,
            default_ttl,
            registrations_per_source,
            checks_in_flight,
            check_targets,
            checks_in_flight_per_target,
            shutdown_grace,
            ..
        } = settings;
        let check_slots = checks::scheduler::Slots {
            max_in_flight: checks_in_flight,
            max_per_target: checks_in_flight_per_target,
        };
        let nameserver_labels = dns.nameserver_labels();
        let tcp_limits = dns.tcp_limits();
        let mut responder = zone_responder(&dns, &registry, &metrics);
        let token = CancellationToken::new();
        // Everything stops when this future ends, however it ends: also when
        // it is dropped mid-run (the UDP threads, which are not tasks, would
        // otherwise keep a shutting-down runtime waiting for ever).
        let _cancel_on_drop = token.clone().drop_guard();
        let mut tasks = JoinSet::new();

        if !dns.forward.upstreams.is_empty() {
            let (forwarder, inbox) = Forwarder::new(dns.forward, metrics.clone());
            responder = responder.forwarding_to(forwarder);
            let forwarding = dns::forward::run(inbox, token.clone());
            tasks.spawn(named("the dns forwarder", forwarding));
        }
        if let Some(limit) = dns.rate_limit {
            responder = responder.limiting(limit.responses_per_second, limit.slip);
        }
        let responder = Arc::new(responder);

        spawn_udp(&mut tasks, udp, &responder, &token);
        let tcp = dns::server::serve_tcp(tcp, responder.clone(), token.clone(), tcp_limits);
        tasks.spawn(named("the dns tcp listener", tcp));
        spawn_store_and_sweeper(&registrar, &mut tasks, &token);
        let scheduler = checks::scheduler::run(
            checks,
            registrar.clone(),
            check_slots,
            check_targets.clone(),
            token.clone(),
        );
        tasks.spawn(named("the check scheduler", scheduler));

        let app = admin::router(admin::AdminState {
            nameserver_labels,
            steering: Arc::new(dns.steering.clone()),
            registry,
            registrar: registrar.clone(),
            metrics: metrics.clone(),
            tokens: admin.tokens,
            check_targets,
            default_ttl,
            body_read_timeout: admin.body_read_timeout,
            store: store.to_string(),
            started: Instant::now(),
            events_keep_alive: admin.events_keep_alive,
            shutdown: token.clone(),
            event_streams: Arc::new(tokio::sync::Semaphore::new(admin.events_max_streams)),
            registrations_limiter: registrations_per_source
                .map(|per_second| limit::RateLimiter::new(per_second, 0)),
        });
        let http = admin::serve(http, app, admin.limits, metrics, admin.tls, token.clone());
        tasks.spawn(named("the admin api", http));

        let outcome = supervise(tasks, shutdown, &token, shutdown_grace).await;
        registrar.close().await;
        tracing::info!("stopped");
        outcome
    }
}

/// Why a running server stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0} stopped unexpectedly, so the server stopped too")]
    TaskEnded(&'static str),
    #[error("{0} panicked, so the server stopped too")]
    TaskPanicked(String),
}

/// The expiry sweeper, and a shared store's tasks: the watch the
/// registrar applies, the batching writer and this node's lease (nothing
/// more for the other stores).
fn spawn_store_and_sweeper(
    registrar: &Registrar,
    tasks: &mut JoinSet<&'static str>,
    token: &CancellationToken,
) {
    let sweeper = registrar.clone().run_sweeper(token.clone());
    tasks.spawn(named("the expiry sweeper", sweeper));
    let Some(etcd) = registrar.shared_store() else {
        return;
    };
    if let Some(follower) = etcd.take_follower() {
        let following = registrar.clone().follow(follower, token.clone());
        tasks.spawn(named("the etcd watch", following));
    }
    tasks.spawn(named("the etcd writer and lease", etcd.run(token.clone())));
}

/// The answerer of `dns`'s zone, from `registry`.
fn zone_responder(
    dns: &config::DnsSettings,
    registry: &Registry,
    metrics: &Arc<Metrics>,
) -> Responder {
    let zone = ZoneSettings {
        apex: dns.zone.clone(),
        nameserver: dns.nameserver.clone(),
        nameserver_addresses: dns.nameserver_addresses.clone(),
        ttl: dns.ttl,
        negative_ttl: dns.negative_ttl,
        steering: dns.steering.clone(),
    };
    Responder::new(registry.clone(), zone, metrics.clone())
}

/// One blocking task per UDP socket, each answering on its own thread.
fn spawn_udp(
    tasks: &mut JoinSet<&'static str>,
    udp: Vec<std::net::UdpSocket>,
    responder: &Arc<Responder>,
    token: &CancellationToken,
) {
    for socket in udp {
        let responder = responder.clone();
        let stop = token.clone();
        tasks.spawn_blocking(move || {
            dns::udp::serve(socket, responder, stop);
            "a dns udp thread"
        });
    }
}

/// `task`, ending with `name` for [`supervise`].
async fn named(name: &'static str, task: impl Future<Output = ()>) -> &'static str {
    task.await;
    name
}

/// Waits for `shutdown`, then cancels `token` and gives `tasks` up to
/// `grace` to finish. Every task runs until the token is cancelled: one
/// that ends first (a UDP thread whose socket failed, a sweeper or
/// scheduler that panicked) leaves the server half-alive, so it stops the
/// server at once, with an error, rather than serving without it.
async fn supervise(
    mut tasks: JoinSet<&'static str>,
    shutdown: impl Future<Output = ()>,
    token: &CancellationToken,
    grace: std::time::Duration,
) -> Result<(), RunError> {
    let outcome = tokio::select! {
        () = shutdown => Ok(()),
        Some(ended) = tasks.join_next() => Err(match ended {
            Ok(name) => RunError::TaskEnded(name),
            Err(error) => RunError::TaskPanicked(error.to_string()),
        }),
    };
    match &outcome {
        Ok(()) => tracing::info!("shutting down"),
        Err(error) => tracing::error!("{error}"),
    }
    token.cancel();
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("in-flight requests did not finish within {grace:?}; stopping anyway");
        tasks.abort_all();
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Tasks that run until cancelled, as the server's do.
    fn until_cancelled(tasks: &mut JoinSet<&'static str>, token: &CancellationToken) {
        for name in ["one", "two"] {
            let token = token.clone();
            tasks.spawn(named(name, async move { token.cancelled().await }));
        }
    }

    #[tokio::test]
    async fn a_task_that_ends_stops_the_others_with_an_error() {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        until_cancelled(&mut tasks, &token);
        tasks.spawn(named("the sweeper", async {}));
        let outcome = supervise(
            tasks,
            std::future::pending(),
            &token,
            Duration::from_secs(5),
        );
        let error = tokio::time::timeout(Duration::from_secs(5), outcome)
            .await
            .expect("the server stops")
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the sweeper stopped unexpectedly, so the server stopped too"
        );
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn a_task_that_panics_stops_the_others_with_an_error() {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        until_cancelled(&mut tasks, &token);
        tasks.spawn_blocking(|| -> &'static str { panic!("a udp thread broke") });
        let outcome = supervise(
            tasks,
            std::future::pending(),
            &token,
            Duration::from_secs(5),
        );
        let error = tokio::time::timeout(Duration::from_secs(5), outcome)
            .await
            .expect("the server stops")
            .unwrap_err();
        assert!(matches!(error, RunError::TaskPanicked(_)), "{error}");
        assert!(token.is_cancelled());
    }

    #[tokio::test]
    async fn shutdown_stops_every_task_without_an_error() {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        until_cancelled(&mut tasks, &token);
        let outcome = supervise(tasks, async {}, &token, Duration::from_secs(5)).await;
        assert!(outcome.is_ok());
    }
}
