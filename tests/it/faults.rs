//! The fault suite: `retagd run` promoting a fleet of pipelines through a real registry while
//! our proxy (or the registry itself) misbehaves. After each fault: no tag points at a digest
//! nobody selected, no release tag moved, the daemon is alive and its metrics show the fault,
//! and once the fault stops everything converges, each promotion made exactly once.
//!
//! The test command runs the short version (the example pipeline and 10 generated ones, the
//! faults that need no privileges, 5 SIGKILLs). `RETAGD_FAULTS=long cargo test --release --test
//! it faults:: -- --nocapture` runs the long one: 50 generated pipelines, 2 s latency, storage made
//! read-only (needs root, for a bind mount), and 20 SIGKILLs during a 200-promotion reconcile.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::config::{Config, Pipeline, Stage, AUTO, MANUAL};
use support::images::{Pusher, TestImage};
use support::pipeline::{digest_at, Daemon};
use support::process::{retagd, ProcessGuard};
use support::proxy::{Fault, FaultProxy};
use support::registry::{Registry, RegistryOptions};

/// How long convergence may take once a fault stops (retries back off up to 10 s, failed
/// pipelines retry after 5 s).
const CONVERGE: Duration = Duration::from_secs(60);

fn long() -> bool {
    std::env::var("RETAGD_FAULTS").is_ok_and(|v| v == "long")
}

/// The registry, the proxy retagd talks through, and what was pushed.
struct Fleet {
    registry: Registry,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
    /// Repositories of the generated pipelines, then the example's.
    repos: Vec<String>,
    /// Per repository: the dev digest of each round.
    pushed: BTreeMap<String, Vec<String>>,
    round: usize,
}

const EXAMPLE_REPO: &str = "myorg/api-gateway";

impl Fleet {
    fn start(generated: usize) -> Fleet {
        let registry = Registry::start(RegistryOptions::anonymous());
        let proxy = FaultProxy::start(registry.addr);
        let mut repos: Vec<String> = (0..generated)
            .map(|i| format!("fleet/app-{i:03}"))
            .collect();
        repos.push(EXAMPLE_REPO.to_string());
        Fleet {
            registry,
            proxy,
            dir: tempfile::tempdir().unwrap(),
            pushed: repos.iter().map(|r| (r.clone(), Vec::new())).collect(),
            repos,
            round: 0,
        }
    }

    /// The example pipeline (production manual) and one generated pipeline per repository
    /// (production automatic), reconciling every second.
    fn configure(&self) -> std::path::PathBuf {
        let mut config = Config::new()
            .interval("1s")
            .server_setting(&format!(
                "state_dir = \"{}\"",
                self.dir.path().join("state").display()
            ))
            .registry("local", &self.proxy.url())
            .registry_setting("local", "max_concurrency = 8");
        for repo in &self.repos {
            let (name, production) = if repo == EXAMPLE_REPO {
                ("api-gateway".to_string(), MANUAL)
            } else {
                (repo.replace('/', "-"), AUTO)
            };
            config = config.pipeline(Pipeline::example(&name, repo, AUTO, production));
        }
        config.write(&self.dir.path().join("retagd.toml"))
    }

    /// Pushes a new dev build `v1.<round>.0-dev.1` to every repository, straight to the
    /// registry (the proxy's faults are for retagd).
    async fn push_round(&mut self) {
        self.round += 1;
        let pusher = Pusher::new(&self.registry.url());
        for (i, repo) in self.repos.iter().enumerate() {
            let image = TestImage::generate((self.round * 1000 + i) as u64, &[256]);
            let tag = format!("v1.{}.0-dev.1", self.round);
            pusher.push_image(repo, &image, Some(&tag)).await;
            self.pushed
                .get_mut(repo)
                .unwrap()
                .push(image.digest.clone());
        }
    }

