//! Benchmarks 2 and 3, the steady state and how it scales: pipelines whose stages are all up to
//! date (dev's current build is already the current rc and release), so a reconcile finds
//! nothing to do. Measured: one `retagd reconcile` (requests by kind, wall and CPU time) and a
//! `retagd run` daemon on the same configuration (RSS and CPU after a few rounds).
//!
//! # Seeding
//!
//! A million tags over HTTP take hours, and as real directories in the registry's filesystem
//! layout (five directories and two files per tag) about 28 GB. So: four real images are
//! pushed over HTTP into `seed/app`; for each tag count N, N tag directories are made once,
//! each a copy of the directory the registry itself wrote for one of those images
//! (`_manifests/tags/<tag>/{current,index/sha256/<hex>}/link`); and each benchmark repository
//! gets its own real `_manifests/tags/` directory whose N entries are symlinks to them, with its
//! `_layers` and `_manifests/revisions` symlinked to the seed repository's. The registry lists
//! each repository's own directory and resolves each tag through its link, as it would for
//! pushed tags; the seeded data is checked through the registry (tag lists and HEADs) before
//! every measurement and kept under `TARGET/bench-data/` for later runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, AccessLog, Counts, Stages, SERVER};
use crate::support::images::{Pusher, TestImage};
use crate::support::pipeline::Daemon;
use crate::support::proxy::{FaultProxy, TagPaging};
use crate::support::registry::{Registry, RegistryOptions};
use crate::tags::{tags, IMAGES};

/// Bump when the layout below changes, so old seeded data is not reused.
const LAYOUT: &str = "steady-v1";

/// A family of seeded repositories: `repos` repositories of `tags` tags each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Set {
    /// Tags per repository.
    pub tags: usize,
    /// Repositories.
    pub repos: usize,
}

impl Set {
    fn repository(self, i: usize) -> String {
        format!("ss/t{}/svc-{i:04}", self.tags)
    }
}

/// Seeded registry storage: `data` for `with_storage`, and the images' digests.
pub struct Seeded {
    /// The registry's root directory.
    pub data: PathBuf,
    /// Digest of each seeded image.
    pub digests: Vec<String>,
    /// The sets in it.
    pub sets: Vec<Set>,
}

