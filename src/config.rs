//! Settings: the TOML file, the built-in default, and command-line overrides.
//!
//! The shipped `config/signpost.toml` is compiled in and is the default, so
//! the file and the defaults can never drift apart.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// The shipped, commented configuration file; also the built-in default.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/signpost.toml");

/// Everything signpost can be told at start-up.
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
    #[serde(default)]
    pub checks: ChecksConfig,
}

/// `[dns]`: the authoritative DNS server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default)]
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
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Bearer token required for non-GET requests; empty for none.
    pub token: String,
    /// Seconds between keep-alive comments on `/v1/events`.
    #[serde(default = "default_events_keep_alive")]
    pub events_keep_alive: u64,
    /// Events kept for a slow `/v1/events` subscriber before it misses some.
    #[serde(default = "default_events_buffer")]
    pub events_buffer: usize,
}

fn default_events_keep_alive() -> u64 {
    15
}

fn default_events_buffer() -> usize {
    4096
}

/// `[checks]`: the active health-check scheduler.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChecksConfig {
    /// Checks running at once, at most; due checks wait for a free slot.
    pub max_in_flight: usize,
}

impl Default for ChecksConfig {
    fn default() -> Self {
        ChecksConfig { max_in_flight: 512 }
    }
}

/// `[registry]`: registration defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// TTL of a registration that names none, seconds.
    pub default_ttl: u32,
}

/// `[store]`: persistence.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
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
    fn default() -> Self {
        Config::from_toml(DEFAULT_CONFIG_TOML, "<built-in>").expect("built-in config is valid")
    }
}

impl Config {
    /// Parses and validates a TOML document; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.message().to_string(),
        })?;
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

    #[test]
    fn unknown_settings_are_refused() {
        let text = DEFAULT_CONFIG_TOML.replace("[dns]", "[dns]\nlisten_port = 53");
        let err = Config::from_toml(&text, "x.toml").unwrap_err().to_string();
        assert!(err.contains("listen_port"), "{err}");
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