    async fn tags(&self, repo: &str) -> Vec<String> {
        let url = format!("{}/v2/{repo}/tags/list", self.registry.url());
        let body = support::http_client().get(url).send().await.unwrap();
        let list: serde_json::Value = serde_json::from_slice(&body.bytes().await.unwrap()).unwrap();
        list["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// Every rc and release tag points at the dev build of its version, and no version has two
    /// rc tags. Returns how many promoted tags were checked.
    async fn check_no_wrong_tag(&self) -> usize {
        let mut checked = 0;
        for repo in &self.repos {
            let mut rc_per_version: BTreeMap<usize, usize> = BTreeMap::new();
            for tag in self.tags(repo).await {
                if tag.contains("-dev.") {
                    continue;
                }
                // The promotion records' index: only ever about an image pushed here.
                if let Some(hex) = tag.strip_prefix("sha256-") {
                    assert!(
                        self.pushed[repo].iter().any(|d| d.ends_with(hex)),
                        "{repo}:{tag}: records about an image nobody pushed"
                    );
                    continue;
                }
                let round: usize = tag
                    .strip_prefix("v1.")
                    .and_then(|t| t.split('.').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("{repo}:{tag}: a tag nobody planned"));
                let expected = &self.pushed[repo][round - 1];
                let digest = digest_at(&self.registry, repo, &tag).await;
                assert_eq!(
                    digest.as_deref(),
                    Some(expected.as_str()),
                    "{repo}:{tag} points at the wrong bytes"
                );
                if tag.contains("-rc.") {
                    *rc_per_version.entry(round).or_default() += 1;
                }
                checked += 1;
            }
            for (round, count) in rc_per_version {
                assert_eq!(count, 1, "{repo}: {count} rc tags for v1.{round}.0");
            }
        }
        checked
    }

    /// Waits until this round is promoted everywhere: rc.1 in every repository, the release
    /// where production is automatic.
    async fn wait_converged(&self, daemon: Option<&Daemon>) {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let mut missing = Vec::new();
            for repo in &self.repos {
                let tags = self.tags(repo).await;
                let rc = format!("v1.{}.0-rc.1", self.round);
                let release = format!("v1.{}.0", self.round);
                if !tags.contains(&rc) {
                    missing.push(format!("{repo}:{rc}"));
                }
                if repo != EXAMPLE_REPO && !tags.contains(&release) {
                    missing.push(format!("{repo}:{release}"));
                }
            }
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not converged after {CONVERGE:?}: missing {missing:?}\n{}",
                daemon.map(|d| d.log()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The sum of a metric's samples whose labels contain every `label="value"` of `filter`.
fn metric_sum(exposition: &str, name: &str, filter: &[&str]) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| filter.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics(address: std::net::SocketAddr) -> String {
    let answer = support::http_client()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the daemon does not answer /metrics: {e}"));
    answer.text().await.unwrap()
}

/// One fault: its name, what it injects, and the metric (name and label filter) that must
/// grow while it is on.
struct Scenario {
    name: &'static str,
    faults: Vec<Fault>,
    metric: (&'static str, &'static [&'static str]),
}

fn scenarios() -> Vec<Scenario> {
    let mut all = vec![
        Scenario {
            name: "5xx on 30% of requests",
            faults: vec![Fault::status(503).sometimes(0.3)],
            metric: (
                "retagd_registry_retries_total",
                &["reason=\"server_error\""],
            ),
        },
        Scenario {
            name: "429 with Retry-After on 20%",
            faults: vec![Fault::too_many_requests_after_seconds(1).sometimes(0.2)],
            metric: (
                "retagd_registry_retries_total",
                &["reason=\"rate_limited\""],
            ),
        },
        Scenario {
            name: "429 without Retry-After on 20%",
            faults: vec![Fault::status(429).sometimes(0.2)],
            metric: (
                "retagd_registry_retries_total",
                &["reason=\"rate_limited\""],
            ),
        },
        Scenario {
            name: "connections reset mid-body (truncated bodies) on 30% of GETs",
            faults: vec![Fault::abort_body_after(20).on("GET").sometimes(0.3)],
            metric: ("retagd_registry_retries_total", &["reason=\"connection\""]),
        },
        Scenario {
            name: "manifests altered in transit on 50% of manifest GETs",
            faults: vec![Fault::corrupt_byte()
                .on("GET")
                .path_contains("/manifests/")
                .sometimes(0.5)],
            metric: ("retagd_promotions_total", &["result=\"failure\""]),
        },
    ];
    if long() {
        all.push(Scenario {
            name: "2 s of latency on every request",
            faults: vec![Fault::delay(2000).sometimes(1.0)],
            metric: ("retagd_registry_request_duration_seconds_count", &[]),
        });
    }
    all
}

async fn write_free_sample(fleet: &Fleet, daemon: &Daemon) -> usize {
    let checked = fleet.check_no_wrong_tag().await;
    let (status, _) = health(daemon).await;
    assert_eq!(status, 200, "the daemon is not alive\n{}", daemon.log());
    checked
}

async fn health(daemon: &Daemon) -> (u16, String) {
    let address = daemon.address().await;
    let answer = support::http_client()
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_every_fault_nothing_is_promoted_wrong_and_everything_converges() {
    let generated = if long() { 50 } else { 10 };
    let mut fleet = Fleet::start(generated);
    let config = fleet.configure();
    fleet.push_round().await;
    let daemon = Daemon::start(&config, fleet.dir.path().join("daemon.log"));
    let address = daemon.address().await;
    fleet.wait_converged(Some(&daemon)).await;
    let mut checked = fleet.check_no_wrong_tag().await;
    let mut tried = Vec::new();

    for scenario in scenarios() {
        let before = metric_sum(
            &metrics(address).await,
            scenario.metric.0,
            scenario.metric.1,
        );
        for fault in &scenario.faults {
            fleet.proxy.inject(fault.clone());
        }
        fleet.push_round().await;
        // Let the daemon work under the fault for a while, checking as it goes.
        let until = Instant::now() + Duration::from_secs(if long() { 20 } else { 4 });
        while Instant::now() < until {
            checked += write_free_sample(&fleet, &daemon).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let after = metric_sum(
            &metrics(address).await,
            scenario.metric.0,
            scenario.metric.1,
        );
        assert!(
            after > before,
            "{}: {} did not grow ({before} -> {after})",
            scenario.name,
            scenario.metric.0
        );
        fleet.proxy.clear_faults();
        fleet.wait_converged(Some(&daemon)).await;
        checked += fleet.check_no_wrong_tag().await;
        eprintln!(
            "fault {:?}: survived, {} grew {before} -> {after}",
            scenario.name, scenario.metric.0
        );
        tried.push(scenario.name);
    }

    // The registry killed and started again while promotions are in flight.
    fleet
        .proxy
        .inject(Fault::delay_answer(300).on("PUT").sometimes(1.0));
    fleet.push_round().await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    fleet.registry.restart();
    let addr = fleet.registry.addr;
    fleet.proxy.set_upstream(addr);
    fleet.proxy.clear_faults();
    fleet.wait_converged(Some(&daemon)).await;
    checked += fleet.check_no_wrong_tag().await;
    tried.push("registry killed and restarted mid-reconcile");

    if long() {
        read_only_storage(&mut fleet, &daemon).await;
        checked += fleet.check_no_wrong_tag().await;
        tried.push("registry storage read-only");
    }

    let log = daemon.log();
    assert!(!log.contains("panicked"), "{log}");
    let (status, _) = health(&daemon).await;
    assert_eq!(status, 200);
    eprintln!(
        "fault suite: {} faults tried ({}), {} pipelines, {checked} promoted tags checked, 0 wrong",
        tried.len(),
        tried.join("; "),
        fleet.repos.len()
    );
}

/// Remounts the registry's storage read-only (a bind mount; needs root) while a round is
/// pushed, then writable again.
async fn read_only_storage(fleet: &mut Fleet, daemon: &Daemon) {
    let storage = fleet.registry.storage_dir();
    let path = storage.to_str().unwrap();
    fleet.push_round().await;
    let mount = |args: &[&str]| {
        let status = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount {args:?} failed (the long suite needs root)"
        );
    };
    mount(&["--bind", path, path]);
    // Unmounted however this ends, so a failure leaves no mount behind.
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let bound = Unmount(path.to_string());
    // A mount cannot become read-only while a file is open for writing through it (EBUSY), and
    // the registry and retagd are mid-upload here: ask again until a moment without a writer.
    let mut tries = 0;
    while !std::process::Command::new("mount")
        .args(["-o", "remount,bind,ro", path])
        .status()
        .unwrap()
        .success()
    {
        tries += 1;
        assert!(tries < 100, "mount -o remount,bind,ro {path} kept failing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = metric_sum(
        &metrics(daemon.address().await).await,
        "retagd_promotions_total",
        &["result=\"failure\""],
    );
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        write_free_sample(fleet, daemon).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = metric_sum(
        &metrics(daemon.address().await).await,
        "retagd_promotions_total",
        &["result=\"failure\""],
    );
    drop(bound);
    assert!(
        after > before,
        "read-only storage: no promotion failure counted"
    );
    fleet.wait_converged(Some(daemon)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_pipelines_writing_into_one_repository_converge() {
    // Ten pipelines, each its own tag family in one repository: the CNCF registry's
    // non-atomic link writes give transient 500s here.
    let registry = Registry::start(RegistryOptions::anonymous());
    let proxy = FaultProxy::start(registry.addr);
    let dir = tempfile::tempdir().unwrap();
    let families = 10;
    let mut config = Config::new()
        .interval("1s")
        .server()
        .registry("local", &proxy.url());
    for f in 0..families {
        config = config.pipeline(
            Pipeline::new(&format!("svc{f}"), "local", "shared/monorepo")
                .stage(
                    Stage::new("dev")
                        .filter_extract(&format!(r"^svc{f}-(?P<v>\d+\.\d+\.\d+-dev\.\d+)$"), "$v")
                        .semver(">=1.0.0-0"),
                )
                .stage(
                    Stage::new("rc")
                        .filter_extract(&format!(r"^svc{f}-(?P<v>\d+\.\d+\.\d+-rc\.\d+)$"), "$v")
                        .semver(">=1.0.0-rc.0")
                        .promote(
                            "dev",
                            &format!("svc{f}-{{major}}.{{minor}}.{{patch}}-rc.{{n}}"),
                            AUTO,
                        ),
                ),
        );
    }
    let config = config.write(&dir.path().join("retagd.toml"));
    let pusher = Pusher::new(&registry.url());
    let mut digests = Vec::new();
    for f in 0..families {
        let image = TestImage::generate(500 + f, &[128]);
        pusher
            .push_image(
                "shared/monorepo",
                &image,
                Some(&format!("svc{f}-1.0.0-dev.1")),
            )
            .await;
        digests.push(image.digest);
    }
    let daemon = Daemon::start(&config, dir.path().join("daemon.log"));
    support::poll_until("every family's rc.1", CONVERGE, || async {
        let mut all = true;
        for f in 0..families {
            let tag = format!("svc{f}-1.0.0-rc.1");
            all &= digest_at(&registry, "shared/monorepo", &tag)
                .await
                .is_some();
        }
        all.then_some(())
    })
    .await;
    for (f, digest) in digests.iter().enumerate() {
        let tag = format!("svc{f}-1.0.0-rc.1");
        assert_eq!(
            digest_at(&registry, "shared/monorepo", &tag).await.as_ref(),
            Some(digest)
        );
        let second = format!("svc{f}-1.0.0-rc.2");
        assert_eq!(
            digest_at(&registry, "shared/monorepo", &second).await,
            None,
            "{}",
            daemon.log()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_never_promotes_twice_or_moves_a_release() {
    let (generated, kills) = if long() { (100, 20) } else { (15, 5) };
    let mut fleet = Fleet::start(generated);
    let config = fleet.configure();
    // Round 1 promoted and released, then a second round for the kills to interrupt.
    fleet.push_round().await;
    let run = |config: &std::path::Path| -> ProcessGuard {
        let child = retagd()
            .args(["reconcile", "--config", &config.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ProcessGuard::new(child)
    };
    let status = run(&config).wait().unwrap();
    assert!(status.success());
    let released: BTreeMap<String, Option<String>> = {
        let mut m = BTreeMap::new();
        for repo in fleet.repos.clone() {
            m.insert(
                repo.clone(),
                digest_at(&fleet.registry, &repo, "v1.1.0").await,
            );
        }
        m
    };
    fleet.push_round().await;
    // Slow the writes down so kills land in the middle of the work.
    fleet
        .proxy
        .inject(Fault::delay_answer(20).on("PUT").sometimes(1.0));
    for k in 0..kills {
        let mut child = run(&config);
        let wait = Duration::from_millis(fastrand::u64(50..600));
        tokio::time::sleep(wait).await;
        let _ = child.kill();
        child.wait().unwrap();
        eprintln!("kill {}: after {wait:?}", k + 1);
    }
    fleet.proxy.clear_faults();
    let status = run(&config).wait().unwrap();
    assert!(status.success());
    fleet.wait_converged(None).await;
    let checked = fleet.check_no_wrong_tag().await;
    for (repo, digest) in released {
        assert_eq!(
            digest_at(&fleet.registry, &repo, "v1.1.0").await,
            digest,
            "{repo}: v1.1.0 moved"
        );
    }
    eprintln!(
        "sigkill: {kills} kills, {} pipelines, {checked} promoted tags checked, 0 wrong",
        fleet.repos.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_run_is_renewed_and_no_secret_reaches_a_trace_log() {
    use support::images::{skopeo_push, SkopeoOptions};
    use support::pki::Pki;
    use support::token::{TokenServer, TokenServerOptions};

    const PASSWORD: &str = "pw-S3cr3t-x9";
    let pki = Pki::generate();
    let tokens = TokenServer::start(TokenServerOptions::new(&pki).with_user("bob", PASSWORD));
    // Tokens say they last 300 s, but the registry refuses retagd's after about a second (their
    // JWT expired 59 s ago, and distribution allows 60 s of clock skew): retagd learns it from
    // a 401 in the middle of its work. The test's own skopeo pushes get lasting tokens (a push
    // on a loaded machine can take more than that second).
    tokens.set_token_lifetime_for_agent("retagd/", Some(-59));
    let registry = Registry::start(RegistryOptions::token(tokens.registry_auth()));
    let proxy = FaultProxy::start(registry.addr);
    let env = support::pipeline::Env::with(registry, proxy);
    let password_file = env.dir.path().join("password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let config = env.write(
        &env.config("1s", AUTO, MANUAL)
            .registry_setting("local", "username = \"bob\"")
            .registry_setting(
                "local",
                &format!("password_file = \"{}\"", password_file.display()),
            ),
    );
    let creds = SkopeoOptions::new().with_creds("bob", PASSWORD);
    let push = |seed: u64, tag: &'static str| {
        let image = TestImage::generate(seed, &[200]);
        let dest = format!("{}/{EXAMPLE_REPO}:{tag}", env.registry.host());
        let creds = creds.clone();
        async move {
            skopeo_push((&image).into(), &dest, &creds).await;
            image.digest
        }
    };
    // Read by the test with tokens of its own (the registry refuses anonymous reads).
    let digest = |tag: &'static str| {
        let (tokens, registry) = (&tokens, &env.registry);
        async move {
            let mut url = url::Url::parse(&tokens.realm()).unwrap();
            url.query_pairs_mut()
                .append_pair("service", &tokens.service())
                .append_pair("scope", &format!("repository:{EXAMPLE_REPO}:pull"));
            let client = support::http_client();
            let answer = client
                .get(url)
                .basic_auth("bob", Some(PASSWORD))
                .send()
                .await
                .unwrap();
            let token: serde_json::Value =
                serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
            let head = client
                .head(format!(
                    "{}/v2/{EXAMPLE_REPO}/manifests/{tag}",
                    registry.url()
                ))
                .header("Accept", support::images::MANIFEST_ACCEPT)
                .bearer_auth(token["token"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            head.headers()
                .get("docker-content-digest")
                .map(|d| d.to_str().unwrap().to_string())
        }
    };
    let wait_tag = |tag: &'static str| support::poll_until(tag, CONVERGE, move || digest(tag));
    let dev1 = push(1, "v1.2.0-dev.1").await;
    let daemon = Daemon::start_with(&config, env.dir.path().join("daemon.log"), "trace");
    let rc1 = wait_tag("v1.2.0-rc.1").await;
    assert_eq!(rc1, dev1);
    let issued = tokens.requests().len();
    // Outlive the token, then give retagd new work.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let dev2 = push(2, "v1.2.0-dev.2").await;
    let rc2 = wait_tag("v1.2.0-rc.2").await;
    assert_eq!(rc2, dev2);
    assert!(
        tokens.requests().len() > issued,
        "no new token after expiry"
    );
    assert!(
        env.proxy
            .count_where(|r| r.status == 401 && r.authorization)
            > 0,
        "the registry never refused an expired token"
    );

    let log = daemon.log();
    assert!(log.contains("TRACE"), "the log is not at trace level");
    let basic = base64_basic("bob", PASSWORD);
    for (what, secret) in [
        ("password", PASSWORD),
        ("a JWT", "eyJ"),
        ("Basic credentials", basic.as_str()),
    ] {
        assert!(!log.contains(secret), "{what} in the trace log");
    }
}

fn base64_basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Resident memory (KiB) and open file descriptors of a process.
fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of RETAGD_SOAK_MINUTES (30): cargo test --release --test it faults::soak -- --ignored --nocapture"]
async fn soak_a_push_every_few_seconds_keeps_memory_and_descriptors_flat() {
    let minutes: u64 = std::env::var("RETAGD_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30);
    let mut fleet = Fleet::start(99);
    let config = fleet.configure();
    fleet.push_round().await;
    let daemon = Daemon::start(&config, fleet.dir.path().join("daemon.log"));
    fleet.wait_converged(Some(&daemon)).await;
    let pid = daemon.child.id();
    let start = rss_and_fds(pid);
    let pusher = Pusher::new(&fleet.registry.url());
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let mut pushes = 0usize;
    let mut samples = Vec::new();
    while Instant::now() < until {
        let i = pushes % fleet.repos.len();
        let repo = fleet.repos[i].clone();
        let version = fleet.pushed[&repo].len() + 1;
        let image = TestImage::generate((version * 1000 + i) as u64 + 7, &[256]);
        pusher
            .push_image(&repo, &image, Some(&format!("v1.{version}.0-dev.1")))
            .await;
        fleet
            .pushed
            .get_mut(&repo)
            .unwrap()
            .push(image.digest.clone());
        pushes += 1;
        if pushes.is_multiple_of(100) {
            samples.push(rss_and_fds(pid));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // Every push promoted: each version's rc exists (and the release, where automatic).
    support::poll_until("every push promoted", CONVERGE, || async {
        for repo in &fleet.repos {
            let tags = fleet.tags(repo).await;
            for version in 1..=fleet.pushed[repo].len() {
                if !tags.contains(&format!("v1.{version}.0-rc.1")) {
                    return None;
                }
            }
        }
        Some(())
    })
    .await;
    let checked = fleet.check_no_wrong_tag().await;
    let end = rss_and_fds(pid);
    eprintln!(
        "soak: {minutes} min, {pushes} pushes over {} pipelines, {checked} promoted tags checked, 0 wrong; \
         RSS {} -> {} KiB, fds {} -> {}; samples every 100 pushes: {samples:?}",
        fleet.repos.len(),
        start.0,
        end.0,
        start.1,
        end.1
    );
    assert!(
        end.1 <= start.1 + 10,
        "descriptors grew: {start:?} -> {end:?}"
    );
    assert!(
        end.0 <= start.0 * 3 / 2 + 4096,
        "memory grew: {start:?} -> {end:?}"
    );
}
