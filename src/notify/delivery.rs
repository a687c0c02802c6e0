//! Delivery: the task that owns one endpoint's queue and POSTs each event, with retries, and the
//! per-endpoint state it shares with the [`Notifier`](super::Notifier) (host label, counters).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable as _};
use bytes::Bytes;
use prometheus::IntCounterVec;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use tokio::sync::{mpsc, watch};
use url::Url;

use super::{format, Event};
use crate::config::{self, NotifyFormat, NotifyTarget};
use crate::secret::{self, Secret};

/// The host label of an endpoint whose host is not known (a `url_file` not read yet).
const UNKNOWN_HOST: &str = "unknown";

/// The `result` label values of the outcomes counter.
const DELIVERED: &str = "delivered";
const FAILED: &str = "failed";
pub(super) const DROPPED: &str = "dropped";

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay; it doubles (plus jitter) at each retry.
    pub min: Duration,
    /// The longest delay, also the cap of a `Retry-After`.
    pub max: Duration,
    /// Attempts in all, the first included; at least one is always made.
    pub attempts: usize,
}

impl Default for Backoff {
    /// 5 attempts, 1 s doubling up to 30 s: about a minute and a half of patience, enough for a
    /// receiver's restart or a Slack rate-limit window.
    fn default() -> Self {
        Backoff {
            min: Duration::from_secs(1),
            max: Duration::from_secs(30),
            attempts: 5,
        }
    }
}

/// What the sending side and the delivery task share about one endpoint.
pub(super) struct Endpoint {
    /// The index in `[[notifications]]`, to tell apart endpoints on one host in logs.
    pub(super) index: usize,
    target: NotifyTarget,
    format: NotifyFormat,
    /// The host label; a std mutex because it is held only to copy a short string.
    host: Mutex<String>,
    outcomes: IntCounterVec,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The host only: the URL's path may hold a token.
        write!(f, "notifications[{}] {}", self.index, self.host())
    }
}

impl Endpoint {
    /// The endpoint of `notification`, the `index`th in `[[notifications]]`.
    pub(super) fn new(
        index: usize,
        notification: &config::Notification,
        outcomes: IntCounterVec,
    ) -> Endpoint {
        let host = match &notification.target {
            NotifyTarget::Url(url) => host_of(url),
            // Read now so that drops before the first delivery carry the right host.
            NotifyTarget::File(path) => read_url_file_blocking(index, path)
                .map_or_else(|_| UNKNOWN_HOST.to_string(), |url| host_of(&url)),
        };
        Endpoint {
            index,
            target: notification.target.clone(),
            format: notification.format,
            host: Mutex::new(host),
            outcomes,
        }
    }

    pub(super) fn host(&self) -> String {
        self.host
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |h| h.clone())
    }

    fn set_host(&self, host: String) {
        match self.host.lock() {
            Ok(mut h) => *h = host,
            Err(p) => *p.into_inner() = host,
        }
    }

    /// Adds `n` to the `result` series of the current host.
    pub(super) fn count(&self, result: &str, n: u64) {
        let host = self.host();
        match self
            .outcomes
            .get_metric_with_label_values(&[host.as_str(), result])
        {
            Ok(counter) => counter.inc_by(n),
            Err(e) => tracing::debug!(error = %e, "notification outcome not counted"),
        }
    }

    /// Creates the series of the known host at 0, so dashboards see an endpoint before its first
    /// event; also the one place a counter with the wrong labels is reported.
    pub(super) fn zero_series(&self) {
        let host = self.host();
        for result in [DELIVERED, FAILED, DROPPED] {
            if let Err(e) = self
                .outcomes
                .get_metric_with_label_values(&[host.as_str(), result])
            {
                tracing::error!(
                    error = %e,
                    "notification outcomes are not counted: the counter needs the labels host and result"
                );
                return;
            }
        }
    }
}

/// The delivery task of one endpoint.
pub(super) struct Worker {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) client: reqwest::Client,
    pub(super) backoff: Backoff,
}

impl Worker {
    /// Delivers queued events in order until the queue is closed and empty, or until `abort`;
    /// returns the number of events abandoned (and counted as dropped) then.
    pub(super) async fn run(
        self,
        mut rx: mpsc::Receiver<Arc<Event>>,
        mut abort: watch::Receiver<bool>,
    ) -> u64 {
        let mut abandoned = 0;
        loop {
            let event = tokio::select! {
                biased;
                () = aborted(&mut abort) => break,
                event = rx.recv() => match event {
                    Some(event) => event,
                    None => return 0,
                },
            };
            tokio::select! {
                biased;
                () = aborted(&mut abort) => {
                    abandoned += 1;
                    break;
                }
                () = self.deliver(&event) => {}
            }
        }
        rx.close();
        while rx.try_recv().is_ok() {
            abandoned += 1;
        }
        self.endpoint.count(DROPPED, abandoned);
        abandoned
    }

