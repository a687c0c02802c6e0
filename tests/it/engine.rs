//! The promotion engine end to end: the `retagd` binary (`plan`, `reconcile`, `promote`, `run`)
//! against real CNCF registries, with request counts and faults from our proxy.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::process::Stdio;

use support::config::{Pipeline, Stage, AUTO, MANUAL};
use support::pipeline::{digest_at, run, text, wait_tag, Daemon, Env, DEADLINE, REPO};
use support::process::{retagd, ProcessGuard};
use support::proxy::Fault;
use support::registry::{Registry, RegistryOptions};

#[tokio::test]
async fn the_story_from_dev_to_release_with_idempotent_reconciles() {
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;

    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(dev1.as_str())
    );
    let first: Vec<String> = env
        .proxy
        .requests()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();

    // A second reconcile right away: tag list and HEADs only, nothing written, no manifest GET.
    env.proxy.clear();
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let second: Vec<String> = env
        .proxy
        .requests()
        .iter()
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert_eq!(
        env.proxy.manifest_gets() + env.proxy.manifest_puts(),
        0,
        "{second:#?}"
    );
    assert_eq!(env.proxy.count("GET"), 1, "one tag list: {second:#?}");
    assert_eq!(
        env.proxy.manifest_heads(),
        2,
        "dev and staging current tags: {second:#?}"
    );
    println!("first reconcile: {first:#?}\nsecond reconcile: {second:#?}");

    // A new build becomes rc.2.
    let dev2 = env.push(REPO, "v1.2.0-dev.2", 2).await;
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.2").await.as_deref(),
        Some(dev2.as_str())
    );

    // Production is manual: the plan shows it pending, `promote` performs it.
    let out = run(&config, &["plan", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let production = &plan["pipelines"][0]["stages"][2];
    assert_eq!(production["action"]["kind"], "pending", "{plan:#}");
    assert_eq!(production["action"]["promotion"]["from_tag"], "v1.2.0-rc.2");
    assert_eq!(production["action"]["promotion"]["to_tag"], "v1.2.0");
    let out = run(&config, &["plan"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("pending approval: v1.2.0-rc.2 -> v1.2.0"),
        "{stdout}"
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0").await,
        None,
        "plan writes nothing"
    );

    let out = run(
        &config,
        &[
            "promote",
            "--pipeline",
            "api-gateway",
            "--stage",
            "production",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("promoted api-gateway/production: v1.2.0-rc.2 -> v1.2.0 ({dev2})\n")
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(dev2.as_str())
    );
    // The promotion is one structured event.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stage=production")
            && stderr.contains("to_tag=v1.2.0")
            && stderr.contains("result=\"success\""),
        "{stderr}"
    );

    // A later patch flows to its own first rc.
    let patch = env.push(REPO, "v1.2.1-dev.1", 3).await;
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.1-rc.1").await.as_deref(),
        Some(patch.as_str())
    );
    assert_eq!(
        env.tags(REPO).await,
        [
            "v1.2.0",
            "v1.2.0-dev.1",
            "v1.2.0-dev.2",
            "v1.2.0-rc.1",
            "v1.2.0-rc.2",
            "v1.2.1-dev.1",
            "v1.2.1-rc.1"
        ]
    );
}

/// Issue 21: `retagd reconcile` printed the plan from before its promotions (staging still
/// "promote v1.2.0-dev.1 -> v1.2.0-rc.1" after making rc.1). What it prints is what `retagd plan`
/// says right after, then what it did; row by row, without the `[no current tag: ... N tag(s)
/// ...]` notes, whose count misses the promotion record tag the same reconcile wrote (the plan
/// after is worked out from the tags the reconcile listed plus the ones it promoted to).
#[tokio::test]
async fn reconcile_prints_the_plan_as_it_stands_after_its_promotions() {
    let rows = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split(" [no current tag:").next().unwrap().to_string())
            .collect()
    };
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    for (n, seed) in [(1, 1), (2, 2)] {
        let dev = env.push(REPO, &format!("v1.2.0-dev.{n}"), seed).await;
        let out = run(&config, &["reconcile"]).await;
        assert!(out.status.success(), "{}", text(&out));
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        let plan = run(&config, &["plan"]).await;
        assert!(plan.status.success(), "{}", text(&plan));
        let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
        assert!(
            plan.contains(&format!("v1.2.0-rc.{n} "))
                && plan.contains(&format!("pending approval: v1.2.0-rc.{n} -> v1.2.0")),
            "{plan}"
        );
        assert_eq!(
            rows(&printed),
            rows(&format!(
                "{plan}promoted api-gateway/staging: v1.2.0-dev.{n} -> v1.2.0-rc.{n} ({dev})\n"
            ))
        );
    }

    // Two promotions chained in one pass (production automatic too): both rows up to date.
    let env = Env::start();
    let config = env.configure(AUTO, AUTO);
    let dev = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let plan = run(&config, &["plan"]).await;
    let plan = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan.contains("up to date (v1.2.0)"), "{plan}");
    assert_eq!(
        rows(&printed),
        rows(&format!(
            "{plan}promoted api-gateway/staging: v1.2.0-dev.1 -> v1.2.0-rc.1 ({dev})\n\
             promoted api-gateway/production: v1.2.0-rc.1 -> v1.2.0 ({dev})\n"
        ))
    );
}

