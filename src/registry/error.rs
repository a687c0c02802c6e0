//! What goes wrong talking to a registry: one variant per case a caller branches on, and the
//! bounded [`Reason`] the metrics label failures with.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::{manifest, transport, RetryReason};
use crate::reference::{self, Digest};

/// What went wrong talking to a registry. Variants are what callers branch on; the registry name
/// comes first in every message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered with a status we did not want.
    #[error("{0}")]
    Status(Box<HttpStatus>),
    /// No answer: connection refused or reset, timeout, truncated body.
    #[error("registry {registry}: {method} {path}: request failed{}", gave_up(*attempts))]
    Transport {
        /// Registry name.
        registry: String,
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
        /// Attempts made.
        attempts: u32,
    },
    /// An attempt that did not finish within its total deadline (a stalled or dripping answer).
    #[error("registry {registry}: {method} {path}: timed out: no complete answer within {}s (request_timeout_secs)", after.as_secs())]
    Timeout {
        /// Registry name.
        registry: String,
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// Bytes whose sha256 is not the digest they were asked or announced for.
    #[error("registry {registry}: {what}: content digest is {actual}, expected {expected}; refusing the bytes")]
    DigestMismatch {
        /// Registry name.
        registry: String,
        /// What was read.
        what: String,
        /// The digest asked for or announced.
        expected: Digest,
        /// The sha256 of what arrived.
        actual: Digest,
    },
    /// A body over its limit.
    #[error("registry {registry}: {what}: body {} exceeds the {limit}-byte limit", size.map(|s| format!("of {s} bytes")).unwrap_or_default())]
    TooLarge {
        /// Registry name.
        registry: String,
        /// The request.
        what: String,
        /// The limit.
        limit: u64,
        /// The announced size, when known.
        size: Option<u64>,
    },
    /// A manifest we refuse (schema 1, unknown type, malformed).
    #[error("registry {registry}: manifest {what}")]
    Manifest {
        /// Registry name.
        registry: String,
        /// Which manifest.
        what: String,
        /// Why.
        #[source]
        source: manifest::Error,
    },
    /// An answer that breaks the protocol (bad `Link`, missing `Location`, unreadable JSON).
    #[error("registry {registry}: {what}")]
    Protocol {
        /// Registry name.
        registry: String,
        /// What was wrong.
        what: String,
    },
    /// Authentication failed or is impossible with what is configured.
    #[error("registry {registry}: authentication failed: {message}")]
    Auth {
        /// Registry name.
        registry: String,
        /// Why.
        message: String,
    },
    /// Credentials could not be read (password file, Docker config, credential helper).
    #[error("registry {registry}: {message}")]
    Credentials {
        /// Registry name.
        registry: String,
        /// Why.
        message: String,
    },
    /// The client could not be built (CA file, TLS).
    #[error("registry {registry}: {message}")]
    Setup {
        /// Registry name.
        registry: String,
        /// Why.
        message: String,
    },
    /// A bad reference or digest.
    #[error(transparent)]
    Reference(#[from] reference::Error),
    /// A repository name that the OCI grammar does not allow.
    #[error("invalid repository name {0:?}")]
    InvalidRepository(String),
    /// A manifest reference that is neither a valid tag nor a digest.
    #[error("invalid tag or digest {0:?}")]
    InvalidReference(String),
    /// A registry name that no configured or implicit client has.
    #[error("registry {0} is not configured")]
    NotConfigured(String),
    /// The image to copy is not in the source repository.
    #[error("source {0} does not exist")]
    SourceMissing(String),
    /// The destination tag holds another digest and the copy may not move it.
    #[error(
        "{reference} exists with digest {existing}; not moving it to {wanted} (overwrite is off)"
    )]
    TagHoldsOtherDigest {
        /// The destination, as written.
        reference: String,
        /// The digest it holds.
        existing: Digest,
        /// The digest the copy would have written.
        wanted: Digest,
    },
    /// The destination names a digest that is not the source's.
    #[error("destination {reference} names digest {named}, but the source is {source_digest}")]
    DestinationDigest {
        /// The destination, as written.
        reference: String,
        /// The digest it names.
        named: Digest,
        /// The source's digest.
        source_digest: Digest,
    },
    /// An index over one of the limits that keep a copy bounded (children, depth, bytes).
    #[error("{digest}: {limit}")]
    IndexTooLarge {
        /// The root manifest.
        digest: Digest,
        /// Which limit, in words.
        limit: String,
    },
    /// Content whose length is not the size its descriptor gives.
    #[error("registry {registry}: {what} is not the {expected} bytes its descriptor says; refusing the bytes")]
    SizeMismatch {
        /// Registry name.
        registry: String,
        /// What was read.
        what: String,
        /// The descriptor's size.
        expected: u64,
    },
}

