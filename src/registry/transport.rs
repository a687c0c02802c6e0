//! One registry's HTTP side: connection pool, concurrency and rate limits, redirects, retries,
//! and the observer calls; it asks `auth` for each request's `Authorization` and lends it the
//! wire for token requests. Everything above it speaks in requests and typed errors; nothing
//! above it sees a 401, a 429 or a redirect.
//!
//! # Guarantees
//!
//! - Credentials go only to the registry's own origin and to the token realm it names (the realm
//!   only over https, or loopback); a redirect elsewhere (blob storage) gets no `Authorization`.
//! - Connection errors, truncated bodies, 408, 429 and 5xx (but 501) are retried with exponential
//!   backoff and jitter, at most [`RETRIES`] times; `Retry-After` (seconds or HTTP date) replaces
//!   the backoff delay; a wait longer than [`MAX_RETRY_AFTER`] is not waited for but reported.
//! - A 401 gets one new token (or Basic credentials) with the scopes of its challenge, then the
//!   request is sent once more; it is not counted as a retry.
//! - Every attempt has a total deadline (`request_timeout_secs`, from the first byte sent to
//!   the last received; a blob copy gets one second more per MiB), reported as
//!   [`Error::Timeout`] and not retried: a registry dripping its answer makes progress, so the
//!   read timeout alone would never fire.
//! - At most `max_concurrency` requests are in flight (a streamed body keeps its slot until it is
//!   dropped) and, with `requests_per_second`, requests start at least `1/rps` apart.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable as _};
use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use super::auth::{self, origin, Authenticator, Scopes, Source, TokenAnswer, TokenRequest, Wire};
use super::observe::{Observer, RetryReason};
use super::Error;

/// Retries after the first attempt.
pub const RETRIES: usize = 4;
/// First backoff delay; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest `Retry-After` we sleep through; beyond it the request fails and the caller (the next
/// reconcile) tries later.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Error bodies, and bodies nobody needs (answers to PUT and POST), are read up to this much.
pub const MAX_ERROR_BODY: u64 = 64 << 10;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

/// Settings of one registry's transport.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Requests in flight at once.
    pub max_concurrency: u32,
    /// Request rate ceiling.
    pub requests_per_second: Option<f64>,
    /// Extra CA certificate (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Longest one attempt of a request may take, first byte out to last byte in.
    pub request_timeout: Duration,
}

/// What a blob copy gets on top of the request timeout: one second per MiB (a 1 GiB layer
/// may take 17 minutes more), far below any link retagd copies over.
const BLOB_BYTES_PER_SECOND: u64 = 1 << 20;

/// A request as the layers above build it. Bodies are `Bytes`, so a retry resends them for free.
/// No `Debug`: a token request's body holds a refresh token.
pub struct Request<'a> {
    /// Method.
    pub method: Method,
    /// Absolute URL on the registry.
    pub url: Url,
    /// Extra headers (`Accept`, `Content-Type`).
    pub headers: HeaderMap,
    /// Body, if any.
    pub body: Option<Bytes>,
    /// Token scopes this request needs; one set per copy, so one token serves all its requests.
    pub scopes: &'a Scopes,
}

impl<'a> Request<'a> {
    /// A request without extra headers or body.
    pub fn new(method: Method, url: Url, scopes: &'a Scopes) -> Request<'a> {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            scopes,
        }
    }
}

/// A fully read answer.
#[derive(Debug)]
pub struct Fetched {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (empty for HEAD).
    pub body: Bytes,
}