#[tokio::test]
async fn a_tag_listed_before_its_manifest_is_readable_is_looked_at_again_at_once() {
    // The CNCF registry lists a pushed tag a moment before a HEAD finds it, and its webhook
    // arrives before either: the reconcile it wakes must not take the new build for gone.
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    // A new version with an automatic stage after it is read with a GET (its bytes serve the
    // copy), a HEAD otherwise: the fault answers both.
    env.proxy.inject(
        Fault::status(404)
            .path_contains("/manifests/v1.2.0-dev.1")
            .times(2),
    );
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(dev1.as_str()),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.proxy.count_where(|r| {
            r.path.ends_with("/manifests/v1.2.0-dev.1")
                && matches!(r.method.as_str(), "HEAD" | "GET")
        }),
        3,
        "two 404s, then the digest"
    );

    // A tag that stays unreadable is given up on after three more looks, as before.
    env.proxy.clear();
    let dev2 = env.push(REPO, "v1.2.0-dev.2", 2).await;
    env.proxy.inject(
        Fault::status(404)
            .on("HEAD")
            .path_contains("/manifests/v1.2.0-dev.2")
            .times(100),
    );
    let out = run(&config, &["plan"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("disappeared from the registry"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.proxy
            .count_where(|r| r.is_manifest_head() && r.path.ends_with("v1.2.0-dev.2")),
        4
    );
    env.proxy.clear_faults();
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.2").await.as_deref(),
        Some(dev2.as_str())
    );
}

#[tokio::test]
async fn a_release_tag_with_another_digest_is_a_conflict_unless_overwrite() {
    let env = Env::start();
    let rc = env.push(REPO, "v1.2.0-rc.1", 1).await;
    let old = env.push(REPO, "v1.2.0", 2).await;
    let config = env.configure(AUTO, AUTO);
    let out = run(&config, &["reconcile"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("conflict: v1.2.0 exists with another digest"),
        "{stderr}"
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(old.as_str())
    );
    assert_eq!(env.proxy.manifest_puts(), 0);

    let config = env.configure(AUTO, r#"approval = "auto", overwrite = true"#);
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(rc.as_str())
    );
}

#[tokio::test]
async fn min_age_waits_and_the_first_sighting_survives_restarts_in_state_dir() {
    let env = Env::start();
    let dev = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let config = env.configure(r#"approval = "auto", min_age = "1h""#, MANUAL);
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("waiting for min_age until"),
        "{}",
        text(&out)
    );
    assert_eq!(env.digest(REPO, "v1.2.0-rc.1").await, None);

    // The state file remembers the first sighting; moving it two hours back ends the wait.
    let state_file = env.dir.path().join("state/state.json");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    let seen = state["first_seen"]["api-gateway/dev"][&dev]
        .as_u64()
        .unwrap();
    let moved = serde_json::json!({"first_seen": {"api-gateway/dev": {dev.clone(): seen - 7200}}});
    std::fs::write(&state_file, moved.to_string()).unwrap();
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(dev.as_str())
    );
}

