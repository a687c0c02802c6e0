//! A `retagd` test environment: a real registry behind the counting proxy, the example
//! pipeline's config, and the `retagd` binary run once or as a daemon.

// Moved from tests/engine.rs: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::config::{Config, Pipeline};
use super::images::{Pusher, TestImage, MANIFEST_ACCEPT};
use super::process::{retagd, ProcessGuard};
use super::proxy::FaultProxy;
use super::registry::{Registry, RegistryOptions};

/// The example pipeline's repository.
pub const REPO: &str = "myorg/api-gateway";
/// How long a test waits for the daemon to do something.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A registry behind a counting proxy, and a directory for config and state.
pub struct Env {
    /// The real registry.
    pub registry: Registry,
    /// The proxy retagd talks through.
    pub proxy: FaultProxy,
    /// Config, state and logs.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A fresh registry, proxy and directory.
    pub fn start() -> Env {
        let registry = Registry::start(RegistryOptions::anonymous());
        let proxy = FaultProxy::start(registry.addr);
        Env::with(registry, proxy)
    }

    /// An environment around this registry and proxy.
    pub fn with(registry: Registry, proxy: FaultProxy) -> Env {
        Env {
            registry,
            proxy,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Where [`Env::write`] writes.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("retagd.toml")
    }

    /// The example pipeline reconciled every `interval` (registry `local` through the proxy,
    /// the server on any port with its state in [`Env::dir`]), with these `promote` options for
    /// staging and production: a test adds what it is about, then [`Env::write`]s it.
    pub fn config(&self, interval: &str, staging: &str, production: &str) -> Config {
        Config::new()
            .interval(interval)
            .server_setting(&format!(
                "state_dir = \"{}\"",
                self.dir.path().join("state").display()
            ))
            .registry("local", &self.proxy.url())
            .pipeline(Pipeline::example("api-gateway", REPO, staging, production))
    }

    /// Writes `config` to [`Env::config_path`]; returns that path.
    pub fn write(&self, config: &Config) -> PathBuf {
        config.write(&self.config_path())
    }

    /// Writes [`Env::config`] reconciled every second.
    pub fn configure(&self, staging: &str, production: &str) -> PathBuf {
        self.write(&self.config("1s", staging, production))
    }

    /// Pushes a small generated image as `repo:tag`; returns its digest.
    pub async fn push(&self, repo: &str, tag: &str, seed: u64) -> String {
        let image = TestImage::generate(seed, &[512]);
        Pusher::new(&self.registry.url())
            .push_image(repo, &image, Some(tag))
            .await;
        image.digest
    }

    /// The digest of `repo:tag`, read without retagd.
    pub async fn digest(&self, repo: &str, tag: &str) -> Option<String> {
        digest_at(&self.registry, repo, tag).await
    }

    /// `repo`'s image tags, sorted, read without retagd: the referrers tag schema's
    /// `sha256-<hex>` indexes (promotion records, signatures) are left out.
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let url = format!("{}/v2/{repo}/tags/list", self.registry.url());
        let body = super::http_client()
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut tags: Vec<String> = list["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        tags.retain(|t| !t.starts_with("sha256-"));
        tags.sort();
        tags
    }
}

/// The digest a registry holds under `repo:tag`, read without retagd. The CNCF registry answers
/// a read that races its own write of the tag with a 500 now and then ("invalid checksum digest
/// format"): such an answer is asked again, up to ten times 20 ms apart.
pub async fn digest_at(registry: &Registry, repo: &str, tag: &str) -> Option<String> {
    let mut attempts = 0;
    loop {
        let response = super::http_client()
            .head(format!("{}/v2/{repo}/manifests/{tag}", registry.url()))
            .header("Accept", MANIFEST_ACCEPT)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == 404 {
            return None;
        }
        if status.is_server_error() && attempts < 10 {
            attempts += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            continue;
        }
        assert!(status.is_success(), "HEAD {repo}:{tag}: {status}");
        return Some(
            response.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
}

/// Runs `retagd ARGS --config CONFIG` to its end (on a blocking thread: the harness servers
/// share nothing with it).
pub async fn run(config: &Path, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.push("--config".into());
    all.push(config.display().to_string());
    tokio::task::spawn_blocking(move || retagd().args(&all).output().unwrap())
        .await
        .unwrap()
}

/// `retagd ARGS` without a configuration (commands that talk to a daemon).
pub async fn run_plain(args: &[&str]) -> Output {
    let all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || retagd().args(&all).output().unwrap())
        .await
        .unwrap()
}

/// An output for an assertion message.
pub fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A running `retagd run`, killed when dropped (by its guard).
pub struct Daemon {
    /// The process.
    pub child: ProcessGuard,
    log: PathBuf,
}

impl Daemon {
    /// Starts `retagd run --config CONFIG`, logging to `log`.
    pub fn start(config: &Path, log: PathBuf) -> Daemon {
        Daemon::start_with(config, log, "info")
    }

    /// [`Daemon::start`] at this `RETAGD_LOG` level.
    pub fn start_with(config: &Path, log: PathBuf, level: &str) -> Daemon {
        Daemon::start_command(retagd(), config, log, level)
    }

    /// [`Daemon::start`] of another binary (a baseline build, in the benchmarks).
    #[allow(dead_code)] // The benchmarks use it; the tests share this file.
    pub fn start_binary(binary: &str, config: &Path, log: PathBuf) -> Daemon {
        Daemon::start_command(super::process::retagd_at(binary), config, log, "info")
    }

    fn start_command(mut command: Command, config: &Path, log: PathBuf, level: &str) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .args([
                "run",
                "--config",
                &config.display().to_string(),
                "--grace-period",
                "20s",
            ])
            .env("RETAGD_LOG", level)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon {
            child: ProcessGuard::new(child),
            log,
        }
    }

    /// The HTTP address it serves on, from its start-up log line.
    pub async fn address(&self) -> std::net::SocketAddr {
        self.wait_log("retagd is running").await;
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("retagd is running"))
            .unwrap();
        let value = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("address="))
            .unwrap_or_else(|| panic!("no address= in {line:?}"));
        value.parse().unwrap()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `needle`.
    pub async fn wait_log(&self, needle: &str) {
        super::poll_until(&format!("daemon log line {needle:?}"), DEADLINE, || async {
            self.log().contains(needle).then_some(())
        })
        .await;
    }

    /// Sends `kill -SIGNAL`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        super::poll_until("the daemon to exit", DEADLINE, || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

/// Waits until `repo:tag` exists; returns its digest.
pub async fn wait_tag(env: &Env, repo: &str, tag: &str) -> String {
    super::poll_until(&format!("{repo}:{tag} to exist"), DEADLINE, || {
        env.digest(repo, tag)
    })
    .await
}
