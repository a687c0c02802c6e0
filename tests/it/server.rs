//! `retagd run`'s HTTP side end to end: the API and its refusals, approvals, registry webhooks
//! from a real registry, a real Prometheus scraping the metrics, and notifications.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::config::{AUTO, MANUAL};
use support::pipeline::{run, text, wait_tag, Daemon, Env, DEADLINE, REPO};
use support::prometheus::Prometheus;
use support::proxy::FaultProxy;
use support::registry::{Registry, RegistryOptions};

pub(crate) const TOKEN: &str = "api-token-7f3a9c";
const SECRET: &str = "hook-secret-51be0d";

/// Writes the API token and webhook secret files; returns the `[server]` line and the
/// `[webhooks]` table for the config.
pub(crate) fn secrets(env: &Env) -> (String, String) {
    let token = env.dir.path().join("api-token");
    let secret = env.dir.path().join("webhook-secret");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    (
        format!("api_token_file = \"{}\"", token.display()),
        format!("\n[webhooks]\nsecret_file = \"{}\"\n", secret.display()),
    )
}

pub(crate) struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    pub(crate) fn new(address: SocketAddr) -> Api {
        Api {
            base: format!("http://{address}"),
            client: support::http_client(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let answer = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, auth: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body);
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let body = answer.bytes().await.unwrap();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (status, value)
    }

    pub(crate) async fn promote(
        &self,
        pipeline: &str,
        stage: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (u16, Value) {
        self.post(
            &format!("/api/v1/pipelines/{pipeline}/stages/{stage}/promote"),
            auth,
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// Waits until `/readyz` is 200.
    async fn ready(&self) {
        support::poll_until("/readyz to answer 200", DEADLINE, || async {
            (self.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }

    /// Waits until the stage's object in the status API satisfies `done`; returns it.
    pub(crate) async fn stage_where(
        &self,
        stage: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        support::poll_until(&format!("{stage} to {what}"), DEADLINE, || async {
            let (_, p) = self.get("/api/v1/pipelines/api-gateway").await;
            let st = p["stages"]
                .as_array()?
                .iter()
                .find(|s| s["stage"] == stage)?
                .clone();
            done(&st).then_some(st)
        })
        .await
    }

    /// Waits until the stage's current tag is `tag` in the status API.
    pub(crate) async fn current(&self, stage: &str, tag: &str) -> Value {
        self.stage_where(stage, &format!("show {tag}"), |st| {
            st["current"]["tag"] == tag
        })
        .await
    }

    /// Waits until the stage's action in the status API is of `kind`.
    pub(crate) async fn action(&self, stage: &str, kind: &str) -> Value {
        self.stage_where(stage, &format!("be {kind}"), |st| {
            st["action"]["kind"] == kind
        })
        .await
    }

    async fn delete(&self, path: &str, auth: &str) -> (u16, Value) {
        let answer = self
            .client
            .delete(format!("{}{path}", self.base))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let body = answer.bytes().await.unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn metrics(&self) -> String {
        let answer = self.client.get(format!("{}/metrics", self.base));
        answer.send().await.unwrap().text().await.unwrap()
    }
}

pub(crate) fn stage<'a>(pipeline: &'a Value, name: &str) -> &'a Value {
    pipeline["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {pipeline:#}"))
}

#[tokio::test]
async fn the_api_shows_pipelines_and_approves_with_every_refusal_on_the_way() {
    let env = Env::start();
    let (token_line, webhooks) = secrets(&env);
    let config = env.write(
        &env.config("1h", AUTO, MANUAL)
            .server_setting(&token_line)
            .table(&webhooks),
    );
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    // The first listing hangs for a while, so /readyz is seen refusing first.
    env.proxy.inject(
        support::proxy::Fault::delay(1500)
            .on("GET")
            .path_contains("/tags/list")
            .times(1),
    );
    // At trace level, so the check at the end covers every library's logging too.
    let daemon = Daemon::start_with(&config, env.dir.path().join("daemon.log"), "trace");
    let api = Api::new(daemon.address().await);
    let (code, health) = api.get("/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{health}");
    assert!(
        health["revision"].as_str().is_some_and(|r| !r.is_empty()),
        "{health}"
    );
    // `retagd version` asks the same endpoint.
    let out = support::pipeline::run_plain(&["version", "--url", &api.base]).await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("daemon at {}: retagd ", api.base)),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (code, body) = api.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["not_reconciled_yet"], json!(["api-gateway"]));
    api.ready().await;

    // Status: staging got rc.1 automatically; production waits for approval.
    api.current("staging", "v1.2.0-rc.1").await;
    let (code, all) = api.get("/api/v1/pipelines").await;
    assert_eq!(code, 200);
    let p = &all["pipelines"][0];
    assert_eq!(p["pipeline"], "api-gateway");
    assert!(p["last_reconcile"].is_string(), "{p:#}");
    assert_eq!(p["last_error"], Value::Null);
    assert_eq!(stage(p, "staging")["current"]["digest"], dev1.as_str());
    assert_eq!(
        stage(p, "staging")["last_promotion"]["to_tag"],
        "v1.2.0-rc.1"
    );
    let pending = &stage(p, "production")["pending"];
    assert_eq!(pending["from_tag"], "v1.2.0-rc.1", "{p:#}");
    assert_eq!(pending["to_tag"], "v1.2.0");
    assert_eq!(pending["digest"], dev1.as_str());
    assert_eq!(api.get("/api/v1/pipelines/nope").await.0, 404);
    assert_eq!(api.get("/api/v1/nothing").await.0, 404);
    let (code, body) = api
        .get("/api/v1/pipelines/api-gateway/stages/production/promote")
        .await;
    assert_eq!(code, 405);
    assert!(body["error"].is_string(), "{body}");

    // Refusals, each with its status and a message saying what was wrong.
    let bearer = format!("Bearer {TOKEN}");
    let good = Some(bearer.as_str());
    let (code, body) = api.promote("api-gateway", "production", None, "").await;
    assert_eq!(code, 401, "{body}");
    let (code, body) = api
        .promote(
            "api-gateway",
            "production",
            Some("Bearer api-token-7f3a9d"),
            "",
        )
        .await;
    assert_eq!(code, 401, "{body}");
    assert!(!body.to_string().contains("7f3a9"), "{body}");
    let (code, body) = api.promote("nope", "production", good, "").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no pipeline \"nope\""),
        "{body}"
    );
    let (code, body) = api.promote("api-gateway", "qa", good, "").await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = api.promote("api-gateway", "dev", good, "").await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = api
        .promote("api-gateway", "production", good, "{\"tag\": 3}")
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("tag"), "{body}");
    let (code, body) = api
        .promote("api-gateway", "production", good, "{\"tag\": \"../../v2\"}")
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = api
        .promote("api-gateway", "production", good, "{\"tags\": \"v1\"}")
        .await;
    assert_eq!(code, 400, "{body}");
    let huge = format!("{{\"tag\": \"{}\"}}", "x".repeat(64 * 1024));
    let (code, body) = api.promote("api-gateway", "production", good, &huge).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(env.digest(REPO, "v1.2.0").await, None);

    // The approval itself: answered with what was promoted.
    let (code, body) = api.promote("api-gateway", "production", good, "").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"], "promoted");
    assert_eq!(body["promotion"]["to_tag"], "v1.2.0");
    assert_eq!(body["promotion"]["digest"], dev1.as_str());
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(dev1.as_str())
    );
    let production = api.current("production", "v1.2.0").await;
    assert_eq!(production["pending"], Value::Null);
    let (code, body) = api.promote("api-gateway", "production", good, "").await;
    assert_eq!(
        (code, body["result"].as_str()),
        (200, Some("up_to_date")),
        "{body}"
    );

    // Another image as rc.2, approved by tag: v1.2.0 exists with dev1, so a conflict.
    let other = env.push(REPO, "v1.2.0-rc.2", 2).await;
    let (code, body) = api
        .promote(
            "api-gateway",
            "production",
            good,
            "{\"tag\": \"v1.2.0-rc.2\"}",
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["result"], "conflict");
    assert_eq!(body["existing_digest"], dev1.as_str());
    assert_eq!(body["promotion"]["digest"], other.as_str());
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(dev1.as_str())
    );

    // `retagd status` and `retagd approve` use the same API.
    let url = api.base.clone();
    let out = support::process::retagd()
        .args(["status", "--url", &url])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", support::pipeline::text(&out));
    assert!(table.contains("production  v1.2.0 "), "{table}");
    let out = support::process::retagd()
        .args([
            "approve",
            "--url",
            &url,
            "--pipeline",
            "api-gateway",
            "--stage",
            "production",
        ])
        .env("RETAGD_API_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        support::pipeline::text(&out)
    );

    // Webhook refusals.
    let event = br#"{"events":[]}"#.to_vec();
    let (code, _) = api
        .post("/webhooks/distribution", None, event.clone())
        .await;
    assert_eq!(code, 401);
    let (code, _) = api
        .post("/webhooks/distribution", Some("Bearer nope"), event.clone())
        .await;
    assert_eq!(code, 401);
    let (code, _) = api
        .post(
            "/webhooks/gitlab",
            Some(&format!("Bearer {SECRET}")),
            event.clone(),
        )
        .await;
    assert_eq!(code, 404);
    let (code, _) = api
        .post(
            "/webhooks/distribution",
            Some(&format!("Bearer {SECRET}")),
            b"{".to_vec(),
        )
        .await;
    assert_eq!(code, 400);

    // Without a token file the write API is off; without a secret, the webhooks.
    env.write(&env.config("1h", AUTO, MANUAL));
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded").await;
    let (code, body) = api.promote("api-gateway", "production", good, "").await;
    assert_eq!(code, 403, "{body}");
    let (code, _) = api
        .post(
            "/webhooks/distribution",
            Some(&format!("Bearer {SECRET}")),
            event,
        )
        .await;
    assert_eq!(code, 404);

    let log = daemon.log();
    assert!(log.contains("TRACE"), "the log is not at trace level");
    for secret in [TOKEN, SECRET, "api-token-7f3a9d"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

/// Sends a webhook's head and the first bytes of a body announced as 900,000 bytes, never the
/// rest; returns the answer's status line, or `None` when none came within `wait`.
async fn partial_webhook(
    address: SocketAddr,
    path_and_query: &str,
    header: &str,
    wait: Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: retagd\r\nContent-Type: application/json\r\n\
         Content-Length: 900000\r\n{header}\r\n{{\"events\": ["
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(wait, async {
        let mut buf = [0u8; 4096];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    read.ok()
        .and_then(|()| text.lines().next().map(str::to_owned))
}

#[tokio::test]
async fn a_webhook_without_its_header_or_query_proof_is_refused_before_its_body_is_read() {
    let env = Env::start();
    let (_, webhooks) = secrets(&env);
    let config = env.write(&env.config("1h", AUTO, MANUAL).table(&webhooks));
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let address = daemon.address().await;
    let bearer = format!("Authorization: Bearer {SECRET}\r\n");
    let refused = [
        ("/webhooks/distribution", ""),
        ("/webhooks/distribution", "Authorization: Bearer nope\r\n"),
        ("/webhooks/harbor", "Authorization: nope\r\n"),
        ("/webhooks/dockerhub?token=nope", ""),
        // GitHub's proof covers the body, but a request without one need not be read either.
        ("/webhooks/github", ""),
    ];
    for (path, header) in refused {
        let started = Instant::now();
        let status = partial_webhook(address, path, header, Duration::from_secs(5)).await;
        assert_eq!(
            status.as_deref(),
            Some("HTTP/1.1 401 Unauthorized"),
            "{path} {header:?}"
        );
        eprintln!("{path}: 401 after {:?}", started.elapsed());
    }
    // With a proof the body is awaited: the quick 401s above were not the server giving up on
    // every request with a short body.
    let signature = format!("X-Hub-Signature-256: sha256={}\r\n", "00".repeat(32));
    let waiting = [
        ("/webhooks/distribution", bearer.as_str()),
        ("/webhooks/github", signature.as_str()),
    ];
    for (path, header) in waiting {
        let status = partial_webhook(address, path, header, Duration::from_secs(1)).await;
        assert_eq!(status, None, "{path} answered before its body arrived");
    }
    // And once read, the body is still bounded.
    let (code, body) = Api::new(address)
        .post(
            "/webhooks/distribution",
            Some(&format!("Bearer {SECRET}")),
            vec![b' '; 1024 * 1024 + 1],
        )
        .await;
    assert_eq!(code, 413, "{body}");
}

#[tokio::test]
async fn a_push_reported_by_the_registry_is_promoted_at_once() {
    // The registry must know where retagd listens before retagd starts.
    let port = support::free_port();
    let registry = Registry::start(RegistryOptions::anonymous().with_notifications(
        &format!("http://127.0.0.1:{port}/webhooks/distribution"),
        SECRET,
    ));
    let proxy = FaultProxy::start(registry.addr);
    let env = Env::with(registry, proxy);
    let (_, webhooks) = secrets(&env);
    let config = env.write(&env.config("1h", AUTO, MANUAL).table(&webhooks));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let api = Api::new(daemon.address().await);
    api.ready().await;
    assert_eq!(wait_tag(&env, REPO, "v1.2.0-rc.1").await, dev1);

    // The interval is an hour: only the registry's notification can make rc.2 now.
    let pushed = Instant::now();
    let dev2 = env.push(REPO, "v1.2.0-dev.2", 2).await;
    let digest = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Some(d) = env.digest(REPO, "v1.2.0-rc.2").await {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let notes: Vec<String> = env
            .registry
            .log()
            .lines()
            .filter(|l| !l.contains("HEAD") && !l.starts_with("127.0.0.1 - -"))
            .map(str::to_string)
            .collect();
        panic!(
            "no rc.2 2 s after the push; daemon log:\n{}\nregistry log:\n{}",
            daemon.log(),
            notes.join("\n")
        )
    });
    let latency = pushed.elapsed();
    assert_eq!(digest, dev2);
    eprintln!("push to rc.2: {latency:?}");
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains(r#"retagd_webhooks_total{result="accepted",source="distribution"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn prometheus_scrapes_which_version_is_in_each_stage() {
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let address = daemon.address().await;
    let api = Api::new(address);
    api.current("staging", "v1.2.0-rc.1").await;

    let exposition = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    let exposition = exposition.text().await.unwrap();
    assert_eq!(
        support::prometheus::promtool_check_metrics(&exposition),
        "",
        "{exposition}"
    );
    for family in [
        "retagd_stage_version_info",
        "retagd_pending_promotion_info",
        "retagd_promotions_total",
        "retagd_reconcile_duration_seconds_bucket",
        "retagd_last_successful_reconcile_timestamp_seconds",
        "retagd_registry_requests_total",
        "retagd_registry_request_duration_seconds_bucket",
        "retagd_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(
            exposition.contains(&format!("\n{family}{{"))
                || exposition.contains(&format!("\n{family} ")),
            "{family} missing:\n{exposition}"
        );
    }

    let prometheus = Prometheus::start(&[address]);
    prometheus.wait_for_target_up().await;
    let query = r#"retagd_stage_version_info{pipeline="api-gateway",stage="staging"}"#;
    let tag_in_staging = || async {
        let result = prometheus.query(query).await;
        let series = result.as_array()?;
        (series.len() == 1).then(|| {
            (
                series[0]["metric"]["tag"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                series[0]["metric"]["digest"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
    };
    let first = support::poll_until("Prometheus to see staging", DEADLINE, || async {
        tag_in_staging()
            .await
            .filter(|(tag, _)| tag == "v1.2.0-rc.1")
    })
    .await;
    assert_eq!(first.1, dev1);

    let dev2 = env.push(REPO, "v1.2.0-dev.2", 2).await;
    let second = support::poll_until(
        "Prometheus to see the new staging version",
        DEADLINE,
        || async {
            tag_in_staging()
                .await
                .filter(|(tag, _)| tag == "v1.2.0-rc.2")
        },
    )
    .await;
    assert_eq!(second.1, dev2);
    let pending = prometheus
        .query(r#"retagd_pending_promotion_info{pipeline="api-gateway"}"#)
        .await;
    assert_eq!(pending[0]["metric"]["to_tag"], "v1.2.0", "{pending:#}");
    let promotions = prometheus
        .query(
            r#"retagd_promotions_total{pipeline="api-gateway",stage="staging",result="success"}"#,
        )
        .await;
    assert_eq!(promotions[0]["value"][1], "2", "{promotions:#}");
}

/// A receiver of notifications: every body it got.
#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(String, Value)>>>);

async fn inbox() -> (Inbox, SocketAddr) {
    use axum::extract::{Path, State};
    let inbox = Inbox::default();
    let app = axum::Router::new()
        .route(
            "/{channel}",
            axum::routing::post(
                |State(inbox): State<Inbox>,
                 Path(channel): Path<String>,
                 body: axum::body::Bytes| async move {
                    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    inbox.0.lock().unwrap().push((channel, value));
                    "ok"
                },
            ),
        )
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (inbox, address)
}

#[tokio::test]
async fn promotions_are_notified_in_json_and_slack_formats() {
    let (inbox, address) = inbox().await;
    let env = Env::start();
    let slack_file = env.dir.path().join("slack-url");
    std::fs::write(&slack_file, format!("http://{address}/slack\n")).unwrap();
    let config = env.write(&env.config("1h", AUTO, MANUAL).table(&format!(
        "[[notifications]]\nurl = \"http://{address}/json\"\n\n\
             [[notifications]]\nurl_file = \"{}\"\nformat = \"slack\"\nevents = [\"success\"]\n",
        slack_file.display()
    )));
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let api = Api::new(daemon.address().await);
    api.current("staging", "v1.2.0-rc.1").await;

    let got = support::poll_until("the three notifications", DEADLINE, || async {
        let got = inbox.0.lock().unwrap().clone();
        (got.len() >= 3).then_some(got)
    })
    .await;
    let json: Vec<&Value> = got
        .iter()
        .filter(|(c, _)| c == "json")
        .map(|(_, v)| v)
        .collect();
    let success = json.iter().find(|v| v["event"] == "success").unwrap();
    assert_eq!(success["pipeline"], "api-gateway");
    assert_eq!(success["stage"], "staging");
    assert_eq!(success["to_tag"], "v1.2.0-rc.1");
    assert_eq!(success["digest"], dev1.as_str());
    let pending = json.iter().find(|v| v["event"] == "pending").unwrap();
    assert_eq!(pending["stage"], "production");
    assert_eq!(pending["to_tag"], "v1.2.0");
    let slack: Vec<&Value> = got
        .iter()
        .filter(|(c, _)| c == "slack")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(slack.len(), 1, "{got:?}");
    assert!(
        slack[0]["text"].as_str().unwrap().contains("v1.2.0-rc.1"),
        "{got:?}"
    );

    // The pending promotion is not announced again on the next reconciles.
    let reconciles = || daemon.log().matches(" reconciled ").count();
    let before = reconciles();
    daemon.signal("HUP");
    support::poll_until("a reconcile after the reload", DEADLINE, || async {
        (reconciles() > before).then_some(())
    })
    .await;
    let pendings = inbox
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["event"] == "pending")
        .count();
    assert_eq!(pendings, 1);
}

#[tokio::test]
async fn a_manual_stage_with_min_age_waits_refuses_an_early_approval_and_takes_one_after() {
    let env = Env::start();
    let (token_line, _) = secrets(&env);
    // A short soak, so the test waits for it by polling rather than sleeping a fixed time. The
    // interval is an hour: the daemon must look again when the soak ends, not an hour later.
    let soak = r#"approval = "manual", min_age = "4s""#;
    let config = env.write(&env.config("1h", AUTO, soak).server_setting(&token_line));
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let api = Api::new(daemon.address().await);
    api.current("staging", "v1.2.0-rc.1").await;
    let (_, p) = api.get("/api/v1/pipelines/api-gateway").await;
    let production = stage(&p, "production");
    assert_eq!(production["action"]["kind"], "waiting", "{p:#}");
    assert!(production["action"]["until"].is_string(), "{p:#}");

    // Too early: 409 with the time the soak ends, and nothing written.
    let bearer = format!("Bearer {TOKEN}");
    let (code, body) = api
        .promote("api-gateway", "production", Some(&bearer), "")
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["result"], "waiting", "{body}");
    assert!(body["until"].is_string(), "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("min_age"),
        "{body}"
    );
    assert_eq!(env.digest(REPO, "v1.2.0").await, None);

    // Once the soak has passed, the stage is pending and the approval promotes.
    support::poll_until("production to be pending", DEADLINE, || async {
        let (_, p) = api.get("/api/v1/pipelines/api-gateway").await;
        (stage(&p, "production")["action"]["kind"] == "pending").then_some(())
    })
    .await;
    // An approval of a digest staging does not hold (the approver looked at something else):
    // 409 moved, nothing written. The digest shown as pending is the one that works.
    let (_, p) = api.get("/api/v1/pipelines/api-gateway").await;
    assert_eq!(stage(&p, "production")["pending"]["digest"], dev1.as_str());
    let other = format!("sha256:{}", "0".repeat(64));
    let (code, body) = api
        .promote(
            "api-gateway",
            "production",
            Some(&bearer),
            &json!({ "digest": other }).to_string(),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        (&body["result"], &body["expected"], &body["found"]),
        (&json!("moved"), &json!(other), &json!(dev1)),
        "{body}"
    );
    assert_eq!(env.digest(REPO, "v1.2.0").await, None);
    let (code, body) = api
        .promote(
            "api-gateway",
            "production",
            Some(&bearer),
            &json!({ "digest": "sha256:nothex" }).to_string(),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().starts_with("digest: "),
        "{body}"
    );
    let (code, body) = api
        .promote(
            "api-gateway",
            "production",
            Some(&bearer),
            &json!({ "digest": dev1 }).to_string(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"], "promoted", "{body}");
    assert_eq!(body["forced"], false, "{body}");
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(dev1.as_str())
    );
}

#[tokio::test]
async fn named_approvers_each_approve_an_unknown_token_is_refused_and_the_status_names_who() {
    let env = Env::start();
    let (token_line, _) = secrets(&env);
    let alice = env.dir.path().join("alice-token");
    let ci = env.dir.path().join("ci-token");
    // CRLF and no newline: the secret-file rule reads both.
    std::fs::write(&alice, "alice-7a1f\r\n").unwrap();
    std::fs::write(&ci, "ci-93be").unwrap();
    let approvers = format!(
        "\n[[server.approvers]]\nname = \"alice\"\ntoken_file = \"{}\"\n\n[[server.approvers]]\nname = \"ci@github\"\ntoken_file = \"{}\"\n",
        alice.display(),
        ci.display()
    );
    let config = env.write(
        &env.config("1h", AUTO, MANUAL)
            .server_setting(&token_line)
            .table(&approvers),
    );
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let api = Api::new(daemon.address().await);
    api.current("staging", "v1.2.0-rc.1").await;

    let (code, body) = api
        .promote("api-gateway", "production", Some("Bearer nobody-0000"), "")
        .await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(env.digest(REPO, "v1.2.0").await, None);

    // alice approves production with a reason; the status and the log name her, never a token.
    let body = json!({"digest": dev1, "reason": "CAB-1234 signed off"}).to_string();
    let (code, answer) = api
        .promote(
            "api-gateway",
            "production",
            Some("Bearer alice-7a1f"),
            &body,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let (_, p) = api.get("/api/v1/pipelines/api-gateway").await;
    let last = &stage(&p, "production")["last_promotion"];
    assert_eq!(last["approved_by"], "alice", "{p:#}");
    assert_eq!(last["reason"], "CAB-1234 signed off", "{p:#}");
    assert_eq!(last["forced"], false, "{p:#}");
    // The automatic promotion into staging has no approver.
    assert_eq!(
        stage(&p, "staging")["last_promotion"]["approved_by"],
        Value::Null
    );

    // The second approver's token works too (a new build, up to production again).
    let dev2 = env.push(REPO, "v1.2.1-dev.1", 2).await;
    // The interval is an hour: a reload makes the pipeline look now.
    daemon.signal("HUP");
    api.current("staging", "v1.2.1-rc.1").await;
    let body = json!({ "digest": dev2 }).to_string();
    let (code, answer) = api
        .promote("api-gateway", "production", Some("Bearer ci-93be"), &body)
        .await;
    assert_eq!(code, 200, "{answer}");
    let (_, p) = api.get("/api/v1/pipelines/api-gateway").await;
    assert_eq!(
        stage(&p, "production")["last_promotion"]["approved_by"],
        "ci@github",
        "{p:#}"
    );
    let log = daemon.log();
    assert!(log.contains("approved_by=alice"), "{log}");
    for token in ["alice-7a1f", "ci-93be", TOKEN] {
        assert!(!log.contains(token), "a token in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_freeze_stops_the_next_automatic_promotion_survives_a_restart_and_lifting_it_promotes() {
    let env = Env::start();
    let (token_line, _) = secrets(&env);
    let alice = env.dir.path().join("alice-token");
    std::fs::write(&alice, "alice-7a1f\n").unwrap();
    let approvers = format!(
        "\n[[server.approvers]]\nname = \"alice\"\ntoken_file = \"{}\"\n",
        alice.display()
    );
    let config = env.write(
        &env.config("1h", AUTO, MANUAL)
            .server_setting(&token_line)
            .table(&approvers),
    );
    env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let api = Api::new(daemon.address().await);
    api.current("staging", "v1.2.0-rc.1").await;
    let freeze = |body: Value, auth: Option<&'static str>| {
        let api = &api;
        async move {
            api.post("/api/v1/freeze", auth, body.to_string().into_bytes())
                .await
        }
    };

    // Refusals first: no token, unknown names (with the known ones), a past or bad `until`.
    let body = json!({"reason": "incident 42", "stages": ["staging"]});
    let (code, _) = freeze(body.clone(), None).await;
    assert_eq!(code, 401);
    for (body, status, says) in [
        (
            json!({"reason": "x", "pipelines": ["web"]}),
            404,
            "pipelines: api-gateway",
        ),
        (
            json!({"reason": "x", "stages": ["prod"]}),
            404,
            "stages: dev, production, staging",
        ),
        (
            json!({"reason": "x", "until": "2020-01-01T00:00:00Z"}),
            400,
            "not in the future",
        ),
        (json!({"reason": "x", "until": "tomorrow"}), 400, "RFC 3339"),
        (json!({"reason": " "}), 400, "reason"),
    ] {
        let (code, answer) = freeze(body.clone(), Some("Bearer alice-7a1f")).await;
        assert_eq!(code, status, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}: {answer}");
    }
    let (code, answer) = api
        .delete("/api/v1/freeze/f-00000000", "Bearer alice-7a1f")
        .await;
    assert_eq!(code, 404, "{answer}");

    // alice freezes staging; the next dev build is not promoted.
    let (code, created) = freeze(body, Some("Bearer alice-7a1f")).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["by"], "alice");
    let id = created["id"].as_str().unwrap().to_string();
    let (_, listed) = api.get("/api/v1/freeze").await;
    assert_eq!(listed["freezes"][0]["id"], id.as_str(), "{listed}");
    env.push(REPO, "v1.2.1-dev.1", 2).await;
    daemon.signal("HUP");
    let st = api.action("staging", "frozen").await;
    assert_eq!(st["frozen"]["reason"], "incident 42", "{st:#}");
    assert_eq!(st["action"]["promotion"]["to_tag"], "v1.2.1-rc.1", "{st:#}");
    assert_eq!(env.digest(REPO, "v1.2.1-rc.1").await, None);
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(r#"retagd_stage_frozen{pipeline="api-gateway",stage="staging"} 1"#),
        "{metrics}"
    );
    // A stage never frozen has no series (one per stage of a large fleet would cost memory).
    assert!(
        !metrics.contains(r#"retagd_stage_frozen{pipeline="api-gateway",stage="production"}"#),
        "{metrics}"
    );
    // An approval of a frozen stage is refused with the freeze.
    let (code, answer) = api
        .promote("api-gateway", "staging", Some("Bearer alice-7a1f"), "")
        .await;
    assert_eq!(
        (code, &answer["result"]),
        (409, &json!("frozen")),
        "{answer}"
    );
    assert_eq!(env.digest(REPO, "v1.2.1-rc.1").await, None);

    // The freeze survives a restart.
    drop(daemon);
    let daemon = Daemon::start(&config, env.dir.path().join("daemon2.log"));
    let api = Api::new(daemon.address().await);
    api.action("staging", "frozen").await;
    assert_eq!(env.digest(REPO, "v1.2.1-rc.1").await, None);

    // Lifting it promotes at once, without waiting for the hour's interval.
    let (code, answer) = api
        .delete(&format!("/api/v1/freeze/{id}"), "Bearer alice-7a1f")
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["lifted"][0]["id"], id.as_str());
    wait_tag(&env, REPO, "v1.2.1-rc.1").await;
    let (_, listed) = api.get("/api/v1/freeze").await;
    assert_eq!(listed["freezes"], json!([]), "{listed}");
    support::poll_until("the frozen series back at 0", DEADLINE, || async {
        api.metrics()
            .await
            .contains(r#"retagd_stage_frozen{pipeline="api-gateway",stage="staging"} 0"#)
            .then_some(())
    })
    .await;
    daemon.wait_log("unfrozen").await;
    let log = daemon.log();
    assert!(log.contains("by=alice"), "{log}");
    assert!(!log.contains("alice-7a1f"), "a token in the log:\n{log}");
}

#[tokio::test]
async fn a_calendar_freeze_holds_until_it_ends_then_the_daemon_promotes_without_waiting_an_interval(
) {
    let env = Env::start();
    let now = std::time::SystemTime::now();
    let rfc3339 = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    // Whole seconds: the freeze ends 3 to 4 s from now.
    let until = now + Duration::from_secs(4);
    let freezes = format!(
        "\n[[freezes]]\nreason = \"release calendar\"\nfrom = \"{}\"\nuntil = \"{}\"\nstages = [\"staging\"]\n",
        rfc3339(now - Duration::from_secs(60)),
        rfc3339(until)
    );
    let config = env.write(&env.config("1h", AUTO, MANUAL).table(&freezes));
    env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let api = Api::new(daemon.address().await);
    let st = api.action("staging", "frozen").await;
    assert_eq!(st["frozen"]["id"], "config-1", "{st:#}");
    assert_eq!(st["frozen"]["by"], "config", "{st:#}");
    // The interval is an hour: only the freeze's end can wake the pipeline in time.
    wait_tag(&env, REPO, "v1.2.0-rc.1").await;
    assert!(std::time::SystemTime::now() >= until - Duration::from_secs(1));
}

/// `retagd ARGS --config CONFIG` with these environment variables besides the harness's.
async fn run_with(
    config: &std::path::Path,
    args: &[&str],
    vars: &[(&str, &str)],
) -> std::process::Output {
    let mut command = support::process::retagd();
    command.args(args).arg("--config").arg(config);
    for (key, value) in vars {
        command.env(key, value);
    }
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn retagd_promote_goes_through_a_running_daemon_which_shows_it_at_once() {
    let env = Env::start();
    let (token_line, _) = secrets(&env);
    // An hour between looks: only going through the daemon shows the promotion now. The file
    // says `listen = "127.0.0.1:0"`; the daemon's port comes back from its log.
    let config = env.write(&env.config("1h", AUTO, MANUAL).server_setting(&token_line));
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    let address = daemon.address().await;
    let api = Api::new(address);
    api.current("staging", "v1.2.0-rc.1").await;
    let url = format!("http://{address}");
    let promote = |digest: &str| -> Vec<String> {
        [
            "promote",
            "--pipeline",
            "api-gateway",
            "--stage",
            "production",
            "--digest",
            digest,
            "--reason",
            "from a terminal",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let with_url = |mut args: Vec<String>| {
        args.extend(["--url".to_string(), url.clone()]);
        args
    };
    fn refs(args: &[String]) -> Vec<&str> {
        args.iter().map(String::as_str).collect()
    }

    // No --url: the daemon at the configuration's server.listen (here the address the daemon
    // got, given as the daemon would be given it); the token from server.api_token_file.
    let args = promote(&dev1);
    let listen = address.to_string();
    let out = run_with(
        &config,
        &refs(&args),
        &[("RETAGD_SERVER__LISTEN", listen.as_str())],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("approving through the daemon at {url}")),
        "{stderr}"
    );
    let (_, p) = api.get("/api/v1/pipelines/api-gateway").await;
    let last = &stage(&p, "production")["last_promotion"];
    assert_eq!(
        (&last["to_tag"], &last["approved_by"], &last["reason"]),
        (
            &json!("v1.2.0"),
            &json!("api-token"),
            &json!("from a terminal")
        ),
        "{p:#}"
    );
    assert!(api
        .metrics()
        .await
        .contains(r#"retagd_promotions_total{pipeline="api-gateway",reason="",result="success",stage="production"} 1"#));

    // --url: the same daemon, which has it already.
    let out = run(&config, &refs(&with_url(args.clone()))).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "already up to date: api-gateway/production has it as v1.2.0\n"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("approving through the daemon at"),
        "{}",
        text(&out)
    );

    // No daemon any more: promoted here, and said once, naming where retagd looked; not said
    // with --local.
    drop(daemon);
    for (n, (version, mode)) in [("1", "--url"), ("2", "listen"), ("3", "--local")]
        .iter()
        .enumerate()
    {
        let dev = env
            .push(REPO, &format!("v1.2.{version}-dev.1"), 2 + n as u64)
            .await;
        let out = run(&config, &["reconcile"]).await;
        assert!(out.status.success(), "{}", text(&out));
        let args = match *mode {
            "--url" => with_url(promote(&dev)),
            "listen" => promote(&dev),
            _ => {
                let mut args = promote(&dev);
                args.push("--local".into());
                args
            }
        };
        let out = run(&config, &refs(&args)).await;
        assert!(out.status.success(), "{mode}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let notes = stderr.matches("no retagd answers at").count();
        match *mode {
            "--url" => assert!(
                notes == 1
                    && stderr
                        .contains(&format!("no retagd answers at {url} (--url or RETAGD_URL)")),
                "{stderr}"
            ),
            "listen" => assert!(
                notes == 1
                    && stderr.contains("no retagd answers at http://127.0.0.1:0 (server.listen"),
                "{stderr}"
            ),
            _ => assert_eq!(notes, 0, "{stderr}"),
        }
        assert_eq!(
            env.digest(REPO, &format!("v1.2.{version}"))
                .await
                .as_deref(),
            Some(dev.as_str()),
            "{mode}"
        );
    }
}
