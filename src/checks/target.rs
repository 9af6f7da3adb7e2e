//! Which addresses a check may reach (`checks.allow`, `checks.deny`;
//! README "Security").
//!
//! A check is a request from signpost's host to whatever a registration
//! names, so without limits it is a port scanner and a reader of internal
//! pages for anyone who may register. By default the link-local networks
//! and the cloud metadata addresses are denied: the metadata services hand
//! out the host's cloud credentials to whoever asks from it.
//!
//! The rule is applied twice: to an IP literal when the check is
//! registered (refused at once, 422), and to every address a check is about
//! to connect to, after its host name was resolved, since a name can
//! resolve to a denied address (or be changed to, later).

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The networks checks may and may not reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// When not empty, a target must be in one of these.
    pub allow: Vec<IpNet>,
    /// A target in one of these is refused, whatever `allow` says.
    pub deny: Vec<IpNet>,
}

/// Why an address may not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub address: IpAddr,
    /// `checks.deny`'s network it is in, or `None`: in none of
    /// `checks.allow`'s.
    pub denied_by: Option<IpNet>,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.denied_by {
            Some(network) => write!(
                f,
                "{} is in {network}, a network checks may not reach (checks.deny)",
                self.address
            ),
            None => write!(
                f,
                "{} is in no network checks may reach (checks.allow)",
                self.address
            ),
        }
    }
}

impl TargetPolicy {
    /// Whether a check may connect to `address`. An IPv4-mapped IPv6
    /// address (`::ffff:169.254.169.254`) is judged as the IPv4 address it
    /// reaches.
    pub fn check(&self, address: IpAddr) -> Result<(), Refused> {
        let address = address.to_canonical();
        if let Some(network) = self.deny.iter().find(|n| n.contains(&address)) {
            return Err(Refused {
                address,
                denied_by: Some(*network),
            });
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&address)) {
            return Err(Refused {
                address,
                denied_by: None,
            });
        }
        Ok(())
    }
}

/// Parses a network (`10.0.0.0/8`, `fd00::/8`) or a single address
/// (`169.254.169.254`, a /32 or /128), host bits cleared.
pub(crate) fn parse_network(text: &str) -> Option<IpNet> {
    if let Ok(network) = text.parse::<IpNet>() {
        return Some(network.trunc());
    }
    text.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> TargetPolicy {
        let networks = |list: &[&str]| list.iter().map(|n| parse_network(n).unwrap()).collect();
        TargetPolicy {
            allow: networks(allow),
            deny: networks(deny),
        }
    }

    #[test]
    fn deny_wins_and_allow_narrows() {
        let defaults = policy(&[], &["169.254.0.0/16", "fe80::/10", "fd00:ec2::254"]);
        for denied in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "fe80::1",
            "fd00:ec2::254",
        ] {
            let error = defaults.check(denied.parse().unwrap()).unwrap_err();
            assert!(error.to_string().contains("checks.deny"), "{error}");
        }
        for allowed in ["127.0.0.1", "10.0.0.1", "::1", "fd00:ec2::253"] {
            assert_eq!(
                defaults.check(allowed.parse().unwrap()),
                Ok(()),
                "{allowed}"
            );
        }
        let narrow = policy(&["10.0.0.0/8"], &["10.0.0.99"]);
        assert!(narrow.check("10.1.2.3".parse().unwrap()).is_ok());
        let error = narrow.check("192.0.2.1".parse().unwrap()).unwrap_err();
        assert!(error.to_string().contains("checks.allow"), "{error}");
        assert!(narrow.check("10.0.0.99".parse().unwrap()).is_err());
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(parse_network("10.0.0.0/33").is_none());
        assert!(parse_network("example.com").is_none());
    }
}
