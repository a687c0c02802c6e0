//! The driver against the in-memory backend: what it asks of registries, in what order, and
//! what the outcome says. The planner's decisions have their own tests in `plan.rs`.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::memory::{http, Memory, Op};
use super::*;
use crate::config::{self, Format};

/// One pipeline in TOML: a `dev` source stage, an `rc` stage promoted automatically from it,
/// and, when `release` names an approval, a `release` stage promoted from `rc`. Each stage is
/// (registry, repository).
pub(crate) fn pipeline_toml(name: &str, stages: &[(&str, &str)], release: Option<&str>) -> String {
    let (dev, rc) = (stages[0], stages[1]);
    let mut text = format!(
        r#"
[[pipelines]]
name = "{name}"
registry = "{dev_reg}"
repository = "{dev_repo}"

[[pipelines.stages]]
name = "dev"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+-dev\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0-0" }} }}

[[pipelines.stages]]
name = "rc"
registry = "{rc_reg}"
repository = "{rc_repo}"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+-rc\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0-rc.0" }} }}
promote = {{ from = "dev", tag = "v{{major}}.{{minor}}.{{patch}}-rc.{{n}}", approval = "auto" }}
"#,
        dev_reg = dev.0,
        dev_repo = dev.1,
        rc_reg = rc.0,
        rc_repo = rc.1,
    );
    if let Some(approval) = release {
        let rel = stages[2];
        text.push_str(&format!(
            r#"
[[pipelines.stages]]
name = "release"
registry = "{}"
repository = "{}"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0" }} }}
promote = {{ from = "rc", tag = "v{{major}}.{{minor}}.{{patch}}", approval = "{approval}" }}
"#,
            rel.0, rel.1
        ));
    }
    text
}

/// The registries the pipelines name; the in-memory backend answers for them.
pub(crate) const REGISTRIES: &str = r#"
[registries.r]
url = "http://127.0.0.1:5000"
[registries.r1]
url = "http://127.0.0.1:5001"
[registries.r2]
url = "http://127.0.0.1:5002"
"#;

fn pipelines(toml: &[String]) -> Vec<Pipeline> {
    let text = format!("{REGISTRIES}{}", toml.concat());
    config::parse(&text, Format::Toml, "test")
        .unwrap()
        .config
        .pipelines
}

const APP: [(&str, &str); 3] = [("r", "app/dev"), ("r", "app/rc"), ("r", "app/release")];

/// `app`: dev -> rc (auto) -> release (`release` approval).
fn app(release: &str) -> Pipeline {
    pipelines(&[pipeline_toml("app", &APP, Some(release))]).remove(0)
}

fn engine(backend: &Arc<Memory>) -> Engine {
    Engine::new(backend.clone(), State::in_memory())
}

async fn reconcile(engine: &Engine, pipeline: &Pipeline) -> Outcome {
    engine
        .reconcile(pipeline, &Intent::default(), &|| false)
        .await
}

fn action<'a>(outcome: &'a Outcome, stage: &str) -> &'a Action {
    let plan = outcome.plan.as_ref().unwrap();
    &plan
        .stages
        .iter()
        .find(|s| s.stage == stage)
        .unwrap()
        .action
}

/// `app` whose automatic stages heal drift (`release` as for [`app`]).
fn healing(release: &str) -> Pipeline {
    let text = pipeline_toml("app", &APP, Some(release)).replace(
        "approval = \"auto\" }\n",
        "approval = \"auto\", heal = true }\n",
    );
    pipelines(&[text]).remove(0)
}

/// alice approves the release stage (index 2) of `pipeline` now.
async fn alice_approves(engine: &Engine, pipeline: &Pipeline, reason: Option<&str>) -> Outcome {
    let asked = Asked {
        by: "alice".into(),
        reason: reason.map(str::to_string),
        ..Asked::default()
    };
    engine
        .reconcile(pipeline, &asked.intent(2), &|| false)
        .await
}