/// Seeds `sets` under `root` unless a finished seeding of the same layout is there.
pub async fn seed(root: &Path, sets: &[Set]) -> Seeded {
    let description = json!({
        "layout": LAYOUT,
        "sets": sets.iter().map(|s| json!({"tags": s.tags, "repos": s.repos})).collect::<Vec<_>>(),
    });
    let ready = root.join("READY");
    let data = root.join("data");
    if let Ok(text) = std::fs::read_to_string(&ready) {
        let done: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if done["description"] == description {
            let digests = done["digests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect();
            eprintln!("steady state: reusing seeded data in {}", root.display());
            return Seeded {
                data,
                digests,
                sets: sets.to_vec(),
            };
        }
    }
    let started = std::time::Instant::now();
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    std::fs::create_dir_all(&data).unwrap();
    let mut digests = Vec::new();
    {
        let registry = Registry::start(RegistryOptions::anonymous().with_storage(&data));
        let pusher = Pusher::new(&registry.url());
        for k in 0..IMAGES {
            let image = TestImage::generate(9000 + k as u64, &[2048, 512]);
            pusher
                .push_image("seed/app", &image, Some(&format!("seed-{k}")))
                .await;
            digests.push(image.digest);
        }
    }
    let v2 = data.join("docker/registry/v2");
    let seed_tags = v2.join("repositories/seed/app/_manifests/tags");
    let (data2, sets2) = (v2.clone(), sets.to_vec());
    tokio::task::spawn_blocking(move || {
        for set in &sets2 {
            let shared = data2.join(format!("bench-shared/t{}", set.tags));
            let tags = tags(set.tags);
            for (tag, image) in &tags {
                copy_dir(&seed_tags.join(format!("seed-{image}")), &shared.join(tag));
            }
            for i in 0..set.repos {
                let repo = data2.join("repositories").join(set.repository(i));
                let dir = repo.join("_manifests/tags");
                std::fs::create_dir_all(&dir).unwrap();
                // repositories/ss/tN/svc-i/{_layers, _manifests/revisions, _manifests/tags/T}
                symlink("../../../seed/app/_layers", &repo.join("_layers"));
                symlink(
                    "../../../../seed/app/_manifests/revisions",
                    &repo.join("_manifests/revisions"),
                );
                for (tag, _) in &tags {
                    symlink(
                        &format!("../../../../../../bench-shared/t{}/{tag}", set.tags),
                        &dir.join(tag),
                    );
                }
            }
        }
    })
    .await
    .unwrap();
    std::fs::write(
        &ready,
        serde_json::to_string_pretty(&json!({"description": description, "digests": digests}))
            .unwrap(),
    )
    .unwrap();
    eprintln!(
        "steady state: seeded {} tags in {:.1} s into {}",
        sets.iter().map(|s| s.tags * s.repos).sum::<usize>(),
        started.elapsed().as_secs_f64(),
        root.display()
    );
    Seeded {
        data,
        digests,
        sets: sets.to_vec(),
    }
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", link.display()));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Checks through the registry that the first and last repository of each set list all their
/// tags and serve the current tags and an old one with the right digests.
pub async fn verify(registry: &Registry, seeded: &Seeded) {
    let client = common::client("retagd-bench-check", 4);
    let base = registry.url();
    for set in &seeded.sets {
        let tags = tags(set.tags);
        for i in [0, set.repos - 1] {
            let repo = set.repository(i);
            let listed = common::list_tags(&client, &base, &repo).await;
            assert_eq!(listed.len(), set.tags, "{repo}: tags listed");
            for (tag, image) in [&tags[0], &tags[tags.len() / 2], &tags[tags.len() - 1]] {
                let digest = common::head_digest(&client, &base, &repo, tag).await;
                assert_eq!(
                    digest.as_deref(),
                    Some(seeded.digests[*image].as_str()),
                    "{repo}:{tag}"
                );
            }
        }
    }
}

/// One configuration to measure: the first `pipelines` repositories of the set with `tags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Point {
    /// Pipelines (one repository each).
    pub pipelines: usize,
    /// Tags per repository.
    pub tags: usize,
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Options {
    /// The configurations.
    pub points: Vec<Point>,
    /// One-shot reconciles timed per configuration (after one warm-up).
    pub runs: usize,
    /// Daemon rounds (every pipeline reconciled once) before its memory is read.
    pub rounds: usize,
    /// The daemon's interval.
    pub interval: Duration,
    /// A configuration to count again through a proxy that pages tag lists by 1,000.
    pub paged: Option<Point>,
}

/// Runs benchmarks 2 and 3 on `seeded`; returns their results.
pub async fn run(options: &Options, seeded: &Seeded, work: &Path) -> Value {
    let registry = Registry::start(RegistryOptions::anonymous().with_storage(&seeded.data));
    verify(&registry, seeded).await;
    let log = AccessLog::new(registry.log_path());
    let mut points = Vec::new();
    // `BENCH_BASELINE_RETAGD=PATH`: the same points with another binary, measured in turn in
    // the same run, so the comparison does not depend on the machine's mood.
    let baseline = std::env::var("BENCH_BASELINE_RETAGD").ok();
    for point in &options.points {
        let repos = repositories(seeded, *point);
        let mut measured = serde_json::Map::new();
        let mut binaries = vec![("retagd", common::RETAGD.to_string())];
        if let Some(b) = &baseline {
            binaries.push(("retagd-baseline", b.clone()));
        }
        for (name, binary) in &binaries {
            let value = measure(
                &registry,
                &log,
                (name, binary),
                &repos,
                options,
                work,
                *point,
            )
            .await;
            measured.insert((*name).to_string(), value);
        }
        let mut value = measured.remove("retagd").unwrap_or_default();
        if let Some(base) = measured.remove("retagd-baseline") {
            let ratio = |path: &[&str]| {
                let get = |v: &Value| {
                    path.iter()
                        .fold(v, |v, k| &v[*k])
                        .as_f64()
                        .unwrap_or(f64::NAN)
                };
                get(&value) / get(&base)
            };
            let compared = json!({
                "reconcile_cpu": ratio(&["reconcile", "median_cpu_s"]),
                "reconcile_wall": ratio(&["reconcile", "median_s"]),
                "daemon_cpu_per_pipeline_reconcile": ratio(&["daemon", "cpu_ms_per_pipeline_reconcile"]),
                "daemon_rss": ratio(&["daemon", "rss_mib"]),
                "daemon_settled_rss": ratio(&["daemon", "settled_rss_mib"]),
            });
            eprintln!(
                "steady P={} tags={}: retagd / baseline = {compared}",
                point.pipelines, point.tags
            );
            value["baseline"] = base;
            value["versus_baseline"] = compared;
        }
        points.push(value);
    }
    let paged = match options.paged {
        Some(point) => Some(paged(&registry, seeded, point, work).await),
        None => None,
    };
    json!({
        "stages": 3,
        "images": IMAGES,
        "runs": options.runs,
        "daemon_interval_s": options.interval.as_secs_f64(),
        "daemon_rounds": options.rounds,
        "points": points,
        "paged": paged,
    })
}

/// One binary on one point: timed one-shot reconciles, then a daemon.
async fn measure(
    registry: &Registry,
    log: &AccessLog,
    (name, binary): (&str, &str),
    repos: &[String],
    options: &Options,
    work: &Path,
    point: Point,
) -> Value {
    let config = work.join(format!("steady-p{}-t{}.toml", point.pipelines, point.tags));
    std::fs::write(
        &config,
        common::config(&registry.url(), repos, (Stages::Three, true), "1m", ""),
    )
    .unwrap();
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut requests = Vec::new();
    for run in 0..=options.runs {
        let mark = log.mark();
        let ran = common::run_timed(common::retagd_binary(
            binary,
            &["reconcile", "--config", &config.display().to_string()],
        ))
        .await;
        common::check("retagd reconcile (steady state)", &ran.output);
        let counts = Counts::of(&log.since(mark).await, |a| a.agent.starts_with("retagd/"));
        assert_eq!(
            counts.get("manifest PUT"),
            0,
            "a steady-state reconcile wrote something: {}",
            counts.line()
        );
        if run == 0 {
            continue; // warm-up: page cache, first connections
        }
        eprintln!(
            "steady {name} P={} tags={} run {run}: {:.3} s wall, {:.2} s CPU ({})",
            point.pipelines,
            point.tags,
            ran.wall.as_secs_f64(),
            ran.cpu,
            counts.line()
        );
        walls.push(common::secs(ran.wall));
        cpus.push(ran.cpu);
        requests.push(counts);
    }
    let daemon = daemon(registry, (name, binary), repos, options, work, point).await;
    let counts = requests.first().cloned().unwrap_or_default();
    let p = point.pipelines as f64;
    json!({
        "pipelines": point.pipelines,
        "tags": point.tags,
        "reconcile": {
            "wall_s": walls,
            "median_s": common::median(&walls),
            "cpu_s": cpus,
            "median_cpu_s": common::median(&cpus),
            "requests": counts.json(),
            "requests_same_every_run": requests.iter().all(|c| c.by_kind == counts.by_kind),
            "tag_list_pages_per_repo": counts.get("tag list") as f64 / p,
            "manifest_heads_per_pipeline": counts.get("manifest HEAD") as f64 / p,
            "manifest_gets": counts.get("manifest GET"),
        },
        "daemon": daemon,
    })
}

fn repositories(seeded: &Seeded, point: Point) -> Vec<String> {
    let set = seeded
        .sets
        .iter()
        .find(|s| s.tags == point.tags && s.repos >= point.pipelines)
        .unwrap_or_else(|| panic!("no seeded set for {point:?}"));
    (0..point.pipelines).map(|i| set.repository(i)).collect()
}

/// Runs `retagd run` on the configuration until every pipeline reconciled `rounds` times; its
/// memory, CPU per pipeline reconcile and requests per round.
async fn daemon(
    registry: &Registry,
    (name, binary): (&str, &str),
    repos: &[String],
    options: &Options,
    work: &Path,
    point: Point,
) -> Value {
    let interval = humantime::format_duration(options.interval).to_string();
    let config = work.join(format!(
        "steady-daemon-p{}-t{}.toml",
        point.pipelines, point.tags
    ));
    std::fs::write(
        &config,
        common::config(
            &registry.url(),
            repos,
            (Stages::Three, true),
            &interval,
            SERVER,
        ),
    )
    .unwrap();
    let log = AccessLog::new(registry.log_path());
    let mark = log.mark();
    let daemon = Daemon::start_binary(binary, &config, work.join("daemon.log"));
    let address = daemon.address().await;
    let pid = daemon.child.id();
    let client = common::client("retagd-bench-check", 1);
    let wanted = options.rounds * repos.len();
    let mut samples = Vec::new();
    let deadline = std::time::Instant::now()
        + options.interval * (options.rounds as u32 + 2)
        + Duration::from_secs(120);
    let mut done = 0;
    while done < wanted {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon made {done} of {wanted} reconciles; its log:\n{}",
            common::tail(&daemon.log(), 30)
        );
        // Not faster: rendering /metrics for 1,000 pipelines allocates megabytes, and a scrape
        // every 250 ms would be measured as the daemon's own memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        done = reconciles(&client, &address.to_string()).await;
        if let Some(rss) = common::process_kib(pid, "VmRSS") {
            samples.push(rss);
        }
    }
    let rss = common::process_kib(pid, "VmRSS").unwrap_or(0);
    // One more interval: what a long-running daemon holds, once freed pages went back.
    tokio::time::sleep(options.interval).await;
    let settled = common::process_kib(pid, "VmRSS").unwrap_or(0);
    let hwm = common::process_kib(pid, "VmHWM").unwrap_or(0);
    let cpu = common::process_cpu(pid).unwrap_or(f64::NAN);
    let threads = common::process_kib(pid, "Threads").unwrap_or(0);
    drop(daemon);
    let counts = Counts::of(&log.since(mark).await, |a| a.agent.starts_with("retagd/"));
    let errors = counts.server_errors;
    eprintln!(
        "steady daemon {name} P={} tags={}: {done} reconciles, RSS {:.1} MiB, one interval later {:.1} MiB (peak {:.1} MiB), {:.2} ms CPU per pipeline reconcile",
        point.pipelines,
        point.tags,
        rss as f64 / 1024.0,
        settled as f64 / 1024.0,
        hwm as f64 / 1024.0,
        cpu * 1000.0 / done as f64
    );
    json!({
        "reconciles": done,
        "rss_mib": rss as f64 / 1024.0,
        "settled_rss_mib": settled as f64 / 1024.0,
        "peak_rss_mib": hwm as f64 / 1024.0,
        "max_sampled_rss_mib": samples.iter().copied().max().unwrap_or(0) as f64 / 1024.0,
        "cpu_s": cpu,
        "cpu_ms_per_pipeline_reconcile": cpu * 1000.0 / done as f64,
        "requests_per_pipeline_reconcile": counts.total() as f64 / done as f64,
        "server_errors": errors,
        "threads": threads,
    })
}

/// Sum of `retagd_reconcile_duration_seconds_count` over the pipelines.
async fn reconciles(client: &reqwest::Client, address: &str) -> usize {
    let Ok(response) = client.get(format!("http://{address}/metrics")).send().await else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("retagd_reconcile_duration_seconds_count"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// The same reconcile through a proxy that pages tag lists (as distribution 3, Harbor, GHCR
/// and Docker Hub do; the CNCF registry 2.8 sends everything at once): pages per repository.
async fn paged(registry: &Registry, seeded: &Seeded, point: Point, work: &Path) -> Value {
    let proxy = FaultProxy::start(registry.addr);
    proxy.page_tags(Some(TagPaging::default()));
    let repos = repositories(seeded, point);
    let config = work.join("steady-paged.toml");
    std::fs::write(
        &config,
        common::config(&proxy.url(), &repos, (Stages::Three, true), "1m", ""),
    )
    .unwrap();
    let ran = common::run_timed(common::retagd(&[
        "reconcile",
        "--config",
        &config.display().to_string(),
    ]))
    .await;
    common::check("retagd reconcile (paged)", &ran.output);
    let pages = proxy.count_where(|r| r.path.contains("/tags/list"));
    let heads = proxy.count_where(|r| r.is_manifest_head());
    let gets = proxy.count_where(|r| r.is_manifest_get());
    eprintln!(
        "steady paged P={} tags={}: {pages} tag-list pages, {heads} manifest HEADs, {gets} manifest GETs",
        point.pipelines, point.tags
    );
    json!({
        "pipelines": point.pipelines,
        "tags": point.tags,
        "page_size": 1000,
        "tag_list_pages": pages,
        "tag_list_pages_per_repo": pages as f64 / point.pipelines as f64,
        "manifest_heads": heads,
        "manifest_gets": gets,
    })
}
