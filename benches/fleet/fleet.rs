//! Benchmark 1, fleet promotion: P pipelines, each its own repository with one new dev tag,
//! promoted to rc by one `retagd reconcile`; the same work by skopeo (one by one, with and
//! without `--preserve-digests`, and 8 at a time) and by the ceiling, a minimal keep-alive
//! client that only lists the tags, GETs the dev manifest and PUTs it as the rc tag, 8 images at
//! a time (retagd's default `max_concurrency`).
//!
//! Every run of every tool gets fresh repositories holding the same images, so each does real
//! work; tools take turns in a rotating order. Requests are counted from the registry's access
//! log between a tool's start and end.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt as _};
use serde_json::{json, Value};

use crate::common::{self, AccessLog, Counts, Stages};
use crate::support::images::{Pusher, TestImage, MANIFEST_ACCEPT};
use crate::support::proxy::{Fault, FaultProxy};
use crate::support::registry::{Registry, RegistryOptions};

/// The tag every repository starts with.
pub const DEV: &str = "v1.2.0-dev.1";
/// The tag promotion makes.
pub const RC: &str = "v1.2.0-rc.1";
/// Requests in flight for the ceiling and parallel skopeo: retagd's default `max_concurrency`.
pub const WIDTH: usize = 8;

/// Who promotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    /// One `retagd reconcile`, promotion records off: the same work as the others.
    Retagd,
    /// The same with promotion records on (the default), for what they cost.
    RetagdRecords,
    /// The minimal client.
    Ceiling,
    /// `skopeo copy`, one image after the other.
    Skopeo,
    /// The same with `--preserve-digests`.
    SkopeoPreserve,
    /// `skopeo copy`, 8 processes at a time.
    Skopeo8,
    /// Another retagd binary (`BENCH_BASELINE_RETAGD=PATH`), for a before/after comparison in one run.
    Baseline,
}

impl Tool {
    /// Every tool, in the order of the first run.
    pub const ALL: [Tool; 6] = [
        Tool::Retagd,
        Tool::RetagdRecords,
        Tool::Ceiling,
        Tool::Skopeo,
        Tool::SkopeoPreserve,
        Tool::Skopeo8,
    ];

