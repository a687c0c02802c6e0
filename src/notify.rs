//! Notifications out: promotion events POSTed to webhooks, as retagd's JSON or as Slack
//! messages, in the background so that a slow or dead endpoint never holds up a reconcile.
//!
//! The daemon builds one [`Notifier`] from `[[notifications]]` ([`config::Notification`]), calls
//! [`Notifier::send`] for every [`Event`] the engine reports, and [`Notifier::close`] at shutdown.
//! This module knows the configuration only through [`config::Notification`] and the engine not
//! at all.
//!
//! # Delivery
//!
//! - Each endpoint has its own queue of [`QUEUE_CAPACITY`] events and its own task: deliveries to
//!   one endpoint are sequential and in order, and a slow endpoint delays only itself. `send`
//!   never waits: when a queue is full the event is dropped for that endpoint, counted and
//!   logged.
//! - One `POST` per event and endpoint, `Content-Type: application/json`, [`TIMEOUT`] per
//!   attempt, redirects not followed (a webhook that redirects is misconfigured, and a `POST`
//!   turned into a `GET` would lose the body). Any 2xx is delivered.
//! - Transport errors, 429 and 5xx are retried with exponential backoff and jitter
//!   ([`Backoff::default`]: 5 attempts, 1 s doubling up to 30 s); a `Retry-After` replaces the
//!   delay, up to the same cap. Any other status is final.
//! - A `url_file` is read at each delivery (by the rule of [`secret`]), so a rotated Secret
//!   takes effect without a reload. An unreadable file or a bad URL fails that delivery; it is not retried.
//! - Each event's outcome per endpoint is counted on the `outcomes` counter passed to
//!   [`Notifier::start`], labelled with the endpoint's host (for a `url_file`, the host of the
//!   URL last read, `unknown` before one could be) and `result`: `delivered`, `failed` (final
//!   status, retries exhausted, or an unusable `url_file`) or `dropped` (queue full, or still
//!   undelivered when the shutdown grace period ran out).
//!
//! # Secrets
//!
//! A webhook URL is a credential: Slack's carries its token in the path. Logs and metrics name an
//! endpoint by its host and its index in `[[notifications]]` only; reqwest errors lose their URL
//! before they are printed; of a `url_file` only the path is ever printed, never its content.
//!
//! # JSON format, version 1
//!
//! The body of a `format = "json"` notification, a user-facing contract:
//!
//! ```json
//! {
//!   "version": 1,
//!   "event": "success",
//!   "pipeline": "api-gateway",
//!   "stage": "staging",
//!   "registry": "ghcr",
//!   "repository": "myorg/api-gateway",
//!   "from_tag": "v1.2.0-dev.3",
//!   "to_tag": "v1.2.0-rc.1",
//!   "digest": "sha256:abcd1234ef56...",
//!   "existing_digest": null,
//!   "error": null,
//!   "time": "2026-05-04T09:30:00Z",
//!   "summary": "api-gateway/staging: promoted v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56)"
//! }
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `version` | `1`; fields may be added within a version, a removed or changed one increments it |
//! | `event` | `success` (copied), `failure` (the copy failed), `conflict` (the target tag holds another digest), `pending` (a manual stage has a new candidate) |
//! | `pipeline`, `stage` | names from the configuration; `stage` is the target stage |
//! | `registry` | the registry's name in the configuration (not its URL) |
//! | `repository` | the target stage's repository |
//! | `from_tag`, `to_tag` | the source stage's tag and the target tag |
//! | `digest` | the manifest digest promoted (or that would be) |
//! | `existing_digest` | `conflict`: what the target tag holds; otherwise `null` |
//! | `error` | `failure`: why, in one line; otherwise `null` |
//! | `time` | when it happened, RFC 3339 UTC, whole seconds |
//! | `summary` | one line for people; its wording may change |
//!
//! # Slack format
//!
//! An incoming-webhook message: `text` (the summary, shown in notifications) and one `section`
//! block with the summary and `mrkdwn` fields for the pipeline, stage, image, promotion, digest,
//! and the existing digest or the error when there is one. Text is escaped as Slack requires
//! (`&`, `<`, `>`) and cut to Slack's length limits.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable as _};
use bytes::Bytes;
use prometheus::IntCounterVec;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Serialize, Serializer};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use url::Url;

use crate::config::{self, EventKind, NotifyFormat, NotifyTarget};
use crate::reference::short_digest;
use crate::secret::{self, Secret};