#[tokio::test(start_paused = true)]
async fn a_steady_state_lists_each_repository_once_heads_current_tags_and_copies_nothing() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    backend.push("r", "app/release", "v1.0.0");
    backend.push("r", "app/release", "v0.9.0");
    let pipeline = app("manual");
    let engine = engine(&backend);

    // Promotes dev.1 to rc.1; the release stage then waits for approval, which needs the
    // digest of every release tag.
    let first = reconcile(&engine, &pipeline).await;
    assert!(first.succeeded(), "{:?}", first.problems());
    assert_eq!(backend.heads("r", "app/release", "v0.9.0"), 1);
    backend.reset_counts();

    let second = reconcile(&engine, &pipeline).await;
    assert!(second.succeeded(), "{:?}", second.problems());
    assert_eq!(second.next(), Next::Interval);
    assert!(matches!(action(&second, "rc"), Action::UpToDate { .. }));
    assert!(matches!(action(&second, "release"), Action::Pending(_)));
    assert_eq!(backend.calls(Op::List), 3);
    assert_eq!(backend.calls(Op::Copy), 0);
    assert_eq!(backend.calls(Op::Fetch), 0, "no GET where no copy follows");
    let currents: std::collections::BTreeMap<String, usize> = [
        ("app/dev:v1.2.0-dev.1".to_string(), 1),
        ("app/rc:v1.2.0-rc.1".to_string(), 1),
        ("app/release:v1.0.0".to_string(), 1),
    ]
    .into();
    assert_eq!(backend.headed(), currents, "only current tags, once each");
}

#[tokio::test(start_paused = true)]
async fn a_new_dev_build_becomes_the_next_rc_in_one_reconcile() {
    let backend = Arc::new(Memory::default());
    let d1 = backend.push("r", "app/dev", "v1.2.0-dev.1");
    backend.set("r", "app/rc", "v1.2.0-rc.1", &d1);
    backend.push("r", "app/release", "v1.1.0");
    let pipeline = app("manual");
    let engine = engine(&backend);
    let steady = reconcile(&engine, &pipeline).await;
    assert_eq!(steady.next(), Next::Interval, "{:?}", steady.problems());

    let d2 = backend.push("r", "app/dev", "v1.2.0-dev.2");
    let outcome = reconcile(&engine, &pipeline).await;
    assert!(outcome.succeeded(), "{:?}", outcome.problems());
    assert_eq!(outcome.next(), Next::Now);
    let written: Vec<&str> = outcome.written().map(|s| s.stage.as_str()).collect();
    assert_eq!(written, ["rc"]);
    assert_eq!(backend.tags("r", "app/rc").get("v1.2.0-rc.2"), Some(&d2));
    assert_eq!(backend.calls(Op::Copy), 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_candidate_is_read_whole_once_and_its_copy_reuses_the_bytes() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("manual");
    let engine = engine(&backend);

    // A version the rc stage has no tag for: new by the listing alone, on the first reconcile.
    let first = reconcile(&engine, &pipeline).await;
    assert!(first.succeeded(), "{:?}", first.problems());
    assert_eq!(backend.calls(Op::Fetch), 1);
    assert_eq!(
        backend.heads("r", "app/dev", "v1.2.0-dev.1"),
        1,
        "one read, a GET"
    );
    // No writers' lock (no state_dir): the copy still checks its destination.
    assert_eq!(
        backend.copies_known(),
        [("v1.2.0-rc.1".to_string(), true, false)]
    );

    // The same version built again: rc.1 exists for it, but this dev tag was never current.
    backend.reset_counts();
    backend.push("r", "app/dev", "v1.2.0-dev.2");
    let second = reconcile(&engine, &pipeline).await;
    assert!(second.succeeded(), "{:?}", second.problems());
    assert_eq!(backend.calls(Op::Fetch), 1);
    assert_eq!(
        backend.copies_known()[1],
        ("v1.2.0-rc.2".to_string(), true, false)
    );

    // Steady again: HEADs only.
    backend.reset_counts();
    let third = reconcile(&engine, &pipeline).await;
    assert_eq!(third.next(), Next::Interval, "{:?}", third.problems());
    assert_eq!(backend.calls(Op::Fetch), 0);
}

#[tokio::test(start_paused = true)]
async fn with_the_writers_lock_a_target_absent_from_the_listing_is_not_headed_again() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("auto");
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(&backend).with_writers_lock(dir.path());
    let outcome = reconcile(&engine, &pipeline).await;
    assert!(outcome.succeeded(), "{:?}", outcome.problems());
    // Both promotions of the pass, rc and then the release chained on it.
    assert_eq!(
        backend.copies_known(),
        [
            ("v1.2.0-rc.1".to_string(), true, true),
            ("v1.2.0".to_string(), true, true)
        ]
    );
    assert!(dir.path().join("locks").read_dir().unwrap().count() >= 1);
}