/// Paces request starts at most one per `period` (a leaky bucket of depth one). Hand-written
/// rather than `governor`: it runs on Tokio's clock, so paused-time tests cover it.
#[derive(Debug)]
struct Pacer {
    period: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let at = {
            let mut next = lock(&self.next);
            let at = (*next).max(Instant::now());
            *next = at + self.period;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Mutexes here guard plain data and are never held across an await or a panic-prone call, so a
/// poisoned one still holds consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A registry's HTTP side; see the module docs.
pub struct Transport {
    /// The registry's name in configuration and metrics.
    pub name: String,
    /// `scheme://host[:port]`.
    pub base: Url,
    http: reqwest::Client,
    auth: Authenticator,
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    pacer: Option<Pacer>,
    observer: Arc<dyn Observer>,
    rate_limit_remaining: AtomicI64,
    request_timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Builds the connection pool. Fails on an unreadable CA.
    pub fn new(
        name: String,
        base: Url,
        settings: &Settings,
        source: Source,
        observer: Arc<dyn Observer>,
    ) -> Result<Transport, Error> {
        let setup = |message: String| Error::Setup {
            registry: name.clone(),
            message,
        };
        let tls = super::tls::client_config(settings.ca_pem.as_deref()).map_err(setup)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("retagd/", env!("CARGO_PKG_VERSION")))
            // Redirects are followed here, to strip credentials ourselves and count each hop.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            // No total timeout: a 1 GiB layer takes what it takes. A stalled read fails.
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(settings.max_concurrency.max(1) as usize)
            .https_only(base.scheme() == "https")
            .use_preconfigured_tls(tls)
            .build()
            .map_err(|e| setup(format!("cannot set up HTTP client: {e}")))?;
        let pacer = settings
            .requests_per_second
            .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok())
            .map(|period| Pacer {
                period,
                next: Mutex::new(Instant::now()),
            });
        Ok(Transport {
            auth: Authenticator::new(name.clone(), base.clone(), source),
            name,
            base,
            http,
            permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1) as usize)),
            max_concurrency: settings.max_concurrency.max(1) as usize,
            pacer,
            observer,
            rate_limit_remaining: AtomicI64::new(-1),
            request_timeout: settings.request_timeout,
        })
    }

    /// The total deadline of a blob copy of `size` bytes: the request timeout plus one second
    /// per MiB.
    pub fn blob_deadline(&self, size: u64) -> Duration {
        self.request_timeout + Duration::from_secs(size / BLOB_BYTES_PER_SECOND)
    }

    /// Runs one attempt of `req` within `deadline`; a late one becomes [`Error::Timeout`].
    pub async fn within<T>(
        &self,
        req: &Request<'_>,
        deadline: Duration,
        attempt: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout(deadline, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(Error::Timeout {
                    registry: self.name.clone(),
                    method: req.method.clone(),
                    path: req.url.path().to_string(),
                    after: deadline,
                })
            })
    }

    /// Requests in flight at once; callers size their fan-out by it.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// The last `ratelimit-remaining` the registry reported.
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        u64::try_from(self.rate_limit_remaining.load(Ordering::Relaxed)).ok()
    }

    /// A concurrency slot, for callers that must hold slots of two registries at once (taken in
    /// name order, so two opposite copies cannot deadlock).
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Setup {
                registry: self.name.clone(),
                message: "client is shutting down".into(),
            })
    }

    /// Sends `req` and reads the whole body (at most `limit` bytes when successful), retrying as
    /// the module docs say. Any status that is not retried is returned, for the caller to judge.
    pub async fn fetch(&self, req: &Request<'_>, limit: u64) -> Result<Fetched, Error> {
        self.retrying(|| async {
            let _permit = self.permit().await?;
            self.within(req, self.request_timeout, async {
                let response = self.exchange(req).await?;
                let status = response.status();
                let headers = response.headers().clone();
                if retry_reason_of(status).is_some() {
                    return Err(self.status_error(req, response).await);
                }
                let limit = if status.is_success() {
                    limit
                } else {
                    MAX_ERROR_BODY
                };
                let body = self.read_body(req, response, limit).await?;
                Ok(Fetched {
                    status,
                    headers,
                    body,
                })
            })
            .await
        })
        .await
    }

    /// Sends `req` and returns as soon as the headers are in (retrying until then); the body is
    /// the caller's to stream. The caller holds this registry's slot for as long as it streams.
    pub async fn open(&self, req: &Request<'_>) -> Result<reqwest::Response, Error> {
        self.retrying(|| {
            self.within(req, self.request_timeout, async {
                let response = self.exchange(req).await?;
                if retry_reason_of(response.status()).is_some() {
                    return Err(self.status_error(req, response).await);
                }
                Ok(response)
            })
        })
        .await
    }

    /// Sends a streamed body once: it cannot be replayed, so there is no retry and no second
    /// try after a 401 (the caller retries the whole transfer). The caller holds the slot.
    pub async fn send_stream(
        &self,
        req: &Request<'_>,
        body: reqwest::Body,
    ) -> Result<reqwest::Response, Error> {
        let authorization = if origin(&req.url) == origin(&self.base) {
            self.auth.header(req.scopes, self).await?
        } else {
            None
        };
        self.send_raw(req, &req.url, authorization, Some(body))
            .await
    }

    /// Runs `attempt` with the retry policy; errors carry the number of attempts.
    pub async fn retrying<T, F, Fut>(&self, attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let attempts = AtomicU32::new(1);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(MIN_BACKOFF)
            .with_max_delay(MAX_BACKOFF)
            .with_max_times(RETRIES)
            .with_jitter();
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &Error| {
                // An error that already went through a retry loop below (a request inside a
                // retried transfer) is not retried again: attempts would multiply.
                e.retry_reason().is_some()
                    && e.attempts() <= 1
                    && e.retry_after().is_none_or(|d| d <= MAX_RETRY_AFTER)
            })
            .adjust(|e: &Error, delay| delay.map(|d| e.retry_after().unwrap_or(d)))
            .notify(|e: &Error, delay| {
                attempts.fetch_add(1, Ordering::Relaxed);
                if let Some(reason) = e.retry_reason() {
                    self.observer.retry(&self.name, reason, delay);
                }
            })
            .await
            .map_err(|e| e.with_attempts(attempts.load(Ordering::Relaxed)))
    }

    /// One attempt: sends, answers one challenge, follows redirects for GET and HEAD.
    async fn exchange(&self, req: &Request<'_>) -> Result<reqwest::Response, Error> {
        let mut url = req.url.clone();
        let mut challenged = false;
        let mut hops = 0;
        loop {
            let own = origin(&url) == origin(&self.base);
            let authorization = if own {
                self.auth.header(req.scopes, self).await?
            } else {
                None
            };
            let body = req.body.clone().map(reqwest::Body::from);
            let response = self.send_raw(req, &url, authorization, body).await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && own {
                if challenged {
                    // Refused even after re-authentication: the next request resolves the
                    // credentials again.
                    self.auth.forget_credentials().await;
                } else {
                    challenged = true;
                    self.auth
                        .challenged(response.headers(), req.scopes, self)
                        .await?;
                    continue;
                }
            }
            let follow = status.is_redirection()
                && status != StatusCode::NOT_MODIFIED
                && matches!(req.method, Method::GET | Method::HEAD);
            if !follow {
                return Ok(response);
            }
            hops += 1;
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| self.protocol(req, "redirect without a Location".into()))?;
            let next = url
                .join(location)
                .map_err(|e| self.protocol(req, format!("redirect to an invalid Location: {e}")))?;
            if hops > MAX_REDIRECTS || !matches!(next.scheme(), "http" | "https") {
                return Err(self.protocol(
                    req,
                    format!(
                        "too many or bad redirects (last to {})",
                        next.host_str().unwrap_or("?")
                    ),
                ));
            }
            url = next;
        }
    }

    /// Sends one HTTP request, paced, timed and reported to the observer.
    async fn send_raw(
        &self,
        req: &Request<'_>,
        url: &Url,
        authorization: Option<HeaderValue>,
        body: Option<reqwest::Body>,
    ) -> Result<reqwest::Response, Error> {
        if let Some(pacer) = &self.pacer {
            pacer.wait().await;
        }
        let mut builder = self
            .http
            .request(req.method.clone(), url.clone())
            .headers(req.headers.clone());
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a);
        }
        if let Some(body) = body {
            builder = builder.body(body);
        } else if matches!(req.method, Method::PUT | Method::POST | Method::PATCH) {
            builder = builder.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let started = Instant::now();
        let result = builder.send().await;
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        self.observer
            .request(&self.name, req.method.as_str(), status, started.elapsed());
        let response = result.map_err(|e| self.transport_error(req, e))?;
        self.note_rate_limit(response.headers());
        Ok(response)
    }

    fn note_rate_limit(&self, headers: &HeaderMap) {
        let remaining = headers
            .get("ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(n) = remaining {
            self.rate_limit_remaining
                .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
            self.observer.rate_limit_remaining(&self.name, n);
        }
    }

    /// Reads a body up to `limit` bytes; more is an error, before it is all in memory.
    pub async fn read_body(
        &self,
        req: &Request<'_>,
        mut response: reqwest::Response,
        limit: u64,
    ) -> Result<Bytes, Error> {
        let too_large = |size: Option<u64>| Error::TooLarge {
            registry: self.name.clone(),
            what: format!("{} {}", req.method, req.url.path()),
            limit,
            size,
        };
        if req.method == Method::HEAD {
            return Ok(Bytes::new());
        }
        if let Some(len) = response.content_length().filter(|l| *l > limit) {
            return Err(too_large(Some(len)));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(req, e))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large(None));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Turns an unwanted status into an error with the registry's code and message.
    pub async fn status_error(&self, req: &Request<'_>, response: reqwest::Response) -> Error {
        let status = response.status();
        let headers = response.headers().clone();
        let body = self
            .read_body(req, response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        self.error_for(req, status, &headers, &body)
    }

    /// The error for an answer already read. A 401 that survived our one re-authentication
    /// becomes [`Error::Auth`], saying which credentials were refused.
    pub fn error_for(
        &self,
        req: &Request<'_>,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Error {
        let (code, message) = error_text(body, |text| self.auth.redact(text));
        let error = super::HttpStatus {
            registry: self.name.clone(),
            method: req.method.clone(),
            path: req.url.path().to_string(),
            status: status.as_u16(),
            code,
            message,
            retry_after: retry_after(status, headers),
            attempts: 1,
        };
        if status != StatusCode::UNAUTHORIZED {
            return Error::Status(Box::new(error));
        }
        Error::Auth {
            registry: self.name.clone(),
            message: format!("{}: {error}", self.auth.refusal(req.scopes)),
        }
    }

    fn transport_error(&self, req: &Request<'_>, source: reqwest::Error) -> Error {
        Error::Transport {
            registry: self.name.clone(),
            method: req.method.clone(),
            path: req.url.path().to_string(),
            source: source.without_url(),
            attempts: 1,
        }
    }

    /// An answer that breaks the protocol.
    pub fn protocol(&self, req: &Request<'_>, what: String) -> Error {
        Error::Protocol {
            registry: self.name.clone(),
            what: format!(
                "{} {}: {}",
                req.method,
                req.url.path(),
                self.auth.redact(&what)
            ),
        }
    }
}

