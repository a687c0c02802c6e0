//! Notifications out: promotion events POSTed to webhooks, as retagd's JSON or as Slack
//! messages, in the background so that a slow or dead endpoint never holds up a reconcile.
//!
//! The daemon builds one [`Notifier`] from `[[notifications]]` ([`config::Notification`]), calls
//! [`Notifier::send`] for every [`Event`] the engine reports, and [`Notifier::close`] at shutdown.
//! This module knows the configuration only through [`config::Notification`] and the engine not
//! at all.
//!
//! Inside: `event` (the [`Event`] model and its summary), `format` (the two bodies below) and
//! `delivery` (each endpoint's queue, task and HTTP retries); this file is the facade over them.
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
//! - A `url_file` is read at each delivery (by the rule of [`crate::secret`]), so a rotated Secret
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
//!   "approved_by": null,
//!   "reason": null,
//!   "forced": false,
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
//! | `approved_by`, `reason` | an approved `success`: the approver's name and reason; otherwise `null` |
//! | `forced` | an approved `success` that skipped the stage's `min_age` |
//! | `time` | when it happened, RFC 3339 UTC, whole seconds |
//! | `summary` | one line for people; its wording may change |
//!
//! # Slack format
//!
//! An incoming-webhook message: `text` (the summary, shown in notifications) and one `section`
//! block with the summary and `mrkdwn` fields for the pipeline, stage, image, promotion, digest,
//! and the existing digest or the error when there is one. Text is escaped as Slack requires
//! (`&`, `<`, `>`) and cut to Slack's length limits.

mod delivery;
mod event;
mod format;

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{self, EventKind};
use delivery::{chain, Endpoint, Worker, DROPPED};

pub use delivery::Backoff;
pub use event::Event;
pub use format::JSON_VERSION;

/// Events queued per endpoint before new ones are dropped: a few reconciles' worth of
/// promotions, small enough that a dead endpoint holds little memory.
pub const QUEUE_CAPACITY: usize = 256;
/// Time limit of one delivery attempt, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

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
            let endpoint = Arc::new(Endpoint::new(index, n, outcomes.clone()));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::{NotifyFormat, NotifyTarget};
    use url::Url;

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
        notifier.send(event::example(EventKind::Success));
        assert_eq!(format!("{notifier:?}"), "Notifier { endpoints: [] }");
    }
}
