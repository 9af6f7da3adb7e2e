//! Settings: the TOML file, the built-in default, and command-line overrides.
//!
//! The shipped `config/signpost.toml` is compiled in and is the default, so
//! the file and the defaults can never drift apart: a user's file is laid
//! over it key by key, so it need only name what it changes.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The shipped, commented configuration file; also the built-in default.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/signpost.toml");

/// Everything signpost can be told at start-up. Every field is set by the
/// built-in file, so none has a serde default.
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
    /// Simultaneous TCP connections accepted.
    pub max_tcp_connections: usize,
    /// Seconds a TCP connection may sit without a complete query.
    pub tcp_idle_timeout: u64,
    /// UDP threads (each with its own socket on the port); 0 means one per
    /// CPU core, at most 8.
    pub threads: usize,
}

impl DnsConfig {
    /// How many UDP threads to run.
    pub fn udp_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
            n => n,
        }
    }
}

/// `[admin]`: the HTTP admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct AdminConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Bearer token required for non-GET requests; empty for none.
    pub token: String,
    /// Seconds between keep-alive comments on `/v1/events`.
    pub events_keep_alive: u64,
    /// Events kept for a slow `/v1/events` subscriber before it misses some.
    pub events_buffer: usize,
}

/// `[checks]`: the active health-check scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct ChecksConfig {
    /// Checks running at once, at most; due checks wait for a free slot.
    pub max_in_flight: usize,
}

/// `[registry]`: registration defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct RegistryConfig {
    /// TTL of a registration that names none, seconds.
    pub default_ttl: u32,
}

/// `[store]`: persistence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct StoreConfig {
    /// Store URL: `memory` or `sqlite:PATH`.
    pub url: String,
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
        let config = deserialize(table, "<built-in>").expect("built-in config sets every field");
        config.validate().expect("built-in config is valid");
        config
    }
}

impl Config {
    /// Parses and validates a TOML document laid over the built-in file:
    /// what it leaves out keeps the built-in value; a key the built-in file
    /// does not know is refused. `origin` names the document in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut table =
            parse_table(DEFAULT_CONFIG_TOML, "<built-in>").expect("built-in config parses");
        merge(&mut table, parse_table(text, origin)?);
        let config = deserialize(table, origin)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Checks the settings that TOML types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| ConfigError::Invalid {
            setting,
            message: message.to_string(),
        };
        crate::dns::zone_name(&self.dns.zone).map_err(|e| invalid("dns.zone", &e))?;
        if !self.dns.nameserver.is_empty() {
            hickory_proto::rr::Name::from_ascii(&self.dns.nameserver)
                .map_err(|e| invalid("dns.nameserver", &e.to_string()))?;
        }
        if self.dns.ttl > 86400 || self.dns.negative_ttl > 86400 {
            return Err(invalid("dns.ttl", "TTLs must be at most 86400 seconds"));
        }
        if self.dns.max_tcp_connections == 0 {
            return Err(invalid("dns.max_tcp_connections", "must be at least 1"));
        }
        if self.dns.threads > 256 {
            return Err(invalid("dns.threads", "must be 0 (one per core) to 256"));
        }
        if self.dns.tcp_idle_timeout == 0 {
            return Err(invalid("dns.tcp_idle_timeout", "must be at least 1 second"));
        }
        if !(1..=86400).contains(&self.registry.default_ttl) {
            return Err(invalid("registry.default_ttl", "must be 1-86400 seconds"));
        }
        if self.admin.events_keep_alive == 0 || self.admin.events_keep_alive > 3600 {
            return Err(invalid("admin.events_keep_alive", "must be 1-3600 seconds"));
        }
        if !(1..=1_000_000).contains(&self.admin.events_buffer) {
            return Err(invalid("admin.events_buffer", "must be 1-1000000 events"));
        }
        if !(1..=100_000).contains(&self.checks.max_in_flight) {
            return Err(invalid("checks.max_in_flight", "must be 1-100000"));
        }
        crate::store::StoreKind::parse(&self.store.url)
            .map_err(|e| invalid("store.url", &e.to_string()))?;
        Ok(())
    }
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

    #[test]
    fn shipped_config_parses_and_is_the_default() {
        let config = Config::default();
        assert_eq!(config.dns.listen, "127.0.0.1:8600".parse().unwrap());
        assert_eq!(config.admin.listen, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(config.dns.zone, "svc.local");
        assert_eq!(config.store.url, "sqlite:data/signpost.db");
    }

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, "x.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_file_is_the_built_in_one() {
        let empty = load("").unwrap();
        let built_in = Config::default();
        assert_eq!(format!("{empty:?}"), format!("{built_in:?}"));
    }

    #[test]
    fn a_partial_file_keeps_the_built_in_values_it_does_not_name() {
        let config = load("[dns]\nzone = \"svc.internal\"").unwrap();
        assert_eq!(config.dns.zone, "svc.internal");
        assert_eq!(config.dns.listen, "127.0.0.1:8600".parse().unwrap());
        assert_eq!(config.dns.ttl, 5);
        assert_eq!(config.admin.events_buffer, 4096);
        assert_eq!(config.store.url, "sqlite:data/signpost.db");
        // Dotted keys and inline tables merge the same way.
        let config = load("admin.token = \"t\"\nchecks = { max_in_flight = 7 }").unwrap();
        assert_eq!(config.admin.token, "t");
        assert_eq!(config.admin.listen, "127.0.0.1:8700".parse().unwrap());
        assert_eq!(config.checks.max_in_flight, 7);
    }

    #[test]
    fn unknown_settings_are_refused_naming_the_key() {
        let text = DEFAULT_CONFIG_TOML.replace("\n[dns]\n", "\n[dns]\nlisten_port = 53\n");
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
        let err = load("[admin]\nevents_keep_alive = 0.5").unwrap_err();
        assert!(err.contains("admin.events_keep_alive"), "{err}");
        let err = load("dns = 5").unwrap_err();
        assert!(err.contains("dns") && err.contains("a table"), "{err}");
        let err = load("[dns]\n\nzone = svc.internal").unwrap_err();
        assert!(err.contains("x.toml") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn dns_threads_default_to_the_cores_and_are_bounded() {
        let config = Config::default();
        assert_eq!(config.dns.threads, 0);
        assert!((1..=8).contains(&config.dns.udp_threads()));
        let text = DEFAULT_CONFIG_TOML.replace("threads = 0", "threads = 300");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("dns.threads"), "{err}");
    }

    #[test]
    fn bad_zone_is_refused() {
        let text = DEFAULT_CONFIG_TOML.replace("zone = \"svc.local\"", "zone = \"bad..zone\"");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("dns.zone"), "{err}");
    }
}
