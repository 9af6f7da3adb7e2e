//! Active health checks: what a registration's `check` says (and the rules
//! it must pass), how one check is run ([`probe`]), what a run of results
//! adds up to ([`thresholds`]), and the one scheduler that runs them all
//! ([`scheduler`]), told of instances through a [`checker::Checker`]. The
//! scheduler hands every result to the registrar, which applies it.
//!
//! A check's result never replaces the health a heartbeat reported: the
//! instance serves the worse of the two (see `Instance::health`).

pub(crate) mod checker;
pub(crate) mod probe;
pub(crate) mod scheduler;
pub(crate) mod target;
pub(crate) mod thresholds;

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::validate::{ValidationError, abbreviate, validate_host};

/// Interval used when a check names none, seconds.
pub(crate) const DEFAULT_INTERVAL_SECS: f64 = 10.0;
/// Upper bound of the default timeout, seconds (it is also never more than
/// the interval).
pub(crate) const DEFAULT_TIMEOUT_SECS: f64 = 5.0;
/// Longest accepted check URL, bytes.
pub(crate) const MAX_URL_BYTES: usize = 2048;
/// Largest accepted `failures_before_critical` / `successes_before_passing`.
pub(crate) const MAX_THRESHOLD: i64 = 100;
/// Largest accepted `deregister_after`, seconds (one week).
pub(crate) const MAX_DEREGISTER_AFTER_SECS: f64 = 604_800.0;

/// A `check` object as the client sent it. Unknown fields are refused, like
/// everywhere in the registration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRegistration {
    pub http: Option<String>,
    pub tcp: Option<String>,
    pub interval: Option<f64>,
    pub timeout: Option<f64>,
    #[serde(default, deserialize_with = "crate::validate::optional_whole_number")]
    pub failures_before_critical: Option<i64>,
    #[serde(default, deserialize_with = "crate::validate::optional_whole_number")]
    pub successes_before_passing: Option<i64>,
    pub deregister_after: Option<f64>,
    pub tls_skip_verify: Option<bool>,
}

/// What a check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckTarget {
    /// `GET` a URL: 2xx passing, 429 warning, anything else critical.
    Http(HttpTarget),
    /// Connect to `host:port`: connected is passing, anything else critical.
    Tcp { host: String, port: u16 },
}

impl CheckTarget {
    /// The host a check connects to (an IP literal or a hostname): checks
    /// share their slots per host (see `scheduler`).
    pub fn host(&self) -> &str {
        match self {
            CheckTarget::Http(target) => &target.host,
            CheckTarget::Tcp { host, .. } => host,
        }
    }
}

/// A parsed `http://` or `https://` check URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as registered, echoed back in the service object.
    pub url: String,
    /// Host to connect to: an IP literal (without brackets) or a hostname.
    pub host: String,
    pub port: u16,
    /// The `Host` header: the URL's authority.
    pub authority: String,
    /// Path and query, at least `/`.
    pub path: String,
    /// `https`: speak TLS, and verify the certificate against the system's
    /// trusted roots unless `tls_skip_verify`.
    pub tls: bool,
    pub tls_skip_verify: bool,
}

/// A check that passed every rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub target: CheckTarget,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failed checks before the check turns critical.
    pub failures_before_critical: u32,
    /// Consecutive good checks before a critical check recovers.
    pub successes_before_passing: u32,
    /// Remove the instance once it has been critical this long.
    pub deregister_after: Option<Duration>,
}

impl CheckTarget {
    /// The field it was registered as (`check.http`, `check.tcp`) and its
    /// host, when that is an IP literal.
    pub fn literal_address(&self) -> Option<(&'static str, IpAddr)> {
        let (field, host) = match self {
            CheckTarget::Http(target) => ("check.http", &target.host),
            CheckTarget::Tcp { host, .. } => ("check.tcp", host),
        };
        host.parse().ok().map(|ip| (field, ip))
    }
}

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError(message.into())
}

/// `value` seconds, checked to lie in `min..=max`.
fn seconds(field: &str, value: f64, min: f64, max: f64) -> Result<Duration, ValidationError> {
    if !value.is_finite() || value < min || value > max {
        return Err(invalid(format!(
            "{field} must be {min}-{max} seconds, got {value}"
        )));
    }
    Ok(Duration::from_secs_f64(value))
}

fn threshold(field: &str, value: Option<i64>) -> Result<u32, ValidationError> {
    let value = value.unwrap_or(1);
    if !(1..=MAX_THRESHOLD).contains(&value) {
        return Err(invalid(format!(
            "{field} must be 1-{MAX_THRESHOLD}, got {value}"
        )));
    }
    Ok(value as u32)
}

