//! Benchmarks 1 to 4 of issue 7 against a real CNCF registry (`docker-registry`, started here
//! on loopback): fleet promotion against skopeo and a minimal client (`fleet`), the steady
//! state and its scaling (`steady`), and push-to-promotion latency with registry webhooks
//! (`webhook`). Benchmark 5 is the criterion benches `policy` and `planner`.
//!
//! - `cargo bench --bench fleet [-- fleet|steady|webhook ...] [--runs N] [--sizes 10,100]
//!   [--tools retagd,ceiling,...] [--latency-ms MS] [--points 1000x1000,...] [--no-paged] [--pushes N] [--keep]`:
//!   the full benchmarks with the release binary; results go to `TARGET/bench/NAME.json`, which
//!   `scripts/bench-report` turns into `docs/benchmarks.md`. `scripts/bench` runs everything.
//! - Without `--bench` (so under `cargo test --all-targets`), or with `--smoke`: a reduced run
//!   (10 pipelines, a small steady state, three webhook pushes) that asserts only that it works
//!   and the structural goals (requests per promoted image, no manifest GET in a steady state,
//!   one tag-list page per 1,000 tags), never a time.

#![allow(clippy::unwrap_used)]

#[path = "../../tests/it/support/mod.rs"]
mod support;

mod common;
mod fleet;
mod steady;
mod tags;
mod webhook;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--smoke");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if full {
        runtime.block_on(full_run(&args));
    } else {
        runtime.block_on(smoke());
    }
}

/// The value after `--name`, if given.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn write(name: &str, value: &Value) {
    let dir = common::target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(value).unwrap()).unwrap();
    eprintln!("wrote {}", path.display());
}

async fn full_run(args: &[String]) {
    let parts = ["fleet", "steady", "webhook"];
    let mut chosen: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| args.iter().any(|a| a == p))
        .collect();
    if chosen.is_empty() {
        chosen = parts.to_vec();
    }
    let runs: usize = flag(args, "--runs").map_or(5, |r| r.parse().unwrap());
    let work = tempfile::Builder::new()
        .prefix("retagd-bench-")
        .tempdir()
        .unwrap();
    if chosen.contains(&"fleet") {
        let sizes = flag(args, "--sizes").map_or(vec![10, 100, 500], |s| {
            s.split(',').map(|n| n.parse().unwrap()).collect()
        });
        let options = fleet::Options {
            sizes,
            runs,
            runs_large: flag(args, "--runs-large").map_or(runs.min(3), |r| r.parse().unwrap()),
            latency_ms: flag(args, "--latency-ms").map(|ms| ms.parse().unwrap()),
            tools: flag(args, "--tools").map_or(fleet::Tool::ALL.to_vec(), |t| {
                if t.contains("retagd-baseline") {
                    assert!(
                        std::env::var_os("BENCH_BASELINE_RETAGD").is_some(),
                        "set BENCH_BASELINE_RETAGD"
                    );
                }
                t.split(',')
                    .map(|name| {
                        *fleet::Tool::ALL
                            .iter()
                            .chain(&[fleet::Tool::Baseline])
                            .find(|tool| tool.slug() == name)
                            .unwrap_or_else(|| panic!("no tool {name}"))
                    })
                    .collect()
            }),
        };
        let name = match options.latency_ms {
            Some(ms) => format!("fleet-{ms}ms"),
            None => "fleet".to_string(),
        };
        write(&name, &fleet::run(&options, work.path()).await);
    }
    if chosen.contains(&"steady") {
        let sets = [
            steady::Set {
                tags: 1000,
                repos: 1000,
            },
            steady::Set {
                tags: 100,
                repos: 100,
            },
            steady::Set {
                tags: 10_000,
                repos: 100,
            },
        ];
        let root = common::target_dir().join("bench-data").join("steady");
        let seeded = steady::seed(&root, &sets).await;
        let point = |pipelines, tags| steady::Point { pipelines, tags };
        let options = steady::Options {
            points: flag(args, "--points").map_or(
                vec![
                    point(1000, 1000),
                    point(10, 1000),
                    point(100, 1000),
                    point(100, 100),
                    point(100, 10_000),
                ],
                |list| {
                    list.split(',')
                        .map(|pt| {
                            let (p, t) = pt.split_once('x').expect("PIPELINESxTAGS");
                            point(p.parse().unwrap(), t.parse().unwrap())
                        })
                        .collect()
                },
            ),
            runs,
            rounds: 3,
            interval: Duration::from_secs(10),
            paged: (!args.iter().any(|a| a == "--no-paged")).then_some(point(100, 10_000)),
        };
        write("steady", &steady::run(&options, &seeded, work.path()).await);
    }
    if chosen.contains(&"webhook") {
        let pushes = flag(args, "--pushes").map_or(50, |p| p.parse().unwrap());
        write("webhook", &webhook::run(pushes, work.path()).await);
    }
    if args.iter().any(|a| a == "--keep") {
        eprintln!("kept {}", work.keep().display());
    }
}