/// Events queued per endpoint before new ones are dropped: a few reconciles' worth of
/// promotions, small enough that a dead endpoint holds little memory.
pub const QUEUE_CAPACITY: usize = 256;
/// Time limit of one delivery attempt, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The `version` of the JSON format this module writes.
pub const JSON_VERSION: u32 = 1;

/// The host label of an endpoint whose host is not known (a `url_file` not read yet).
const UNKNOWN_HOST: &str = "unknown";
/// Slack's limits: 3000 characters of section text, 2000 per field.
const SLACK_TEXT_MAX: usize = 3000;
const SLACK_FIELD_MAX: usize = 2000;

/// The `result` label values of the outcomes counter.
const DELIVERED: &str = "delivered";
const FAILED: &str = "failed";
const DROPPED: &str = "dropped";

/// One promotion event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// What happened; serialized as `event` (`success`, ...).
    #[serde(rename = "event", serialize_with = "kind_str")]
    pub kind: EventKind,
    /// The pipeline's name.
    pub pipeline: String,
    /// The target stage's name.
    pub stage: String,
    /// The target stage's registry, by its name in the configuration (not a URL).
    pub registry: String,
    /// The target stage's repository.
    pub repository: String,
    /// The source stage's tag.
    pub from_tag: String,
    /// The target tag.
    pub to_tag: String,
    /// The manifest digest promoted, or that would be.
    pub digest: String,
    /// For a conflict: what the target tag holds.
    pub existing_digest: Option<String>,
    /// For a failure: why.
    pub error: Option<String>,
    /// When it happened; serialized as RFC 3339 UTC.
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
}

fn kind_str<S: Serializer>(kind: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

fn rfc3339<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    // humantime panics before 1970 and fails after 9999: a wrong clock must not lose the event.
    let last = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let time = (*time).clamp(UNIX_EPOCH, last);
    s.collect_str(&humantime::format_rfc3339_seconds(time))
}

impl Event {
    /// One line for people, as in the JSON `summary` and the Slack text.
    pub fn summary(&self) -> String {
        let Event {
            pipeline,
            stage,
            from_tag,
            to_tag,
            ..
        } = self;
        let digest = short_digest(&self.digest);
        match self.kind {
            EventKind::Success => {
                format!("{pipeline}/{stage}: promoted {from_tag} -> {to_tag} ({digest})")
            }
            EventKind::Failure => format!(
                "{pipeline}/{stage}: promoting {from_tag} -> {to_tag} ({digest}) failed: {}",
                self.error.as_deref().unwrap_or("unknown error")
            ),
            EventKind::Conflict => format!(
                "{pipeline}/{stage}: cannot promote {from_tag} -> {to_tag} ({digest}): \
                 {to_tag} already holds {}",
                self.existing_digest
                    .as_deref()
                    .map_or_else(|| "another digest".to_string(), short_digest)
            ),
            EventKind::Pending => format!(
                "{pipeline}/{stage}: {from_tag} -> {to_tag} ({digest}) is waiting for approval"
            ),
        }
    }
}

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

/// Delivers events to the configured endpoints in the background.
pub struct Notifier {
    queues: Vec<Queue>,
    tasks: Vec<JoinHandle<u64>>,
    /// Set to `true` when the grace period of [`Notifier::close`] is over.
    abort: watch::Sender<bool>,
}

/// The sending side of one endpoint.
struct Queue {
    events: BTreeSet<EventKind>,
    tx: mpsc::Sender<Arc<Event>>,
    endpoint: Arc<Endpoint>,
}

/// What the sending side and the delivery task share about one endpoint.
struct Endpoint {
    /// The index in `[[notifications]]`, to tell apart endpoints on one host in logs.
    index: usize,
    target: NotifyTarget,
    format: NotifyFormat,
    /// The host label; a std mutex because it is held only to copy a short string.
    host: Mutex<String>,
    outcomes: IntCounterVec,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "endpoints",
                &self.queues.iter().map(|q| &q.endpoint).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The host only: the URL's path may hold a token.
        write!(f, "notifications[{}] {}", self.index, self.host())
    }
}

impl Notifier {
    /// Starts one delivery task per endpoint, with the default [`Backoff`]. `outcomes` counts
    /// each event's fate per endpoint, with the labels `host` and `result` (see the module
    /// docs); the caller registers it.
    ///
    /// Call it inside a Tokio runtime; outside one, or when no HTTP client can be built, it logs
    /// an error and returns a notifier that sends nothing.
    pub fn start(endpoints: &[config::Notification], outcomes: IntCounterVec) -> Notifier {
        Notifier::start_with(endpoints, outcomes, Backoff::default())
    }