/// Splits `host:port` (IPv6 in brackets) and checks both halves.
fn host_port(field: &str, value: &str) -> Result<(String, u16), ValidationError> {
    let bad = || {
        invalid(format!(
            "{field} must be host:port (IPv6 in brackets, [::1]:80), got {:?}",
            abbreviate(value)
        ))
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (host.to_string(), port)
    } else {
        let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
        if host.contains(':') {
            return Err(bad());
        }
        let host = validate_host(host).map_err(|e| invalid(format!("{field}: {e}")))?;
        (host.to_string(), port)
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(invalid(format!("{field}: port must be 1-65535, got 0")));
    }
    Ok((host, port))
}

/// Parses an `http://` or `https://` URL into what the probe needs.
fn http_target(url: &str, tls_skip_verify: bool) -> Result<HttpTarget, ValidationError> {
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(format!(
            "check.http must be at most {MAX_URL_BYTES} bytes, got {}",
            url.len()
        )));
    }
    let bad = |why: &str| invalid(format!("check.http {why}: {:?}", abbreviate(url)));
    let uri: axum::http::Uri = url
        .parse()
        .map_err(|_| bad("must be a URL such as http://10.0.0.5:8080/health"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("must start with http:// or https://")),
    };
    if tls_skip_verify && !tls {
        return Err(invalid(
            "check.tls_skip_verify applies only to https:// URLs",
        ));
    }
    let authority = uri.authority().ok_or_else(|| bad("must name a host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("must not carry credentials"));
    }
    let host = authority.host();
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6
            .parse::<IpAddr>()
            .map_err(|_| bad("has an invalid IPv6 address"))?
            .to_string(),
        None if host.is_empty() => return Err(bad("must name a host")),
        None => validate_host(host)
            .map_err(|e| invalid(format!("check.http: {e}")))?
            .to_string(),
    };
    // `Authority::port` is `None` for an unparsable port such as 99999, so
    // read what follows the host ourselves.
    let port = match authority.as_str()[authority.host().len()..].strip_prefix(':') {
        None if tls => 443,
        None => 80,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("must have a port of 1-65535")),
            Ok(port) => port,
        },
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/")
        .to_string();
    Ok(HttpTarget {
        url: url.to_string(),
        host,
        port,
        authority: authority.as_str().to_string(),
        path,
        tls,
        tls_skip_verify,
    })
}

impl CheckRegistration {
    /// Applies every rule of a `check` object.
    pub fn validate(&self) -> Result<CheckSpec, ValidationError> {
        let target = match (&self.http, &self.tcp) {
            (Some(url), None) => {
                CheckTarget::Http(http_target(url, self.tls_skip_verify.unwrap_or(false))?)
            }
            (None, Some(_)) if self.tls_skip_verify == Some(true) => {
                return Err(invalid(
                    "check.tls_skip_verify applies only to https:// URLs",
                ));
            }
            (None, Some(address)) => {
                let (host, port) = host_port("check.tcp", address)?;
                CheckTarget::Tcp { host, port }
            }
            _ => {
                return Err(invalid(
                    "check must have exactly one of \"http\" (a URL) or \"tcp\" (host:port)",
                ));
            }
        };
        let interval = seconds(
            "check.interval",
            self.interval.unwrap_or(DEFAULT_INTERVAL_SECS),
            1.0,
            3600.0,
        )?;
        // A timeout longer than the interval is cut to it: a check never
        // runs into the next one. (Cut rather than refused, so that the
        // rule is one the OpenAPI document can state: JSON Schema cannot
        // compare two fields.)
        let timeout = match self.timeout {
            None => DEFAULT_TIMEOUT_SECS,
            Some(value) => {
                if !value.is_finite() || !(0.01..=3600.0).contains(&value) {
                    return Err(invalid(format!(
                        "check.timeout must be 0.01-3600 seconds (and is cut to check.interval), \
                         got {value}"
                    )));
                }
                value
            }
        };
        let timeout = interval.min(Duration::from_secs_f64(timeout));
        let deregister_after = self
            .deregister_after
            .map(|value| {
                seconds(
                    "check.deregister_after",
                    value,
                    1.0,
                    MAX_DEREGISTER_AFTER_SECS,
                )
            })
            .transpose()?;
        Ok(CheckSpec {
            target,
            interval,
            timeout,
            failures_before_critical: threshold(
                "check.failures_before_critical",
                self.failures_before_critical,
            )?,
            successes_before_passing: threshold(
                "check.successes_before_passing",
                self.successes_before_passing,
            )?,
            deregister_after,
        })
    }
}

/// Seconds as JSON: an integer when whole, so `"interval": 10` reads back
/// as `10`, not `10.0`.
fn seconds_json(duration: Duration) -> Value {
    if duration.subsec_nanos() == 0 {
        json!(duration.as_secs())
    } else {
        json!(duration.as_secs_f64())
    }
}