impl Wire for Transport {
    async fn send_token_request(&self, token: &TokenRequest) -> Result<TokenAnswer, Error> {
        let none = Scopes::new();
        let req = Request {
            method: token.method.clone(),
            url: token.url.clone(),
            headers: token.headers.clone(),
            body: token.body.clone(),
            scopes: &none,
        };
        self.retrying(|| {
            self.within(&req, self.request_timeout, async {
                let response = self
                    .send_raw(
                        &req,
                        &req.url,
                        None,
                        req.body.clone().map(reqwest::Body::from),
                    )
                    .await?;
                let status = response.status();
                if status.is_success() {
                    let body = self
                        .read_body(&req, response, auth::MAX_TOKEN_RESPONSE)
                        .await?;
                    return Ok(TokenAnswer::Body(body));
                }
                let error = self.status_error(&req, response).await;
                if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                    return Ok(TokenAnswer::Denied(error));
                }
                Err(error)
            })
        })
        .await
    }
}

/// Which statuses are worth another attempt.
pub fn retry_reason_of(status: StatusCode) -> Option<RetryReason> {
    match status.as_u16() {
        408 => Some(RetryReason::Timeout),
        429 => Some(RetryReason::RateLimited),
        501 => None,
        500..=599 => Some(RetryReason::ServerError),
        _ => None,
    }
}

