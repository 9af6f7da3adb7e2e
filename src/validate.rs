//! The rules shared by everything a client sends: DNS labels, hosts, and
//! the error that names the field that broke one. Below both `service` (a
//! registration) and `checks` (its `check` object), which use them, so
//! neither has to reach into the other.

use std::fmt;
use std::net::IpAddr;

/// Where an instance can be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 or IPv6 literal: served in A / AAAA answers and as SRV glue.
    Ip(IpAddr),
    /// A hostname (lowercase, no trailing dot): only an SRV target.
    Name(String),
}

impl Host {
    /// The address family of an IP host; `None` for a hostname.
    pub fn family(&self) -> Option<Family> {
        match self {
            Host::Ip(IpAddr::V4(_)) => Some(Family::V4),
            Host::Ip(IpAddr::V6(_)) => Some(Family::V6),
            Host::Name(_) => None,
        }
    }
}

/// An address family, as A (IPv4) and AAAA (IPv6) questions ask for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// A rule a registration broke; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValidationError(pub String);

fn invalid(message: impl Into<String>) -> ValidationError {
    ValidationError(message.into())
}

/// Checks that `value` is one DNS label of `a-z 0-9 -` and returns it in
/// lowercase. `field` names it in the error.
pub fn validate_label(field: &str, value: &str) -> Result<String, ValidationError> {
    if value.is_empty() || value.len() > 63 {
        return Err(invalid(format!(
            "{field} must be 1-63 characters long, got {}",
            value.len()
        )));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(invalid(format!(
            "{field} may contain only letters a-z, digits 0-9 and '-': {value:?}"
        )));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid(format!(
            "{field} must not start or end with '-': {value:?}"
        )));
    }
    Ok(value.to_ascii_lowercase())
}

/// Whether `label` is one hostname label: 1-63 of `a-z A-Z 0-9 -`, not
/// starting or ending with `-`.
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Parses `host`: an IP literal, or a hostname of at most 253 characters made
/// of valid labels (a trailing dot is allowed and dropped) that does not
/// read as a number (see [`reads_as_a_number`]).
pub fn validate_host(value: &str) -> Result<Host, ValidationError> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    if name.is_empty() || name.len() > 253 {
        return Err(invalid(format!(
            "host must be an IP address or a hostname of 1-253 characters, got {} characters",
            value.len()
        )));
    }
    for label in name.split('.') {
        if !is_dns_label(label) {
            return Err(invalid(format!(
                "host must be an IP address or a hostname made of labels of a-z 0-9 '-': {value:?}"
            )));
        }
    }
    if reads_as_a_number(name) {
        return Err(invalid(format!(
            "host {value:?} is not an IP address but a resolver would read it as one: \
             write the address itself, as in 127.0.0.1"
        )));
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

/// Whether a hostname (valid labels, no trailing dot) would be taken for
/// an IPv4 address by some resolver: its last label is all digits (no
/// top-level domain is: `999.1.1.1`, `a.1`), or it is what `inet_aton(3)`
/// parses: one to four numbers, decimal, octal (`017`) or hex (`0x7f`), so
/// `0x7f.1`, `1.2.3`, `127.1` and `0`, which glibc resolves without asking
/// any nameserver (`0x7f.1` is 127.0.0.1). Such a name would lead a check,
/// or a client reading the SRV target, to an address no one wrote down.
fn reads_as_a_number(name: &str) -> bool {
    let is_number = |label: &str| match label
        .strip_prefix("0x")
        .or_else(|| label.strip_prefix("0X"))
    {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    };
    let last = name.rsplit('.').next().unwrap_or(name);
    let all_digits = !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit());
    all_digits || (name.split('.').count() <= 4 && name.split('.').all(is_number))
}

/// At most the first 64 bytes of `value` (cut at a character boundary, with
/// `…` when cut), for quoting client input in an error message: a 60 KB
/// metadata key must not come back as a 60 KB error.
pub(crate) fn abbreviate(value: &str) -> String {
    const MAX: usize = 64;
    if value.len() <= MAX {
        return value.to_string();
    }
    let mut end = MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// A JSON integer, also when written with a zero fraction (`8080.0`): JSON
/// Schema, and so the OpenAPI document, counts that as an integer, and some
/// encoders write every number so. A real fraction (`1.5`) is refused.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<i64, D::Error> {
    <Whole as serde::Deserialize>::deserialize(deserializer).map(|whole| whole.0)
}

