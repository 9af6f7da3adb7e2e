//! signpost: a DNS-based service discovery server.
//!
//! Services register over a small HTTP admin API and keep themselves alive
//! with heartbeats; any program finds them with plain DNS. The pieces:
//!
//! - [`config`]: settings from the TOML file and flags.
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
//! - [`store`]: where registrations are kept across restarts (SQLite).
//!
//! [`Server`] ties them together: bind every socket first (port 0 works and
//! the real addresses are known), then run until a shutdown future fires.

pub mod admin;
pub mod checks;
pub mod clock;
pub mod config;
pub mod dns;
pub mod events;
pub mod metrics;
pub mod registrar;
pub mod registry;
pub mod service;
pub mod store;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use checks::checker::{Checker, CheckerInbox};
pub use config::Config;
use dns::{Responder, ZoneSettings};
use events::Events;
use metrics::Metrics;
use registrar::Registrar;
use registry::Registry;
use store::Store;

/// How long shutdown waits for in-flight work before giving up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
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
    config: Config,
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
    /// Validates `config`, opens the store and loads the registry from it,
    /// then binds the DNS (UDP and TCP) and admin sockets: nothing answers
    /// before every stored registration is back.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let zone = dns::zone_name(&config.dns.zone).expect("validated");
        let store_kind = store::StoreKind::parse(&config.store.url)?;
        let started = Instant::now();
        let (store, stored) = {
            let kind = store_kind.clone();
            tokio::task::spawn_blocking(move || Store::open(&kind))
                .await
                .expect("store open does not panic")?
        };
        let registry = Registry::new(zone.clone());
        let metrics = Arc::new(Metrics::default());
        let (checker, checks) = Checker::new();
        let events = Events::new(config.admin.events_buffer);
        let registrar = Registrar::new(registry.clone(), store, events, checker, metrics.clone());
        let restored = registrar.restore(stored);
        tracing::info!(
            "store {store_kind}: restored {restored} registrations in {:?}",
            started.elapsed()
        );
        let (udp, tcp) = dns::server::bind(config.dns.listen, config.dns.udp_threads())
            .await
            .map_err(|source| StartError::BindDns {
                addr: config.dns.listen,
                source,
            })?;
        let http = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| StartError::BindAdmin {
                addr: config.admin.listen,
                source,
            })?;
        let dns_addr = udp[0].local_addr().expect("bound socket has an address");
        let admin_addr = http.local_addr().expect("bound socket has an address");
        tracing::info!("dns listening on {dns_addr} (udp and tcp), zone {zone}");
        tracing::info!("admin listening on http://{admin_addr}");
        Ok(Server {
            registry,
            registrar,
            checks,
            metrics,
            config,
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
    /// accepting, lets in-flight requests finish, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Server {
            config,
            udp,
            tcp,
            http,
            registry,
            registrar,
            checks,
            metrics,
            ..
        } = self;
        let apex = dns::zone_name(&config.dns.zone).expect("validated");
        let nameserver = if config.dns.nameserver.is_empty() {
            apex.prepend_label("ns")
                .expect("zone has room for one label")
        } else {
            dns::zone_name(&config.dns.nameserver).unwrap_or_else(|_| apex.clone())
        };
        let responder = Arc::new(Responder::new(
            registry.clone(),
            ZoneSettings {
                apex,
                nameserver,
                ttl: config.dns.ttl,
                negative_ttl: config.dns.negative_ttl,
            },
            metrics.clone(),
        ));
        let token = CancellationToken::new();
        // Everything stops when this future ends, however it ends: also when
        // it is dropped mid-run (the UDP threads, which are not tasks, would
        // otherwise keep a shutting-down runtime waiting for ever).
        let _cancel_on_drop = token.clone().drop_guard();
        let mut tasks = JoinSet::new();

        for socket in udp {
            let responder = responder.clone();
            let stop = token.clone();
            tasks.spawn_blocking(move || dns::udp::serve(socket, responder, stop));
        }
        tasks.spawn(dns::server::serve_tcp(
            tcp,
            responder.clone(),
            token.clone(),
            config.dns.max_tcp_connections,
            Duration::from_secs(config.dns.tcp_idle_timeout),
        ));
        tasks.spawn(registrar.clone().run_sweeper(token.clone()));
        tasks.spawn(checks::scheduler::run(
            checks,
            registrar.clone(),
            config.checks.max_in_flight,
            token.clone(),
        ));

        let token_value =
            (!config.admin.token.is_empty()).then(|| Arc::from(config.admin.token.as_str()));
        let app = admin::router(admin::AdminState {
            registry,
            registrar: registrar.clone(),
            metrics,
            token: token_value,
            default_ttl: config.registry.default_ttl,
            store: config.store.url.clone(),
            started: Instant::now(),
            events_keep_alive: Duration::from_secs(config.admin.events_keep_alive),
            shutdown: token.clone(),
        });
        tasks.spawn(admin::serve(http, app, token.clone()));

        shutdown.await;
        tracing::info!("shutting down");
        token.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "in-flight requests did not finish within {SHUTDOWN_GRACE:?}; stopping anyway"
            );
            tasks.abort_all();
        }
        registrar.close().await;
        tracing::info!("stopped");
    }
}