    /// Its name in the results and in repository paths.
    pub fn slug(self) -> &'static str {
        match self {
            Tool::Retagd => "retagd",
            Tool::RetagdRecords => "retagd-records",
            Tool::Ceiling => "ceiling",
            Tool::Skopeo => "skopeo",
            Tool::SkopeoPreserve => "skopeo-preserve-digests",
            Tool::Skopeo8 => "skopeo-8-parallel",
            Tool::Baseline => "retagd-baseline",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fleet sizes.
    pub sizes: Vec<usize>,
    /// Runs per size (the largest size may get fewer, see `runs_for`).
    pub runs: usize,
    /// Runs for sizes of 500 and more.
    pub runs_large: usize,
    /// The tools.
    pub tools: Vec<Tool>,
    /// Added to every request by a proxy in front of the registry (all tools go through it),
    /// modelling a registry that is not on loopback.
    pub latency_ms: Option<u64>,
}

/// One tool's figures at one size.
#[derive(Default)]
struct Figures {
    wall: Vec<f64>,
    cpu: Vec<f64>,
    requests: Vec<Counts>,
    digest_kept: bool,
    checked: bool,
}

/// Runs benchmark 1 and returns its results; panics when a tool does not promote every image.
pub async fn run(options: &Options, work: &std::path::Path) -> Value {
    let registry = Registry::start(RegistryOptions::anonymous());
    let log = AccessLog::new(registry.log_path());
    let base = registry.url();
    // With latency, the tools talk to a proxy that holds every request that long; seeding,
    // counting (the registry's log) and checking still go to the registry itself.
    let proxy = options.latency_ms.map(|ms| {
        let proxy = FaultProxy::start(registry.addr);
        proxy.inject(Fault::delay(ms).sometimes(1.0));
        proxy
    });
    let (tool_base, tool_host) = match &proxy {
        Some(proxy) => (proxy.url(), proxy.host()),
        None => (base.clone(), registry.host()),
    };
    let largest = options.sizes.iter().copied().max().unwrap_or(0);
    // Small images (one 1 KiB layer): the work is the registry protocol, not bytes.
    let images: Vec<TestImage> = (0..largest)
        .map(|i| TestImage::generate(7000 + i as u64, &[1024]))
        .collect();
    let auth_file = work.join("skopeo-auth.json");
    std::fs::write(&auth_file, "{}").expect("write the empty skopeo auth file");
    let mut sizes = Vec::new();
    for &p in &options.sizes {
        let runs = if p >= 500 {
            options.runs_large
        } else {
            options.runs
        };
        let mut figures: BTreeMap<Tool, Figures> = BTreeMap::new();
        for run in 0..runs {
            let sets: Vec<(Tool, Vec<String>)> = options
                .tools
                .iter()
                .map(|&t| {
                    let repos = (0..p)
                        .map(|i| format!("fleet/p{p}-r{run}-{}/svc-{i:04}", t.slug()))
                        .collect();
                    (t, repos)
                })
                .collect();
            seed(&base, &sets, &images).await;
            // A different tool goes first in each run.
            let mut order: Vec<&(Tool, Vec<String>)> = sets.iter().collect();
            order.rotate_left(run % sets.len().max(1));
            for (tool, repos) in order {
                let mark = log.mark();
                let (wall, cpu) = match tool {
                    Tool::Retagd => {
                        retagd(common::RETAGD, &tool_base, repos, work, (p, run, false)).await
                    }
                    Tool::RetagdRecords => {
                        retagd(common::RETAGD, &tool_base, repos, work, (p, run, true)).await
                    }
                    Tool::Baseline => {
                        let binary = std::env::var("BENCH_BASELINE_RETAGD")
                            .expect("BENCH_BASELINE_RETAGD names the baseline binary");
                        retagd(&binary, &tool_base, repos, work, (p, run, false)).await
                    }
                    Tool::Ceiling => (ceiling(&tool_base, repos).await, f64::NAN),
                    Tool::Skopeo => (
                        skopeo(&tool_host, repos, &auth_file, false, 1).await,
                        f64::NAN,
                    ),
                    Tool::SkopeoPreserve => (
                        skopeo(&tool_host, repos, &auth_file, true, 1).await,
                        f64::NAN,
                    ),
                    Tool::Skopeo8 => (
                        skopeo(&tool_host, repos, &auth_file, false, WIDTH).await,
                        f64::NAN,
                    ),
                };
                let requests = Counts::of(&log.since(mark).await, |_| true);
                let kept = verify(&base, repos, &images).await;
                let f = figures.entry(*tool).or_default();
                f.digest_kept = if f.checked {
                    f.digest_kept && kept
                } else {
                    kept
                };
                f.checked = true;
                f.wall.push(common::secs(wall));
                if !cpu.is_nan() {
                    f.cpu.push(cpu);
                }
                eprintln!(
                    "fleet P={p} run {run} {:<24} {:>8.3} s  {:>5.1} req/image  ({})",
                    tool.slug(),
                    wall.as_secs_f64(),
                    requests.total() as f64 / p as f64,
                    requests.line()
                );
                f.requests.push(requests);
            }
        }
        let tools: serde_json::Map<String, Value> = figures
            .iter()
            .map(|(tool, f)| {
                let median = common::median(&f.wall);
                let per_image: Vec<f64> = f
                    .requests
                    .iter()
                    .map(|c| c.total() as f64 / p as f64)
                    .collect();
                (
                    tool.slug().to_string(),
                    json!({
                        "wall_s": f.wall,
                        "median_s": median,
                        "images_per_s": p as f64 / median,
                        "cpu_s": f.cpu,
                        "median_cpu_s": if f.cpu.is_empty() { Value::Null } else { json!(common::median(&f.cpu)) },
                        "requests_per_image": common::median(&per_image),
                        "requests": f.requests.first().map(Counts::json),
                        "server_errors": f.requests.iter().map(|c| c.server_errors).sum::<usize>(),
                        "digest_kept": f.digest_kept,
                    }),
                )
            })
            .collect();
        sizes.push(json!({"p": p, "runs": runs, "tools": tools}));
    }
    json!({ "width": WIDTH, "dev_tag": DEV, "rc_tag": RC, "latency_ms": options.latency_ms, "sizes": sizes })
}

/// Pushes image `i` as `DEV` into repository `i` of every set, 16 repositories at a time.
async fn seed(base: &str, sets: &[(Tool, Vec<String>)], images: &[TestImage]) {
    let pusher = Pusher::new(base);
    let jobs: Vec<(&str, &TestImage)> = sets
        .iter()
        .flat_map(|(_, repos)| repos.iter().zip(images).map(|(r, i)| (r.as_str(), i)))
        .collect();
    stream::iter(jobs)
        .for_each_concurrent(16, |(repo, image)| {
            let pusher = pusher.clone();
            async move { pusher.push_image(repo, image, Some(DEV)).await }
        })
        .await;
}

/// One `retagd reconcile` (of `binary`) over a fresh configuration and state directory, with
/// promotion records on or off; wall and CPU time.
async fn retagd(
    binary: &str,
    base: &str,
    repos: &[String],
    work: &std::path::Path,
    (p, run, records): (usize, usize, bool),
) -> (Duration, f64) {
    let config = work.join(format!("fleet-p{p}-r{run}-records-{records}.toml"));
    // As deployed (the chart always sets one): with a state_dir, retagd's writers lock each
    // target repository, and a copy trusts the listing that its tag is free.
    let state = work.join(format!("state-p{p}-r{run}-records-{records}"));
    let server = format!("\n[server]\nstate_dir = \"{}\"\n", state.display());
    std::fs::write(
        &config,
        common::config(base, repos, (Stages::Two, records), "1m", &server),
    )
    .unwrap();
    let ran = common::run_timed(common::retagd_binary(
        binary,
        &["reconcile", "--config", &config.display().to_string()],
    ))
    .await;
    common::check("retagd reconcile", &ran.output);
    (ran.wall, ran.cpu)
}

/// The ceiling: list, GET, PUT per image, `WIDTH` images at a time on one keep-alive client.
pub async fn ceiling(base: &str, repos: &[String]) -> Duration {
    let start = Instant::now();
    let client = common::client("retagd-bench-ceiling", WIDTH);
    stream::iter(repos)
        .for_each_concurrent(WIDTH, |repo| {
            let client = client.clone();
            async move {
                let tags = common::list_tags(&client, base, repo).await;
                assert!(
                    tags.iter().any(|t| t == DEV),
                    "{repo}: no {DEV} in {tags:?}"
                );
                let got = client
                    .get(format!("{base}/v2/{repo}/manifests/{DEV}"))
                    .header("Accept", MANIFEST_ACCEPT)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    got.status().is_success(),
                    "GET {repo}:{DEV}: {}",
                    got.status()
                );
                let media_type = got.headers()["content-type"].clone();
                let manifest = got.bytes().await.unwrap();
                let put = client
                    .put(format!("{base}/v2/{repo}/manifests/{RC}"))
                    .header("Content-Type", media_type)
                    .body(manifest)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    put.status(),
                    reqwest::StatusCode::CREATED,
                    "PUT {repo}:{RC}"
                );
            }
        })
        .await;
    start.elapsed()
}

