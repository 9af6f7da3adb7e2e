//! What a service instance is: the registration a client sends, the rules it
//! must pass, and the instance the registry keeps.
//!
//! Validation lives here, next to the types, so that the admin API (and any
//! later loader, such as a store) can never build an instance that breaks the
//! DNS rules: every name and tag is a DNS label, every TXT string fits. The
//! rules a `check` shares (labels, hosts) live one level down, in
//! [`crate::validate`], and are re-exported here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::checks::{CheckRegistration, CheckSpec};
pub(crate) use crate::validate::abbreviate;
pub use crate::validate::{
    Family, Host, ValidationError, is_dns_label, validate_host, validate_label,
};

/// Largest accepted TTL, seconds (one day).
pub const MAX_TTL: u32 = 86_400;
/// Longest heartbeat `output` kept, bytes.
pub const MAX_OUTPUT_BYTES: usize = 4096;
/// Most tags one instance may carry.
pub const MAX_TAGS: usize = 64;
/// Most metadata pairs one instance may carry.
pub const MAX_METADATA: usize = 64;
/// `last_heartbeat_ms` of a removed instance: lapsed for every `now`.
const REMOVED: u64 = 0;

/// Health of an instance, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing = 0,
    Warning = 1,
    Critical = 2,
}

impl Health {
    /// Whether DNS serves an instance with this health.
    pub fn is_served(self) -> bool {
        self != Health::Critical
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }

    fn from_u8(value: u8) -> Health {
        match value {
            0 => Health::Passing,
            1 => Health::Warning,
            _ => Health::Critical,
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registration request as the client sent it (`POST /v1/services`).
///
/// Unknown fields are refused so a typo (`"nmae"`) is an error rather than a
/// silently missing value. The read-only fields of the service object are
/// accepted and ignored, so that a fetched object can be sent back as is.
/// They are read as JSON values rather than skipped, so that what is
/// ignored is still checked as strictly as the rest (see
/// `admin::body::parse_json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub host: String,
    #[serde(deserialize_with = "crate::validate::whole_number")]
    pub port: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "crate::validate::optional_whole_number")]
    pub ttl: Option<i64>,
    #[serde(default, deserialize_with = "crate::validate::optional_whole_number")]
    pub priority: Option<i64>,
    #[serde(default, deserialize_with = "crate::validate::optional_whole_number")]
    pub weight: Option<i64>,
    /// Where the instance runs (a zone, a rack): a DNS label. Clients in the
    /// same locality are answered with it first (`dns.locality`).
    pub locality: Option<String>,
    /// An active health check (see [`crate::checks`]).
    pub check: Option<CheckRegistration>,
    #[serde(default, rename = "id")]
    _id: Option<serde_json::Value>,
    #[serde(default, rename = "registered_at")]
    _registered_at: Option<serde_json::Value>,
    #[serde(default, rename = "last_heartbeat")]
    _last_heartbeat: Option<serde_json::Value>,
    #[serde(default, rename = "expires_at")]
    _expires_at: Option<serde_json::Value>,
    #[serde(default, rename = "health")]
    _health: Option<serde_json::Value>,
    #[serde(default, rename = "output")]
    _output: Option<serde_json::Value>,
    #[serde(default, rename = "check_health")]
    _check_health: Option<serde_json::Value>,
    #[serde(default, rename = "check_output")]
    _check_output: Option<serde_json::Value>,
    #[serde(default, rename = "owner")]
    _owner: Option<serde_json::Value>,
}

/// A registration that passed every rule, normalised (lowercase names).
#[derive(Debug, Clone)]
pub struct ValidRegistration {
    pub name: String,
    pub service_type: String,
    pub host: Host,
    pub port: u16,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub ttl: u32,
    pub priority: u16,
    pub weight: u16,
    /// Where the instance runs, lowercase; `None` for nowhere in particular.
    pub locality: Option<String>,
    pub check: Option<CheckSpec>,
}

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError(message.into())
}

fn ranged<T: TryFrom<i64>>(
    field: &str,
    value: i64,
    min: i64,
    max: i64,
) -> Result<T, ValidationError> {
    if value < min || value > max {
        return Err(invalid(format!("{field} must be {min}-{max}, got {value}")));
    }
    T::try_from(value).map_err(|_| invalid(format!("{field} is out of range")))
}

