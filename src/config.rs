//! Settings: the TOML file, the built-in default, and command-line overrides.
//!
//! The shipped `config/signpost.toml` is compiled in and is the default, so
//! the file and the defaults can never drift apart: a user's file is laid
//! over it key by key, so it need only name what it changes.
//!
//! Two types, as for registrations: [`Config`] is what the file says, as
//! TOML types; [`Config::validate`] checks every rule once and gives
//! [`Settings`], in the types the server uses (names, durations, the store).
//! Nothing downstream parses or checks a setting again.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Name;
use serde::Deserialize;

use crate::store::StoreKind;

/// The shipped, commented configuration file; also the built-in default.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/signpost.toml");

/// Longest timeout or interval accepted, seconds.
const MAX_SECONDS: u64 = 3600;

/// Everything signpost can be told at start-up, as the TOML file says it.
/// Every field is set by the built-in file, so none has a serde default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// DNS server settings.
    pub dns: DnsConfig,
    /// HTTP admin API settings.
    pub admin: AdminConfig,
    /// Registry behaviour.
    pub registry: RegistryConfig,
    /// Where registrations are kept.
    pub store: StoreConfig,
    /// Active health checks.
    pub checks: ChecksConfig,
    /// The process as a whole.
    pub server: ServerConfig,
}

/// `[dns]`: the authoritative DNS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct DnsConfig {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// The zone served, e.g. `svc.local`.
    pub zone: String,
    /// Upper bound of record TTLs, seconds.
    pub ttl: u32,
    /// TTL of negative answers and SOA minimum, seconds.
    pub negative_ttl: u32,
    /// Apex NS / SOA MNAME; empty means `ns.<zone>`.
    pub nameserver: String,
    /// The addresses the zone answers for the nameserver's name when it is
    /// in the zone; empty means the DNS listen address (when it is not the
    /// unspecified one).
    pub nameserver_addresses: Vec<String>,
    /// Simultaneous TCP connections accepted.
    pub max_tcp_connections: usize,
    /// Seconds a TCP connection may sit without a complete query.
    pub tcp_idle_timeout: u64,
    /// Seconds allowed to write one batch of TCP answers.
    pub tcp_write_timeout: u64,
    /// UDP threads (each with its own socket on the port); 0 means one per
    /// CPU core, at most 8.
    pub threads: usize,
    /// Percent of a type's instances that must be not critical, below which
    /// answers include its critical instances too; 0 is off.
    pub panic_threshold: u8,
    /// Serving instances a locality needs before its clients are answered
    /// with it alone.
    pub locality_min_serving: usize,
    /// Upstream nameservers (`ip:port`) for names outside the zone; empty:
    /// they are refused.
    pub forward: Vec<String>,
    /// Seconds one upstream has to answer a forwarded query.
    pub forward_timeout: u64,
    /// Forwarded queries waiting for upstreams at once, at most.
    pub forward_max_in_flight: usize,
    /// TCP connections one source address may hold at once.
    pub tcp_max_connections_per_source: usize,
    /// Queries one TCP connection may ask before it is closed.
    pub tcp_max_queries: u64,
    /// Seconds a TCP connection may live, however busy.
    pub tcp_max_lifetime: u64,
    /// Response rate limiting for UDP: `[dns.rate_limit]`.
    pub rate_limit: RateLimitConfig,
    /// Client networks and their localities: `[[dns.locality]]` tables.
    /// The one setting with a default here: the shipped file has none, and
    /// a table array cannot be written empty.
    #[serde(default)]
    pub locality: Vec<LocalityConfig>,
}

/// `[dns.rate_limit]`: response rate limiting for UDP, per source prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RateLimitConfig {
    /// Responses a second to one /24 (IPv4) or /56 (IPv6); 0 is off.
    pub responses_per_second: u32,
    /// Every this many limited responses, one goes out as an empty reply
    /// with TC (so real clients retry over TCP); 0 drops them all.
    pub slip: u32,
}

/// `[[dns.locality]]`: the clients in some networks are in one locality.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct LocalityConfig {
    /// The locality: a DNS label, as registrations name it.
    pub name: String,
    /// Its networks, as CIDR (`10.1.0.0/16`, `fd00:1::/48`).
    pub networks: Vec<String>,
}

/// `[admin]`: the HTTP admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct AdminConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// One admin token, as the secret itself; empty for none. Kept for
    /// existing files; `tokens` is the way to configure tokens.
    pub token: String,
    /// Tokens with roles: `[[admin.tokens]]` tables. A default here, as for
    /// `dns.locality`: the shipped file has none.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// TLS: `[admin.tls]`.
    pub tls: AdminTlsConfig,
    /// Seconds between keep-alive comments on `/v1/events`.
    pub events_keep_alive: u64,
    /// Events kept for a slow `/v1/events` subscriber before it misses some.
    pub events_buffer: usize,
    /// Seconds a client has to send complete request headers.
    pub header_read_timeout: u64,
    /// Seconds a client has to send the whole body, once its headers are in.
    pub body_read_timeout: u64,
    /// Open admin connections allowed at once.
    pub max_connections: usize,
    /// Open admin connections allowed from one source address.
    pub max_connections_per_source: usize,
    /// Seconds a connection may move no byte before it is closed.
    pub idle_timeout: u64,
    /// `/v1/events` streams open at once, at most.
    pub events_max_streams: usize,
    /// Seconds shutdown waits for in-flight admin requests.
    pub drain_timeout: u64,
}

/// `[admin.tls]`: TLS for the admin API (README "Security").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct AdminTlsConfig {
    /// PEM certificate chain; empty: plain HTTP.
    pub cert: String,
    /// PEM private key of the certificate.
    pub key: String,
    /// PEM CA certificates; when set, clients must present a certificate
    /// one of them signed.
    pub client_ca: String,
}

/// `[[admin.tokens]]`: one token of the admin API (README "Security").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct TokenConfig {
    /// Shown in logs and as the owner of what it registers.
    pub name: String,
    /// The SHA-256 of the secret, 64 hex digits.
    pub sha256: String,
    /// `read`, `register` or `admin`.
    pub role: String,
    /// For `register` tokens: globs of the types it may write (`web-*`).
    #[serde(default)]
    pub types: Vec<String>,
}

