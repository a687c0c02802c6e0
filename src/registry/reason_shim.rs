//! Temporary: replaced by `error.rs`'s `Reason` when the typed-errors branch lands.
#![allow(missing_docs)]
use super::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Auth,
    NotFound,
    RateLimited,
    Unavailable,
    DigestMismatch,
    Conflict,
    Invalid,
    Protocol,
    Config,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Auth => "auth",
            Reason::NotFound => "not_found",
            Reason::RateLimited => "rate_limited",
            Reason::Unavailable => "unavailable",
            Reason::DigestMismatch => "digest_mismatch",
            Reason::Conflict => "conflict",
            Reason::Invalid => "invalid",
            Reason::Protocol => "protocol",
            Reason::Config => "config",
        }
    }
}

impl Error {
    pub fn reason(&self) -> Reason {
        match self {
            Error::Status(s) if s.status == 401 || s.status == 403 => Reason::Auth,
            Error::Status(s) if s.status == 404 => Reason::NotFound,
            Error::Status(s) if s.status == 429 => Reason::RateLimited,
            Error::Status(s) if s.status >= 500 || s.status == 408 => Reason::Unavailable,
            Error::Status(_) => Reason::Invalid,
            Error::Transport { .. } => Reason::Unavailable,
            Error::DigestMismatch { .. } => Reason::DigestMismatch,
            Error::Auth { .. } | Error::Credentials { .. } => Reason::Auth,
            Error::Setup { .. } => Reason::Config,
            Error::Protocol { .. } => Reason::Protocol,
            _ => Reason::Invalid,
        }
    }
}
