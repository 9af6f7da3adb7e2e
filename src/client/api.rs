//! [`Client`] and the requests it sends: one method per admin API call.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Method;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::address::Address;
use super::error::{AddressError, Error};
use super::http::{DEFAULT_TIMEOUT, Transport};
use crate::service::{Health, ServiceView};

/// The environment variable naming the admin API's address.
pub const ADDRESS_VAR: &str = "SIGNPOST_ADDR";
/// The environment variable holding the admin token (`Authorization:
/// Bearer`), the same one the server reads.
pub const TOKEN_VAR: &str = "SIGNPOST_ADMIN_TOKEN";

/// A client of one signpost admin API; cheap to clone (clones share
/// nothing but settings: every request opens a connection of its own).
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) transport: Transport,
}

impl Client {
    /// A client of the admin API at `address` (`http://127.0.0.1:8700`;
    /// see [`Address`]), without a token, with a 10 s timeout per request.
    pub fn new(address: &str) -> Result<Client, AddressError> {
        Ok(Client::at(address.parse()?))
    }

    /// A client of the admin API at `address`.
    pub fn at(address: Address) -> Client {
        Client {
            transport: Transport {
                address,
                token: None,
                timeout: DEFAULT_TIMEOUT,
            },
        }
    }

    /// The address from `SIGNPOST_ADDR` (default `http://127.0.0.1:8700`)
    /// and the token from `SIGNPOST_ADMIN_TOKEN`, as the command line
    /// takes them.
    pub fn from_env() -> Result<Client, AddressError> {
        let client = match std::env::var(ADDRESS_VAR) {
            Ok(address) if !address.is_empty() => Client::new(&address)?,
            _ => Client::at(Address::local()),
        };
        Ok(match std::env::var(TOKEN_VAR) {
            Ok(token) if !token.is_empty() => client.with_token(token),
            _ => client,
        })
    }

    /// Sends `Authorization: Bearer <token>` (needed for changes when the
    /// server has `admin.token` set).
    pub fn with_token(mut self, token: impl Into<String>) -> Client {
        self.transport.token = Some(token.into());
        self
    }

