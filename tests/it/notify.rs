#![allow(clippy::unwrap_used)]
//! Notifications out, against a loopback receiver that records each request and answers from a
//! script (a status, or never). Tests wait for deliveries by polling or through
//! `Notifier::close`, which waits for the queues to drain; the retry delays are milliseconds.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use prometheus::{IntCounterVec, Opts};
use retagd::config::{EventKind, Notification, NotifyFormat, NotifyTarget};
use retagd::notify::{Backoff, Event, Notifier, QUEUE_CAPACITY};
use serde_json::Value;
use url::Url;

/// The production policy's shape (5 attempts, exponential) on a millisecond scale.
const FAST: Backoff = Backoff {
    min: Duration::from_millis(5),
    max: Duration::from_millis(20),
    attempts: 5,
};
/// Long enough for any delivery here; close returns as soon as the queues are empty.
const DRAIN: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answers (within the test's lifetime).
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    path_and_query: String,
    content_type: String,
    user_agent: String,
    body: Value,
}

#[derive(Default)]
struct Script {
    received: Vec<Received>,
    /// Answers in order; 200 once they run out.
    replies: VecDeque<Reply>,
}

/// A webhook receiver on `127.0.0.1:0`, served on the test's runtime.
struct Receiver {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(replies: impl IntoIterator<Item = Reply>) -> Receiver {
        let script = Arc::new(Mutex::new(Script {
            received: Vec::new(),
            replies: replies.into_iter().collect(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&script));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, script }
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    fn count(&self) -> usize {
        self.script.lock().unwrap().received.len()
    }
}

async fn record(
    State(script): State<Arc<Mutex<Script>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let reply = {
        let mut script = script.lock().unwrap();
        script.received.push(Received {
            path_and_query: uri.path_and_query().map(ToString::to_string).unwrap(),
            content_type: text(header::CONTENT_TYPE),
            user_agent: text(header::USER_AGENT),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        script.replies.pop_front().unwrap_or(Reply::Status(200))
    };
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
    }
}

fn endpoint(target: NotifyTarget, format: NotifyFormat, events: &[EventKind]) -> Notification {
    Notification {
        target,
        format,
        events: events.iter().copied().collect(),
    }
}

fn url(receiver: &Receiver, path: &str, format: NotifyFormat) -> Notification {
    endpoint(
        NotifyTarget::Url(receiver.url(path)),
        format,
        &EventKind::ALL,
    )
}

fn outcomes() -> IntCounterVec {
    IntCounterVec::new(
        Opts::new("retagd_notifications_total", "Notification outcomes."),
        &["host", "result"],
    )
    .unwrap()
}

fn count(outcomes: &IntCounterVec, host: &str, result: &str) -> u64 {
    outcomes.with_label_values(&[host, result]).get()
}

fn event(kind: EventKind, to_tag: &str) -> Event {
    Event {
        kind,
        pipeline: "api-gateway".into(),
        stage: "staging".into(),
        registry: "ghcr".into(),
        repository: "myorg/api-gateway".into(),
        from_tag: "v1.2.0-dev.3".into(),
        to_tag: to_tag.into(),
        digest: "sha256:abcd1234ef567890abcd1234ef567890abcd1234ef567890abcd1234ef567890".into(),
        existing_digest: (kind == EventKind::Conflict).then(|| "sha256:0123456789abcdef".into()),
        error: (kind == EventKind::Failure).then(|| "registry ghcr: HTTP 500".into()),
        approved_by: None,
        reason: None,
        forced: false,
        freeze_id: None,
        until: None,
        time: UNIX_EPOCH + Duration::from_secs(1_777_887_000),
    }
}

/// Polls `done` every 5 ms; fails naming `what` after 4 s.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(4);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn json_and_slack_bodies_arrive_as_documented() {
    let receiver = Receiver::start([]).await;
    let outcomes = outcomes();
    let notifier = Notifier::start_with(
        &[
            url(&receiver, "/json", NotifyFormat::Json),
            url(&receiver, "/slack", NotifyFormat::Slack),
        ],
        outcomes.clone(),
        FAST,
    );
    notifier.send(event(EventKind::Success, "v1.2.0-rc.1"));
    notifier.close(DRAIN).await;

    let mut received = receiver.received();
    received.sort_by(|a, b| a.path_and_query.cmp(&b.path_and_query));
    assert_eq!(received.len(), 2, "{received:#?}");
    for r in &received {
        assert_eq!(r.content_type, "application/json");
        assert!(r.user_agent.starts_with("retagd/"), "{}", r.user_agent);
    }
    let summary = "api-gateway/staging: promoted v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56)";

    let json = &received[0];
    assert_eq!(json.path_and_query, "/json");
    let expected = serde_json::json!({
        "version": 1,
        "event": "success",
        "summary": summary,
        "pipeline": "api-gateway",
        "stage": "staging",
        "registry": "ghcr",
        "repository": "myorg/api-gateway",
        "from_tag": "v1.2.0-dev.3",
        "to_tag": "v1.2.0-rc.1",
        "digest": "sha256:abcd1234ef567890abcd1234ef567890abcd1234ef567890abcd1234ef567890",
        "existing_digest": null,
        "error": null,
        "approved_by": null,
        "reason": null,
        "forced": false,
        "freeze_id": null,
        "until": null,
        "time": "2026-05-04T09:30:00Z",
    });
    assert_eq!(json.body, expected);

    let slack = &received[1];
    assert_eq!(slack.path_and_query, "/slack");
    let escaped = summary.replace('>', "&gt;");
    assert_eq!(slack.body["text"], escaped.as_str());
    let blocks = slack.body["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
    assert_eq!(blocks[0]["text"]["text"], escaped.as_str());
    let fields: Vec<&str> = blocks[0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"*Pipeline*\napi-gateway"), "{fields:?}");
    assert!(fields.contains(&"*Stage*\nstaging"), "{fields:?}");
    assert!(
        fields.contains(&"*Promotion*\n`v1.2.0-dev.3` -&gt; `v1.2.0-rc.1`"),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"*Digest*\n`sha256:abcd1234ef56`"),
        "{fields:?}"
    );

