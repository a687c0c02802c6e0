//! Integration-test harness: real registries (`docker-registry`), a real Prometheus (and
//! `promtool`), a Docker token server, a fault-injecting reverse proxy, generated PKI and
//! deterministic test images.
//!
//! `tests/it/main.rs` declares it once for every topic module (the fleet benchmark includes it by
//! path). Every server binds a loopback port chosen by the kernel (Prometheus, which cannot
//! report such a port, gets a free one picked just before it starts, and a new one if it loses
//! that race) and is stopped when its handle is dropped, also when the test panics. The in-process servers (token server, proxy, [`server`]) run on
//! their own thread and runtime, so they keep answering whatever the test's runtime does (even a
//! blocking call such as running the `retagd` binary with `std::process::Command`).

// The fleet benchmark (benches/fleet) uses only a part of the harness.
#![allow(dead_code)]

pub mod config;
pub mod cosign;
pub mod images;
pub mod pipeline;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod token;

use std::future::Future;
use std::time::{Duration, Instant};

/// How long harness helpers wait for something that should happen almost at once (a process
/// listening, a file appearing) before failing the test with a message.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 10 ms until it returns `Some`, and panics naming `what` when `timeout`
/// passes first. Tests wait for events this way instead of sleeping a fixed time.
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A loopback port that was free a moment ago, for a server that must be named before it starts
/// (Prometheus, or a daemon a registry's webhooks are configured to reach).
pub fn free_port() -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to pick a port");
    listener
        .local_addr()
        .expect("local address of the port picker")
        .port()
}

/// A plain HTTP client for tests: no proxy from the environment, no automatic redirects (a
/// test must see a 307 itself), HTTP/1.1 only.
pub fn http_client() -> reqwest::Client {
    client_builder()
        .build()
        .expect("build the test HTTP client")
}

/// Like [`http_client`], but trusting only `ca_pem` (the harness CA) for HTTPS.
pub fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem).expect("parse the test CA certificate");
    client_builder()
        .tls_certs_only([ca])
        .build()
        .expect("build the test HTTPS client")
}

fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .timeout(Duration::from_secs(60))
}

/// `sha256:<hex>` of `bytes`, the OCI digest form.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}