/// `Retry-After` in seconds or as an HTTP date; for a 429 without it but with Docker Hub's
/// `ratelimit-remaining: 0;w=<window>`, the window (which exceeds [`MAX_RETRY_AFTER`], so the
/// request is reported instead of retried into a wall).
pub fn retry_after(status: StatusCode, headers: &HeaderMap) -> Option<Duration> {
    if let Some(v) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
            );
        }
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let remaining = headers.get("ratelimit-remaining")?.to_str().ok()?;
        let mut parts = remaining.split(';');
        if parts.next()?.trim() == "0" {
            let window = parts.find_map(|p| p.trim().strip_prefix("w="))?;
            return window.parse::<u64>().ok().map(Duration::from_secs);
        }
    }
    None
}

/// The registry's error code and message from `{"errors":[{"code","message"}]}`, or the start of
/// a non-JSON body; `redact` sees each whole text before it is cut short (a registry may echo
/// the credentials it was sent).
pub fn error_text(body: &[u8], redact: impl Fn(&str) -> String) -> (Option<String>, String) {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        if let Some(first) = e.errors.first() {
            let code = first.code.as_deref().map(|c| printable(&redact(c), 64));
            let message = e
                .errors
                .iter()
                .filter_map(|i| i.message.as_deref())
                .map(|m| printable(&redact(m), 300))
                .collect::<Vec<_>>()
                .join("; ");
            return (code, message);
        }
    }
    (
        None,
        printable(&redact(&String::from_utf8_lossy(body)), 300),
    )
}