    /// The longest one request may take, connecting included; past it the
    /// request fails as [`Error::Unreachable`].
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.transport.timeout = timeout;
        self
    }

    /// The admin API's address.
    pub fn address(&self) -> &Address {
        &self.transport.address
    }

    /// `POST /v1/services` once: registers `service` (or replaces the live
    /// instance of the same type and name, keeping its id) and returns the
    /// service object. Nothing heartbeats it: see [`Client::register`] for
    /// a registration that keeps itself alive.
    pub async fn register_once(&self, service: &NewService) -> Result<ServiceView, Error> {
        let body = serde_json::to_vec(service).expect("a registration serialises");
        self.transport
            .json(Method::POST, "/v1/services", Some(body))
            .await
    }

    /// `PUT /v1/services/{id}/heartbeat`: renews the instance's TTL and
    /// reports its health (`output` says why, shown in the service object).
    /// [`Error::is_not_found`] means it is gone: register again.
    pub async fn heartbeat(
        &self,
        id: Uuid,
        status: Health,
        output: Option<&str>,
    ) -> Result<ServiceView, Error> {
        let mut body = serde_json::json!({ "status": status });
        if let Some(output) = output {
            body["output"] = output.into();
        }
        let path = format!("/v1/services/{id}/heartbeat");
        self.transport
            .json(Method::PUT, &path, Some(body.to_string().into_bytes()))
            .await
    }

    /// `DELETE /v1/services/{id}`.
    pub async fn deregister(&self, id: Uuid) -> Result<(), Error> {
        let path = format!("/v1/services/{id}");
        self.transport.call(Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// `GET /v1/services/{id}`.
    pub async fn service(&self, id: Uuid) -> Result<ServiceView, Error> {
        let path = format!("/v1/services/{id}");
        self.transport.json(Method::GET, &path, None).await
    }

    /// `GET /v1/services`: every live instance that `filter` matches,
    /// sorted by type, then name.
    pub async fn list(&self, filter: &Filter) -> Result<Vec<ServiceView>, Error> {
        #[derive(Deserialize)]
        struct Services {
            services: Vec<ServiceView>,
        }
        let path = format!("/v1/services{}", filter.query());
        let list: Services = self.transport.json(Method::GET, &path, None).await?;
        Ok(list.services)
    }

    /// `GET /v1/discover/{type}`: one serving instance of `service_type`
    /// (with `tag`, when given), chosen as a DNS answer's first address
    /// would be. [`Error::is_not_found`] when none serves.
    pub async fn discover(
        &self,
        service_type: &str,
        tag: Option<&str>,
    ) -> Result<ServiceView, Error> {
        let filter = Filter {
            tag: tag.map(String::from),
            ..Filter::default()
        };
        let path = format!("/v1/discover/{}{}", escape(service_type), filter.query());
        self.transport.json(Method::GET, &path, None).await
    }

    /// `GET /v1/types`: every type with a live instance.
    pub async fn types(&self) -> Result<Vec<TypeSummary>, Error> {
        #[derive(Deserialize)]
        struct Types {
            types: Vec<TypeSummary>,
        }
        let types: Types = self.transport.json(Method::GET, "/v1/types", None).await?;
        Ok(types.types)
    }

    /// `GET /v1/health`: the server's own state.
    pub async fn health(&self) -> Result<ServerHealth, Error> {
        self.transport.json(Method::GET, "/v1/health", None).await
    }
}

/// A path segment with everything but unreserved characters escaped.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// What [`Client::register`] sends: the four required fields, then
/// whatever else is set; the server's defaults apply to the rest (ttl 30,
/// priority 0, weight 1).
///
/// ```
/// use std::time::Duration;
/// use signpost::client::{Check, NewService};
///
/// let service = NewService::new("web-1", "web", "10.0.0.5", 8080)
///     .tag("api")
///     .meta("version", "1.4.2")
///     .ttl(10)
///     .check(Check::http("http://10.0.0.5:8080/health").interval(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewService {
    name: String,
    #[serde(rename = "type")]
    service_type: String,
    host: String,
    port: u16,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    weight: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locality: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<Check>,
}

impl NewService {
    /// Instance `name` of `service_type`, reached at `host:port`.
    pub fn new(name: &str, service_type: &str, host: &str, port: u16) -> NewService {
        NewService {
            name: name.into(),
            service_type: service_type.into(),
            host: host.into(),
            port,
            tags: Vec::new(),
            metadata: BTreeMap::new(),
            ttl: None,
            priority: None,
            weight: None,
            locality: None,
            check: None,
        }
    }

    /// Adds a tag (a DNS label: `_<tag>._sub.<type>.<zone>` finds it).
    pub fn tag(mut self, tag: &str) -> NewService {
        self.tags.push(tag.into());
        self
    }

    /// Adds a metadata pair (served as TXT `key=value`).
    pub fn meta(mut self, key: &str, value: &str) -> NewService {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Seconds the instance lives without a heartbeat or a passing check.
    pub fn ttl(mut self, seconds: u32) -> NewService {
        self.ttl = Some(seconds);
        self
    }

    /// Lower is preferred; higher priorities are backups.
    pub fn priority(mut self, priority: u16) -> NewService {
        self.priority = Some(priority);
        self
    }

    /// Relative share of traffic within a priority.
    pub fn weight(mut self, weight: u16) -> NewService {
        self.weight = Some(weight);
        self
    }

    /// Where it runs (a DNS label), for answers steered by locality.
    pub fn locality(mut self, locality: &str) -> NewService {
        self.locality = Some(locality.into());
        self
    }

    /// An active check the server runs against the instance.
    pub fn check(mut self, check: Check) -> NewService {
        self.check = Some(check);
        self
    }

    /// The instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance's type.
    pub fn service_type(&self) -> &str {
        &self.service_type
    }
}

/// An active health check the server runs (README, "Health checks").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    #[serde(skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deregister_after: Option<f64>,
}

impl Check {
    /// `GET url`: 2xx passing, 429 warning, anything else critical.
    pub fn http(url: &str) -> Check {
        Check {
            http: Some(url.into()),
            ..Check::none()
        }
    }