#[tokio::test(start_paused = true)]
async fn a_listed_tag_unreadable_for_two_heads_is_promoted_in_the_same_reconcile() {
    let backend = Arc::new(Memory::default());
    let d = backend.push("r", "app/dev", "v1.2.0-dev.1");
    backend.unreadable("r", "app/dev", "v1.2.0-dev.1", 2);
    let pipeline = app("manual");
    let outcome = reconcile(&engine(&backend), &pipeline).await;
    assert!(outcome.succeeded(), "{:?}", outcome.problems());
    assert_eq!(backend.heads("r", "app/dev", "v1.2.0-dev.1"), 3);
    assert_eq!(backend.tags("r", "app/rc").get("v1.2.0-rc.1"), Some(&d));
}

#[tokio::test(start_paused = true)]
async fn a_listed_tag_unreadable_for_longer_is_treated_as_absent() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    backend.unreadable("r", "app/dev", "v1.2.0-dev.1", 100);
    let pipeline = app("manual");
    let outcome = reconcile(&engine(&backend), &pipeline).await;
    let dev = &outcome.plan.as_ref().unwrap().stages[0];
    assert!(
        dev.no_current
            .as_deref()
            .is_some_and(|r| r.contains("disappeared")),
        "{dev:?}"
    );
    assert!(matches!(action(&outcome, "rc"), Action::NoCandidate { .. }));
    assert_eq!(
        backend.heads("r", "app/dev", "v1.2.0-dev.1"),
        1 + UNREADABLE_RETRIES as usize
    );
    assert_eq!(backend.calls(Op::Copy), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_copy_into_rc_skips_the_promotion_out_of_rc_in_the_same_pass() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    backend.fail(Op::Copy, "r", "app/rc", None, || http("r", 429));
    let pipeline = app("auto");
    let outcome = reconcile(&engine(&backend), &pipeline).await;
    assert!(matches!(action(&outcome, "release"), Action::Promote(_)));
    let results: Vec<(&str, &str)> = outcome
        .failures()
        .map(|(a, e)| (a.stage.as_str(), e.reason()))
        .collect();
    assert_eq!(results, [("rc", "rate_limited"), ("release", "skipped")]);
    assert!(matches!(
        outcome.applied[1].result,
        Err(PromotionError::Skipped { ref from_stage }) if from_stage == "rc"
    ));
    assert_eq!(outcome.error_reason(), Some("rate_limited"));
    assert!(!outcome.succeeded());
    assert_eq!(outcome.next(), Next::Backoff);
    assert_eq!(backend.calls(Op::Copy), 1);
    assert!(backend.tags("r", "app/release").is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_listing_failure_is_the_plan_error_with_the_registry_reason_and_nothing_is_applied() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    backend.fail(Op::List, "r", "app/rc", None, || http("r", 401));
    let pipeline = app("auto");
    let outcome = reconcile(&engine(&backend), &pipeline).await;
    match &outcome.plan {
        Err(Error::List { repo, .. }) => assert_eq!(repo.repository, "app/rc"),
        other => panic!("expected a listing error, got {other:?}"),
    }
    assert_eq!(outcome.error_reason(), Some("auth"));
    assert!(outcome.applied.is_empty());
    assert_eq!(outcome.next(), Next::Backoff);
    assert_eq!(backend.calls(Op::Copy), 0);
}

#[tokio::test(start_paused = true)]
async fn two_pipelines_promoting_into_one_repository_never_write_the_same_counter() {
    let backend = Arc::new(Memory::default());
    // Copies take time, so without the repository lock both would plan rc.1 before either
    // wrote it.
    backend.delay_copies(Duration::from_millis(100));
    let a = backend.push("r", "a/dev", "v1.2.0-dev.1");
    let b = backend.push("r", "b/dev", "v1.2.0-dev.1");
    let ps = pipelines(&[
        pipeline_toml("a", &[("r", "a/dev"), ("r", "shared/rc")], None),
        pipeline_toml("b", &[("r", "b/dev"), ("r", "shared/rc")], None),
    ]);
    let engine = engine(&backend);
    let (oa, ob) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(reconcile(&engine, &ps[0]), reconcile(&engine, &ps[1]))
    })
    .await
    .unwrap();
    assert!(oa.succeeded(), "{:?}", oa.problems());
    assert!(ob.succeeded(), "{:?}", ob.problems());
    let rc = backend.tags("r", "shared/rc");
    let mut digests: Vec<&Digest> = rc.values().collect();
    digests.sort();
    let mut expected = vec![&a, &b];
    expected.sort();
    assert_eq!(digests, expected, "{rc:?}");
    assert_eq!(
        rc.keys().collect::<Vec<_>>(),
        ["v1.2.0-rc.1", "v1.2.0-rc.2"]
    );
}