/// `[registry]`: registration defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RegistryConfig {
    /// TTL of a registration that names none, seconds.
    pub default_ttl: u32,
    /// Instances registered at once, at most.
    pub max_instances: usize,
    /// Service types at once, at most.
    pub max_types: usize,
    /// Registrations a second from one source prefix; 0: no limit.
    pub registrations_per_source: u32,
}

/// `[checks]`: the active health-check scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ChecksConfig {
    /// Checks running at once, at most; due checks wait for a free slot.
    pub max_in_flight: usize,
    /// Networks (CIDR, or single addresses) check targets must be in;
    /// empty: any not denied.
    pub allow: Vec<String>,
    /// Networks check targets may not be in, whatever `allow` says.
    pub deny: Vec<String>,
    /// Checks running at once against one target host, at most.
    pub max_in_flight_per_target: usize,
}

/// `[store]`: persistence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct StoreConfig {
    /// Store URL: `memory`, `sqlite:PATH` or `etcd:URL,URL,...`.
    pub url: String,
    /// The etcd store's settings: `[store.etcd]`.
    pub etcd: EtcdConfig,
}

/// `[store.etcd]`: how to reach etcd, for `etcd:` stores.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct EtcdConfig {
    /// Key prefix; empty means `/signpost/<zone>/`.
    pub prefix: String,
    /// This node's name among the nodes; empty means the host name and a
    /// random suffix.
    pub node: String,
    /// Milliseconds a call to etcd may take, every member tried.
    pub request_timeout_ms: u64,
    /// Milliseconds a connection to a member may take to open.
    pub dial_timeout_ms: u64,
    /// Milliseconds a starting node waits for etcd to answer; 0: one try.
    pub start_timeout_ms: u64,
    /// etcd user; empty: no authentication.
    pub username: String,
    /// That user's password.
    pub password: String,
    /// PEM file of the CA that signed the members' certificates (https://
    /// endpoints); empty: the system's roots.
    pub ca: String,
    /// PEM client certificate and key, when the members ask for one.
    pub cert: String,
    pub key: String,
}

/// `[server]`: the process as a whole.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ServerConfig {
    /// Seconds shutdown waits for all work in flight before stopping it.
    pub shutdown_grace: u64,
}

/// Settings that passed every rule, in the types the server uses. Only
/// [`Config::validate`] makes one.
#[derive(Debug, Clone)]
pub struct Settings {
    pub dns: DnsSettings,
    pub admin: AdminSettings,
    /// Where registrations are kept.
    pub store: StoreKind,
    /// TTL of a registration that names none, seconds (1-86400).
    pub default_ttl: u32,
    /// How big the registry may grow.
    pub capacity: crate::registrar::Capacity,
    /// Registrations a second from one source prefix; `None`: no limit.
    pub registrations_per_source: Option<u32>,
    /// Checks running at once, at most (1-100000).
    pub checks_in_flight: usize,
    /// The addresses checks may reach.
    pub check_targets: crate::checks::target::TargetPolicy,
    /// Checks running at once against one target host (1-100000).
    pub checks_in_flight_per_target: usize,
    /// How long shutdown waits for all work in flight before stopping it;
    /// never shorter than [`AdminSettings::limits`]' drain timeout.
    pub shutdown_grace: Duration,
}

/// The validated `[dns]` settings.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    pub listen: SocketAddr,
    /// The zone apex: lowercase, fully qualified.
    pub zone: Name,
    /// The apex NS and SOA MNAME: lowercase, fully qualified.
    pub nameserver: Name,
    /// The nameserver's own addresses, answered for its name when it is in
    /// the zone.
    pub nameserver_addresses: Vec<std::net::IpAddr>,
    /// Upper bound of record TTLs, seconds (at most 86400).
    pub ttl: u32,
    /// TTL of negative answers and SOA minimum, seconds (at most 86400).
    pub negative_ttl: u32,
    /// UDP threads to run, resolved (1-256).
    pub udp_threads: usize,
    /// Simultaneous TCP connections accepted (1-1000000).
    pub max_tcp_connections: usize,
    /// A TCP connection without a complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Time allowed to write one batch of TCP answers.
    pub tcp_write_timeout: Duration,
    /// TCP connections one source address may hold at once (1-1000000).
    pub tcp_max_connections_per_source: usize,
    /// Queries one TCP connection may ask before it is closed.
    pub tcp_max_queries: u64,
    /// How long a TCP connection may live, however busy.
    pub tcp_max_lifetime: Duration,
    /// UDP responses a second per source prefix; `None`: not limited.
    pub rate_limit: Option<RateLimit>,
    /// Failover, weights, locality and panic mode.
    pub steering: crate::select::Steering,
    /// Where names outside the zone go; no upstreams: refused.
    pub forward: crate::dns::forward::ForwardSettings,
}

/// The validated `[dns.rate_limit]`, when on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub responses_per_second: u32,
    pub slip: u32,
}

impl DnsSettings {
    /// What the DNS TCP listener allows a client.
    pub(crate) fn tcp_limits(&self) -> crate::dns::server::TcpLimits {
        crate::dns::server::TcpLimits {
            max_connections: self.max_tcp_connections,
            per_source: self.tcp_max_connections_per_source,
            idle: self.tcp_idle_timeout,
            write: self.tcp_write_timeout,
            max_queries: self.tcp_max_queries,
            max_lifetime: self.tcp_max_lifetime,
        }
    }

    /// The name server's labels left of the apex, when it is in the zone
    /// (none otherwise): the DNS name no registration may take over.
    pub(crate) fn nameserver_labels(&self) -> Vec<String> {
        if !self.zone.zone_of(&self.nameserver) {
            return Vec::new();
        }
        let below = self.nameserver.iter().count() - self.zone.iter().count();
        let labels = self.nameserver.iter().take(below);
        labels
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
}

/// The validated `[admin]` settings.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// The tokens, `admin.token` among them; none: the API is open.
    pub tokens: crate::access::Tokens,
    /// TLS, when `[admin.tls]` names a certificate; plain HTTP otherwise.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Time between keep-alive comments on `/v1/events`.
    pub events_keep_alive: Duration,
    /// Events kept for a slow `/v1/events` subscriber (1-1000000).
    pub events_buffer: usize,
    /// `/v1/events` streams open at once (1-1000000).
    pub events_max_streams: usize,
    /// Time a client has to send the whole body, once its headers are in.
    pub body_read_timeout: Duration,
    /// The transport's limits: header deadline, connections, drain.
    pub limits: crate::admin::Limits,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid setting {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl Default for Config {
    /// The built-in file, `config/signpost.toml`.
    fn default() -> Self {
        let table = parse_table(DEFAULT_CONFIG_TOML, "<built-in>").expect("built-in config parses");
        deserialize(table, "<built-in>").expect("built-in config sets every field")
    }
}

impl Config {
    /// Reads a TOML document laid over the built-in file: what it leaves
    /// out keeps the built-in value; a key the built-in file does not know
    /// is refused. `origin` names the document in errors. Nothing is
    /// validated yet: see [`Config::validate`].
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut table =
            parse_table(DEFAULT_CONFIG_TOML, "<built-in>").expect("built-in config parses");
        merge(&mut table, parse_table(text, origin)?);
        deserialize(table, origin)
    }

    /// Reads a TOML file, as [`Config::from_toml`].
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Checks every rule that TOML types alone cannot, once, and gives the
    /// settings in the types the server uses.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let Config {
            dns,
            admin,
            registry,
            store,
            checks,
            server,
        } = self;
        let dns = dns_settings(dns)?;

