//! The planner (`retagd::engine::plan::plan`) on 1,000 pipelines with synthetic snapshots of
//! 1,000 tags each: the CPU a reconcile of the whole fleet spends deciding, without any I/O.
//! The pipelines are the README's example (dev -> staging, automatic -> production, manual);
//! the tags are those of the fleet benchmark's steady state (`benches/fleet/steady.rs`).
//! Snapshots hold the digests the planner asks for, resolved as the engine's driver does
//! (plan, answer `Needs`, plan again), so each iteration is one complete planning round.
//!
//! `cargo bench --bench planner`

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use std::time::{Duration, SystemTime};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use retagd::config::{self, Format, Pipeline};
use retagd::engine::plan::{self, Intent, Observed, Planned};
use retagd::reference::Digest;

#[path = "fleet/tags.rs"]
mod tags;

const PIPELINES: usize = 1000;
const TAGS: usize = 1000;

fn pipelines(n: usize) -> Vec<Pipeline> {
    let mut text = String::from("[registries.local]\nurl = \"http://127.0.0.1:5000\"\n");
    for i in 0..n {
        text.push_str(&format!(
            r#"
[[pipelines]]
name = "svc-{i:04}"
registry = "local"
repository = "bench/svc-{i:04}"

[[pipelines.stages]]
name = "dev"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+-dev\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0-0" }} }}

[[pipelines.stages]]
name = "staging"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+-rc\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0-rc.0" }} }}
promote = {{ from = "dev", tag = "v{{major}}.{{minor}}.{{patch}}-rc.{{n}}", approval = "auto" }}

[[pipelines.stages]]
name = "production"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0" }} }}
promote = {{ from = "staging", tag = "v{{major}}.{{minor}}.{{patch}}", approval = "manual" }}
"#
        ));
    }
    config::parse(&text, Format::Toml, "planner bench")
        .expect("a valid configuration")
        .config
        .pipelines
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The snapshot the driver would have after listing and resolving what the planner asked for.
fn snapshot(pipeline: &Pipeline, tags: &[(String, usize)]) -> Observed {
    let key = plan::repo_key(&pipeline.stages[0]);
    let mut observed = Observed::default();
    observed
        .tags
        .insert(key.clone(), tags.iter().map(|(t, _)| t.clone()).collect());
    loop {
        match plan::plan(
            pipeline,
            &observed,
            &|_, _| None,
            now(),
            &Intent::default(),
            &[],
        ) {
            Planned::Complete(_) => return observed,
            Planned::Needs(needs) => {
                for (k, tag) in needs.tags {
                    let image = tags.iter().find(|(t, _)| *t == tag).map(|(_, i)| *i);
                    observed
                        .digests
                        .insert((k, tag), image.map(|i| Digest::of(&[i as u8])));
                }
            }
        }
    }
}

fn plan_all(pipelines: &[Pipeline], snapshots: &[Observed]) -> usize {
    let mut complete = 0;
    for (p, o) in pipelines.iter().zip(snapshots) {
        if let Planned::Complete(plan) =
            plan::plan(p, o, &|_, _| None, now(), &Intent::default(), &[])
        {
            complete += black_box(plan).stages.len();
        }
    }
    complete
}

fn planner(c: &mut Criterion) {
    let pipelines = pipelines(PIPELINES);
    let steady_tags = tags::tags(TAGS);
    // A new dev build in every repository: staging promotes it, production waits for approval.
    let mut new_build = steady_tags.clone();
    new_build.push(("v2.0.1-dev.1".to_string(), 9));
    let steady: Vec<Observed> = pipelines
        .iter()
        .map(|p| snapshot(p, &steady_tags))
        .collect();
    let building: Vec<Observed> = pipelines.iter().map(|p| snapshot(p, &new_build)).collect();
    let unresolved: Vec<Observed> = steady
        .iter()
        .map(|o| Observed {
            tags: o.tags.clone(),
            ..Observed::default()
        })
        .collect();

    let mut group = c.benchmark_group("plan 1000 pipelines x 1000 tags");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("steady state", |b| {
        b.iter(|| assert_eq!(plan_all(&pipelines, &steady), 3 * PIPELINES))
    });
    group.bench_function("new dev build each", |b| {
        b.iter(|| assert_eq!(plan_all(&pipelines, &building), 3 * PIPELINES))
    });
    group.bench_function("first round, no digest known", |b| {
        b.iter(|| {
            for (p, o) in pipelines.iter().zip(&unresolved) {
                black_box(plan::plan(
                    p,
                    o,
                    &|_, _| None,
                    now(),
                    &Intent::default(),
                    &[],
                ));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, planner);
criterion_main!(benches);
