//! Promotion records, history and drift (issue 17) against the CNCF registry 2.8 and
//! `retagd run`: the registry has no referrers API, so records are listed in the referrers tag
//! schema's `sha256-<hex>` indexes, which these tests read back themselves.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use crate::server::{secrets, stage, Api};
use crate::support;
use support::config::{AUTO, MANUAL};
use support::cosign::{fallback_tag, referrer, referrers_index};
use support::images::{Pusher, OCI_INDEX};
use support::pipeline::{run, run_plain, text, Daemon, Env, DEADLINE, REPO};
use support::registry::Registry;

const RELEASE: &str = "release/api-gateway";
const RECORD: &str = "application/vnd.retagd.promotion.v1+json";

/// The descriptors the `sha256-<hex>` index of `subject` lists in `repo`.
async fn listed(registry: &Registry, repo: &str, subject: &str) -> Vec<Value> {
    match registry
        .read(repo, "manifests", &fallback_tag(subject))
        .await
    {
        Some(bytes) => serde_json::from_slice::<Value>(&bytes).unwrap()["manifests"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

/// The promotion records listed for `subject` in `repo`, each read from its layer, checked
/// to be an artifact about `subject`.
async fn records(registry: &Registry, repo: &str, subject: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for d in listed(registry, repo, subject).await {
        if d["artifactType"] != RECORD {
            continue;
        }
        let digest = d["digest"].as_str().unwrap();
        let manifest: Value =
            serde_json::from_slice(&registry.read(repo, "manifests", digest).await.unwrap())
                .unwrap();
        assert_eq!(manifest["artifactType"], RECORD, "{manifest:#}");
        assert_eq!(manifest["subject"]["digest"], subject, "{manifest:#}");
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        let layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let Ok(record) =
            serde_json::from_slice::<Value>(&registry.read(repo, "blobs", layer).await.unwrap())
        else {
            continue;
        };
        out.push(record);
    }
    out
}

/// Waits until `repo` lists a record for `subject` into `stage`; returns it.
async fn record_of(registry: &Registry, repo: &str, subject: &str, stage: &str) -> Value {
    support::poll_until(
        &format!("a record of {stage} in {repo}"),
        DEADLINE,
        || async {
            records(registry, repo, subject)
                .await
                .into_iter()
                .find(|r| r["stage"] == stage)
        },
    )
    .await
}

#[tokio::test]
async fn automatic_and_approved_promotions_leave_records_that_history_reads_back_anywhere() {
    let env = Env::start();
    let (token_line, _) = secrets(&env);
    let alice = env.dir.path().join("alice-token");
    std::fs::write(&alice, "alice-7a1f\n").unwrap();
    let config = env
        .config("1s", AUTO, MANUAL)
        .server_setting(&token_line)
        .table(&format!(
            "\n[[server.approvers]]\nname = \"alice\"\ntoken_file = \"{}\"\n",
            alice.display()
        ))
        .map_pipeline("api-gateway", |p| {
            p.map_stage("production", |s| s.in_repository(RELEASE))
        });
    let path = env.write(&config);
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let daemon = Daemon::start(&path, env.dir.path().join("daemon.log"));
    let api = Api::new(daemon.address().await);
    api.current("staging", "v1.2.0-rc.1").await;

    // The automatic promotion's record, in the target's sha256-<hex> index.
    let auto = record_of(&env.registry, REPO, &dev1, "staging").await;
    let host = env.proxy.host();
    assert_eq!(
        (
            &auto["pipeline"],
            &auto["from"],
            &auto["to"],
            &auto["digest"],
            &auto["approval"],
            &auto["approved_by"],
            &auto["forced"],
        ),
        (
            &json!("api-gateway"),
            &json!({"stage": "dev", "registry": host, "repository": REPO, "tag": "v1.2.0-dev.1"}),
            &json!({"registry": host, "repository": REPO, "tag": "v1.2.0-rc.1"}),
            &json!(dev1),
            &json!("auto"),
            &Value::Null,
            &json!(false),
        ),
        "{auto:#}"
    );
    assert!(auto["time"].as_str().unwrap().ends_with('Z'), "{auto:#}");
    assert!(auto["retagd_version"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    assert!(auto.get("min_age").is_some() && auto.get("reason").is_some());

    // alice approves production (another repository): her record there, and staging's
    // record carried along with the other referrers.
    let body = json!({"digest": dev1, "reason": "CAB-9"}).to_string();
    let (code, answer) = api
        .promote(
            "api-gateway",
            "production",
            Some("Bearer alice-7a1f"),
            &body,
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    let approved = record_of(&env.registry, RELEASE, &dev1, "production").await;
    assert_eq!(
        (
            &approved["approval"],
            &approved["approved_by"],
            &approved["reason"],
            &approved["from"]["tag"],
            &approved["to"],
        ),
        (
            &json!("manual"),
            &json!("alice"),
            &json!("CAB-9"),
            &json!("v1.2.0-rc.1"),
            &json!({"registry": host, "repository": RELEASE, "tag": "v1.2.0"}),
        ),
        "{approved:#}"
    );
    let carried = record_of(&env.registry, RELEASE, &dev1, "staging").await;
    assert_eq!(
        carried, auto,
        "the release carries the record of the step before"
    );

    // The API serves the history, newest first.
    let (code, h) = api
        .get("/api/v1/pipelines/api-gateway/history?limit=10")
        .await;
    assert_eq!(code, 200, "{h}");
    let stages: Vec<&str> = h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["production", "staging"], "{h:#}");
    let (code, _) = api
        .get("/api/v1/pipelines/api-gateway/history?limit=0")
        .await;
    assert_eq!(code, 400);
    let (code, _) = api.get("/api/v1/pipelines/nope/history").await;
    assert_eq!(code, 404);
    drop(daemon);

    // Someone else's artifacts of the record type: garbage JSON, and another pipeline's.
    let subject_size = env
        .registry
        .read(REPO, "manifests", &dev1)
        .await
        .unwrap()
        .len();
    let garbage = referrer(
        &dev1,
        subject_size,
        RECORD,
        b"{\"pipeline\": \"api-gateway\"",
    );
    let mut foreign_record = auto.clone();
    foreign_record["pipeline"] = json!("someone-else");
    let foreign = referrer(
        &dev1,
        subject_size,
        RECORD,
        &serde_json::to_vec(&foreign_record).unwrap(),
    );
    let pusher = Pusher::new(&env.registry.url());
    garbage.push(&pusher, REPO, None).await;
    foreign.push(&pusher, REPO, None).await;
    let mut entries = listed(&env.registry, REPO, &dev1).await;
    entries.push(garbage.descriptor(RECORD));
    entries.push(foreign.descriptor(RECORD));
    pusher
        .push_manifest(
            REPO,
            &fallback_tag(&dev1),
            &referrers_index(&entries),
            OCI_INDEX,
        )
        .await;

    // No daemon, and a state directory nobody used: the history comes from the registry.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_config = env.dir.path().join("fresh.toml");
    let state = env.dir.path().join("state");
    std::fs::write(
        &fresh_config,
        std::fs::read_to_string(&path).unwrap().replace(
            &state.display().to_string(),
            &fresh.path().display().to_string(),
        ),
    )
    .unwrap();
    let out = run(
        &fresh_config,
        &["history", "--pipeline", "api-gateway", "-o", "json"],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = h["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{h:#}");
    assert_eq!(entries[0]["approved_by"], "alice", "{h:#}");
    assert_eq!(entries[1]["approval"], "auto", "{h:#}");
    let skipped = h["skipped"].to_string();
    assert!(skipped.contains("not a promotion record"), "{h:#}");
    assert!(skipped.contains("someone-else"), "{h:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning: skipped a record"), "{stderr}");

    // The table, and one stage only.
    let out = run(
        &fresh_config,
        &[
            "history",
            "--pipeline",
            "api-gateway",
            "--stage",
            "production",
        ],
    )
    .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        table.contains("v1.2.0-rc.1 -> v1.2.0") && table.contains("alice"),
        "{table}"
    );
    assert!(!table.contains("v1.2.0-dev.1 -> v1.2.0-rc.1"), "{table}");
    let out = run(&fresh_config, &["history", "--pipeline", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test]
async fn a_release_tag_moved_by_hand_is_drift_in_metrics_and_status_and_heal_puts_it_back() {
    let env = Env::start();
    let path = env.configure(AUTO, AUTO);
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let mut daemon = Daemon::start(&path, env.dir.path().join("daemon.log"));
    let address = daemon.address().await;
    let api = Api::new(address);
    api.current("production", "v1.2.0").await;

    // Someone pushes other bytes as v1.2.0 by hand.
    let forged = env.push(REPO, "v1.2.0", 9).await;
    let series = "retagd_drift{pipeline=\"api-gateway\",stage=\"production\",tag=\"v1.2.0\"}";
    support::poll_until("retagd_drift to be 1", DEADLINE, || async {
        api.metrics()
            .await
            .contains(&format!("{series} 1"))
            .then_some(())
    })
    .await;
    let st = api
        .stage_where("production", "show drift", |s| {
            s["drift"].as_array().is_some_and(|d| !d.is_empty())
        })
        .await;
    assert_eq!(
        st["drift"][0],
        json!({"tag": "v1.2.0", "expected": dev1, "found": forged, "healed": null, "heal_error": null}),
        "{st:#}"
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(forged.as_str())
    );
    let out = run_plain(&["status", "--url", &format!("http://{address}")]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("drift: v1.2.0"),
        "{}",
        text(&out)
    );

    // A one-shot reconcile sharing the state_dir says so too, and writes nothing.
    let out = run(&path, &["reconcile"]).await;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("drift: v1.2.0 names"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(forged.as_str())
    );

    // heal = true, reloaded: the tag is put back, the heal recorded, the series goes to 0.
    env.write(&env.config("1s", AUTO, r#"approval = "auto", heal = true"#));
    daemon.signal("HUP");
    support::poll_until("v1.2.0 to be put back", DEADLINE, || async {
        (env.digest(REPO, "v1.2.0").await.as_deref() == Some(dev1.as_str())).then_some(())
    })
    .await;
    support::poll_until("retagd_drift to be 0", DEADLINE, || async {
        api.metrics()
            .await
            .contains(&format!("{series} 0"))
            .then_some(())
    })
    .await;
    let heal = support::poll_until("the heal's record", DEADLINE, || async {
        records(&env.registry, REPO, &dev1)
            .await
            .into_iter()
            .find(|r| r["reason"].as_str().is_some_and(|r| r.starts_with("heal:")))
    })
    .await;
    assert_eq!(heal["to"]["tag"], "v1.2.0", "{heal:#}");
    let (_, p) = api.get("/api/v1/pipelines/api-gateway").await;
    assert_eq!(stage(&p, "production")["drift"], json!([]), "{p:#}");
    daemon.signal("TERM");
    assert!(daemon.wait_exit().await.success());
}