#[tokio::test]
async fn retagd_promote_refuses_before_min_age_and_force_promotes_anyway() {
    let env = Env::start();
    let dev = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let config = env.configure(AUTO, r#"approval = "manual", min_age = "1h""#);
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("waiting for min_age until"),
        "{}",
        text(&out)
    );
    let approve = [
        "promote",
        "--pipeline",
        "api-gateway",
        "--stage",
        "production",
    ];
    let out = run(&config, &approve).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nothing promoted into production: waiting for min_age until")
            && stderr.contains("--force promotes now"),
        "{}",
        text(&out)
    );
    assert_eq!(env.digest(REPO, "v1.2.0").await, None);

    // A digest that is not the candidate's: refused, whatever else the approval says.
    let other = format!("sha256:{}", "1".repeat(64));
    let out = run(
        &config,
        &[&approve[..], &["--force", "--digest", &other]].concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("moved: the approval names sha256:111111111111"),
        "{}",
        text(&out)
    );
    assert_eq!(env.digest(REPO, "v1.2.0").await, None);

    let out = run(
        &config,
        &[&approve[..], &["--force", "--digest", &dev]].concat(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("v1.2.0-rc.1 -> v1.2.0")
            && String::from_utf8_lossy(&out.stdout).contains("forced past min_age"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0").await.as_deref(),
        Some(dev.as_str())
    );
}

#[tokio::test]
async fn stages_in_another_repository_and_another_registry() {
    let env = Env::start();
    let prod = Registry::start(RegistryOptions::anonymous());
    let dev = env.push(REPO, "v1.2.0-dev.1", 1).await;
    // staging in its own repository, production in the other registry.
    let config = env.write(
        &env.config("1s", AUTO, MANUAL)
            .registry("prod", &prod.url())
            .map_pipeline("api-gateway", |p| {
                p.map_stage("staging", |s| s.in_repository("staging/api-gateway"))
                    .map_stage("production", |s| {
                        s.in_registry("prod").in_repository("release/api-gateway")
                    })
            }),
    );

    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        env.digest("staging/api-gateway", "v1.2.0-rc.1")
            .await
            .as_deref(),
        Some(dev.as_str())
    );
    assert_eq!(env.proxy.blob_gets(), 0, "the rc copy mounts");
    let out = run(
        &config,
        &[
            "promote",
            "--pipeline",
            "api-gateway",
            "--stage",
            "production",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        digest_at(&prod, "release/api-gateway", "v1.2.0")
            .await
            .as_deref(),
        Some(dev.as_str())
    );
}

#[tokio::test]
async fn a_pipeline_whose_registry_is_down_does_not_stop_the_others() {
    let env = Env::start();
    let dev = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = env.write(
        &env.config("1s", AUTO, MANUAL)
            .registry("down", &format!("http://{dead}"))
            .pipeline(Pipeline::new("broken", "down", "x/y").stage(Stage::new("dev").semver("*"))),
    );
    let out = run(&config, &["reconcile"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken: cannot list tags of down/x/y"),
        "{}",
        text(&out)
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(dev.as_str())
    );
}

#[tokio::test]
async fn the_daemon_promotes_reloads_on_sighup_and_stops_on_sigterm() {
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let mut daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    assert_eq!(wait_tag(&env, REPO, "v1.2.0-rc.1").await, dev1);

    // An invalid new config is refused; the old one keeps working.
    std::fs::write(&config, "[[pipelines]]\nname = 3\n").unwrap();
    daemon.signal("HUP");
    daemon
        .wait_log("configuration reload failed; keeping the running configuration")
        .await;
    let dev2 = env.push(REPO, "v1.2.0-dev.2", 2).await;
    assert_eq!(wait_tag(&env, REPO, "v1.2.0-rc.2").await, dev2);

    // A valid one (production now automatic) takes over.
    env.configure(AUTO, AUTO);
    daemon.signal("HUP");
    daemon.wait_log("configuration reloaded").await;
    assert_eq!(wait_tag(&env, REPO, "v1.2.0").await, dev2);

    daemon.signal("TERM");
    let status = daemon.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(daemon.log().contains("stopped"), "{}", daemon.log());
}

#[tokio::test]
async fn sigterm_during_a_copy_lets_it_finish() {
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    let dev = env.push(REPO, "v1.2.0-dev.1", 1).await;
    env.proxy
        .inject(Fault::delay(1500).on("PUT").path_contains("/manifests/"));
    let mut daemon = Daemon::start(&config, env.dir.path().join("daemon.log"));
    support::poll_until("the rc PUT to be in flight", DEADLINE, || async {
        env.proxy
            .arrivals()
            .iter()
            .any(|a| a.starts_with("PUT "))
            .then_some(())
    })
    .await;
    daemon.signal("TERM");
    let status = daemon.wait_exit().await;
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(dev.as_str()),
        "{}",
        daemon.log()
    );
}

#[tokio::test]
async fn sigkill_at_the_worst_moments_never_makes_a_second_rc_tag() {
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    let dev = env.push(REPO, "v1.2.0-dev.1", 1).await;
    let start = || {
        let child = retagd()
            .args(["reconcile", "--config", &config.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ProcessGuard::new(child)
    };
    // Killed before the registry got the PUT: nothing written; the rerun creates rc.1.
    env.proxy
        .inject(Fault::delay(5000).on("PUT").path_contains("/manifests/"));
    let mut child = start();
    support::poll_until("the rc PUT to arrive", DEADLINE, || async {
        env.proxy
            .arrivals()
            .iter()
            .any(|a| a.starts_with("PUT "))
            .then_some(())
    })
    .await;
    child.kill().unwrap();
    env.proxy.clear_faults();
    assert_eq!(env.digest(REPO, "v1.2.0-rc.1").await, None);
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));

    // Killed after the registry stored the rc tag but before retagd heard back: the rerun must
    // see that the digest already has rc.2 and not make rc.3.
    let dev2 = env.push(REPO, "v1.2.0-dev.2", 2).await;
    env.proxy.inject(
        Fault::delay_answer(5000)
            .on("PUT")
            .path_contains("/manifests/"),
    );
    let mut child = start();
    support::poll_until("the rc.2 PUT to land", DEADLINE, || {
        env.digest(REPO, "v1.2.0-rc.2")
    })
    .await;
    child.kill().unwrap();
    env.proxy.clear_faults();
    for _ in 0..2 {
        let out = run(&config, &["reconcile"]).await;
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(dev.as_str())
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.2").await.as_deref(),
        Some(dev2.as_str())
    );
    assert_eq!(
        env.tags(REPO).await,
        ["v1.2.0-dev.1", "v1.2.0-dev.2", "v1.2.0-rc.1", "v1.2.0-rc.2"]
    );
}

#[tokio::test]
async fn a_new_build_is_promoted_with_a_tag_list_a_get_and_a_put_and_a_steady_round_writes_nothing()
{
    // The example configuration with a state_dir: retagd's writers lock each target repository,
    // so the listing says the rc tag is free and the copy does not HEAD it again.
    let env = Env::start();
    let config = env.configure(AUTO, MANUAL);
    let dev1 = env.push(REPO, "v1.2.0-dev.1", 1).await;
    env.proxy.clear();
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    // The promotion (3 requests), then its record: the empty config looked for and uploaded
    // (this registry opens a session for a POST with a digest, so a PUT follows), the record's
    // layer, the artifact by digest, and the sha256-<hex> index read and extended.
    let lines = env.proxy.request_lines();
    let shapes: Vec<String> = lines
        .iter()
        .map(|l| l.split_once('?').map_or(l.as_str(), |(path, _)| path))
        .map(|l| {
            let (head, last) = l.rsplit_once('/').unwrap();
            match () {
                _ if head.ends_with("/blobs/uploads") && !last.is_empty() => {
                    format!("{head}/<session>")
                }
                _ if last.starts_with("sha256:") => format!("{head}/<digest>"),
                _ => l.to_string(),
            }
        })
        .collect();
    let index = format!("/v2/{REPO}/manifests/sha256-{}", &dev1[7..]);
    assert_eq!(
        shapes[..3],
        [
            format!("GET /v2/{REPO}/tags/list"),
            format!("GET /v2/{REPO}/manifests/v1.2.0-dev.1"),
            format!("PUT /v2/{REPO}/manifests/v1.2.0-rc.1"),
        ],
        "{lines:#?}"
    );
    // The two blobs go up together, in either order; then the artifact, then the index.
    let mut blobs = shapes[3..8].to_vec();
    blobs.sort();
    assert_eq!(
        blobs,
        [
            format!("HEAD /v2/{REPO}/blobs/<digest>"),
            format!("POST /v2/{REPO}/blobs/uploads/"),
            format!("POST /v2/{REPO}/blobs/uploads/"),
            format!("PUT /v2/{REPO}/blobs/uploads/<session>"),
            format!("PUT /v2/{REPO}/blobs/uploads/<session>"),
        ],
        "{lines:#?}"
    );
    assert_eq!(
        shapes[8..],
        [
            format!("PUT /v2/{REPO}/manifests/<digest>"),
            format!("GET {index}"),
            format!("PUT {index}"),
        ],
        "{lines:#?}"
    );
    assert_eq!(
        env.digest(REPO, "v1.2.0-rc.1").await.as_deref(),
        Some(dev1.as_str())
    );

    // The next round only looks: the listing and one HEAD per stage with a current tag.
    env.proxy.clear();
    let out = run(&config, &["reconcile"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut lines = env.proxy.request_lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            format!("GET /v2/{REPO}/tags/list?n=1000"),
            format!("HEAD /v2/{REPO}/manifests/v1.2.0-dev.1"),
            format!("HEAD /v2/{REPO}/manifests/v1.2.0-rc.1"),
        ]
    );
}