impl Registration {
    /// Applies every rule of the admin API contract; `default_ttl` fills a
    /// missing `ttl`.
    pub fn validate(self, default_ttl: u32) -> Result<ValidRegistration, ValidationError> {
        let name = validate_label("name", &self.name)?;
        let service_type = validate_label("type", &self.service_type)?;
        let host = validate_host(&self.host)?;
        let port = ranged("port", self.port, 1, 65535)?;
        let ttl = ranged(
            "ttl",
            self.ttl.unwrap_or(default_ttl.into()),
            1,
            MAX_TTL.into(),
        )?;
        let priority = ranged("priority", self.priority.unwrap_or(0), 0, 65535)?;
        let weight = ranged("weight", self.weight.unwrap_or(1), 0, 65535)?;
        let locality = self
            .locality
            .as_deref()
            .map(|locality| validate_label("locality", locality))
            .transpose()?;
        if self.tags.len() > MAX_TAGS {
            return Err(invalid(format!(
                "tags: at most {MAX_TAGS} tags are allowed"
            )));
        }
        let mut tags = Vec::with_capacity(self.tags.len());
        for tag in &self.tags {
            let tag = validate_label("tags", tag)?;
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(invalid(format!(
                "metadata: at most {MAX_METADATA} pairs are allowed"
            )));
        }
        for (key, value) in &self.metadata {
            // Each pair becomes one TXT character-string `key=value` (RFC 6763 §6).
            if key.is_empty() {
                return Err(invalid("metadata keys must not be empty"));
            }
            if key.contains('=') {
                return Err(invalid(format!(
                    "metadata key {:?} must not contain '='",
                    abbreviate(key)
                )));
            }
            if key.len() + 1 + value.len() > 255 {
                return Err(invalid(format!(
                    "metadata {:?}: key=value must be at most 255 bytes, got {}",
                    abbreviate(key),
                    key.len() + 1 + value.len()
                )));
            }
        }
        let check = self.check.as_ref().map(|c| c.validate()).transpose()?;
        Ok(ValidRegistration {
            check,
            name,
            service_type,
            host,
            port,
            tags,
            metadata: self.metadata,
            ttl,
            priority,
            weight,
            locality,
        })
    }
}

/// One registered instance, shared between the registry indexes and the DNS
/// answer path.
///
/// Everything but the lifetime and health is fixed at registration; a
/// re-registration builds a new `Instance` with the same id. Heartbeats only
/// touch the atomics, so they never take a registry lock.
#[derive(Debug)]
pub struct Instance {
    pub id: Uuid,
    /// Distinguishes this registration from an earlier one with the same id
    /// (replacement in place), for the expiry queue.
    pub generation: u64,
    pub spec: ValidRegistration,
    /// The SRV target in wire form (uncompressed; validated names are
    /// lowercase), built once: `<name>.<type>.<zone>` (whose A/AAAA is the
    /// host address) for an IP host, the hostname itself otherwise.
    /// [`Instance::srv_target`] gives it as a hickory `Name`.
    pub target_wire: Box<[u8]>,
    /// The TXT RDATA: `key=value` strings, or one empty string (RFC 6763
    /// §6). [`Instance::txt`] gives it as hickory record data.
    ///
    /// Only the wire forms are kept: the fast answer path copies them as
    /// they are, and the general path, which needs hickory types, is rare
    /// enough to decode them when it does (a copy of each cost about 130
    /// bytes per instance).
    pub txt_wire: Box<[u8]>,
    pub registered_at_ms: u64,
    /// The name of the token that registered it (README "Security"); `None`
    /// when the API was open. Only its owner (or an admin) may heartbeat,
    /// replace or deregister it.
    pub owner: Option<Arc<str>>,
    last_heartbeat_ms: AtomicU64,
    /// Health as the last heartbeat (or the registration) reported it.
    reported_health: AtomicU8,
    /// Health as the active check last decided it; passing without a check.
    check_health: AtomicU8,
    output: Mutex<Option<String>>,
    check_output: Mutex<Option<String>>,
}

