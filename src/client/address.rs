//! Where the admin API is: `http://HOST[:PORT][/PREFIX]`.

use std::fmt;
use std::str::FromStr;

use super::error::AddressError;

/// The admin API's address, parsed once: `http://127.0.0.1:8700`,
/// `localhost:8700` (`http://` is implied), `http://[::1]:8700`, or with a
/// path prefix when a proxy serves the API below one
/// (`http://gateway/signpost`). The port defaults to 80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The host to connect to: an IP literal (IPv6 without brackets) or a
    /// name.
    host: String,
    port: u16,
    /// `Host` header value: `host:port` as written (IPv6 in brackets).
    authority: String,
    /// Path prefix, without a trailing `/` (empty for none).
    prefix: String,
}

impl Address {
    /// The default address, `http://127.0.0.1:8700`.
    pub fn local() -> Address {
        "http://127.0.0.1:8700".parse().expect("a valid address")
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// The request target for an API path such as `/v1/services`.
    pub(crate) fn target(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Address, AddressError> {
        let bad = |why: &str| AddressError(format!("{why}: {text:?}"));
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => {
                return Err(bad(
                    "the admin API speaks plain HTTP: the address must start with http://",
                ));
            }
            None => text,
        };
        let (authority, prefix) = match rest.find(['/', '?', '#']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        if prefix.contains(['?', '#']) {
            return Err(bad("the address must not have a query or fragment"));
        }
        if authority.contains('@') {
            return Err(bad("the address must not carry credentials"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address must be in brackets, [::1]:8700"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address in brackets"))?;
            let port = match after {
                "" => None,
                after => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("a port follows the brackets after a colon"))?,
                ),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let bracketed = authority.starts_with('[');
        if host.is_empty() || host.contains(' ') || (!bracketed && host.contains(':')) {
            return Err(bad(
                "the address must name a host, as in http://127.0.0.1:8700",
            ));
        }
        let port = match port {
            None => 80,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(bad("the port must be 1-65535")),
            },
        };
        Ok(Address {
            host: host.to_string(),
            port,
            authority: authority.to_string(),
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_to_host_port_and_prefix() {
        let cases = [
            (
                "http://127.0.0.1:8700",
                "127.0.0.1",
                8700,
                "",
                "http://127.0.0.1:8700",
            ),
            (
                "127.0.0.1:8700",
                "127.0.0.1",
                8700,
                "",
                "http://127.0.0.1:8700",
            ),
            ("HTTP://localhost", "localhost", 80, "", "http://localhost"),
            ("http://[::1]:8700/", "::1", 8700, "", "http://[::1]:8700"),
            (
                "http://gw:81/signpost/",
                "gw",
                81,
                "/signpost",
                "http://gw:81/signpost",
            ),
        ];
        for (text, host, port, prefix, shown) in cases {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.host(), host, "{text}");
            assert_eq!(address.port(), port, "{text}");
            assert_eq!(address.target("/v1/health"), format!("{prefix}/v1/health"));
            assert_eq!(address.to_string(), shown, "{text}");
        }
        assert_eq!(Address::local().to_string(), "http://127.0.0.1:8700");
    }

    #[test]
    fn malformed_addresses_are_refused_saying_why() {
        for (text, why) in [
            ("https://127.0.0.1:8700", "plain HTTP"),
            ("http://:8700", "name a host"),
            ("http://127.0.0.1:0", "1-65535"),
            ("http://127.0.0.1:99999", "1-65535"),
            ("http://127.0.0.1:port", "1-65535"),
            ("http://user:pw@127.0.0.1:8700", "credentials"),
            ("http://[::1:8700", "brackets"),
            ("http://::1:8700", "name a host"),
            ("http://127.0.0.1:8700/?x=1", "query"),
            ("", "name a host"),
        ] {
            let error = text.parse::<Address>().unwrap_err().to_string();
            assert!(error.contains(why), "{text}: {error}");
        }
    }
}