    async fn deliver(&self, event: &Event) {
        let endpoint = &self.endpoint;
        let body = format::body(endpoint.format, event);
        let url = match &endpoint.target {
            NotifyTarget::Url(url) => Ok(url.clone()),
            NotifyTarget::File(path) => read_url_file(endpoint.index, path)
                .await
                .map_err(|e| (path, e)),
        };
        let (url, body) = match (url, body) {
            (Ok(url), Ok(body)) => (url, Bytes::from(body)),
            (Err((path, e)), _) => {
                tracing::warn!(
                    notification = endpoint.index,
                    endpoint = %endpoint.host(),
                    url_file = %path.display(),
                    event = event.kind.as_str(),
                    pipeline = %event.pipeline,
                    stage = %event.stage,
                    error = %e,
                    "notification not delivered: no usable URL"
                );
                endpoint.count(FAILED, 1);
                return;
            }
            (_, Err(e)) => {
                tracing::warn!(
                    notification = endpoint.index,
                    event = event.kind.as_str(),
                    error = %e,
                    "notification not delivered: cannot encode it"
                );
                endpoint.count(FAILED, 1);
                return;
            }
        };
        let host = host_of(&url);
        endpoint.set_host(host.clone());

        let max = self.backoff.max;
        let policy = ExponentialBuilder::default()
            .with_min_delay(self.backoff.min)
            .with_max_delay(max)
            .with_max_times(self.backoff.attempts.saturating_sub(1))
            .with_jitter();
        let mut attempts = 1;
        let result = (|| self.post(&url, body.clone()))
            .retry(policy)
            .sleep(tokio::time::sleep)
            .when(Failure::retryable)
            // Jitter may double a delay; `max` stays the cap, also of a `Retry-After`.
            .adjust(|e: &Failure, delay| delay.map(|d| e.retry_after().unwrap_or(d).min(max)))
            .notify(|e: &Failure, delay| {
                attempts += 1;
                tracing::debug!(
                    notification = endpoint.index,
                    endpoint = %host,
                    event = event.kind.as_str(),
                    error = %e,
                    delay = ?delay,
                    "notification attempt failed; retrying"
                );
            })
            .await;
        match result {
            Ok(()) => {
                tracing::debug!(
                    notification = endpoint.index,
                    endpoint = %host,
                    event = event.kind.as_str(),
                    pipeline = %event.pipeline,
                    stage = %event.stage,
                    "notification delivered"
                );
                endpoint.count(DELIVERED, 1);
            }
            Err(e) => {
                tracing::warn!(
                    notification = endpoint.index,
                    endpoint = %host,
                    event = event.kind.as_str(),
                    pipeline = %event.pipeline,
                    stage = %event.stage,
                    attempts,
                    error = %e,
                    "notification not delivered"
                );
                endpoint.count(FAILED, 1);
            }
        }
    }

    /// One attempt.
    async fn post(&self, url: &Url, body: Bytes) -> Result<(), Failure> {
        let response = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Failure::Transport(e.without_url()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // The body is not read: a receiver may echo the request (its URL) in an error page.
        Err(Failure::Status {
            status,
            retry_after: retry_after(response.headers()),
        })
    }
}

/// Resolves when `abort` turns true; never if the notifier was dropped without `close` (its
/// tasks then deliver what is queued and end).
async fn aborted(abort: &mut watch::Receiver<bool>) {
    if abort.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Why one attempt failed.
#[derive(Debug)]
enum Failure {
    /// No answer: connection, TLS, timeout. The URL is already stripped.
    Transport(reqwest::Error),
    /// An answer that is not 2xx.
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Transport(e) => !e.is_builder(),
            Failure::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            Failure::Transport(_) => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transport(e) => f.write_str(&chain(e)),
            Failure::Status { status, .. } => write!(f, "HTTP {status}"),
        }
    }
}

/// An error and its sources on one line (reqwest's own Display stops at the first).
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The metrics label and log name of an endpoint: its host, never its path or query.
fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or(UNKNOWN_HOST).to_string()
}

/// Why a `url_file` gave no URL. The messages never include the file's content.
#[derive(Debug, thiserror::Error)]
enum UrlFileError {
    #[error(transparent)]
    Read(#[from] secret::Error),
    #[error("it holds no valid URL: {0}")]
    Invalid(url::ParseError),
    #[error("its URL must be http or https, with a host")]
    Unsupported,
}

/// The `config::Notification` key of a `url_file`, for errors.
fn url_file_key(index: usize) -> String {
    format!("notifications[{index}].url_file")
}

async fn read_url_file(index: usize, path: &Path) -> Result<Url, UrlFileError> {
    parse_url(&secret::read_async(&url_file_key(index), path).await?)
}

fn read_url_file_blocking(index: usize, path: &Path) -> Result<Url, UrlFileError> {
    parse_url(&secret::read(&url_file_key(index), path)?)
}

/// The URL in a `url_file`, with the checks the configuration applies to `url`. Surrounding
/// spaces are no part of a URL (the URL standard drops them too).
fn parse_url(text: &Secret) -> Result<Url, UrlFileError> {
    let url = Url::parse(text.expose().trim()).map_err(UrlFileError::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(UrlFileError::Unsupported);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_transport_errors_429_and_5xx_are_retried() {
        let status = |s: u16| Failure::Status {
            status: StatusCode::from_u16(s).unwrap(),
            retry_after: None,
        };
        for s in [429, 500, 502, 503, 504] {
            assert!(status(s).retryable(), "{s}");
        }
        for s in [300, 400, 401, 403, 404, 408, 410] {
            assert!(!status(s).retryable(), "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, " 7 ".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn url_files_are_trimmed_checked_and_never_echoed() {
        let url = parse_url(&Secret::new(
            "  https://hooks.slack.com/services/T/B/SECRET ",
        ))
        .unwrap();
        assert_eq!(url.path(), "/services/T/B/SECRET");
        for bad in [
            "hooks.slack.com/services/T/B/SECRET",
            "ftp://hooks.slack.com/SECRET",
            "mailto:SECRET@hooks.slack.com",
        ] {
            let e = parse_url(&Secret::new(bad)).unwrap_err().to_string();
            assert!(!e.contains("SECRET") && !e.contains("slack"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "https://hooks.slack.com/SECRET\nSECRET\n").unwrap();
        let e = read_url_file_blocking(3, &path).unwrap_err().to_string();
        assert!(e.starts_with("notifications[3].url_file "), "{e}");
        assert!(!e.contains("SECRET"), "{e}");
    }
}