impl Instance {
    pub fn new(
        id: Uuid,
        generation: u64,
        spec: ValidRegistration,
        zone_wire: &[u8],
        registered_at_ms: u64,
        now_ms: u64,
        health: Health,
    ) -> Instance {
        let mut target_wire = Vec::with_capacity(64);
        match &spec.host {
            Host::Ip(_) => {
                for label in [&spec.name, &spec.service_type] {
                    target_wire.push(label.len() as u8);
                    target_wire.extend_from_slice(label.as_bytes());
                }
                target_wire.extend_from_slice(zone_wire);
            }
            Host::Name(host) => {
                for label in host.split('.') {
                    target_wire.push(label.len() as u8);
                    target_wire.extend_from_slice(label.as_bytes());
                }
                target_wire.push(0);
            }
        }
        let mut txt_wire = Vec::new();
        if spec.metadata.is_empty() {
            txt_wire.push(0);
        }
        for (key, value) in &spec.metadata {
            txt_wire.push((key.len() + 1 + value.len()) as u8);
            txt_wire.extend_from_slice(key.as_bytes());
            txt_wire.push(b'=');
            txt_wire.extend_from_slice(value.as_bytes());
        }
        Instance {
            id,
            generation,
            spec,
            target_wire: target_wire.into(),
            txt_wire: txt_wire.into(),
            registered_at_ms,
            owner: None,
            last_heartbeat_ms: AtomicU64::new(now_ms),
            reported_health: AtomicU8::new(health as u8),
            check_health: AtomicU8::new(Health::Passing as u8),
            output: Mutex::new(None),
            check_output: Mutex::new(None),
        }
    }

    /// The same instance, owned by `owner`.
    pub fn with_owner(mut self, owner: Option<Arc<str>>) -> Instance {
        self.owner = owner;
        self
    }

    #[inline]
    pub fn last_heartbeat_ms(&self) -> u64 {
        self.last_heartbeat_ms.load(Ordering::Acquire)
    }

    /// When the registration lapses unless renewed, unix milliseconds.
    #[inline]
    pub fn expires_at_ms(&self) -> u64 {
        self.last_heartbeat_ms() + u64::from(self.spec.ttl) * 1000
    }

    /// Health shown and served: the worse of the reported health and the
    /// active check's.
    #[inline]
    pub fn health(&self) -> Health {
        self.reported_health().max(self.check_health())
    }

    /// Health as the last heartbeat (or the registration) reported it; what
    /// the store keeps.
    #[inline]
    pub fn reported_health(&self) -> Health {
        Health::from_u8(self.reported_health.load(Ordering::Acquire))
    }

    /// Health as the active check decided it (passing without a check).
    #[inline]
    pub fn check_health(&self) -> Health {
        Health::from_u8(self.check_health.load(Ordering::Acquire))
    }

    /// Records what the active check decided; returns the check's health
    /// before. Use `Registry::record_check`, which keeps the registry's
    /// health index in step.
    pub(crate) fn set_check_result(&self, health: Health, output: String) -> Health {
        // The output first: whoever sees the new health sees what led to it.
        *self.check_output.lock().unwrap_or_else(|e| e.into_inner()) = Some(output);
        let previous = self.check_health.swap(health as u8, Ordering::AcqRel);
        Health::from_u8(previous)
    }

