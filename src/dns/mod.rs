//! The authoritative DNS server for the discovery zone.
//!
//! - [`zone`]: what a name means and which records answer it, read from the
//!   registry at answer time.
//! - [`fast`]: the common questions, straight from the registry to wire.
//! - [`message`]: request checks, EDNS, and size-bounded encoding.
//! - [`server`]: binding, and TCP connections.
//! - [`udp`]: UDP, a thread per `SO_REUSEPORT` socket with batched I/O.
//!
//! **Invariant:** nothing here writes to the registry, blocks, or awaits while
//! holding a lock.

pub mod fast;
pub mod message;
pub mod server;
pub mod udp;
pub mod zone;

use hickory_proto::rr::Name;

pub use message::{Responder, Transport};
pub use zone::ZoneSettings;

/// Parses a zone name (`svc.local`, trailing dot optional) into a lowercase,
/// fully qualified name.
pub fn zone_name(zone: &str) -> Result<Name, String> {
    let text = zone.strip_suffix('.').unwrap_or(zone);
    if text.is_empty() {
        return Err("the zone must not be empty (the root zone is not served)".into());
    }
    for label in text.split('.') {
        if !crate::service::is_dns_label(label) {
            return Err(format!("{zone:?} is not a valid zone name"));
        }
    }
    Name::from_ascii(format!("{text}."))
        .map(|name| name.to_lowercase())
        .map_err(|e| format!("{zone:?} is not a valid zone name: {e}"))
}