        let drain_timeout = seconds("admin.drain_timeout", admin.drain_timeout)?;
        let shutdown_grace = seconds("server.shutdown_grace", server.shutdown_grace)?;
        if drain_timeout > shutdown_grace {
            return Err(invalid(
                "admin.drain_timeout",
                format!(
                    "{} s is longer than server.shutdown_grace ({} s), which would cut it short",
                    admin.drain_timeout, server.shutdown_grace
                ),
            ));
        }
        let events_keep_alive = seconds("admin.events_keep_alive", admin.events_keep_alive)?;
        let idle_timeout = seconds("admin.idle_timeout", admin.idle_timeout)?;
        if idle_timeout <= events_keep_alive {
            return Err(invalid(
                "admin.idle_timeout",
                format!(
                    "{} s is not longer than admin.events_keep_alive ({} s): /v1/events streams \
                     would be closed between their keep-alive comments",
                    admin.idle_timeout, admin.events_keep_alive
                ),
            ));
        }
        let admin = AdminSettings {
            listen: admin.listen,
            tokens: tokens(&admin.token, admin.tokens)?,
            tls: admin_tls(&admin.tls)?,
            events_keep_alive,
            events_buffer: count("admin.events_buffer", admin.events_buffer)?,
            events_max_streams: count("admin.events_max_streams", admin.events_max_streams)?,
            body_read_timeout: seconds("admin.body_read_timeout", admin.body_read_timeout)?,
            limits: crate::admin::Limits {
                header_read_timeout: seconds(
                    "admin.header_read_timeout",
                    admin.header_read_timeout,
                )?,
                max_connections: count("admin.max_connections", admin.max_connections)?,
                max_connections_per_source: count(
                    "admin.max_connections_per_source",
                    admin.max_connections_per_source,
                )?,
                idle_timeout,
                drain_timeout,
            },
        };

        if !(1..=86400).contains(&registry.default_ttl) {
            return Err(invalid("registry.default_ttl", "must be 1-86400 seconds"));
        }
        let capacity = crate::registrar::Capacity {
            max_instances: match registry.max_instances {
                1..=100_000_000 => registry.max_instances,
                _ => return Err(invalid("registry.max_instances", "must be 1-100000000")),
            },
            max_types: match registry.max_types {
                1..=10_000_000 => registry.max_types,
                _ => return Err(invalid("registry.max_types", "must be 1-10000000")),
            },
        };
        if !(1..=100_000).contains(&checks.max_in_flight) {
            return Err(invalid("checks.max_in_flight", "must be 1-100000"));
        }
        if !(1..=100_000).contains(&checks.max_in_flight_per_target) {
            return Err(invalid(
                "checks.max_in_flight_per_target",
                "must be 1-100000",
            ));
        }
        let store = store_settings(store, &dns.zone)?;
        let check_targets = crate::checks::target::TargetPolicy {
            allow: networks("checks.allow", &checks.allow)?,
            deny: networks("checks.deny", &checks.deny)?,
        };
        Ok(Settings {
            check_targets,
            dns,
            admin,
            store,
            default_ttl: registry.default_ttl,
            capacity,
            registrations_per_source: (registry.registrations_per_source > 0)
                .then_some(registry.registrations_per_source),
            checks_in_flight: checks.max_in_flight,
            checks_in_flight_per_target: checks.max_in_flight_per_target,
            shutdown_grace,
        })
    }
}

/// The `[store]` settings, validated; `[store.etcd]` only for an etcd
/// store.
fn store_settings(store: StoreConfig, zone: &Name) -> Result<StoreKind, ConfigError> {
    let kind = StoreKind::parse(&store.url).map_err(|e| invalid("store.url", e))?;
    let StoreKind::Etcd(mut settings) = kind else {
        return Ok(kind);
    };
    let etcd = store.etcd;
    settings.prefix = if etcd.prefix.is_empty() {
        format!("/signpost/{}/", zone.to_ascii().trim_end_matches('.'))
    } else if etcd.prefix.ends_with('/') && !etcd.prefix.contains(char::is_control) {
        etcd.prefix
    } else {
        return Err(invalid(
            "store.etcd.prefix",
            format!("{:?} must end with '/'", etcd.prefix),
        ));
    };
    settings.node = if etcd.node.is_empty() {
        crate::store::etcd::default_node_name()
    } else if crate::validate::is_dns_label(&etcd.node) {
        etcd.node
    } else {
        return Err(invalid(
            "store.etcd.node",
            format!("{:?} is not a DNS label (a-z, 0-9, '-')", etcd.node),
        ));
    };
    let millis = |setting: &'static str, value: u64| {
        if (100..=60_000).contains(&value) {
            Ok(Duration::from_millis(value))
        } else {
            Err(invalid(setting, "must be 100-60000 milliseconds"))
        }
    };
    settings.request_timeout = millis("store.etcd.request_timeout_ms", etcd.request_timeout_ms)?;
    settings.dial_timeout = millis("store.etcd.dial_timeout_ms", etcd.dial_timeout_ms)?;
    settings.start_timeout = match etcd.start_timeout_ms {
        0..=86_400_000 => Duration::from_millis(etcd.start_timeout_ms),
        _ => {
            return Err(invalid(
                "store.etcd.start_timeout_ms",
                "must be 0-86400000 milliseconds (a day)",
            ));
        }
    };
    settings.username = (!etcd.username.is_empty()).then_some(etcd.username);
    settings.password = etcd.password;
    let path = |text: String| (!text.is_empty()).then(|| std::path::PathBuf::from(text));
    settings.ca = path(etcd.ca);
    settings.cert = path(etcd.cert);
    settings.key = path(etcd.key);
    if settings.cert.is_some() != settings.key.is_some() {
        return Err(invalid(
            "store.etcd.cert",
            "store.etcd.cert and store.etcd.key go together",
        ));
    }
    Ok(StoreKind::Etcd(settings))
}

