//! Hooks through which the registry client reports what it does, so the metrics module can export
//! request counts, latencies, retries and rate limits without this module knowing Prometheus.

use std::time::Duration;

/// Why a request was retried; a bounded set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// The connection failed or broke (refused, reset, timed out, truncated body).
    Connection,
    /// The registry answered 5xx.
    ServerError,
    /// The registry answered 429 Too Many Requests.
    RateLimited,
    /// The registry answered 408 Request Timeout.
    Timeout,
}

impl RetryReason {
    /// The label value: `connection`, `server_error`, `rate_limited`, `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Connection => "connection",
            RetryReason::ServerError => "server_error",
            RetryReason::RateLimited => "rate_limited",
            RetryReason::Timeout => "timeout",
        }
    }
}

/// Receives one call per HTTP exchange and per retry. Implementations must be cheap and must not
/// block: they run on the request path. `registry` is the configured registry name (the host for
/// registries that are not in the configuration).
pub trait Observer: Send + Sync {
    /// One HTTP exchange finished (headers received, or the attempt failed without a status).
    /// Token requests to an auth server count under the registry they are for.
    fn request(&self, registry: &str, method: &str, status: Option<u16>, elapsed: Duration);

    /// A request is about to be retried after `delay`.
    fn retry(&self, registry: &str, reason: RetryReason, delay: Duration) {
        let _ = (registry, reason, delay);
    }

    /// The registry reported how many requests are left in its rate-limit window (Docker Hub's
    /// `ratelimit-remaining`).
    fn rate_limit_remaining(&self, registry: &str, remaining: u64) {
        let _ = (registry, remaining);
    }
}

/// Discards everything; the default for one-shot commands.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn request(&self, _: &str, _: &str, _: Option<u16>, _: Duration) {}
}