/// A registry's unwanted answer, with its own words.
#[derive(Debug, thiserror::Error)]
#[error("registry {registry}: {method} {path}: HTTP {status}{}{}{}{}",
    code.as_ref().map(|c| format!(" {c}")).unwrap_or_default(),
    if message.is_empty() { String::new() } else { format!(": {message}") },
    retry_after.map(|d| format!(" (asked to retry after {}s)", d.as_secs())).unwrap_or_default(),
    gave_up(*attempts))]
pub struct HttpStatus {
    /// Registry name.
    pub registry: String,
    /// Request method.
    pub method: Method,
    /// Request path (no query: upload URLs carry state there).
    pub path: String,
    /// HTTP status.
    pub status: u16,
    /// The registry's error code (`MANIFEST_UNKNOWN`, `TAG_INVALID`, ...).
    pub code: Option<String>,
    /// The registry's message, or the start of a non-JSON body.
    pub message: String,
    /// What `Retry-After` asked for.
    pub retry_after: Option<Duration>,
    /// Attempts made.
    pub attempts: u32,
}

fn gave_up(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

/// Why a registry operation failed, as a bounded label for metrics and alerts (the README's
/// metrics section lists the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Credentials refused or unreadable.
    Auth,
    /// The registry says the thing does not exist.
    NotFound,
    /// HTTP 429 after the retries.
    RateLimited,
    /// No answer, no complete answer in time, or HTTP 5xx/408 after the retries.
    Unavailable,
    /// Bytes that are not what their digest or size says.
    DigestMismatch,
    /// The destination tag holds another digest.
    Conflict,
    /// A manifest, reference or request retagd refuses, or another HTTP 4xx.
    Invalid,
    /// An answer that breaks the distribution protocol.
    Protocol,
    /// A registry not configured, or one that cannot be set up.
    Config,
}

impl Reason {
    /// Every reason, for documentation and tests.
    pub const ALL: [Reason; 9] = [
        Reason::Auth,
        Reason::NotFound,
        Reason::RateLimited,
        Reason::Unavailable,
        Reason::DigestMismatch,
        Reason::Conflict,
        Reason::Invalid,
        Reason::Protocol,
        Reason::Config,
    ];