/// [`whole_number`], or `null`.
pub(crate) fn optional_whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    <Option<Whole> as serde::Deserialize>::deserialize(deserializer).map(|whole| whole.map(|w| w.0))
}

/// An integer read by [`whole_number`].
struct Whole(i64);

impl<'de> serde::Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Whole, D::Error> {
        use serde::de::{Error, Unexpected, Visitor};
        struct WholeVisitor;
        impl Visitor<'_> for WholeVisitor {
            type Value = Whole;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: Error>(self, value: i64) -> Result<Whole, E> {
                Ok(Whole(value))
            }
            fn visit_u64<E: Error>(self, value: u64) -> Result<Whole, E> {
                i64::try_from(value)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
            }
            fn visit_f64<E: Error>(self, value: f64) -> Result<Whole, E> {
                // Within ±2^53 every whole f64 is exact, and far beyond
                // every range a field allows.
                if value.fract() == 0.0 && value.abs() <= 9_007_199_254_740_992.0 {
                    Ok(Whole(value as i64))
                } else {
                    Err(E::invalid_type(Unexpected::Float(value), &self))
                }
            }
        }
        deserializer.deserialize_any(WholeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(validate_label("name", "Web-1").unwrap(), "web-1");
        assert!(validate_label("name", "").is_err());
        assert!(validate_label("name", "-a").is_err());
        assert!(validate_label("name", "a-").is_err());
        assert!(validate_label("name", "a_b").is_err());
        assert!(validate_label("name", "a.b").is_err());
        assert!(validate_label("name", &"a".repeat(63)).is_ok());
        assert!(validate_label("name", &"a".repeat(64)).is_err());
        assert!(validate_label("name", "é").is_err());
    }

    #[test]
    fn hosts() {
        assert_eq!(
            validate_host("10.0.0.1").unwrap(),
            Host::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            validate_host("::1").unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            validate_host("Db.Example.").unwrap(),
            Host::Name("db.example".into())
        );
        assert!(validate_host("").is_err());
        assert!(validate_host("a..b").is_err());
        assert!(validate_host("a b").is_err());
        // 254 characters is one too many; 253 plus the optional trailing dot
        // is fine (this case used to expect an error for that, wrongly).
        assert!(validate_host(&format!("{}ab", "a.".repeat(126))).is_err());
        assert!(validate_host(&format!("{}a", "a.".repeat(126))).is_ok());
        assert!(validate_host(&"a.".repeat(127)).is_ok());
    }

    /// Hosts that are not IP literals but read as numbers are refused:
    /// glibc's resolver turns `0x7f.1` into 127.0.0.1 without asking DNS.
    #[test]
    fn hosts_that_read_as_numbers_are_refused() {
        for numeric in [
            "0x7f.1",
            "999.1.1.1",
            "1.2.3",
            "0",
            "127.1",
            "0x7f000001",
            "0X7F.0X1",
            "017700000001",
            "1.0xff",
            "0x7f.0x0.0x0.0x1",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1.2.3.256",
            "010.0.0.1",
            "a.1",
            "web.123",
            "0x",
            "4294967296",
        ] {
            let error = validate_host(numeric).unwrap_err().to_string();
            assert!(
                error.contains("would read it as one"),
                "{numeric:?}: {error}"
            );
        }
        for name in [
            "1e3",
            "0x1.com",
            "0xg",
            "deadbeef",
            "1.2.3.4.com",
            "a1",
            "123abc",
            "abc.0x1",
            "10-0-0-1.example",
            "1.2.3.4.5.0x6",
        ] {
            assert_eq!(
                validate_host(name),
                Ok(Host::Name(name.to_ascii_lowercase())),
                "{name}"
            );
        }
        // IP literals are still IP literals.
        assert!(matches!(validate_host("127.0.0.1"), Ok(Host::Ip(_))));
        assert!(matches!(validate_host("::ffff:127.0.0.1"), Ok(Host::Ip(_))));
    }
}