/// `skopeo copy REPO:DEV REPO:RC` for every repository, `width` processes at a time.
async fn skopeo(
    host: &str,
    repos: &[String],
    auth_file: &std::path::Path,
    preserve_digests: bool,
    width: usize,
) -> Duration {
    let start = Instant::now();
    stream::iter(repos)
        .for_each_concurrent(width, |repo| {
            let command = common::skopeo_copy(
                &format!("{host}/{repo}:{DEV}"),
                &format!("{host}/{repo}:{RC}"),
                preserve_digests,
                auth_file,
            );
            async move {
                let output = tokio::process::Command::from(command)
                    .kill_on_drop(true)
                    .output()
                    .await
                    .expect("run skopeo (apt-get install -y skopeo)");
                common::check("skopeo copy", &output);
            }
        })
        .await;
    start.elapsed()
}

/// Checks that every repository got `RC`; returns whether each kept its dev digest.
async fn verify(base: &str, repos: &[String], images: &[TestImage]) -> bool {
    let client = common::client("retagd-bench-check", WIDTH);
    let results: Vec<bool> = stream::iter(repos.iter().zip(images))
        .map(|(repo, image)| {
            let client = client.clone();
            async move {
                let rc = common::head_digest(&client, base, repo, RC).await;
                let rc = rc.unwrap_or_else(|| panic!("{repo}:{RC} was not made"));
                rc == image.digest
            }
        })
        .buffer_unordered(WIDTH)
        .collect()
        .await;
    results.into_iter().all(|kept| kept)
}