#[tokio::test(start_paused = true)]
async fn pipelines_sharing_registries_in_opposite_orders_do_not_deadlock_on_slots() {
    let backend = Arc::new(Memory::default());
    backend.delay_copies(Duration::from_millis(100));
    for repo in ["c/dev", "a/dev"] {
        backend.push("r1", repo, "v1.0.0-dev.1");
    }
    backend.push("r2", "b/dev", "v1.0.0-dev.1");
    // One slot per registry. `c` holds r1 while it copies; `a` (r1 then r2) and `b` (r2 then
    // r1, by stage order) queue behind it: taking slots in stage order, `a` would get r1 and
    // wait for r2 while `b` holds r2 and waits for r1.
    let ps = pipelines(&[
        pipeline_toml("c", &[("r1", "c/dev"), ("r1", "c/rc")], None),
        pipeline_toml("a", &[("r1", "a/dev"), ("r2", "a/rc")], None),
        pipeline_toml("b", &[("r2", "b/dev"), ("r1", "b/rc")], None),
    ]);
    let engine = Arc::new(engine(&backend).with_parallel(1));
    let mut tasks = Vec::new();
    for p in ps {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            reconcile(&engine, &p).await.succeeded()
        }));
        // Let each one take or queue for its first slot before the next starts.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(backend.calls(Op::Copy), 1, "c is copying");
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        let mut ok = Vec::new();
        for t in tasks {
            ok.push(t.await.unwrap());
        }
        ok
    })
    .await
    .expect("the reconciles deadlocked");
    assert_eq!(all, [true, true, true]);
    assert_eq!(backend.calls(Op::Copy), 3);
}

#[tokio::test(start_paused = true)]
async fn stopping_starts_no_further_copy() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("auto");
    let engine = engine(&backend);
    // Asked once per promotion: the first may copy, then the daemon stops.
    let asked = AtomicUsize::new(0);
    let stopping = || asked.fetch_add(1, Ordering::SeqCst) >= 1;
    let outcome = engine
        .reconcile(&pipeline, &Intent::default(), &stopping)
        .await;
    assert!(matches!(action(&outcome, "release"), Action::Promote(_)));
    let applied: Vec<&str> = outcome.applied.iter().map(|a| a.stage.as_str()).collect();
    assert_eq!(applied, ["rc"]);
    assert_eq!(backend.calls(Op::Copy), 1);
    assert!(backend.tags("r", "app/release").is_empty());
}

/// Issue 20, item 5: `retagd reconcile` exited 0 when a stage could not be promoted into.
#[tokio::test(start_paused = true)]
async fn an_invalid_stage_is_one_of_the_outcomes_problems() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    let long = format!("{}{{tag}}", "p".repeat(120));
    let text = pipeline_toml("app", &APP, None).replace("v{major}.{minor}.{patch}-rc.{n}", &long);
    let pipeline = pipelines(&[text]).remove(0);
    let outcome = reconcile(&engine(&backend), &pipeline).await;
    assert!(
        matches!(action(&outcome, "rc"), Action::Invalid { .. }),
        "{:?}",
        action(&outcome, "rc")
    );
    let problems = outcome.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("app/rc: invalid: "), "{problems:?}");
}

#[tokio::test(start_paused = true)]
async fn each_promotion_leaves_a_record_and_one_that_cannot_be_written_is_retried() {
    let backend = Arc::new(Memory::default());
    let dev1 = backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("manual");
    let engine = engine(&backend);
    backend.fail(Op::Attach, "r", "app/rc", None, || http("r", 503));

    // The promotion stands; its record waits.
    let first = reconcile(&engine, &pipeline).await;
    assert_eq!(backend.tags("r", "app/rc").get("v1.2.0-rc.1"), Some(&dev1));
    assert!(first.records[0].result.is_err(), "{:?}", first.records);
    assert_eq!(first.unrecorded, 1);
    assert!(backend.records("r", "app/rc").is_empty());

    backend.recover();
    let second = reconcile(&engine, &pipeline).await;
    assert!(second.records[0].result.is_ok(), "{:?}", second.records);
    assert_eq!(second.unrecorded, 0);
    let records = backend.records("r", "app/rc");
    assert_eq!(records.len(), 1);
    let (subject, r) = &records[0];
    assert_eq!(subject, &dev1);
    assert_eq!(
        (r.pipeline.as_str(), r.stage.as_str(), r.approval.as_str()),
        ("app", "rc", "auto")
    );
    assert_eq!(
        (r.from.tag.as_str(), r.to.tag.as_str()),
        ("v1.2.0-dev.1", "v1.2.0-rc.1")
    );
    assert_eq!(r.to.registry, "r.example", "hosts, not configured names");
    assert_eq!(r.approved_by, None);

    // An approval is recorded with its approver and reason.
    let approved = alice_approves(&engine, &pipeline, Some("CAB-7")).await;
    assert!(approved.succeeded(), "{:?}", approved.problems());
    let records = backend.records("r", "app/release");
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0].1;
    assert_eq!(
        (
            r.approval.as_str(),
            r.approved_by.as_deref(),
            r.reason.as_deref()
        ),
        ("manual", Some("alice"), Some("CAB-7"))
    );

    // Nothing new: nothing recorded again.
    let steady = reconcile(&engine, &pipeline).await;
    assert!(steady.records.is_empty(), "{:?}", steady.records);
    assert_eq!(backend.calls(Op::Attach), 3);
}