/// `[admin.tls]`, its files read and checked now: a missing file or a key
/// that does not go with the certificate stops the start, naming the
/// setting.
fn admin_tls(tls: &AdminTlsConfig) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    match (tls.cert.is_empty(), tls.key.is_empty()) {
        (true, true) if tls.client_ca.is_empty() => return Ok(None),
        (true, true) => {
            return Err(invalid(
                "admin.tls.client_ca",
                "client certificates need TLS: set admin.tls.cert and admin.tls.key too",
            ));
        }
        (false, true) => return Err(invalid("admin.tls.key", "admin.tls.cert needs its key")),
        (true, false) => {
            return Err(invalid(
                "admin.tls.cert",
                "admin.tls.key needs its certificate",
            ));
        }
        (false, false) => {}
    }
    let client_ca = (!tls.client_ca.is_empty()).then(|| Path::new(&tls.client_ca));
    crate::admin::tls::server_config(Path::new(&tls.cert), Path::new(&tls.key), client_ca)
        .map(Some)
        .map_err(|e| invalid(e.setting, e.message))
}

/// Longest token name, characters.
const MAX_TOKEN_NAME: usize = 64;

/// `admin.token` (an admin token named `admin`) and `[[admin.tokens]]`,
/// validated: unique names and hashes, a known role, and types (globs of
/// DNS labels) exactly for `register` tokens.
fn tokens(
    legacy: &str,
    configured: Vec<TokenConfig>,
) -> Result<crate::access::Tokens, ConfigError> {
    use crate::access::{Role, Token, sha256};
    let mut tokens: Vec<Token> = Vec::new();
    if !legacy.is_empty() {
        tokens.push(Token {
            name: "admin".into(),
            sha256: sha256(legacy.as_bytes()),
            role: Role::Admin,
            types: Vec::new(),
        });
    }
    for token in configured {
        let token = one_token(token, &tokens, !legacy.is_empty())?;
        tokens.push(token);
    }
    Ok(crate::access::Tokens::new(tokens))
}

/// One `[[admin.tokens]]` table, validated against the tokens `before`
/// it (`legacy`: whether `admin.token` is set, and so named `admin`).
fn one_token(
    token: TokenConfig,
    before: &[crate::access::Token],
    legacy: bool,
) -> Result<crate::access::Token, ConfigError> {
    use crate::access::{Role, Token, parse_sha256, sha256};
    const SETTING: &str = "admin.tokens";
    let name = &token.name;
    let name_ok = (1..=MAX_TOKEN_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(invalid(
            SETTING,
            format!(
                "name {name:?} must be 1-{MAX_TOKEN_NAME} characters a-z, A-Z, 0-9, '-', '_' or '.'"
            ),
        ));
    }
    if before.iter().any(|t| *t.name == **name) {
        let also = if name == "admin" && legacy {
            " (admin.token is the token named \"admin\")"
        } else {
            ""
        };
        return Err(invalid(
            SETTING,
            format!("name {name:?} is used twice{also}"),
        ));
    }
    let hash = parse_sha256(&token.sha256).ok_or_else(|| {
        invalid(
            SETTING,
            format!(
                "{name:?}: sha256 must be the 64 hex digits of the secret's SHA-256 \
                 (printf %s \"$TOKEN\" | sha256sum), not the secret itself"
            ),
        )
    })?;
    if hash == sha256(b"") {
        return Err(invalid(
            SETTING,
            format!("{name:?}: sha256 is that of an empty secret"),
        ));
    }
    if before.iter().any(|t| t.sha256 == hash) {
        return Err(invalid(
            SETTING,
            format!("{name:?} has the same secret as another token"),
        ));
    }
    let role = Role::parse(&token.role).ok_or_else(|| {
        invalid(
            SETTING,
            format!(
                "{name:?}: role {:?} must be \"read\", \"register\" or \"admin\"",
                token.role
            ),
        )
    })?;
    match role {
        Role::Register if token.types.is_empty() => {
            return Err(invalid(
                SETTING,
                format!(
                    "{name:?}: a register token needs types, the globs of the types it may register (\"web-*\")"
                ),
            ));
        }
        Role::Read | Role::Admin if !token.types.is_empty() => {
            return Err(invalid(
                SETTING,
                format!("{name:?}: types are for register tokens; a {role} token has none"),
            ));
        }
        _ => {}
    }
    for glob in &token.types {
        let label = glob.replace('*', "a");
        if !crate::validate::is_dns_label(&label) || glob.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                SETTING,
                format!(
                    "{name:?}: type {glob:?} must be a type (a-z, 0-9, '-') where '*' stands for any characters"
                ),
            ));
        }
    }
    Ok(Token {
        name: Arc::from(name.as_str()),
        sha256: hash,
        role,
        types: token.types,
    })
}