    pub fn check_output(&self) -> Option<String> {
        self.check_output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Renews the lifetime from `now_ms` (a passing check), unless the
    /// instance already lapsed or was removed. Returns whether it did.
    pub fn renew(&self, now_ms: u64) -> bool {
        self.extend_lifetime(now_ms)
    }

    /// Serving: unexpired and passing or warning. Decided at answer time.
    #[inline]
    pub fn is_serving(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms() && self.health().is_served()
    }

    /// Whole seconds of lifetime left (0 when lapsed).
    #[inline]
    pub fn remaining_secs(&self, now_ms: u64) -> u32 {
        let left = self.expires_at_ms().saturating_sub(now_ms) / 1000;
        u32::try_from(left).unwrap_or(u32::MAX)
    }

    #[inline]
    pub fn has_tag(&self, tag: &str) -> bool {
        self.spec.tags.iter().any(|t| t == tag)
    }

    /// Renews the lifetime, records `output`, and records the reported
    /// `health` (`None` keeps it as it is), unless the instance already
    /// lapsed or was removed (then `None`: the client must register again).
    /// Returns the reported health before the heartbeat.
    ///
    /// A compare-and-swap against [`Instance::kill_if_lapsed_by`]: a
    /// heartbeat and the expiry sweep can never both win. Use
    /// `Registry::heartbeat` or `Registry::renew`, which keep the
    /// registry's health index in step.
    pub(crate) fn heartbeat(
        &self,
        now_ms: u64,
        health: Option<Health>,
        output: Option<String>,
    ) -> Option<Health> {
        if !self.extend_lifetime(now_ms) {
            return None;
        }
        Some(self.report(health, output))
    }

    /// Moves `last_heartbeat` forward to `now_ms` unless lapsed or removed.
    fn extend_lifetime(&self, now_ms: u64) -> bool {
        let ttl_ms = u64::from(self.spec.ttl) * 1000;
        self.move_last_heartbeat(now_ms, |current| now_ms >= current + ttl_ms)
    }

    /// Moves `last_heartbeat` forward to `now_ms` even when the lifetime
    /// lapsed, unless the instance was removed: a renewal a shared store
    /// committed (it decides, not this node's view of the lifetime), and
    /// the fail-static renewal while the store cannot be seen.
    pub(crate) fn revive(&self, now_ms: u64) -> bool {
        self.move_last_heartbeat(now_ms, |_| false)
    }

    /// Moves `last_heartbeat` forward to `now_ms` (never back) with a
    /// compare-and-swap, unless the instance was removed or `refused` says
    /// no of the value it would replace.
    fn move_last_heartbeat(&self, now_ms: u64, refused: impl Fn(u64) -> bool) -> bool {
        let mut current = self.last_heartbeat_ms.load(Ordering::Acquire);
        loop {
            if current == REMOVED || refused(current) {
                return false;
            }
            match self.last_heartbeat_ms.compare_exchange_weak(
                current,
                current.max(now_ms),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Records what a heartbeat reported: its health (`None` keeps the
    /// reported one) and its output. Returns the reported health before.
    fn report(&self, health: Option<Health>, output: Option<String>) -> Health {
        let previous = match health {
            Some(health) => {
                Health::from_u8(self.reported_health.swap(health as u8, Ordering::AcqRel))
            }
            None => self.reported_health(),
        };
        *self.output.lock().unwrap_or_else(|e| e.into_inner()) = output;
        previous
    }

    /// Records a heartbeat a shared store committed: [`Instance::revive`],
    /// then the reported health (`None` keeps it) and the output. Returns
    /// the reported health before, or `None` when the instance was removed.
    pub(crate) fn committed_heartbeat(
        &self,
        now_ms: u64,
        health: Option<Health>,
        output: Option<String>,
    ) -> Option<Health> {
        if !self.revive(now_ms) {
            return None;
        }
        Some(self.report(health, output))
    }

    /// Marks the instance removed, lapsed or not. Returns true when this
    /// call removed it.
    pub(crate) fn kill(&self) -> bool {
        self.last_heartbeat_ms.swap(REMOVED, Ordering::AcqRel) != REMOVED
    }

    /// Marks the instance removed if its lifetime lapsed by `now_ms`.
    /// Returns true when this call removed it.
    pub fn kill_if_lapsed_by(&self, now_ms: u64) -> bool {
        self.remove_if(now_ms, true)
    }

    /// Marks the instance removed if it is still live (unexpired) at
    /// `now_ms`. Returns true when this call removed it.
    ///
    /// A lapsed instance is left alone: it is the expiry sweep's to remove
    /// and to report as expired, so a DELETE that reaches it first must not
    /// hide its expiry.
    pub fn kill_if_live(&self, now_ms: u64) -> bool {
        self.remove_if(now_ms, false)
    }

    /// Swaps `last_heartbeat` to [`REMOVED`] if the instance is lapsed at
    /// `now_ms` (`lapsed`) or live (`!lapsed`); the compare-and-swap that
    /// [`Instance::heartbeat`] races against.
    fn remove_if(&self, now_ms: u64, lapsed: bool) -> bool {
        let ttl_ms = u64::from(self.spec.ttl) * 1000;
        let mut current = self.last_heartbeat_ms.load(Ordering::Acquire);
        loop {
            if current == REMOVED || (now_ms >= current + ttl_ms) != lapsed {
                return false;
            }
            match self.last_heartbeat_ms.compare_exchange_weak(
                current,
                REMOVED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    pub fn output(&self) -> Option<String> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The SRV target as a hickory name (decoded from [`Instance::target_wire`]).
    pub fn srv_target(&self) -> hickory_proto::rr::Name {
        use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
        hickory_proto::rr::Name::read(&mut BinDecoder::new(&self.target_wire))
            .expect("built from validated labels")
    }

    /// The TXT record data (decoded from [`Instance::txt_wire`]).
    pub fn txt(&self) -> hickory_proto::rr::rdata::TXT {
        hickory_proto::rr::rdata::TXT::from_bytes(length_prefixed(&self.txt_wire).collect())
    }

    /// The JSON service object of the admin API, as its owner sees it.
    pub fn view(&self) -> ServiceView {
        self.view_for(true)
    }

    /// The JSON service object of the admin API; `check_output` only when
    /// `may_write` (what a check read from a target is for those who may
    /// change the instance: it can hold an internal page's first bytes).
    pub fn view_for(&self, may_write: bool) -> ServiceView {
        let spec = &self.spec;
        ServiceView {
            id: self.id,
            name: spec.name.clone(),
            service_type: spec.service_type.clone(),
            host: spec.host.to_string(),
            port: spec.port,
            tags: spec.tags.clone(),
            metadata: spec.metadata.clone(),
            ttl: spec.ttl,
            priority: spec.priority,
            weight: spec.weight,
            locality: spec.locality.clone(),
            registered_at: unix_secs(self.registered_at_ms),
            last_heartbeat: unix_secs(self.last_heartbeat_ms()),
            expires_at: unix_secs(self.expires_at_ms()),
            health: self.health(),
            output: self.output(),
            check: spec.check.as_ref().map(CheckSpec::to_json),
            check_health: spec.check.as_ref().map(|_| self.check_health()),
            check_output: self.check_output().filter(|_| may_write),
            owner: self.owner.as_deref().map(str::to_string),
        }
    }
}

/// The strings of `wire`, each a length byte then that many bytes.
fn length_prefixed(mut wire: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (&len, rest) = wire.split_first()?;
        let (item, rest) = rest.split_at(usize::from(len).min(rest.len()));
        wire = rest;
        Some(item)
    })
}

fn unix_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// The service object returned by the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceView {
    pub id: Uuid,
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub host: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub ttl: u32,
    pub priority: u16,
    pub weight: u16,
    /// Where the instance runs, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    pub registered_at: f64,
    pub last_heartbeat: f64,
    pub expires_at: f64,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The active check as registered, defaults filled in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<serde_json::Value>,
    /// The check's own verdict; `health` is the worse of it and `output`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_health: Option<Health>,
    /// What the last check saw; shown only to callers that may change
    /// the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_output: Option<String>,
    /// The name of the token that registered it, when tokens are
    /// configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(host: Host, metadata: &[(&str, &str)]) -> Instance {
        let spec = ValidRegistration {
            name: "web-1".into(),
            service_type: "web".into(),
            host,
            port: 80,
            tags: vec![],
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ttl: 30,
            priority: 0,
            weight: 1,
            locality: None,
            check: None,
        };
        let zone = hickory_proto::rr::Name::from_ascii("svc.local.").unwrap();
        let zone = crate::names::to_wire(&zone);
        Instance::new(Uuid::nil(), 1, spec, &zone, 0, 0, Health::Passing)
    }

    /// The wire forms decode to what hickory builds from the strings.
    #[test]
    fn srv_target_and_txt_decode_from_their_wire_forms() {
        use hickory_proto::rr::Name;
        use hickory_proto::rr::rdata::TXT;
        let by_ip = instance(Host::Ip("10.0.0.1".parse().unwrap()), &[]);
        let target = by_ip.srv_target();
        assert_eq!(target, Name::from_ascii("web-1.web.svc.local.").unwrap());
        assert!(target.is_fqdn());
        assert_eq!(target.to_string(), "web-1.web.svc.local.");
        assert_eq!(by_ip.txt(), TXT::new(vec![String::new()]));
        assert_eq!(&*by_ip.txt_wire, &[0]);

        let by_name = instance(
            Host::Name("db-3.east.example.com".into()),
            &[("version", "1.2"), ("a", ""), ("zone", "x=y")],
        );
        let target = by_name.srv_target();
        assert_eq!(target.to_string(), "db-3.east.example.com.");
        assert_eq!(target.num_labels(), 4);
        assert_eq!(
            by_name.txt(),
            TXT::new(vec!["a=".into(), "version=1.2".into(), "zone=x=y".into()])
        );
        let longest = "v".repeat(255 - 2);
        let full = instance(Host::Ip("::1".parse().unwrap()), &[("k", &longest)]);
        assert_eq!(full.txt_wire.len(), 256);
        assert_eq!(full.txt(), TXT::new(vec![format!("k={longest}")]));
    }
}