#[tokio::test(start_paused = true)]
async fn records_off_writes_none() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    let text = pipeline_toml("app", &APP, None).replace(
        "repository = \"app/dev\"\n",
        "repository = \"app/dev\"\nrecords = false\n",
    );
    let pipeline = pipelines(&[text]).remove(0);
    assert!(!pipeline.records);
    let engine = engine(&backend);
    let outcome = reconcile(&engine, &pipeline).await;
    assert!(outcome.succeeded());
    assert!(outcome.records.is_empty());
    assert_eq!(backend.calls(Op::Attach), 0);
}

#[tokio::test(start_paused = true)]
async fn a_release_tag_moved_by_hand_is_drift_and_heal_puts_it_back() {
    let backend = Arc::new(Memory::default());
    let dev1 = backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("auto");
    let engine = engine(&backend);
    let first = reconcile(&engine, &pipeline).await;
    assert!(first.succeeded(), "{:?}", first.problems());
    assert_eq!(backend.tags("r", "app/release").get("v1.2.0"), Some(&dev1));

    // Someone pushes other bytes over v1.2.0: drift, reported every round, nothing written.
    let forged = memory::digest("forged");
    backend.set("r", "app/release", "v1.2.0", &forged);
    for _ in 0..2 {
        let seen = reconcile(&engine, &pipeline).await;
        assert_eq!(
            seen.drift,
            [Drift {
                stage: "release".into(),
                tag: "v1.2.0".into(),
                expected: dev1.clone(),
                found: forged.clone(),
                healed: None,
            }]
        );
        assert!(seen.applied.is_empty(), "{:?}", seen.applied);
    }
    assert_eq!(
        backend.tags("r", "app/release").get("v1.2.0"),
        Some(&forged)
    );

    // With heal, the tag is put back and the heal is recorded; then all is quiet.
    let healing = healing("auto");
    let healed = reconcile(&engine, &healing).await;
    assert_eq!(healed.drift.len(), 1);
    assert_eq!(healed.drift[0].healed, Some(Ok(())));
    assert_eq!(healed.next(), Next::Now);
    assert_eq!(backend.tags("r", "app/release").get("v1.2.0"), Some(&dev1));
    let records = backend.records("r", "app/release");
    let heal = records.last().map(|(_, r)| r.reason.clone());
    assert!(
        heal.flatten()
            .is_some_and(|r| r.starts_with("heal: v1.2.0 named")),
        "{records:?}"
    );
    let after = reconcile(&engine, &healing).await;
    assert!(after.succeeded(), "{:?}", after.problems());
    assert!(after.drift.is_empty());
}

#[tokio::test(start_paused = true)]
async fn nothing_is_promoted_out_of_a_drifted_stage() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("manual");
    let engine = engine(&backend);
    let _ = reconcile(&engine, &pipeline).await;

    // rc.1 is pushed over; approving the release of what rc holds now is refused.
    let forged = memory::digest("forged");
    backend.set("r", "app/rc", "v1.2.0-rc.1", &forged);
    let held = alice_approves(&engine, &pipeline, None).await;
    let refused: Vec<_> = held
        .failures()
        .map(|(a, e)| (a.stage.as_str(), e.reason()))
        .collect();
    assert_eq!(refused, [("release", "drift")], "{:?}", held.plan);
    assert!(backend.tags("r", "app/release").is_empty());
    assert!(held.drift[0].open());
}