/// The `[dns]` settings, validated.
fn dns_settings(dns: DnsConfig) -> Result<DnsSettings, ConfigError> {
    let zone = crate::dns::zone_name(&dns.zone).map_err(|e| invalid("dns.zone", e))?;
    let nameserver = if dns.nameserver.is_empty() {
        zone.prepend_label("ns").map_err(|_| {
            invalid(
                "dns.nameserver",
                format!("ns.{zone} would be too long a name: set a name server"),
            )
        })?
    } else {
        // The rules of the zone: DNS labels, trailing dot optional.
        crate::dns::zone_name(&dns.nameserver).map_err(|_| {
            invalid(
                "dns.nameserver",
                format!(
                    "{:?} is not a host name: labels of 1-63 characters a-z, 0-9 and '-', \
                     not starting or ending with '-', at most 253 characters in all",
                    dns.nameserver
                ),
            )
        })?
    };
    if dns.ttl > 86400 {
        return Err(invalid("dns.ttl", "must be at most 86400 seconds"));
    }
    if dns.negative_ttl > 86400 {
        return Err(invalid("dns.negative_ttl", "must be at most 86400 seconds"));
    }
    let udp_threads = match dns.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n if n <= 256 => n,
        _ => return Err(invalid("dns.threads", "must be 0 (one per core) to 256")),
    };
    let steering = steering(&dns)?;
    let nameserver_addresses = nameserver_addresses(&dns, &zone, &nameserver)?;
    let forward = forward(&dns)?;
    Ok(DnsSettings {
        steering,
        forward,
        listen: dns.listen,
        zone,
        nameserver,
        nameserver_addresses,
        ttl: dns.ttl,
        negative_ttl: dns.negative_ttl,
        udp_threads,
        max_tcp_connections: count("dns.max_tcp_connections", dns.max_tcp_connections)?,
        tcp_idle_timeout: seconds("dns.tcp_idle_timeout", dns.tcp_idle_timeout)?,
        tcp_write_timeout: seconds("dns.tcp_write_timeout", dns.tcp_write_timeout)?,
        tcp_max_connections_per_source: count(
            "dns.tcp_max_connections_per_source",
            dns.tcp_max_connections_per_source,
        )?,
        tcp_max_queries: match dns.tcp_max_queries {
            0 => return Err(invalid("dns.tcp_max_queries", "must be at least 1")),
            n => n,
        },
        tcp_max_lifetime: seconds("dns.tcp_max_lifetime", dns.tcp_max_lifetime)?,
        rate_limit: match dns.rate_limit {
            RateLimitConfig {
                responses_per_second: 0,
                ..
            } => None,
            RateLimitConfig {
                responses_per_second,
                slip,
            } if slip <= 100 => Some(RateLimit {
                responses_per_second,
                slip,
            }),
            _ => {
                return Err(invalid(
                    "dns.rate_limit.slip",
                    "must be 0 (drop all) to 100",
                ));
            }
        },
    })
}

fn invalid(setting: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        setting,
        message: message.to_string(),
    }
}

/// The addresses answered for the nameserver's name: those configured, else
/// (when the name is in the zone) the DNS listen address, unless that is the
/// unspecified address, which no client can reach: then none, and a warning.
fn nameserver_addresses(
    dns: &DnsConfig,
    zone: &Name,
    nameserver: &Name,
) -> Result<Vec<std::net::IpAddr>, ConfigError> {
    let mut addresses = Vec::new();
    for text in &dns.nameserver_addresses {
        let address = text.parse().map_err(|_| {
            invalid(
                "dns.nameserver_addresses",
                format!("{text:?} is not an IP address"),
            )
        })?;
        addresses.push(address);
    }
    let listen = dns.listen.ip();
    if addresses.is_empty() && zone.zone_of(nameserver) {
        if listen.is_unspecified() {
            tracing::warn!(
                "the name server {nameserver} is in the zone but has no address: \
                 dns.listen is {listen}, which no client can reach; \
                 set dns.nameserver_addresses"
            );
        } else {
            addresses.push(listen);
        }
    }
    Ok(addresses)
}

/// The steering settings of `[dns]`.
fn steering(dns: &DnsConfig) -> Result<crate::select::Steering, ConfigError> {
    if dns.panic_threshold > 100 {
        return Err(invalid(
            "dns.panic_threshold",
            "must be 0 (off) to 100 percent",
        ));
    }
    let locality_min_serving = count("dns.locality_min_serving", dns.locality_min_serving)?;
    let mut localities = Vec::new();
    for locality in &dns.locality {
        let name = crate::validate::validate_label("dns.locality.name", &locality.name)
            .map_err(|e| invalid("dns.locality", e.to_string()))?;
        if locality.networks.is_empty() {
            return Err(invalid(
                "dns.locality",
                format!("locality {name:?} has no networks"),
            ));
        }
        for network in &locality.networks {
            let parsed: ipnet::IpNet = network.parse().map_err(|_| {
                invalid(
                    "dns.locality",
                    format!(
                        "{network:?} of locality {name:?} is not a network such as 10.1.0.0/16"
                    ),
                )
            })?;
            localities.push((parsed.trunc(), name.clone()));
        }
    }
    Ok(crate::select::Steering {
        localities,
        locality_min_serving,
        panic_threshold: dns.panic_threshold,
    })
}

/// The forwarding settings of `[dns]`: upstreams as addresses, none of
/// them signpost's own.
fn forward(dns: &DnsConfig) -> Result<crate::dns::forward::ForwardSettings, ConfigError> {
    let mut upstreams: Vec<SocketAddr> = Vec::new();
    for upstream in &dns.forward {
        let addr: SocketAddr = upstream.parse().map_err(|_| {
            invalid(
                "dns.forward",
                format!(
                    "{upstream:?} is not an address and port such as \"192.0.2.53:53\" or \"[2001:db8::53]:53\""
                ),
            )
        })?;
        if addr.port() == 0 || addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(invalid(
                "dns.forward",
                format!("{upstream:?} is not an address a nameserver can answer from"),
            ));
        }
        // signpost's own address: every forwarded query would come back.
        let listen = dns.listen;
        let own = addr.port() == listen.port()
            && (addr.ip() == listen.ip()
                || listen.ip().is_unspecified() && addr.ip().is_loopback());
        if own {
            return Err(invalid(
                "dns.forward",
                format!("{upstream:?} is signpost's own dns.listen ({listen}): queries would loop"),
            ));
        }
        if upstreams.contains(&addr) {
            return Err(invalid(
                "dns.forward",
                format!("{upstream:?} is named twice"),
            ));
        }
        upstreams.push(addr);
    }
    Ok(crate::dns::forward::ForwardSettings {
        upstreams,
        timeout: seconds("dns.forward_timeout", dns.forward_timeout)?,
        max_in_flight: count("dns.forward_max_in_flight", dns.forward_max_in_flight)?,
    })
}

/// Networks, as CIDR (`10.0.0.0/8`) or single addresses.
fn networks(setting: &'static str, list: &[String]) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    list.iter()
        .map(|text| {
            crate::checks::target::parse_network(text).ok_or_else(|| {
                invalid(
                    setting,
                    format!(
                        "{text:?} is not a network such as \"10.0.0.0/8\" or \"fd00::/8\", \
                         nor an address such as \"169.254.169.254\""
                    ),
                )
            })
        })
        .collect()
}

