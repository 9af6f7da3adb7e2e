//! Who may change what (README "Security"): tokens with roles, and the
//! owner every instance carries.
//!
//! A token is configured as the SHA-256 of its secret, never the secret
//! itself, under a name that is shown in logs and recorded as the owner of
//! what it registers. Its role says what it may do:
//!
//! - `read`: every read (`/v1/services`, `/v1/discover`, `/v1/types`,
//!   `/v1/events`, `/metrics`); no change.
//! - `register`: reads, registrations of the types its globs match, and
//!   heartbeats, replacements and deregistrations of the instances it
//!   registered itself.
//! - `admin`: anything.
//!
//! With no token configured the API is open ([`Caller::Anyone`]): anyone
//! may do anything, and instances have no owner.
//!
//! This module decides; the admin API asks it and answers 401 or 403, and
//! the registrar asks it again under its per-name lock, so that the
//! decision and the change it allows see the same instance.

use std::fmt;
use std::sync::Arc;

use crate::service::Instance;

/// What a token may do, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Register,
    Admin,
}

impl Role {
    /// `read`, `register` or `admin`.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "read" => Some(Role::Read),
            "register" => Some(Role::Register),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Register => "register",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured token. Its `Debug` shows neither the hash nor anything
/// else that could help guess the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Shown in logs and recorded as the owner of what it registers.
    pub name: Arc<str>,
    /// SHA-256 of the secret.
    pub sha256: [u8; 32],
    pub role: Role,
    /// For `register`: globs (`web`, `web-*`) of the types it may write.
    pub types: Vec<String>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether this token may register instances of `service_type`.
    pub fn may_register_type(&self, service_type: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Register => self.types.iter().any(|g| glob_matches(g, service_type)),
            Role::Read => false,
        }
    }
}

/// The configured tokens; none means the API is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<Arc<Token>>);

impl Tokens {
    pub fn new(tokens: Vec<Token>) -> Tokens {
        Tokens(tokens.into_iter().map(Arc::new).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Token>> {
        self.0.iter()
    }

    /// The token whose secret is `presented`, if any. Every configured
    /// hash is compared, in full, whichever matches: the time taken says
    /// nothing about which token, or how much of one, was right.
    pub fn identify(&self, presented: &str) -> Option<Arc<Token>> {
        let digest = sha256(presented.as_bytes());
        let mut found = None;
        for token in &self.0 {
            if constant_time_eq(&digest, &token.sha256) && found.is_none() {
                found = Some(token.clone());
            }
        }
        found
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No token is configured: the API is open.
    Anyone,
    /// The token presented.
    Token(Arc<Token>),
}

impl Caller {
    /// The owner recorded for what this caller registers.
    pub fn owner(&self) -> Option<Arc<str>> {
        match self {
            Caller::Anyone => None,
            Caller::Token(token) => Some(token.name.clone()),
        }
    }

    /// Whether this caller may register instances of `service_type`.
    pub fn may_register_type(&self, service_type: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Token(token) => token.may_register_type(service_type),
        }
    }

    /// Whether this caller may heartbeat, replace or deregister `instance`
    /// (and see its `check_output`): anyone when the API is open, an admin
    /// token always, a register token the instances it registered (of a
    /// type it may still register).
    pub fn may_write(&self, instance: &Instance) -> bool {
        self.may_write_owned(instance.owner.as_deref(), &instance.spec.service_type)
    }

    /// [`Caller::may_write`] for an instance of `service_type` owned by
    /// `owner`.
    pub fn may_write_owned(&self, owner: Option<&str>, service_type: &str) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Token(token) => match token.role {
                Role::Admin => true,
                Role::Register => {
                    owner == Some(&*token.name) && token.may_register_type(service_type)
                }
                Role::Read => false,
            },
        }
    }

    /// The name to log: the token's, or `-` when the API is open.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anyone => "-",
            Caller::Token(token) => &token.name,
        }
    }
}

/// Whether `text` matches `glob`, where `*` stands for any run of
/// characters (none too) and everything else for itself.
pub fn glob_matches(glob: &str, text: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no `*`: the whole text
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses 64 hex digits (either case) into a SHA-256.
pub fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (glob, text, matches) in [
            ("web", "web", true),
            ("web", "web-1", false),
            ("web", "we", false),
            ("web-*", "web-1", true),
            ("web-*", "web-", true),
            ("web-*", "web", false),
            ("*", "anything", true),
            ("*-api", "billing-api", true),
            ("*-api", "billing-apix", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxcyyb", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
        ] {
            assert_eq!(glob_matches(glob, text), matches, "{glob} {text}");
        }
    }

    #[test]
    fn tokens_are_found_by_their_hash() {
        // echo -n s3cret | sha256sum
        let hash = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";
        let token = Token {
            name: "web-team".into(),
            sha256: parse_sha256(&hash.to_ascii_uppercase()).unwrap(),
            role: Role::Register,
            types: vec!["web".into(), "web-*".into()],
        };
        let tokens = Tokens::new(vec![token]);
        assert_eq!(tokens.identify("s3cret").unwrap().name.as_ref(), "web-team");
        assert!(tokens.identify("s3cret ").is_none());
        assert!(tokens.identify("").is_none());
        let debug = format!("{tokens:?}");
        assert!(
            debug.contains("web-team") && !debug.contains("sha256"),
            "{debug}"
        );
        assert!(parse_sha256("abc").is_none());
        assert!(parse_sha256(&"g".repeat(64)).is_none());
    }

    #[test]
    fn sha256_is_sha256() {
        let expected = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(sha256(b"hello"), parse_sha256(expected).unwrap());
    }
}