/// The reduced run `cargo test` makes; see the crate docs.
async fn smoke() {
    let started = std::time::Instant::now();
    let work = tempfile::Builder::new()
        .prefix("retagd-bench-smoke-")
        .tempdir()
        .unwrap();
    smoke_fleet(work.path()).await;
    smoke_steady(work.path()).await;
    let hooks = webhook::run(3, work.path()).await;
    assert_eq!(hooks["latencies_ms"].as_array().unwrap().len(), 3);
    eprintln!(
        "benchmark smoke run passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

async fn smoke_fleet(work: &Path) {
    let p = 10;
    let options = fleet::Options {
        sizes: vec![p],
        runs: 1,
        runs_large: 1,
        tools: vec![
            fleet::Tool::Retagd,
            fleet::Tool::RetagdRecords,
            fleet::Tool::Ceiling,
            fleet::Tool::Skopeo8,
        ],
        latency_ms: None,
    };
    let result = fleet::run(&options, work).await;
    let tools = &result["sizes"][0]["tools"];
    for tool in ["retagd", "retagd-records", "ceiling", "skopeo-8-parallel"] {
        assert_eq!(tools[tool]["wall_s"].as_array().unwrap().len(), 1, "{tool}");
    }
    for tool in ["retagd", "retagd-records", "ceiling"] {
        assert_eq!(tools[tool]["digest_kept"], true, "{tool} changed a digest");
    }
    let retagd = &tools["retagd"]["requests"]["by_kind"];
    let count = |kind: &str| retagd[kind].as_u64().unwrap_or(0) as usize;
    // Per promoted image: one tag list, one GET of the source, one PUT; nothing else but HEADs
    // (the source's digest and the destination's absence), and no blob request.
    assert_eq!(count("tag list"), p, "{retagd}");
    assert_eq!(count("manifest GET"), p, "{retagd}");
    assert_eq!(count("manifest PUT"), p, "{retagd}");
    assert!(count("manifest HEAD") <= 2 * p, "{retagd}");
    let total: usize = retagd
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap() as usize)
        .sum();
    assert!(total <= 5 * p, "{total} requests for {p} images: {retagd}");
    // With records: per image the record's layer (POST, PUT: this registry opens a session),
    // the artifact PUT and the index GET and PUT; the empty config once per repository.
    let with_records = tools["retagd-records"]["requests_per_image"]
        .as_f64()
        .unwrap();
    let without = tools["retagd"]["requests_per_image"].as_f64().unwrap();
    assert!(
        (with_records - without - 8.0).abs() < 1e-9,
        "records cost {} requests per image",
        with_records - without
    );
    let ceiling = tools["ceiling"]["requests_per_image"].as_f64().unwrap();
    assert!((ceiling - 3.0).abs() < 1e-9, "ceiling: {ceiling} per image");
}

async fn smoke_steady(work: &Path) {
    let sets = [
        steady::Set {
            tags: 100,
            repos: 10,
        },
        steady::Set {
            tags: 2500,
            repos: 2,
        },
    ];
    let seeded = steady::seed(&work.join("seeded"), &sets).await;
    let options = steady::Options {
        points: vec![steady::Point {
            pipelines: 10,
            tags: 100,
        }],
        runs: 1,
        rounds: 2,
        interval: Duration::from_secs(1),
        paged: Some(steady::Point {
            pipelines: 2,
            tags: 2500,
        }),
    };
    let result = steady::run(&options, &seeded, work).await;
    let reconcile = &result["points"][0]["reconcile"];
    let by_kind = &reconcile["requests"]["by_kind"];
    assert_eq!(reconcile["manifest_gets"], 0, "{reconcile}");
    assert_eq!(by_kind["manifest PUT"], Value::Null, "{reconcile}");
    assert_eq!(reconcile["tag_list_pages_per_repo"], 1.0, "{reconcile}");
    // One HEAD per stage: dev, staging and production.
    assert!(
        reconcile["manifest_heads_per_pipeline"].as_f64().unwrap() <= 3.0,
        "{reconcile}"
    );
    let daemon = &result["points"][0]["daemon"];
    assert!(daemon["rss_mib"].as_f64().unwrap() > 0.0, "{daemon}");
    let paged = &result["paged"];
    assert!(
        paged["tag_list_pages_per_repo"].as_f64().unwrap() <= 3.0,
        "2,500 tags in pages of 1,000: {paged}"
    );
    assert_eq!(paged["manifest_gets"], 0, "{paged}");
}
