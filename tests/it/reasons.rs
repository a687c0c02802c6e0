//! The `reason` label end to end: a 429, a 401 and a digest mismatch from a real registry (the
//! fault proxy in front of it injects them) show as three different reasons in `/metrics`.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::support;

use support::config::{Pipeline, AUTO, MANUAL};
use support::pipeline::{Daemon, Env, DEADLINE};
use support::proxy::Fault;

/// The three pipelines' repositories, and the reason each one's fault must show as.
const CASES: [(&str, &str, &str); 3] = [
    ("limited", "reasons/limited", "rate_limited"),
    ("denied", "reasons/denied", "auth"),
    ("altered", "reasons/altered", "digest_mismatch"),
];

#[tokio::test]
async fn a_429_a_401_and_a_digest_mismatch_are_three_reasons_in_the_metrics() {
    let env = Env::start();
    for (i, (_, repo, _)) in CASES.iter().enumerate() {
        env.push(repo, "v1.0.0-dev.1", 40 + i as u64).await;
    }
    // Every write of the rc tag is refused as over the limit (with no Retry-After, so the
    // client's own backoff bounds the retries); every tag listing of one repository needs
    // credentials the configuration does not have; every manifest read of the third comes back
    // with one byte changed.
    env.proxy.inject(
        Fault::status(429)
            .on("PUT")
            .path_contains("/reasons/limited/manifests/")
            .times(usize::MAX),
    );
    env.proxy.inject(
        Fault::status(401)
            .on("GET")
            .path_contains("/reasons/denied/tags/list")
            .times(usize::MAX),
    );
    env.proxy.inject(
        Fault::corrupt_byte()
            .on("GET")
            .path_contains("/reasons/altered/manifests/")
            .times(usize::MAX),
    );
    let config = CASES
        .iter()
        .fold(env.config("1s", AUTO, MANUAL), |config, (name, repo, _)| {
            config.pipeline(Pipeline::example(name, repo, AUTO, MANUAL))
        });
    let config = env.write(&config);
    let daemon = Daemon::start(&config, env.dir.path().join("retagd.log"));
    let metrics = format!("http://{}/metrics", daemon.address().await);
    let client = support::http_client();
    let text = support::poll_until("every reason in /metrics", DEADLINE, || async {
        let text = client.get(&metrics).send().await.ok()?.text().await.ok()?;
        CASES
            .iter()
            .all(|(name, _, reason)| {
                text.contains(&format!(
                    "retagd_reconcile_errors_total{{pipeline=\"{name}\",reason=\"{reason}\"}}"
                ))
            })
            .then_some(text)
    })
    .await;
    // The failed copies count as promotion failures with the same reasons; the listing that
    // was refused never got as far as a promotion.
    for (name, reason) in [("limited", "rate_limited"), ("altered", "digest_mismatch")] {
        let series = format!(
            "retagd_promotions_total{{pipeline=\"{name}\",reason=\"{reason}\",result=\"failure\",stage=\"staging\"}}"
        );
        assert!(text.contains(&series), "no {series} in:\n{text}");
    }
    assert!(
        !text.contains("pipeline=\"denied\",reason=\"auth\",result"),
        "a refused listing counted as a promotion:\n{text}"
    );
    // Each pipeline shows its own reason only.
    for (name, _, reason) in CASES {
        for (_, _, other) in CASES {
            if other != reason {
                let wrong = format!(
                    "retagd_reconcile_errors_total{{pipeline=\"{name}\",reason=\"{other}\"}}"
                );
                assert!(!text.contains(&wrong), "{wrong} in:\n{text}");
            }
        }
    }
    // The example pipeline, which no fault touches, has no error series at all.
    assert!(!text.contains("retagd_reconcile_errors_total{pipeline=\"api-gateway\""));
}