#[tokio::test(start_paused = true)]
async fn older_tags_retagd_wrote_are_swept_for_drift_once_an_hour() {
    let backend = Arc::new(Memory::default());
    let dev1 = backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("manual");
    let engine = engine(&backend);
    let _ = reconcile(&engine, &pipeline).await;
    backend.push("r", "app/dev", "v1.2.1-dev.1");
    let _ = reconcile(&engine, &pipeline).await;
    assert!(backend.tags("r", "app/rc").contains_key("v1.2.1-rc.1"));

    // rc.1 of 1.2.0 is no stage's current tag any more; someone pushes over it.
    let forged = memory::digest("forged");
    backend.set("r", "app/rc", "v1.2.0-rc.1", &forged);
    backend.reset_counts();
    let quiet = reconcile(&engine, &pipeline).await;
    assert!(quiet.drift.is_empty(), "not swept yet: {:?}", quiet.drift);
    assert_eq!(backend.heads("r", "app/rc", "v1.2.0-rc.1"), 0);

    tokio::time::advance(records::SWEEP_EVERY).await;
    let swept = reconcile(&engine, &pipeline).await;
    assert_eq!(swept.drift.len(), 1, "{:?}", swept.drift);
    assert_eq!(
        (
            swept.drift[0].tag.as_str(),
            &swept.drift[0].expected,
            &swept.drift[0].found
        ),
        ("v1.2.0-rc.1", &dev1, &forged)
    );
    assert_eq!(backend.heads("r", "app/rc", "v1.2.0-rc.1"), 1);
    // Reported every round until the next sweep, without another HEAD.
    let again = reconcile(&engine, &pipeline).await;
    assert_eq!(again.drift.len(), 1);
    assert_eq!(backend.heads("r", "app/rc", "v1.2.0-rc.1"), 1);
}

#[tokio::test(start_paused = true)]
async fn the_plan_after_a_reconcile_shows_its_promotions_without_asking_the_registry() {
    let backend = Arc::new(Memory::default());
    let dev1 = backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = app("manual");
    let engine = engine(&backend);
    let outcome = reconcile(&engine, &pipeline).await;
    // Before: rc promotes dev.1, the release has nothing to promote yet.
    assert!(matches!(action(&outcome, "rc"), Action::Promote(_)));
    let calls = (backend.calls(Op::List), backend.calls(Op::Head));
    let after = outcome.after.as_ref().expect("a promotion was written");
    let stage = |name: &str| after.stages.iter().find(|s| s.stage == name).unwrap();
    assert_eq!(
        stage("rc").action,
        Action::UpToDate {
            tag: "v1.2.0-rc.1".into()
        }
    );
    assert_eq!(stage("rc").current.as_ref().map(|c| &c.digest), Some(&dev1));
    assert!(
        matches!(&stage("release").action, Action::Pending(p) if p.to_tag == "v1.2.0"),
        "{:?}",
        stage("release").action
    );
    assert_eq!((backend.calls(Op::List), backend.calls(Op::Head)), calls);
    // Nothing written: no plan after.
    assert!(reconcile(&engine, &pipeline).await.after.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_source_healed_in_this_pass_promotes_nothing_it_held_before_the_heal() {
    let backend = Arc::new(Memory::default());
    let dev1 = backend.push("r", "app/dev", "v1.2.0-dev.1");
    let pipeline = healing("manual");
    let engine = engine(&backend);
    let _ = reconcile(&engine, &pipeline).await;
    let forged = memory::digest("forged");
    backend.set("r", "app/rc", "v1.2.0-rc.1", &forged);

    // The approval's plan saw the forged rc.1; the heal puts rc.1 back in the same pass, and
    // the release is not made from what the plan saw.
    let outcome = alice_approves(&engine, &pipeline, None).await;
    assert_eq!(outcome.drift[0].healed, Some(Ok(())));
    assert!(outcome.applied.is_empty(), "{:?}", outcome.applied);
    assert_eq!(outcome.next(), Next::Now);
    assert_eq!(backend.tags("r", "app/rc").get("v1.2.0-rc.1"), Some(&dev1));
    assert!(backend.tags("r", "app/release").is_empty());
    // Approved again, it promotes the bytes retagd wrote.
    let again = alice_approves(&engine, &pipeline, None).await;
    assert!(again.succeeded(), "{:?}", again.problems());
    assert_eq!(backend.tags("r", "app/release").get("v1.2.0"), Some(&dev1));
}