    assert_eq!(count(&outcomes, "127.0.0.1", "delivered"), 2);
    assert_eq!(count(&outcomes, "127.0.0.1", "failed"), 0);
    assert_eq!(count(&outcomes, "127.0.0.1", "dropped"), 0);
}

#[tokio::test]
async fn conflict_and_failure_bodies_carry_their_details() {
    let receiver = Receiver::start([]).await;
    let notifier = Notifier::start_with(
        &[
            url(&receiver, "/json", NotifyFormat::Json),
            url(&receiver, "/slack", NotifyFormat::Slack),
        ],
        outcomes(),
        FAST,
    );
    notifier.send(event(EventKind::Conflict, "v1.2.0-rc.1"));
    notifier.send(event(EventKind::Failure, "v1.2.0-rc.2"));
    notifier.close(DRAIN).await;

    let received = receiver.received();
    let json: Vec<&Value> = received
        .iter()
        .filter(|r| r.path_and_query == "/json")
        .map(|r| &r.body)
        .collect();
    assert_eq!(json[0]["event"], "conflict");
    assert_eq!(json[0]["existing_digest"], "sha256:0123456789abcdef");
    assert_eq!(json[1]["event"], "failure");
    assert_eq!(json[1]["error"], "registry ghcr: HTTP 500");
    let slack: Vec<String> = received
        .iter()
        .filter(|r| r.path_and_query == "/slack")
        .map(|r| r.body["blocks"][0]["fields"].to_string())
        .collect();
    assert!(
        slack[0].contains("*Target holds*\\n`sha256:0123456789ab`"),
        "{}",
        slack[0]
    );
    assert!(
        slack[1].contains("*Error*\\nregistry ghcr: HTTP 500"),
        "{}",
        slack[1]
    );
}

#[tokio::test]
async fn deliveries_to_one_endpoint_keep_their_order() {
    let receiver = Receiver::start([]).await;
    let notifier =
        Notifier::start_with(&[url(&receiver, "/", NotifyFormat::Json)], outcomes(), FAST);
    let tags: Vec<String> = (1..=20).map(|n| format!("v1.2.0-rc.{n}")).collect();
    for tag in &tags {
        notifier.send(event(EventKind::Success, tag));
    }
    notifier.close(DRAIN).await;
    let got: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.body["to_tag"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, tags);
}

#[tokio::test]
async fn endpoints_get_only_the_events_they_subscribe_to() {
    let problems = Receiver::start([]).await;
    let everything = Receiver::start([]).await;
    let notifier = Notifier::start_with(
        &[
            endpoint(
                NotifyTarget::Url(problems.url("/")),
                NotifyFormat::Json,
                &[EventKind::Failure, EventKind::Conflict],
            ),
            url(&everything, "/", NotifyFormat::Json),
        ],
        outcomes(),
        FAST,
    );
    for kind in EventKind::ALL {
        notifier.send(event(kind, "v1.2.0-rc.1"));
    }
    notifier.close(DRAIN).await;
    let kinds = |r: &Receiver| -> Vec<String> {
        r.received()
            .iter()
            .map(|r| r.body["event"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(&problems), ["failure", "conflict"]);
    assert_eq!(
        kinds(&everything),
        ["success", "failure", "conflict", "pending", "freeze", "unfreeze", "drift"]
    );
}

#[tokio::test]
async fn a_503_503_200_sequence_is_delivered_once_after_retries() {
    let receiver = Receiver::start([Reply::Status(503), Reply::Status(503)]).await;
    let outcomes = outcomes();
    let notifier = Notifier::start_with(
        &[url(&receiver, "/", NotifyFormat::Json)],
        outcomes.clone(),
        FAST,
    );
    notifier.send(event(EventKind::Success, "v1.2.0-rc.1"));
    notifier.close(DRAIN).await;

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|r| r.body == received[0].body));
    assert_eq!(count(&outcomes, "127.0.0.1", "delivered"), 1);
    assert_eq!(count(&outcomes, "127.0.0.1", "failed"), 0);
}

#[tokio::test]
async fn a_4xx_is_final_and_persistent_5xx_and_429_give_up_after_five_attempts() {
    let not_found = Receiver::start([Reply::Status(404)]).await;
    let down = Receiver::start([Reply::Status(500); 5]).await;
    let limited = Receiver::start([Reply::Status(429); 5]).await;
    let outcomes = outcomes();
    let notifier = Notifier::start_with(
        &[
            url(&not_found, "/", NotifyFormat::Json),
            url(&down, "/", NotifyFormat::Json),
            url(&limited, "/", NotifyFormat::Slack),
        ],
        outcomes.clone(),
        FAST,
    );
    notifier.send(event(EventKind::Success, "v1.2.0-rc.1"));
    // The next event is delivered: a failure does not stop the queue.
    notifier.send(event(EventKind::Success, "v1.2.0-rc.2"));
    notifier.close(DRAIN).await;

    assert_eq!(not_found.count(), 2);
    assert_eq!(down.count(), 6);
    assert_eq!(limited.count(), 6);
    assert_eq!(count(&outcomes, "127.0.0.1", "failed"), 3);
    assert_eq!(count(&outcomes, "127.0.0.1", "delivered"), 3);
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_block_send_and_a_full_queue_drops() {
    let hung = Receiver::start([Reply::Hang]).await;
    let outcomes = outcomes();
    let notifier = Notifier::start_with(
        &[url(&hung, "/", NotifyFormat::Json)],
        outcomes.clone(),
        FAST,
    );
    let sent = QUEUE_CAPACITY + 44;
    let started = Instant::now();
    for n in 0..sent {
        notifier.send(event(EventKind::Success, &format!("v1.2.0-rc.{n}")));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "send took {:?}",
        started.elapsed()
    );
    // This test's runtime is single-threaded: the delivery task has not run yet, so exactly
    // the queue's capacity was accepted.
    assert_eq!(count(&outcomes, "127.0.0.1", "dropped"), 44);

    wait_until("the first delivery to reach the receiver", || {
        hung.count() == 1
    })
    .await;
    let started = Instant::now();
    notifier.close(Duration::from_millis(50)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "close took {:?}",
        started.elapsed()
    );
    // The delivery in flight and the queued ones are abandoned and counted.
    assert_eq!(count(&outcomes, "127.0.0.1", "dropped"), sent as u64);
    assert_eq!(count(&outcomes, "127.0.0.1", "delivered"), 0);
    assert_eq!(count(&outcomes, "127.0.0.1", "failed"), 0);
    assert_eq!(hung.count(), 1);
}

#[tokio::test]
async fn a_hung_endpoint_does_not_delay_the_others() {
    let hung = Receiver::start([Reply::Hang]).await;
    let healthy = Receiver::start([]).await;
    let notifier = Notifier::start_with(
        &[
            url(&hung, "/", NotifyFormat::Json),
            url(&healthy, "/", NotifyFormat::Slack),
        ],
        outcomes(),
        FAST,
    );
    for n in 0..5 {
        notifier.send(event(EventKind::Success, &format!("v1.2.0-rc.{n}")));
    }
    wait_until("the healthy endpoint to get every event", || {
        healthy.count() == 5
    })
    .await;
    assert_eq!(hung.count(), 1);
    notifier.close(Duration::ZERO).await;
}

#[tokio::test]
async fn a_url_file_is_read_at_each_delivery() {
    let first = Receiver::start([]).await;
    let second = Receiver::start([]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-url");
    std::fs::write(&file, format!("  {}\n", first.url("/hook-one"))).unwrap();
    let missing = dir.path().join("missing");
    let outcomes = outcomes();
    let notifier = Notifier::start_with(
        &[
            endpoint(
                NotifyTarget::File(file.clone()),
                NotifyFormat::Json,
                &EventKind::ALL,
            ),
            endpoint(
                NotifyTarget::File(missing),
                NotifyFormat::Json,
                &EventKind::ALL,
            ),
        ],
        outcomes.clone(),
        FAST,
    );
    notifier.send(event(EventKind::Success, "v1.2.0-rc.1"));
    wait_until("the first URL's delivery", || first.count() == 1).await;

    // A rotated Secret: the next event goes to the new URL.
    std::fs::write(&file, second.url("/hook-two").as_str()).unwrap();
    notifier.send(event(EventKind::Success, "v1.2.0-rc.2"));
    wait_until("the second URL's delivery", || second.count() == 1).await;
    assert_eq!(first.count(), 1);
    assert_eq!(second.received()[0].path_and_query, "/hook-two");
    assert_eq!(second.received()[0].body["to_tag"], "v1.2.0-rc.2");

    // Gone: the delivery fails, under the host last read.
    std::fs::remove_file(&file).unwrap();
    notifier.send(event(EventKind::Success, "v1.2.0-rc.3"));
    notifier.close(DRAIN).await;
    assert_eq!(count(&outcomes, "127.0.0.1", "delivered"), 2);
    assert_eq!(count(&outcomes, "127.0.0.1", "failed"), 1);
    // The endpoint whose file never existed has no host.
    assert_eq!(count(&outcomes, "unknown", "failed"), 3);
    assert_eq!(count(&outcomes, "unknown", "delivered"), 0);
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn failed_deliveries_never_log_the_webhook_url_or_file_content() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // Thread-local, and this test's runtime runs every task on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let secret_path = "/services/T0SECRET/B0SECRET/xoxSECRETtoken?token=qSECRET";
    let down = Receiver::start([Reply::Status(500); 5]).await;
    let gone = Receiver::start([Reply::Status(404)]).await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = Url::parse(&format!("http://127.0.0.1:{closed_port}{secret_path}")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_file: PathBuf = dir.path().join("slack-url");
    std::fs::write(
        &bad_file,
        "hooks.slack.com/services/T0SECRET/B0SECRET/SECRET\n",
    )
    .unwrap();

    let endpoints = [
        url(&down, secret_path, NotifyFormat::Slack),
        url(&gone, secret_path, NotifyFormat::Slack),
        endpoint(
            NotifyTarget::Url(refused),
            NotifyFormat::Slack,
            &EventKind::ALL,
        ),
        endpoint(
            NotifyTarget::File(bad_file.clone()),
            NotifyFormat::Slack,
            &EventKind::ALL,
        ),
    ];
    let outcomes = outcomes();
    let notifier = Notifier::start_with(&endpoints, outcomes.clone(), FAST);
    let debug = format!("{notifier:?} {endpoints:?}");
    notifier.send(event(EventKind::Failure, "v1.2.0-rc.1"));
    notifier.close(DRAIN).await;

    assert_eq!(count(&outcomes, "127.0.0.1", "failed"), 3);
    assert_eq!(count(&outcomes, "unknown", "failed"), 1);
    assert_eq!(down.received()[0].path_and_query, secret_path);
    let logs = logs.text();
    for leak in ["SECRET", "/services"] {
        assert!(!logs.contains(leak), "logs leak {leak}:\n{logs}");
        assert!(!debug.contains(leak), "Debug leaks {leak}: {debug}");
    }
    // Each failure was logged, naming the endpoint by host, the event and the cause.
    for expected in [
        "notification not delivered",
        "endpoint=127.0.0.1",
        "event=\"failure\"",
        "pipeline=api-gateway",
        "stage=staging",
        "HTTP 500",
        "HTTP 404",
        "notification attempt failed; retrying",
        &format!("url_file={}", bad_file.display()),
    ] {
        assert!(logs.contains(expected), "logs lack {expected:?}:\n{logs}");
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("notifications[2]") || l.contains("notification=2")),
        "no log of the refused connection:\n{logs}"
    );
}