/// One line of at most `max` characters without control characters: registry text goes into our
/// messages and logs and must not forge lines.
fn printable(text: &str, max: usize) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.trim().chars().count() > max {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_dates_and_docker_hub_windows() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &h),
            Some(Duration::from_secs(7))
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let d = retry_after(StatusCode::SERVICE_UNAVAILABLE, &h).unwrap();
        assert!(
            d > Duration::from_secs(27) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        let mut h = HeaderMap::new();
        h.insert("ratelimit-remaining", HeaderValue::from_static("0;w=21600"));
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &h),
            Some(Duration::from_secs(21600))
        );
        h.insert("ratelimit-remaining", HeaderValue::from_static("3;w=21600"));
        assert_eq!(retry_after(StatusCode::TOO_MANY_REQUESTS, &h), None);
    }

    #[test]
    fn error_bodies_give_code_and_message_even_when_not_json() {
        let (code, message) = error_text(
            br#"{"errors":[{"code":"TAG_INVALID","message":"tag is immutable","detail":{}}]}"#,
            str::to_string,
        );
        assert_eq!(
            (code.as_deref(), message.as_str()),
            (Some("TAG_INVALID"), "tag is immutable")
        );
        let (code, message) =
            error_text(b"<html>\n<h1>502 Bad Gateway</h1>\n</html>", str::to_string);
        assert_eq!(code, None);
        assert!(!message.contains('\n') && message.contains("502 Bad Gateway"));
        assert!(
            error_text("x".repeat(5000).as_bytes(), str::to_string)
                .1
                .len()
                < 310
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_spaces_request_starts() {
        let pacer = Pacer {
            period: Duration::from_millis(100),
            next: Mutex::new(Instant::now()),
        };
        let start = Instant::now();
        for _ in 0..5 {
            pacer.wait().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }
}