/// A timeout or interval of 1 to [`MAX_SECONDS`] seconds.
fn seconds(setting: &'static str, value: u64) -> Result<Duration, ConfigError> {
    if !(1..=MAX_SECONDS).contains(&value) {
        return Err(invalid(
            setting,
            format!("must be 1-{MAX_SECONDS} seconds, got {value}"),
        ));
    }
    Ok(Duration::from_secs(value))
}

/// A limit of 1 to 1000000 (connections, events).
fn count(setting: &'static str, value: usize) -> Result<usize, ConfigError> {
    if !(1..=1_000_000).contains(&value) {
        return Err(invalid(setting, format!("must be 1-1000000, got {value}")));
    }
    Ok(value)
}

/// Parses a TOML document into a table; syntax errors name the line.
fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let message = match e.span() {
            Some(span) => {
                let line = 1 + text[..span.start].matches('\n').count();
                format!("line {line}: {}", e.message())
            }
            None => e.message().to_string(),
        };
        ConfigError::Parse {
            path: origin.to_string(),
            message,
        }
    })
}

/// Lays `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base)), toml::Value::Table(over)) => merge(base, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Turns the merged table into a [`Config`]; errors name the key's path
/// (`dns.listen_port: unknown field ...`).
fn deserialize(table: toml::Table, origin: &str) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(table).map_err(|e| ConfigError::Parse {
        path: origin.to_string(),
        message: format!("{}: {}", e.path(), e.inner().message()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Settings, String> {
        Config::from_toml(text, "x.toml")
            .and_then(Config::validate)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn shipped_config_parses_and_is_the_default() {
        let config = Config::default();
        assert_eq!(config.dns.listen, "127.0.0.1:8600".parse().unwrap());
        assert_eq!(config.admin.listen, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(config.dns.zone, "svc.local");
        assert_eq!(config.store.url, "sqlite:data/signpost.db");
        let settings = config.validate().unwrap();
        assert_eq!(settings.dns.zone, Name::from_ascii("svc.local.").unwrap());
        assert_eq!(
            settings.dns.nameserver,
            Name::from_ascii("ns.svc.local.").unwrap()
        );
        assert_eq!(settings.store, StoreKind::Sqlite("data/signpost.db".into()));
        assert!(settings.admin.tokens.is_empty());
        let ten = Duration::from_secs(10);
        assert_eq!(settings.dns.tcp_idle_timeout, ten);
        assert_eq!(settings.dns.tcp_write_timeout, ten);
        assert_eq!(settings.admin.body_read_timeout, ten);
        assert_eq!(settings.admin.limits.header_read_timeout, ten);
        assert_eq!(settings.admin.limits.drain_timeout, ten);
        assert_eq!(settings.admin.limits.max_connections, 1024);
        assert_eq!(settings.shutdown_grace, ten);
        assert_eq!(settings.admin.events_keep_alive, Duration::from_secs(15));
    }

    #[test]
    fn an_empty_file_is_the_built_in_one() {
        let empty = Config::from_toml("", "x.toml").unwrap();
        let built_in = Config::default();
        assert_eq!(format!("{empty:?}"), format!("{built_in:?}"));
    }

    #[test]
    fn a_partial_file_keeps_the_built_in_values_it_does_not_name() {
        let config = Config::from_toml("[dns]\nzone = \"svc.internal\"", "x.toml").unwrap();
        assert_eq!(config.dns.zone, "svc.internal");
        assert_eq!(config.dns.listen, "127.0.0.1:8600".parse().unwrap());
        assert_eq!(config.dns.ttl, 5);
        assert_eq!(config.admin.events_buffer, 4096);
        assert_eq!(config.store.url, "sqlite:data/signpost.db");
        let settings = config.validate().unwrap();
        assert_eq!(
            settings.dns.nameserver,
            Name::from_ascii("ns.svc.internal.").unwrap()
        );
        // Dotted keys and inline tables merge the same way.
        let config =
            Config::from_toml("admin.token = \"t\"\nchecks = { max_in_flight = 7 }", "x").unwrap();
        assert_eq!(config.admin.token, "t");
        assert_eq!(config.admin.listen, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(config.checks.max_in_flight, 7);
    }

    #[test]
    fn unknown_settings_are_refused_naming_the_key() {
        let text = DEFAULT_CONFIG_TOML.replace("[dns]", "[dns]\nlisten_port = 53");
        let err = load(&text).unwrap_err();
        assert!(err.contains("dns.listen_port"), "{err}");
        let err = load("[dns]\nzone = \"svc.internal\"\nlisten_port = 53").unwrap_err();
        assert!(
            err.contains("x.toml") && err.contains("dns.listen_port"),
            "{err}"
        );
        let err = load("[dnss]\nzone = \"svc.internal\"").unwrap_err();
        assert!(err.contains("dnss"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_syntax_name_the_key_or_line() {
        let err = load("[dns]\nttl = \"5\"").unwrap_err();
        assert!(err.contains("dns.ttl"), "{err}");
        let err = load("[admin]\nheader_read_timeout = 0.5").unwrap_err();
        assert!(err.contains("admin.header_read_timeout"), "{err}");
        let err = load("dns = 5").unwrap_err();
        assert!(err.contains("dns") && err.contains("a table"), "{err}");
        let err = load("[dns]\n\nzone = svc.internal").unwrap_err();
        assert!(err.contains("x.toml") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn dns_threads_default_to_the_cores_and_are_bounded() {
        let config = Config::default();
        assert_eq!(config.dns.threads, 0);
        let settings = config.validate().unwrap();
        assert!((1..=8).contains(&settings.dns.udp_threads));
        assert_eq!(load("dns.threads = 3").unwrap().dns.udp_threads, 3);
        let err = load("dns.threads = 300").unwrap_err();
        assert!(err.contains("dns.threads"), "{err}");
    }

    #[test]
    fn etcd_settings_are_checked_naming_the_key() {
        let etcd = |extra: &str| {
            load(&format!(
                "[store]\nurl = \"etcd:http://127.0.0.1:2379\"\n[store.etcd]\n{extra}"
            ))
        };
        let StoreKind::Etcd(settings) = etcd("node = \"n1\"").unwrap().store else {
            panic!("an etcd store");
        };
        assert_eq!(settings.prefix, "/signpost/svc.local/");
        assert_eq!(settings.start_timeout, Duration::from_secs(60));
        let StoreKind::Etcd(settings) = etcd("start_timeout_ms = 0").unwrap().store else {
            panic!("an etcd store");
        };
        assert_eq!(settings.start_timeout, Duration::ZERO, "0: one try");
        for (bad, key) in [
            ("prefix = \"/no-slash\"", "store.etcd.prefix"),
            ("node = \"not a label\"", "store.etcd.node"),
            ("request_timeout_ms = 50", "store.etcd.request_timeout_ms"),
            ("dial_timeout_ms = 600000", "store.etcd.dial_timeout_ms"),
            (
                "start_timeout_ms = 100000000",
                "store.etcd.start_timeout_ms",
            ),
            ("cert = \"c.pem\"", "store.etcd.cert"),
        ] {
            let err = etcd(bad).unwrap_err();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_zone_is_refused() {
        let err = load("dns.zone = \"bad..zone\"").unwrap_err();
        assert!(err.contains("dns.zone"), "{err}");
        let err = load("dns.zone = \"\"").unwrap_err();
        assert!(err.contains("dns.zone"), "{err}");
    }

    #[test]
    fn zone_and_nameserver_become_lowercase_fully_qualified_names() {
        let settings =
            load("[dns]\nzone = \"Svc.Internal.\"\nnameserver = \"NS1.Example.net\"").unwrap();
        assert_eq!(settings.dns.zone.to_string(), "svc.internal.");
        assert!(settings.dns.zone.is_fqdn());
        assert_eq!(settings.dns.nameserver.to_string(), "ns1.example.net.");
        assert!(settings.dns.nameserver.is_fqdn());
    }

    #[test]
    fn a_nameserver_that_is_not_a_host_name_is_refused() {
        for bad in [
            "ns_1.example.net",
            "ns..example.net",
            "-ns.example.net",
            "ns 1",
        ] {
            let err = load(&format!("dns.nameserver = {bad:?}")).unwrap_err();
            assert!(
                err.contains("dns.nameserver") && err.contains(bad),
                "{bad}: {err}"
            );
        }
        // A zone of 253 characters is a name, but too long a zone: every
        // DNS-SD name under it must fit in 255 bytes.
        let label = "a".repeat(63);
        let long_zone = format!("{label}.{label}.{label}.{}", "b".repeat(61));
        let err = load(&format!("dns.zone = {long_zone:?}")).unwrap_err();
        assert!(err.contains("dns.zone") && err.contains("120"), "{err}");
        let zone = format!("{label}.{}", "b".repeat(56));
        assert_eq!(zone.len(), 120);
        assert!(load(&format!("dns.zone = {zone:?}")).is_ok());
    }

    #[test]
    fn timeouts_are_durations_and_every_limit_has_a_range() {
        let text = "[dns]\ntcp_write_timeout = 2\n[admin]\nheader_read_timeout = 3\n\
                    body_read_timeout = 4\ndrain_timeout = 5\nmax_connections = 6\n\
                    [server]\nshutdown_grace = 7";
        let settings = load(text).unwrap();
        assert_eq!(settings.dns.tcp_write_timeout, Duration::from_secs(2));
        assert_eq!(
            settings.admin.limits.header_read_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(settings.admin.body_read_timeout, Duration::from_secs(4));
        assert_eq!(settings.admin.limits.drain_timeout, Duration::from_secs(5));
        assert_eq!(settings.admin.limits.max_connections, 6);
        assert_eq!(settings.shutdown_grace, Duration::from_secs(7));
        for (text, setting) in [
            ("dns.tcp_idle_timeout = 0", "dns.tcp_idle_timeout"),
            ("dns.tcp_idle_timeout = 3601", "dns.tcp_idle_timeout"),
            ("dns.tcp_write_timeout = 0", "dns.tcp_write_timeout"),
            ("dns.tcp_write_timeout = 3601", "dns.tcp_write_timeout"),
            ("dns.max_tcp_connections = 0", "dns.max_tcp_connections"),
            (
                "dns.max_tcp_connections = 2000000",
                "dns.max_tcp_connections",
            ),
            ("dns.negative_ttl = 86401", "dns.negative_ttl"),
            ("admin.events_keep_alive = 0", "admin.events_keep_alive"),
            ("admin.events_buffer = 0", "admin.events_buffer"),
            ("admin.header_read_timeout = 0", "admin.header_read_timeout"),
            ("admin.body_read_timeout = 0", "admin.body_read_timeout"),
            ("admin.max_connections = 0", "admin.max_connections"),
            ("admin.drain_timeout = 0", "admin.drain_timeout"),
            ("server.shutdown_grace = 0", "server.shutdown_grace"),
            // The drain cannot outlast the grace that would cut it short.
            ("server.shutdown_grace = 5", "admin.drain_timeout"),
            ("registry.default_ttl = 0", "registry.default_ttl"),
            ("checks.max_in_flight = 0", "checks.max_in_flight"),
            (
                "checks.max_in_flight_per_target = 0",
                "checks.max_in_flight_per_target",
            ),
            // Event streams would be closed between their keep-alives.
            ("admin.idle_timeout = 15", "admin.idle_timeout"),
            (
                "admin.max_connections_per_source = 0",
                "admin.max_connections_per_source",
            ),
            ("admin.events_max_streams = 0", "admin.events_max_streams"),
            ("registry.max_instances = 0", "registry.max_instances"),
            ("registry.max_types = 0", "registry.max_types"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(setting), "{text}: {err}");
        }
    }

    #[test]
    fn forwarding_is_off_by_default_and_upstreams_are_addresses() {
        let settings = Config::default().validate().unwrap();
        assert!(settings.dns.forward.upstreams.is_empty());
        assert_eq!(settings.dns.forward.timeout, Duration::from_secs(2));
        assert_eq!(settings.dns.forward.max_in_flight, 256);
        let text = "[dns]\nforward = [\"192.0.2.53:53\", \"[2001:db8::53]:5353\"]\n\
                    forward_timeout = 1\nforward_max_in_flight = 10";
        let forward = load(text).unwrap().dns.forward;
        let upstreams: Vec<String> = forward.upstreams.iter().map(|a| a.to_string()).collect();
        assert_eq!(upstreams, ["192.0.2.53:53", "[2001:db8::53]:5353"]);
        assert_eq!(forward.timeout, Duration::from_secs(1));
        assert_eq!(forward.max_in_flight, 10);
        for (text, why) in [
            ("dns.forward = [\"192.0.2.53\"]", "not an address and port"),
            (
                "dns.forward = [\"ns.example.net:53\"]",
                "not an address and port",
            ),
            ("dns.forward = [\"192.0.2.53:0\"]", "cannot"),
            ("dns.forward = [\"0.0.0.0:53\"]", "cannot"),
            ("dns.forward = [\"127.0.0.1:8600\"]", "loop"),
            (
                "dns.listen = \"0.0.0.0:53\"\ndns.forward = [\"127.0.0.1:53\"]",
                "loop",
            ),
            (
                "dns.forward = [\"192.0.2.1:53\", \"192.0.2.1:53\"]",
                "twice",
            ),
            ("dns.forward = \"192.0.2.53:53\"", ""),
        ] {
            let err = load(text).unwrap_err();
            let why = if why == "cannot" { "answer from" } else { why };
            assert!(
                err.contains("dns.forward") && err.contains(why),
                "{text}: {err}"
            );
        }
        // A listener on every address forwards to another host's port 53.
        let text = "dns.listen = \"0.0.0.0:53\"\ndns.forward = [\"192.0.2.53:53\"]";
        assert!(load(text).is_ok());
        for (text, setting) in [
            ("dns.forward_timeout = 0", "dns.forward_timeout"),
            ("dns.forward_timeout = 3601", "dns.forward_timeout"),
            ("dns.forward_max_in_flight = 0", "dns.forward_max_in_flight"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.contains(setting), "{text}: {err}");
        }
    }

    /// `[[admin.tokens]]` as the README shows them, and every rule.
    #[test]
    fn tokens_have_a_name_a_hash_a_role_and_types_for_register() {
        use crate::access::Role;
        // printf %s s3cret | sha256sum
        let hash = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
        let other = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let text = format!(
            "admin.token = \"legacy\"\n\
             [[admin.tokens]]\nname = \"web-team\"\nsha256 = \"{hash}\"\n\
             role = \"register\"\ntypes = [\"web\", \"web-*\"]\n\
             [[admin.tokens]]\nname = \"dashboard\"\nsha256 = \"{}\"\nrole = \"read\"",
            other.to_uppercase()
        );
        let tokens = load(&text).unwrap().admin.tokens;
        let listed: Vec<_> = tokens
            .iter()
            .map(|t| (t.name.to_string(), t.role, t.types.clone()))
            .collect();
        assert_eq!(
            listed,
            [
                ("admin".to_string(), Role::Admin, vec![]),
                (
                    "web-team".to_string(),
                    Role::Register,
                    vec!["web".to_string(), "web-*".to_string()]
                ),
                ("dashboard".to_string(), Role::Read, vec![]),
            ]
        );
        assert_eq!(tokens.identify("s3cret").unwrap().name.as_ref(), "web-team");
        assert_eq!(tokens.identify("legacy").unwrap().name.as_ref(), "admin");
        assert_eq!(tokens.identify("hello").unwrap().name.as_ref(), "dashboard");
        // The secret is not kept, nor shown.
        assert!(!format!("{tokens:?}").contains("legacy"));

        let token = |fields: &str| format!("[[admin.tokens]]\n{fields}");
        let ok = format!("name = \"a\"\nsha256 = \"{hash}\"\nrole = \"admin\"");
        assert!(load(&token(&ok)).is_ok());
        for (text, why) in [
            (token(&ok.replace("\"a\"", "\"\"")), "name"),
            (token(&ok.replace("\"a\"", "\"a b\"")), "name"),
            (token(&ok.replace(hash, "s3cret")), "not the secret itself"),
            (token(&ok.replace(hash, &hash[1..])), "64 hex digits"),
            (
                token(&ok.replace(
                    hash,
                    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                )),
                "empty secret",
            ),
            (token(&ok.replace("admin", "root")), "\"root\" must be"),
            (
                token(&ok.replace("admin", "register")),
                "a register token needs types",
            ),
            (
                token(&format!("{ok}\ntypes = [\"web\"]")),
                "types are for register tokens",
            ),
            (
                token(&format!(
                    "{}\ntypes = [\"web_*\"]",
                    ok.replace("admin", "register")
                )),
                "\"web_*\" must be a type",
            ),
            (
                token(&format!(
                    "{}\ntypes = [\"Web\"]",
                    ok.replace("admin", "register")
                )),
                "must be a type",
            ),
            (format!("{}\n{}", token(&ok), token(&ok)), "used twice"),
            (
                format!("{}\n{}", token(&ok), token(&ok.replace("\"a\"", "\"b\""))),
                "same secret",
            ),
            (
                format!(
                    "admin.token = \"x\"\n{}",
                    token(&ok.replace("\"a\"", "\"admin\""))
                ),
                "admin.token is the token named",
            ),
            (token("name = \"a\""), "sha256"),
        ] {
            let err = load(&text).unwrap_err();
            assert!(
                err.contains("admin.tokens") && err.contains(why),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn check_targets_deny_link_local_and_metadata_by_default() {
        let policy = Config::default().validate().unwrap().check_targets;
        assert!(policy.allow.is_empty());
        for denied in [
            "169.254.169.254",
            "169.254.1.1",
            "fe80::1",
            "fd00:ec2::254",
            "100.100.100.200",
            "::ffff:169.254.169.254",
        ] {
            assert!(policy.check(denied.parse().unwrap()).is_err(), "{denied}");
        }
        for allowed in ["127.0.0.1", "10.0.0.1", "100.100.100.201", "::1"] {
            assert!(policy.check(allowed.parse().unwrap()).is_ok(), "{allowed}");
        }
        let settings =
            load("[checks]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"10.9.0.0/16\"]").unwrap();
        assert_eq!(settings.check_targets.allow.len(), 1);
        assert_eq!(settings.check_targets.deny.len(), 1);
        for (text, setting) in [
            ("checks.allow = [\"10.0.0.0/33\"]", "checks.allow"),
            ("checks.deny = [\"metadata.internal\"]", "checks.deny"),
        ] {
            let err = load(text).unwrap_err();
            assert!(
                err.contains(setting) && err.contains("not a network"),
                "{err}"
            );
        }
    }

    #[test]
    fn store_is_parsed_once() {
        assert_eq!(
            load("store.url = \"memory\"").unwrap().store,
            StoreKind::Memory
        );
        let err = load("store.url = \"etcd:x\"").unwrap_err();
        assert!(err.contains("store.url"), "{err}");
    }
}
