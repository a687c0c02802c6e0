//! Benchmark 4, push-to-promotion latency: a registry that POSTs its push events to
//! `retagd run` (interval 1 h, so only the webhook can start a reconcile); new dev builds are
//! pushed one after the other, and for each the time from the end of its push (the manifest
//! PUT answered) to its rc tag answering a HEAD (polled every 2 ms) is taken.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, AccessLog, Counts, Stages};
use crate::support::images::{Pusher, TestImage};
use crate::support::pipeline::Daemon;
use crate::support::registry::{Registry, RegistryOptions};

const SECRET: &str = "bench-webhook-secret";
const REPO: &str = "hooks/app";
/// Longest wait for one promotion before the benchmark gives up.
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `pushes` pushes; returns the latencies and what they cost.
pub async fn run(pushes: usize, work: &std::path::Path) -> Value {
    // The registry must know where retagd listens before retagd starts. HEADs are pull events:
    // the registry is told not to send those (a real setup wants pushes only), so the polling
    // below does not queue events ahead of the next push.
    let port = crate::support::free_port();
    let registry = Registry::start(
        RegistryOptions::anonymous()
            .with_notifications(
                &format!("http://127.0.0.1:{port}/webhooks/distribution"),
                SECRET,
            )
            .ignoring_pull_events(),
    );
    let secret = work.join("webhook-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let head = format!(
        "\n[server]\nlisten = \"127.0.0.1:{port}\"\n\n[webhooks]\nsecret_file = \"{}\"\n",
        secret.display()
    );
    let config = work.join("webhook.toml");
    std::fs::write(
        &config,
        common::config(
            &registry.url(),
            &[REPO.to_string()],
            (Stages::Two, true),
            "1h",
            &head,
        ),
    )
    .unwrap();
    let base = registry.url();
    let pusher = Pusher::new(&base);
    let client = common::client("retagd-bench-check", 2);
    let first = TestImage::generate(5000, &[1024]);
    pusher.push_image(REPO, &first, Some("v1.2.0-dev.1")).await;
    let daemon = Daemon::start_with(
        &config,
        work.join("webhook-daemon.log"),
        "info,retagd=debug",
    );
    daemon.address().await;
    wait_for(&client, &base, "v1.2.0-rc.1", Instant::now(), &daemon).await;
    // Let the first reconcile's follow-ups and echoes settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let log = AccessLog::new(registry.log_path());
    let mark = log.mark();
    let mut latencies = Vec::new();
    for k in 0..pushes {
        let n = k + 2;
        let image = TestImage::generate(5000 + n as u64, &[1024]);
        pusher
            .push_image(REPO, &image, Some(&format!("v1.2.0-dev.{n}")))
            .await;
        let pushed = Instant::now();
        let latency = wait_for(&client, &base, &format!("v1.2.0-rc.{n}"), pushed, &daemon).await;
        let digest = common::head_digest(&client, &base, REPO, &format!("v1.2.0-rc.{n}")).await;
        assert_eq!(digest.as_deref(), Some(image.digest.as_str()));
        latencies.push(latency.as_secs_f64() * 1000.0);
        // The daemon's follow-up and the echo of its own push finish before the next build.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = Counts::of(&log.since(mark).await, |a| a.agent.starts_with("retagd/"));
    let log_text = daemon.log();
    drop(daemon);
    // Kept with the work directory (`--keep`) for a look at the order of events.
    let _ = std::fs::copy(registry.log_path(), work.join("webhook-registry.log"));
    let slow = latencies.iter().filter(|l| **l > 250.0).count();
    let p50 = common::percentile(&latencies, 50.0);
    let p99 = common::percentile(&latencies, 99.0);
    eprintln!(
        "webhook: {pushes} pushes, p50 {p50:.1} ms, p99 {p99:.1} ms, {slow} over 250 ms, {:.1} retagd requests per push ({})",
        counts.total() as f64 / pushes as f64,
        counts.line()
    );
    json!({
        "pushes": pushes,
        "latencies_ms": latencies,
        "p50_ms": p50,
        "p90_ms": common::percentile(&latencies, 90.0),
        "p99_ms": p99,
        "max_ms": common::percentile(&latencies, 100.0),
        "over_250ms": slow,
        "retagd_requests": counts.json(),
        "retagd_requests_per_push": counts.total() as f64 / pushes as f64,
        "reconciles_logged": log_text.matches("reconciled").count(),
    })
}

/// Polls `REPO:tag` with HEAD every 2 ms; the time from `since` until it answered 200.
async fn wait_for(
    client: &reqwest::Client,
    base: &str,
    tag: &str,
    since: Instant,
    daemon: &Daemon,
) -> Duration {
    loop {
        // The CNCF registry answers a read racing its own write of the tag with a 500 now and
        // then ("invalid checksum digest format"): not there yet.
        if common::head(client, base, REPO, tag).await.1.is_some() {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < DEADLINE,
            "{REPO}:{tag} not promoted within {DEADLINE:?}; daemon log:\n{}",
            common::tail(&daemon.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
