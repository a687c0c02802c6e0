//! Issue 20, "Hostile input": registries, token servers and API clients that try to make retagd
//! repeat a secret, hold its listener, or hold a request forever. The hostile peers are small
//! in-process servers: the real registry never echoes credentials nor drips its answers.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::support;
use support::config::{Config, Pipeline, Stage, AUTO};
use support::pipeline::{Daemon, DEADLINE};
use support::server::BackgroundServer;

/// A password with characters that URL-encoding changes, so each spelling differs.
const PASSWORD: &str = "hunter2 S3cr3t/pw+9";
/// A token shaped like nothing: only its being known to retagd can redact it.
const JWT: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnbmF0dXJlLWJ5dGVz";

/// Every form of the credentials a hostile server echoes; none may come out of retagd.
fn forbidden() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("bob:{PASSWORD}"));
    vec![
        PASSWORD.to_string(),
        "hunter2".to_string(),
        "S3cr3t".to_string(),
        b64,
        url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect(),
        JWT.to_string(),
    ]
}

/// A registry that challenges for a token (repositories under `tok/`) or for Basic credentials
/// (under `basic/`), and a token server. The token server answers 401, the registry 403 to
/// Basic credentials, with the credentials they were sent, in every spelling, in their error
/// text.
async fn echoing(State(realm): State<String>, uri: Uri, headers: HeaderMap) -> Response {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let echo = |what: &str| {
        let encoded: String = url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect();
        let body = json!({"errors": [{
            "code": "UNAUTHORIZED",
            "message": format!(
                "bad credentials: Authorization: {sent} (password {PASSWORD}, {encoded}); {what} {JWT}"
            ),
        }]});
        body.to_string()
    };
    let path = uri.path();
    if path == "/token" {
        return (StatusCode::UNAUTHORIZED, echo("token server says")).into_response();
    }
    if path.starts_with("/v2/tok/") {
        let challenge = format!("Bearer realm=\"{realm}\",service=\"hostile\"");
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, challenge)],
            echo("registry says"),
        )
            .into_response();
    }
    if sent.is_empty() {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"hostile\"")],
        )
            .into_response();
    }
    (StatusCode::FORBIDDEN, echo("registry says")).into_response()
}

/// A two-stage pipeline over one `repository` (one listing, so no two first requests race for
/// the challenge) in registry `name`.
fn pipeline(name: &str, repository: &str) -> Pipeline {
    Pipeline::new(name, name, repository)
        .stage(Stage::new("dev").filter("-dev$").semver(">=0.0.0-0"))
        .stage(Stage::new("rc").filter("-rc$").semver(">=0.0.0-0").promote(
            "dev",
            "{major}.{minor}.{patch}-rc",
            AUTO,
        ))
}