    /// Connect to `host:port` (IPv6 in brackets): connected is passing.
    pub fn tcp(host_port: &str) -> Check {
        Check {
            tcp: Some(host_port.into()),
            ..Check::none()
        }
    }

    fn none() -> Check {
        Check {
            http: None,
            tcp: None,
            interval: None,
            timeout: None,
            deregister_after: None,
        }
    }

    /// Time between checks (default 10 s).
    pub fn interval(mut self, interval: Duration) -> Check {
        self.interval = Some(interval.as_secs_f64());
        self
    }

    /// Time one check may take (default 5 s, at most the interval).
    pub fn timeout(mut self, timeout: Duration) -> Check {
        self.timeout = Some(timeout.as_secs_f64());
        self
    }

    /// Remove the instance once it has been critical this long.
    pub fn deregister_after(mut self, after: Duration) -> Check {
        self.deregister_after = Some(after.as_secs_f64());
        self
    }
}

/// Which instances [`Client::list`] returns; everything by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this type.
    pub service_type: Option<String>,
    /// Only instances with this tag.
    pub tag: Option<String>,
    /// Only this health; `Passing` means what DNS serves (passing or
    /// warning).
    pub health: Option<Health>,
}

impl Filter {
    /// Everything.
    pub fn all() -> Filter {
        Filter::default()
    }

    /// Only instances of `service_type`.
    pub fn of_type(service_type: &str) -> Filter {
        Filter {
            service_type: Some(service_type.into()),
            ..Filter::default()
        }
    }

    /// `?type=…&tag=…&health=…` with what is set, or nothing.
    pub(crate) fn query(&self) -> String {
        let mut pairs = Vec::new();
        if let Some(service_type) = &self.service_type {
            pairs.push(("type", service_type.as_str()));
        }
        if let Some(tag) = &self.tag {
            pairs.push(("tag", tag.as_str()));
        }
        if let Some(health) = self.health {
            pairs.push(("health", health.as_str()));
        }
        if pairs.is_empty() {
            return String::new();
        }
        let query = serde_urlencoded::to_string(pairs).expect("string pairs encode");
        format!("?{query}")
    }
}

/// One entry of `GET /v1/types`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct TypeSummary {
    #[serde(rename = "type")]
    pub service_type: String,
    /// Live instances.
    pub instances: usize,
    /// Of those, the ones DNS serves.
    pub serving: usize,
}

/// `GET /v1/health`: the server's own state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ServerHealth {
    /// `ok` while the server runs.
    pub status: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub uptime_seconds: u64,
    /// The store, as `memory` or `sqlite:PATH`.
    #[serde(default)]
    pub store: String,
    /// Live instances, and of those the ones DNS serves.
    #[serde(default)]
    pub instances: usize,
    #[serde(default)]
    pub serving: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_service_sends_only_what_is_set() {
        let plain = NewService::new("web-1", "web", "10.0.0.5", 8080);
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"name": "web-1", "type": "web", "host": "10.0.0.5", "port": 8080})
        );
        let full = plain
            .tag("api")
            .tag("v2")
            .meta("version", "1.0")
            .ttl(10)
            .priority(1)
            .weight(5)
            .locality("eu-1")
            .check(Check::tcp("10.0.0.5:8080").interval(Duration::from_millis(1500)));
        assert_eq!(
            serde_json::to_value(&full).unwrap(),
            serde_json::json!({"name": "web-1", "type": "web", "host": "10.0.0.5", "port": 8080,
                "tags": ["api", "v2"], "metadata": {"version": "1.0"}, "ttl": 10,
                "priority": 1, "weight": 5, "locality": "eu-1",
                "check": {"tcp": "10.0.0.5:8080", "interval": 1.5}})
        );
    }

    #[test]
    fn filters_and_paths_are_escaped() {
        assert_eq!(Filter::all().query(), "");
        let filter = Filter {
            service_type: Some("web".into()),
            tag: Some("a b&c".into()),
            health: Some(Health::Critical),
        };
        assert_eq!(filter.query(), "?type=web&tag=a+b%26c&health=critical");
        assert_eq!(escape("web"), "web");
        assert_eq!(escape("a/../b?"), "a%2F..%2Fb%3F");
    }
}