    /// [`Notifier::start`] with another retry policy (tests use milliseconds).
    pub fn start_with(
        endpoints: &[config::Notification],
        outcomes: IntCounterVec,
        backoff: Backoff,
    ) -> Notifier {
        if endpoints.is_empty() {
            return Notifier::disabled();
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("notifications are off: the notifier was started outside a runtime");
            return Notifier::disabled();
        };
        let client = match reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("retagd/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(
                    error = %chain(&e.without_url()),
                    "notifications are off: cannot set up the HTTP client"
                );
                return Notifier::disabled();
            }
        };
        let (abort, _) = watch::channel(false);
        let mut queues = Vec::with_capacity(endpoints.len());
        let mut tasks = Vec::with_capacity(endpoints.len());
        for (index, n) in endpoints.iter().enumerate() {
            let host = match &n.target {
                NotifyTarget::Url(url) => host_of(url),
                // Read now so that drops before the first delivery carry the right host.
                NotifyTarget::File(path) => read_url_file_blocking(index, path)
                    .map_or_else(|_| UNKNOWN_HOST.to_string(), |url| host_of(&url)),
            };
            let endpoint = Arc::new(Endpoint {
                index,
                target: n.target.clone(),
                format: n.format,
                host: Mutex::new(host),
                outcomes: outcomes.clone(),
            });
            endpoint.zero_series();
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            let worker = Worker {
                endpoint: Arc::clone(&endpoint),
                client: client.clone(),
                backoff,
            };
            tasks.push(runtime.spawn(worker.run(rx, abort.subscribe())));
            queues.push(Queue {
                events: n.events.clone(),
                tx,
                endpoint,
            });
        }
        Notifier {
            queues,
            tasks,
            abort,
        }
    }

    /// A notifier that sends nothing (no endpoints).
    pub fn disabled() -> Notifier {
        Notifier {
            queues: Vec::new(),
            tasks: Vec::new(),
            abort: watch::channel(false).0,
        }
    }

    /// Queues `event` for every endpoint subscribed to its kind. Never blocks, never fails: when
    /// an endpoint's queue is full the event is dropped for it, counted `dropped` and logged.
    pub fn send(&self, event: Event) {
        let event = Arc::new(event);
        for queue in self
            .queues
            .iter()
            .filter(|q| q.events.contains(&event.kind))
        {
            let reason = match queue.tx.try_send(Arc::clone(&event)) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => "queue full",
                // Only after a panic in the delivery task: nothing will read the queue.
                Err(mpsc::error::TrySendError::Closed(_)) => "delivery task gone",
            };
            let endpoint = &queue.endpoint;
            tracing::warn!(
                notification = endpoint.index,
                endpoint = %endpoint.host(),
                event = event.kind.as_str(),
                pipeline = %event.pipeline,
                stage = %event.stage,
                reason,
                "notification dropped"
            );
            endpoint.count(DROPPED, 1);
        }
    }

    /// Stops accepting, then waits at most `grace` for the queued deliveries (their retries
    /// included) to finish; what is still undelivered then is dropped, counted and logged.
    pub async fn close(self, grace: Duration) {
        let Notifier {
            queues,
            tasks,
            abort,
        } = self;
        // Closing the queues ends each task once its queue is empty.
        drop(queues);
        let mut all = std::pin::pin!(futures_util::future::join_all(tasks));
        let results = match tokio::time::timeout(grace, &mut all).await {
            Ok(results) => results,
            Err(_) => {
                // Each task counts what it abandons, then returns at once.
                abort.send_replace(true);
                all.await
            }
        };
        let mut abandoned = 0;
        for result in results {
            match result {
                Ok(n) => abandoned += n,
                Err(e) => tracing::error!(error = %e, "a notification task failed"),
            }
        }
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                grace = %humantime::format_duration(grace),
                "notifications still undelivered after the grace period were dropped"
            );
        }
    }
}