async fn get(address: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let answer = support::http_client()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let body = answer.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn write_password(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("password");
    std::fs::write(&path, format!("{PASSWORD}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_echoed_by_a_registry_or_token_server_are_never_republished() {
    let server = BackgroundServer::spawn("hostile registry", |addr| {
        axum::Router::new()
            .fallback(echoing)
            .with_state(format!("http://{addr}/token"))
    });
    let dir = tempfile::tempdir().unwrap();
    let password = write_password(dir.path());
    // One registry entry per scheme, so each has an authentication state of its own.
    let mut config = Config::new().server().interval("1h");
    for name in ["tok", "basic"] {
        config = config
            .registry(name, &format!("http://{}", server.addr))
            .registry_setting(name, "username = \"bob\"")
            .registry_setting(name, &format!("password_file = \"{}\"", password.display()));
    }
    let config = config
        .pipeline(pipeline("tok", "tok/app"))
        .pipeline(pipeline("basic", "basic/app"))
        .write(&dir.path().join("retagd.toml"));

    // At trace level, so every library's logging is covered too.
    let daemon = Daemon::start_with(&config, dir.path().join("daemon.log"), "trace");
    let address = daemon.address().await;
    let errors = support::poll_until("both pipelines to fail", DEADLINE, || async {
        let (_, all) = get(address, "/api/v1/pipelines").await;
        let errors: Vec<String> = all["pipelines"]
            .as_array()?
            .iter()
            .filter_map(|p| p["last_error"].as_str().map(str::to_string))
            .collect();
        (errors.len() == 2).then_some(errors)
    })
    .await;
    let (_, all) = get(address, "/api/v1/pipelines").await;
    let api = all.to_string();
    let metrics = support::http_client()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = daemon.log();
    for error in &errors {
        assert!(error.contains("[redacted]"), "{error}");
    }
    assert!(
        errors.iter().any(|e| e.contains("token server says")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("registry says")),
        "{errors:?}"
    );
    for secret in forbidden() {
        for (what, text) in [("API", &api), ("metrics", &metrics), ("log", &log)] {
            assert!(
                !text.contains(&secret),
                "the {what} repeats {secret:?}:\n{text}"
            );
        }
    }

    // The one-shot commands print the same errors.
    let output = support::pipeline::run(&config, &["plan"]).await;
    let text = support::pipeline::text(&output);
    assert!(text.contains("[redacted]"), "{text}");
    for secret in forbidden() {
        assert!(!text.contains(&secret), "plan repeats {secret:?}:\n{text}");
    }
}

/// The webhook secret the listener tests configure.
const WEBHOOK_SECRET: &str = "whsec-hostile-1";

/// A daemon whose one pipeline reads a registry nobody listens on (the listener is what is
/// tested), with webhooks on and `server` settings `lines`.
fn listener_daemon(dir: &Path, lines: &[&str]) -> Daemon {
    let secret = dir.join("webhook-secret");
    std::fs::write(&secret, format!("{WEBHOOK_SECRET}\n")).unwrap();
    let mut config = Config::new()
        .interval("1h")
        .registry(
            "dead",
            &format!("http://127.0.0.1:{}", support::free_port()),
        )
        .pipeline(pipeline("dead", "app"))
        .table(&format!(
            "\n[webhooks]\nsecret_file = \"{}\"\n",
            secret.display()
        ));
    for line in lines {
        config = config.server_setting(line);
    }
    let config = config.write(&dir.join("retagd.toml"));
    Daemon::start(&config, dir.join("daemon.log"))
}

/// Sends a request's start and `extra` bytes, never the rest.
async fn half_request(address: std::net::SocketAddr, start: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(start.as_bytes()).await.unwrap();
    stream
}

/// Reads until the server closes the connection; what it said, or `None` after `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .ok()
        .map(|_| String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed_and_healthz_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = listener_daemon(
        dir.path(),
        &["header_read_timeout_secs = 1", "max_connections = 16"],
    );
    let address = daemon.address().await;
    // More unfinished requests than the cap: the first 16 are served (and time out), the rest
    // wait in the backlog, then get their second too.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(half_request(address, "GET /healthz HTTP/1.1\r\nHost: x\r\n").await);
    }
    let started = Instant::now();
    for stream in &mut idle {
        assert!(
            closed_within(stream, Duration::from_secs(10))
                .await
                .is_some(),
            "a connection without its headers stayed open for 10 s"
        );
    }
    let closed_after = started.elapsed();
    eprintln!("40 unfinished requests closed after {closed_after:?}");
    let (status, _) = get(address, "/healthz").await;
    assert_eq!(status, 200);
    // A kept-alive connection that idles is closed too.
    let mut kept = half_request(address, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = closed_within(&mut kept, Duration::from_secs(10)).await;
    assert!(
        answer
            .as_deref()
            .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_flood_gets_503_while_healthz_and_metrics_answer() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = listener_daemon(
        dir.path(),
        &["header_read_timeout_secs = 2", "max_webhook_requests = 2"],
    );
    let address = daemon.address().await;
    let start = format!(
        "POST /webhooks/distribution HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEBHOOK_SECRET}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    // Two webhooks that drip their body hold both webhook slots...
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(half_request(address, &start).await);
    }
    let client = support::http_client();
    let webhook = || {
        client
            .post(format!("http://{address}/webhooks/distribution"))
            .bearer_auth(WEBHOOK_SECRET)
            .body(r#"{"events":[]}"#)
            .send()
    };
    // ...so the next webhook is refused at once, while probes and scrapes are answered.
    let refused = support::poll_until("a webhook to be refused", DEADLINE, || async {
        let answer = webhook().await.unwrap();
        (answer.status().as_u16() == 503).then_some(answer)
    })
    .await;
    assert_eq!(refused.headers()["retry-after"], "1");
    let started = Instant::now();
    for path in ["/healthz", "/metrics", "/api/v1/pipelines"] {
        let answer = client
            .get(format!("http://{address}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{path}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The dripping bodies time out (408) and free their slots.
    for stream in &mut slow {
        let answer = closed_within(stream, Duration::from_secs(10)).await;
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 408")),
            "{answer:?}"
        );
    }
    assert_eq!(webhook().await.unwrap().status().as_u16(), 202);
}

/// A registry that answers a tag list one byte every 300 ms: 30 s for the whole list, each read
/// making progress so no read timeout fires.
async fn dripping(uri: Uri) -> Response {
    if uri.path() == "/v2/" {
        return (StatusCode::OK, "{}").into_response();
    }
    if !uri.path().ends_with("/tags/list") {
        return (StatusCode::NOT_FOUND, "{}").into_response();
    }
    let text = format!(r#"{{"name":"app","tags":["v1.0.0"{}]}}"#, " ".repeat(80));
    let bytes: Vec<u8> = text.into_bytes();
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let byte = bytes.get(i).copied();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            byte.map(|b| {
                (
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(vec![b])),
                    i + 1,
                )
            })
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_dripping_its_answer_meets_the_request_deadline() {
    let server = BackgroundServer::spawn("dripping registry", |_| {
        axum::Router::new().fallback(dripping)
    });
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .registry("drip", &format!("http://{}", server.addr))
        .registry_setting("drip", "request_timeout_secs = 2")
        .pipeline(pipeline("drip", "app"))
        .write(&dir.path().join("retagd.toml"));
    let started = Instant::now();
    let output = support::pipeline::run(&config, &["plan"]).await;
    let took = started.elapsed();
    let text = support::pipeline::text(&output);
    eprintln!("plan against a dripping registry ended after {took:?}");
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("GET /v2/app/tags/list: timed out: no complete answer within 2s"),
        "{text}"
    );
    // One attempt (a timeout is not retried), well before the 30 s the answer takes.
    assert!(took < Duration::from_secs(10), "{took:?}: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_closes_the_status_api_but_not_the_probes_and_tokens_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let read = dir.path().join("read-token");
    std::fs::write(&read, "reader-tok-1\n").unwrap();
    let approver = dir.path().join("api-token");
    std::fs::write(&approver, "approver-tok-1\n").unwrap();
    let daemon = listener_daemon(
        dir.path(),
        &[
            &format!("read_token_file = \"{}\"", read.display()),
            &format!("api_token_file = \"{}\"", approver.display()),
        ],
    );
    let address = daemon.address().await;
    let client = support::http_client();
    let status = |path: &'static str, authorization: Option<&'static str>| {
        let mut request = client.get(format!("http://{address}{path}"));
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for (path, authorization, expected) in [
        ("/api/v1/pipelines", None, 401),
        ("/api/v1/pipelines/dead", None, 401),
        ("/api/v1/pipelines", Some("Bearer wrong"), 401),
        ("/api/v1/pipelines", Some("Bearer reader-tok-1"), 200),
        ("/api/v1/pipelines", Some("bearer reader-tok-1"), 200),
        ("/api/v1/pipelines/dead", Some("BEARER approver-tok-1"), 200),
        // The token is exact: padding inside the value is not trimmed.
        ("/api/v1/pipelines", Some("Bearer  reader-tok-1"), 401),
        ("/api/v1/pipelines", Some("Bearer reader-tok-1x"), 401),
        ("/api/v1/freeze", None, 401),
        ("/api/v1/freeze", Some("Bearer reader-tok-1"), 200),
        // The dashboard's files hold no data; what it shows comes through the gated API.
        ("/", None, 200),
        ("/healthz", None, 200),
        ("/metrics", None, 200),
    ] {
        assert_eq!(
            status(path, authorization).await,
            expected,
            "{path} {authorization:?}"
        );
    }
    // The write API compares exactly too.
    let promote = |authorization: &'static str| {
        client
            .post(format!(
                "http://{address}/api/v1/pipelines/dead/stages/rc/promote"
            ))
            .header("Authorization", authorization)
            .header("Content-Type", "application/json")
            .body("{}")
            .send()
    };
    assert_eq!(
        promote("Bearer  approver-tok-1")
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    assert_ne!(
        promote("Bearer approver-tok-1")
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_with_a_deeply_nested_yaml_file_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = dir.path().join("retagd.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  listen: \"127.0.0.1:0\"\ndefaults:\n  interval: 1h\nregistries:\n  dead:\n    url: \"http://127.0.0.1:{port}\"\npipelines:\n  - name: dead\n    registry: dead\n    repository: app\n    stages:\n      - name: dev\n        policy: {{ alphabetical: {{ order: asc }} }}\n"
        ),
    )
    .unwrap();
    let daemon = Daemon::start(&config, dir.path().join("daemon.log"));
    let address = daemon.address().await;
    // 100 KB nested 100,000 levels deep: libyaml took 43 s (release) to refuse the like.
    std::fs::write(&config, format!("pipelines: {}", "[".repeat(100_000))).unwrap();
    let started = Instant::now();
    daemon.signal("HUP");
    daemon.wait_log("configuration reload failed").await;
    let took = started.elapsed();
    eprintln!("a 100,000-level YAML reload was refused after {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        daemon
            .log()
            .contains("nested deeper than 64 levels at line 1"),
        "{}",
        daemon.log()
    );
    let (status, _) = get(address, "/healthz").await;
    assert_eq!(status, 200);
}
