//! The client's one error type, and the error of a malformed address.

/// Why a request to the admin API failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status; `message` is the `error`
    /// of its body (`{"error": "…"}`), which names what was wrong.
    #[error("{message}")]
    Refused { status: u16, message: String },
    /// No answer from `address`: nothing listening, a name that does not
    /// resolve, a connection cut mid-request, or no answer within the
    /// client's timeout.
    #[error("cannot reach signpost at {address}: {reason}")]
    Unreachable { address: String, reason: String },
    /// `address` answered, but not as signpost's admin API does (not JSON,
    /// or JSON of another shape).
    #[error("unexpected answer from {address}: {reason}")]
    BadResponse { address: String, reason: String },
}

impl Error {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server said 404: no such instance (or it expired), or
    /// no serving instance to discover.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
}

/// An address that is not `http://HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(pub(crate) String);