impl Endpoint {
    fn host(&self) -> String {
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
    fn count(&self, result: &str, n: u64) {
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
    fn zero_series(&self) {
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
struct Worker {
    endpoint: Arc<Endpoint>,
    client: reqwest::Client,
    backoff: Backoff,
}

impl Worker {
    /// Delivers queued events in order until the queue is closed and empty, or until `abort`;
    /// returns the number of events abandoned (and counted as dropped) then.
    async fn run(
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
        let body = match endpoint.format {
            NotifyFormat::Json => json_body(event),
            NotifyFormat::Slack => slack_body(event),
        };
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
fn chain(e: &dyn std::error::Error) -> String {
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

/// The `format = "json"` body: the event, its version and summary.
fn json_body(event: &Event) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Body<'a> {
        version: u32,
        #[serde(flatten)]
        event: &'a Event,
        summary: String,
    }
    serde_json::to_vec(&Body {
        version: JSON_VERSION,
        event,
        summary: event.summary(),
    })
}

/// The `format = "slack"` body: see the module docs.
fn slack_body(event: &Event) -> serde_json::Result<Vec<u8>> {
    let summary = mrkdwn(&event.summary(), SLACK_TEXT_MAX);
    let field =
        |name: &str, value: String| json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")});
    // Names and tags are short; only the error is cut to fit a field with its heading.
    let mut fields = vec![
        field("Pipeline", mrkdwn(&event.pipeline, 200)),
        field("Stage", mrkdwn(&event.stage, 200)),
        field(
            "Image",
            mrkdwn(&format!("{}/{}", event.registry, event.repository), 500),
        ),
        field(
            "Promotion",
            format!(
                "`{}` -&gt; `{}`",
                mrkdwn(&event.from_tag, 300),
                mrkdwn(&event.to_tag, 300)
            ),
        ),
        field(
            "Digest",
            format!("`{}`", mrkdwn(&short_digest(&event.digest), 100)),
        ),
    ];
    if let Some(existing) = &event.existing_digest {
        fields.push(field(
            "Target holds",
            format!("`{}`", mrkdwn(&short_digest(existing), 100)),
        ));
    }
    if let Some(error) = &event.error {
        fields.push(field("Error", mrkdwn(error, SLACK_FIELD_MAX - 20)));
    }
    serde_json::to_vec(&json!({
        "text": summary,
        "blocks": [{
            "type": "section",
            "text": {"type": "mrkdwn", "text": summary},
            "fields": fields,
        }],
    }))
}

/// `s` escaped for Slack (`&`, `<`, `>` are its control characters) and cut, with `...`, to at
/// most `max` characters of escaped text.
fn mrkdwn(s: &str, max: usize) -> String {
    let escaped = |c: char| match c {
        '&' => "&amp;".to_string(),
        '<' => "&lt;".to_string(),
        '>' => "&gt;".to_string(),
        c => c.to_string(),
    };
    let total: usize = s.chars().map(|c| escaped(c).chars().count()).sum();
    if total <= max {
        return s.chars().map(escaped).collect();
    }
    let mut out = String::new();
    let mut len = 0;
    for piece in s.chars().map(escaped) {
        let n = piece.chars().count();
        if len + n > max.saturating_sub(3) {
            break;
        }
        out.push_str(&piece);
        len += n;
    }
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn event(kind: EventKind) -> Event {
        Event {
            kind,
            pipeline: "api-gateway".into(),
            stage: "staging".into(),
            registry: "ghcr".into(),
            repository: "myorg/api-gateway".into(),
            from_tag: "v1.2.0-dev.3".into(),
            to_tag: "v1.2.0-rc.1".into(),
            digest: "sha256:abcd1234ef567890abcd1234ef567890abcd1234ef567890abcd1234ef567890"
                .into(),
            existing_digest: None,
            error: None,
            time: UNIX_EPOCH + Duration::from_secs(1_777_887_000),
        }
    }

    #[test]
    fn summaries_name_the_stage_the_tags_and_the_short_digest() {
        assert_eq!(
            event(EventKind::Success).summary(),
            "api-gateway/staging: promoted v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56)"
        );
        let mut failure = event(EventKind::Failure);
        failure.error = Some("registry ghcr: HTTP 500".into());
        assert_eq!(
            failure.summary(),
            "api-gateway/staging: promoting v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56) \
             failed: registry ghcr: HTTP 500"
        );
        let mut conflict = event(EventKind::Conflict);
        conflict.existing_digest = Some("sha256:0123456789abcdef".into());
        assert_eq!(
            conflict.summary(),
            "api-gateway/staging: cannot promote v1.2.0-dev.3 -> v1.2.0-rc.1 \
             (sha256:abcd1234ef56): v1.2.0-rc.1 already holds sha256:0123456789ab"
        );
        assert_eq!(
            event(EventKind::Pending).summary(),
            "api-gateway/staging: v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56) is waiting \
             for approval"
        );
    }

    #[test]
    fn json_body_is_the_event_with_version_and_summary() {
        let v: serde_json::Value =
            serde_json::from_slice(&json_body(&event(EventKind::Success)).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["event"], "success");
        assert_eq!(v["registry"], "ghcr");
        assert_eq!(v["existing_digest"], serde_json::Value::Null);
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["time"], "2026-05-04T09:30:00Z");
        assert!(v.get("kind").is_none());
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "version",
            "event",
            "pipeline",
            "stage",
            "registry",
            "repository",
            "from_tag",
            "to_tag",
            "digest",
            "existing_digest",
            "error",
            "time",
            "summary",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn times_outside_rfc3339_are_clamped_not_panicked_on() {
        let mut e = event(EventKind::Success);
        e.time = UNIX_EPOCH - Duration::from_secs(10);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        e.time = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["time"], "9999-12-31T23:59:59Z");
    }

    #[test]
    fn slack_body_has_text_and_one_section_with_fields() {
        let mut e = event(EventKind::Failure);
        e.error = Some("a <b> & c".into());
        let v: serde_json::Value = serde_json::from_slice(&slack_body(&e).unwrap()).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("v1.2.0-dev.3 -&gt; v1.2.0-rc.1"), "{text}");
        assert!(text.ends_with("failed: a &lt;b&gt; &amp; c"), "{text}");
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        let fields: Vec<&str> = blocks[0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["type"], "mrkdwn");
                f["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            fields,
            [
                "*Pipeline*\napi-gateway",
                "*Stage*\nstaging",
                "*Image*\nghcr/myorg/api-gateway",
                "*Promotion*\n`v1.2.0-dev.3` -&gt; `v1.2.0-rc.1`",
                "*Digest*\n`sha256:abcd1234ef56`",
                "*Error*\na &lt;b&gt; &amp; c",
            ]
        );
    }

    #[test]
    fn slack_text_is_cut_to_its_limits_without_splitting_an_entity() {
        let mut e = event(EventKind::Failure);
        e.error = Some("<".repeat(5000));
        let v: serde_json::Value = serde_json::from_slice(&slack_body(&e).unwrap()).unwrap();
        assert!(v["text"].as_str().unwrap().chars().count() <= SLACK_TEXT_MAX);
        let error = v["blocks"][0]["fields"][5]["text"].as_str().unwrap();
        assert!(error.chars().count() <= SLACK_FIELD_MAX);
        assert!(error.ends_with("&lt;..."), "{}", &error[error.len() - 20..]);
        assert_eq!(mrkdwn("abcdef", 5), "ab...");
        assert_eq!(mrkdwn("abcde", 5), "abcde");
        assert_eq!(mrkdwn("a&b", 5), "a...");
    }

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

    #[test]
    fn debug_shows_hosts_only() {
        let n = config::Notification {
            target: NotifyTarget::Url(
                Url::parse("https://hooks.slack.com/services/T/B/SECRET?x=SECRET2").unwrap(),
            ),
            format: NotifyFormat::Slack,
            events: EventKind::ALL.into_iter().collect(),
        };
        let outcomes = IntCounterVec::new(
            prometheus::Opts::new("retagd_notifications_total", "test"),
            &["host", "result"],
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let notifier = rt.block_on(async { Notifier::start(&[n], outcomes.clone()) });
        let debug = format!("{notifier:?}");
        assert_eq!(
            debug,
            r#"Notifier { endpoints: [notifications[0] hooks.slack.com] }"#
        );
        assert_eq!(
            outcomes
                .with_label_values(&["hooks.slack.com", "delivered"])
                .get(),
            0
        );
        rt.block_on(notifier.close(Duration::ZERO));
    }

    #[test]
    fn outside_a_runtime_the_notifier_is_disabled_not_a_panic() {
        let n = config::Notification {
            target: NotifyTarget::Url(Url::parse("http://127.0.0.1:9/").unwrap()),
            format: NotifyFormat::Json,
            events: EventKind::ALL.into_iter().collect(),
        };
        let outcomes = IntCounterVec::new(
            prometheus::Opts::new("retagd_notifications_total", "test"),
            &["host", "result"],
        )
        .unwrap();
        let notifier = Notifier::start(&[n], outcomes);
        notifier.send(event(EventKind::Success));
        assert_eq!(format!("{notifier:?}"), "Notifier { endpoints: [] }");
    }
}