    /// The label value.
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
    /// The bounded reason of this error. HTTP answers go by status: 401 and 403 are `auth`, 404
    /// `not_found`, 429 `rate_limited`, 408 and 5xx `unavailable`, any other `invalid`.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Status(s) => match s.status {
                401 | 403 => Reason::Auth,
                404 => Reason::NotFound,
                429 => Reason::RateLimited,
                408 | 500..=599 => Reason::Unavailable,
                _ => Reason::Invalid,
            },
            Error::Transport { .. } | Error::Timeout { .. } => Reason::Unavailable,
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => Reason::DigestMismatch,
            Error::Auth { .. } | Error::Credentials { .. } => Reason::Auth,
            Error::Setup { .. } | Error::NotConfigured(_) => Reason::Config,
            Error::Protocol { .. } => Reason::Protocol,
            Error::SourceMissing(_) => Reason::NotFound,
            Error::TagHoldsOtherDigest { .. } => Reason::Conflict,
            Error::TooLarge { .. }
            | Error::Manifest { .. }
            | Error::Reference(_)
            | Error::InvalidRepository(_)
            | Error::InvalidReference(_)
            | Error::DestinationDigest { .. }
            | Error::IndexTooLarge { .. } => Reason::Invalid,
        }
    }

    /// Why this error is worth another attempt, if it is.
    pub fn retry_reason(&self) -> Option<RetryReason> {
        match self {
            Error::Status(s) => transport::retry_reason_of(StatusCode::from_u16(s.status).ok()?),
            Error::Transport { source, .. } if !source.is_builder() => {
                Some(RetryReason::Connection)
            }
            _ => None,
        }
    }

    /// The wait the registry asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status(s) => s.retry_after,
            _ => None,
        }
    }

    /// Whether the registry said the thing does not exist (404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Status(s) if s.status == 404)
    }

    /// Attempts made by the request that failed (1 for errors that are not about a request).
    pub fn attempts(&self) -> u32 {
        match self {
            Error::Status(s) => s.attempts,
            Error::Transport { attempts, .. } => *attempts,
            _ => 1,
        }
    }

    /// Records the attempts of a retry loop; an inner loop's larger count is kept.
    pub(super) fn with_attempts(mut self, n: u32) -> Error {
        match &mut self {
            Error::Status(s) => s.attempts = s.attempts.max(n),
            Error::Transport { attempts, .. } => *attempts = (*attempts).max(n),
            _ => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Error {
        Error::Status(Box::new(HttpStatus {
            registry: "r".into(),
            method: Method::GET,
            path: "/v2/a/manifests/v1".into(),
            status: code,
            code: None,
            message: String::new(),
            retry_after: None,
            attempts: 1,
        }))
    }

    #[test]
    fn every_variant_has_its_documented_reason() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let cases = [
            (status(401), Reason::Auth),
            (status(403), Reason::Auth),
            (status(404), Reason::NotFound),
            (status(429), Reason::RateLimited),
            (status(408), Reason::Unavailable),
            (status(500), Reason::Unavailable),
            (status(503), Reason::Unavailable),
            (status(400), Reason::Invalid),
            (status(405), Reason::Invalid),
            (
                Error::DigestMismatch {
                    registry: "r".into(),
                    what: "blob".into(),
                    expected: a.clone(),
                    actual: b.clone(),
                },
                Reason::DigestMismatch,
            ),
            (
                Error::SizeMismatch {
                    registry: "r".into(),
                    what: "blob".into(),
                    expected: 3,
                },
                Reason::DigestMismatch,
            ),
            (
                Error::TooLarge {
                    registry: "r".into(),
                    what: "manifest".into(),
                    limit: 1,
                    size: None,
                },
                Reason::Invalid,
            ),
            (
                Error::Manifest {
                    registry: "r".into(),
                    what: "m".into(),
                    source: manifest::Error::Schema1,
                },
                Reason::Invalid,
            ),
            (
                Error::Protocol {
                    registry: "r".into(),
                    what: "no Location".into(),
                },
                Reason::Protocol,
            ),
            (
                Error::Auth {
                    registry: "r".into(),
                    message: "no".into(),
                },
                Reason::Auth,
            ),
            (
                Error::Credentials {
                    registry: "r".into(),
                    message: "no".into(),
                },
                Reason::Auth,
            ),
            (
                Error::Setup {
                    registry: "r".into(),
                    message: "ca".into(),
                },
                Reason::Config,
            ),
            (Error::NotConfigured("x".into()), Reason::Config),
            (Error::InvalidRepository("A".into()), Reason::Invalid),
            (Error::InvalidReference("v?".into()), Reason::Invalid),
            (Error::SourceMissing("r/a:v1".into()), Reason::NotFound),
            (
                Error::TagHoldsOtherDigest {
                    reference: "r/a:v1".into(),
                    existing: a.clone(),
                    wanted: b.clone(),
                },
                Reason::Conflict,
            ),
            (
                Error::DestinationDigest {
                    reference: "r/a".into(),
                    named: a.clone(),
                    source_digest: b,
                },
                Reason::Invalid,
            ),
            (
                Error::IndexTooLarge {
                    digest: a,
                    limit: "deep".into(),
                },
                Reason::Invalid,
            ),
        ];
        for (error, reason) in cases {
            assert_eq!(error.reason(), reason, "{error}");
        }
        let mut labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Reason::ALL.len(), "labels repeat: {labels:?}");
    }

    #[test]
    fn a_429_a_401_and_a_digest_mismatch_are_three_reasons() {
        let mismatch = Error::DigestMismatch {
            registry: "r".into(),
            what: "manifest".into(),
            expected: Digest::of(b"a"),
            actual: Digest::of(b"b"),
        };
        let reasons = [
            status(429).reason(),
            status(401).reason(),
            mismatch.reason(),
        ];
        assert_eq!(
            reasons,
            [Reason::RateLimited, Reason::Auth, Reason::DigestMismatch]
        );
    }
}