impl CheckSpec {
    /// The `check` object as registered (defaults filled in): echoed in the
    /// service object and kept in the store, where it is validated again on
    /// load.
    pub fn to_json(&self) -> Value {
        let mut object = json!({
            "interval": seconds_json(self.interval),
            "timeout": seconds_json(self.timeout),
            "failures_before_critical": self.failures_before_critical,
            "successes_before_passing": self.successes_before_passing,
        });
        match &self.target {
            CheckTarget::Http(target) => {
                object["http"] = json!(target.url);
                if target.tls_skip_verify {
                    object["tls_skip_verify"] = json!(true);
                }
            }
            CheckTarget::Tcp { host, port } => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                object["tcp"] = json!(format!("{host}:{port}"));
            }
        }
        if let Some(after) = self.deregister_after {
            object["deregister_after"] = seconds_json(after);
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: Value) -> Result<CheckSpec, ValidationError> {
        serde_json::from_value::<CheckRegistration>(value)
            .unwrap()
            .validate()
    }

    #[test]
    fn http_urls() {
        let spec = check(json!({"http": "http://10.0.0.5:8080/alive?x=1"})).unwrap();
        let CheckTarget::Http(target) = &spec.target else {
            panic!()
        };
        assert_eq!(target.host, "10.0.0.5");
        assert_eq!(target.port, 8080);
        assert_eq!(target.path, "/alive?x=1");
        assert_eq!(spec.interval, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(5));
        let spec = check(json!({"http": "http://[::1]/"})).unwrap();
        let CheckTarget::Http(target) = &spec.target else {
            panic!()
        };
        assert_eq!((target.host.as_str(), target.port), ("::1", 80));
        let spec = check(json!({"http": "http://Example.COM"})).unwrap();
        let CheckTarget::Http(target) = &spec.target else {
            panic!()
        };
        assert_eq!(
            (target.host.as_str(), target.path.as_str()),
            ("example.com", "/")
        );
        let spec = check(json!({"http": "https://h/", "tls_skip_verify": true})).unwrap();
        let CheckTarget::Http(target) = &spec.target else {
            panic!()
        };
        assert_eq!(
            (target.port, target.tls, target.tls_skip_verify),
            (443, true, true)
        );
        assert_eq!(spec.to_json()["tls_skip_verify"], json!(true));
        assert!(check(json!({"http": "http://h/", "tls_skip_verify": true})).is_err());
        assert!(check(json!({"tcp": "h:1", "tls_skip_verify": true})).is_err());
        assert!(check(json!({"tcp": "h:1", "tls_skip_verify": false})).is_ok());
        for bad in [
            "",
            "10.0.0.5:80",
            "ftp://x/",
            "http://",
            "http:///path",
            "http://user:pw@host/",
            "http://a..b/",
            "http://host:0/",
            "http://host:99999/",
        ] {
            assert!(check(json!({"http": bad})).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_targets() {
        let spec = check(json!({"tcp": "db.internal:5432"})).unwrap();
        assert_eq!(
            spec.target,
            CheckTarget::Tcp {
                host: "db.internal".into(),
                port: 5432
            }
        );
        assert_eq!(spec.to_json()["tcp"], json!("db.internal:5432"));
        let spec = check(json!({"tcp": "[::1]:53"})).unwrap();
        assert_eq!(spec.to_json()["tcp"], json!("[::1]:53"));
        for bad in [
            "", "host", "host:", "host:0", "host:x", "::1:53", "[::1]53", ":80",
        ] {
            assert!(check(json!({"tcp": bad})).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers() {
        assert!(check(json!({"tcp": "h:1", "interval": 0.5})).is_err());
        assert!(check(json!({"tcp": "h:1", "interval": 3601})).is_err());
        let cut = check(json!({"tcp": "h:1", "interval": 2, "timeout": 3})).unwrap();
        assert_eq!(cut.timeout, Duration::from_secs(2), "cut to the interval");
        assert!(check(json!({"tcp": "h:1", "timeout": 3601})).is_err());
        assert!(check(json!({"tcp": "h:1", "timeout": 0})).is_err());
        assert!(check(json!({"tcp": "h:1", "failures_before_critical": 0})).is_err());
        assert!(check(json!({"tcp": "h:1", "successes_before_passing": 101})).is_err());
        assert!(check(json!({"tcp": "h:1", "deregister_after": 0})).is_err());
        assert!(check(json!({"tcp": "h:1", "http": "http://h/"})).is_err());
        assert!(check(json!({})).is_err());
        let spec = check(json!({"tcp": "h:1", "interval": 1, "timeout": 0.25})).unwrap();
        assert_eq!(spec.timeout, Duration::from_millis(250));
        assert_eq!(spec.to_json()["interval"], json!(1));
        assert_eq!(spec.to_json()["timeout"], json!(0.25));
    }
}
