//! What every benchmark shares: the registry's access log as the request counter, process
//! timing (wall and CPU from `/proc`), statistics, retagd configurations and skopeo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::config::{Config, Pipeline, Stage, AUTO, MANUAL};
use crate::support::images::skopeo_command;

/// The release (under `cargo bench`) or debug (under `cargo test`) retagd binary.
pub const RETAGD: &str = env!("CARGO_BIN_EXE_retagd");

/// The Cargo target directory this binary was built in (`.../target/release/deps/fleet-*`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    exe.ancestors()
        .nth(3)
        .expect("the benchmark runs from TARGET/PROFILE/deps")
        .to_path_buf()
}

/// One line of the registry's access log (Apache combined format, written by distribution for
/// every request it answered).
#[derive(Clone, Debug)]
pub struct Access {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The status sent.
    pub status: u16,
    /// `User-Agent`.
    pub agent: String,
}

impl Access {
    /// The request kind the tables use.
    pub fn kind(&self) -> &'static str {
        let path = self.path.split('?').next().unwrap_or_default();
        let method = self.method.as_str();
        if path == "/v2/" || path == "/v2" {
            "ping"
        } else if path.ends_with("/tags/list") {
            "tag list"
        } else if path.contains("/manifests/") {
            match method {
                "HEAD" => "manifest HEAD",
                "GET" => "manifest GET",
                "PUT" => "manifest PUT",
                _ => "manifest other",
            }
        } else if path.contains("/blobs/uploads") {
            "blob upload"
        } else if path.contains("/blobs/") {
            match method {
                "HEAD" => "blob HEAD",
                "GET" => "blob GET",
                _ => "blob other",
            }
        } else {
            "other"
        }
    }
}

/// Parses `127.0.0.1 - - [date] "GET /v2/x/tags/list HTTP/1.1" 200 109 "" "agent"`.
fn parse_access(line: &str) -> Option<Access> {
    let parts: Vec<&str> = line.split('"').collect();
    if parts.len() < 6 || !parts[0].contains(" - - [") {
        return None;
    }
    let mut request = parts[1].split(' ');
    let method = request.next()?.to_string();
    let path = request.next()?.to_string();
    let status = parts[2].split_whitespace().next()?.parse().ok()?;
    Some(Access {
        method,
        path,
        status,
        agent: parts[5].to_string(),
    })
}

/// The registry's log file read as a request counter: [`AccessLog::mark`] before the work,
/// [`AccessLog::since`] after it.
pub struct AccessLog {
    path: PathBuf,
}

impl AccessLog {
    /// The access log in `path` (the registry's combined stdout and stderr).
    pub fn new(path: &Path) -> AccessLog {
        AccessLog {
            path: path.to_path_buf(),
        }
    }

    /// Where the log ends now.
    pub fn mark(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// The requests logged after `mark`. The registry logs a request just after answering it,
    /// so this first waits until the log has not grown for 100 ms.
    pub async fn since(&self, mark: u64) -> Vec<Access> {
        let mut last = self.mark();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.mark();
            if now == last {
                break;
            }
            last = now;
        }
        let bytes = std::fs::read(&self.path).expect("read the registry log");
        let start = usize::try_from(mark).unwrap_or(0).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..])
            .lines()
            .filter_map(parse_access)
            .collect()
    }
}

/// Requests by kind (see [`Access::kind`]), plus the 5xx answers among them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Kind -> requests.
    pub by_kind: BTreeMap<String, usize>,
    /// Answers with a 5xx status.
    pub server_errors: usize,
}

impl Counts {
    /// Counts `log`, keeping the requests `keep` accepts.
    pub fn of(log: &[Access], keep: impl Fn(&Access) -> bool) -> Counts {
        let mut counts = Counts::default();
        for a in log.iter().filter(|a| keep(a)) {
            *counts.by_kind.entry(a.kind().to_string()).or_insert(0) += 1;
            if a.status >= 500 {
                counts.server_errors += 1;
            }
        }
        counts
    }

    /// All requests.
    pub fn total(&self) -> usize {
        self.by_kind.values().sum()
    }

    /// Requests of `kind`.
    pub fn get(&self, kind: &str) -> usize {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// `{"total": n, "by_kind": {...}, "server_errors": n}`.
    pub fn json(&self) -> Value {
        json!({"total": self.total(), "by_kind": self.by_kind, "server_errors": self.server_errors})
    }

    /// `tag list 10, manifest HEAD 30` for the console.
    pub fn line(&self) -> String {
        self.by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The nearest-rank percentile `p` (0-100).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// Clock ticks per second of `/proc/*/stat` times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/PID/stat` after the command name, numbered as in proc(5) (3 = state).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // Field 3 (the state letter) is not a number; keep positions by putting 0 there.
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// CPU seconds (user + system) of the children this process has waited for.
pub fn children_cpu() -> f64 {
    let f = stat_fields("self").expect("read /proc/self/stat");
    // cutime and cstime are fields 16 and 17; `rest` starts at field 3.
    (f[16 - 3] + f[17 - 3]) as f64 / clock_ticks()
}

/// CPU seconds (user + system) of a running process.
pub fn process_cpu(pid: u32) -> Option<f64> {
    let f = stat_fields(&pid.to_string())?;
    Some((f[14 - 3] + f[15 - 3]) as f64 / clock_ticks())
}

/// A `/proc/PID/status` value in KiB (`VmRSS`, `VmHWM`).
pub fn process_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A process that ran to its end: wall time, CPU time, output.
pub struct Ran {
    /// From spawn to exit.
    pub wall: Duration,
    /// User + system CPU seconds.
    pub cpu: f64,
    /// What it printed and its status.
    pub output: Output,
}

/// Runs `command` to its end on a blocking thread and times it. The CPU time is the growth of
/// this process's waited-for children time, so nothing else may be reaped meanwhile (the
/// benchmarks run one thing at a time).
pub async fn run_timed(mut command: Command) -> Ran {
    tokio::task::spawn_blocking(move || {
        let cpu = children_cpu();
        let start = Instant::now();
        let output = command
            .stdin(Stdio::null())
            .output()
            .expect("run the command");
        let wall = start.elapsed();
        Ran {
            wall,
            cpu: children_cpu() - cpu,
            output,
        }
    })
    .await
    .expect("the timing thread")
}

/// `retagd ARGS` with a clean environment, as the harness runs it.
pub fn retagd(args: &[&str]) -> Command {
    retagd_binary(RETAGD, args)
}

/// [`retagd`] with another binary. `BENCH_WRAP` (e.g. `perf record -g -o FILE --`) is put in
/// front of the command, for a profile of the same work.
pub fn retagd_binary(binary: &str, args: &[&str]) -> Command {
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(first) => {
            let mut c = Command::new(first);
            c.args(words).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    command
        .args(args)
        .env_remove("RETAGD_CONFIG")
        .env("RETAGD_LOG", "info")
        .env("DOCKER_CONFIG", "/nonexistent");
    command
}

/// Panics with the output when a command failed.
pub fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        tail(&String::from_utf8_lossy(&output.stderr), 40)
    );
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How many stages the pipelines of a configuration have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stages {
    /// dev -> rc (automatic).
    Two,
    /// dev -> staging (automatic) -> production (manual).
    Three,
}

/// A configuration with one pipeline per repository on the registry at `url`; `head` (a
/// `[server]` or `[webhooks]` table) is added as written. `records` as the pipelines' setting.
pub fn config(
    url: &str,
    repositories: &[String],
    (stages, records): (Stages, bool),
    interval: &str,
    head: &str,
) -> String {
    let mut config = Config::new()
        .interval(interval)
        .table(head)
        .registry("local", url);
    for (i, repository) in repositories.iter().enumerate() {
        let name = format!("svc-{i:04}");
        let pipeline = match stages {
            // A `dev` stage and an `rc` stage promoted into automatically.
            Stages::Two => Pipeline::new(&name, "local", repository)
                .stage(
                    Stage::new("dev")
                        .filter(r"^v\d+\.\d+\.\d+-dev\.\d+$")
                        .semver(">=1.0.0-0"),
                )
                .stage(
                    Stage::new("rc")
                        .filter(r"^v\d+\.\d+\.\d+-rc\.\d+$")
                        .semver(">=1.0.0-rc.0")
                        .promote("dev", "v{major}.{minor}.{patch}-rc.{n}", AUTO),
                ),
            Stages::Three => Pipeline::example(&name, repository, AUTO, MANUAL),
        };
        config = config.pipeline(if records {
            pipeline
        } else {
            pipeline.setting("records = false")
        });
    }
    config.toml()
}

/// The daemon's `[server]` table: any free port, no state directory.
pub const SERVER: &str = "\n[server]\nlisten = \"127.0.0.1:0\"\n";

/// `skopeo copy` from `src` to `dst` (`HOST/REPO:TAG`) over plain HTTP, anonymously, with an
/// empty auth file and no proxy from the environment.
pub fn skopeo_copy(src: &str, dst: &str, preserve_digests: bool, auth_file: &Path) -> Command {
    let mut command = skopeo_command(auth_file);
    command.args([
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-no-creds",
        "--dest-no-creds",
    ]);
    if preserve_digests {
        command.arg("--preserve-digests");
    }
    command
        .arg(format!("docker://{src}"))
        .arg(format!("docker://{dst}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// A keep-alive HTTP/1.1 client for the benchmark's own requests.
pub fn client(agent: &str, pool: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .http1_only()
        .user_agent(agent)
        .pool_max_idle_per_host(pool)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the benchmark's HTTP client")
}

/// The digest `repository:tag` has on the registry at `base`, or `None` (404).
pub async fn head_digest(
    client: &reqwest::Client,
    base: &str,
    repository: &str,
    tag: &str,
) -> Option<String> {
    let (status, digest) = head(client, base, repository, tag).await;
    assert!(
        status == 404 || digest.is_some(),
        "HEAD {repository}:{tag}: {status}"
    );
    digest
}

/// A manifest HEAD: the status and `Docker-Content-Digest` of a 2xx answer.
pub async fn head(
    client: &reqwest::Client,
    base: &str,
    repository: &str,
    tag: &str,
) -> (u16, Option<String>) {
    let response = client
        .head(format!("{base}/v2/{repository}/manifests/{tag}"))
        .header("Accept", crate::support::images::MANIFEST_ACCEPT)
        .send()
        .await
        .expect("HEAD a manifest");
    let status = response.status();
    let digest = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .filter(|_| status.is_success())
        .map(str::to_string);
    (status.as_u16(), digest)
}

/// The tags of `repository` on the registry at `base`.
pub async fn list_tags(client: &reqwest::Client, base: &str, repository: &str) -> Vec<String> {
    let body = client
        .get(format!("{base}/v2/{repository}/tags/list"))
        .send()
        .await
        .expect("GET a tag list")
        .bytes()
        .await
        .expect("read a tag list");
    let list: Value = serde_json::from_slice(&body).expect("a tag list is JSON");
    list["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Seconds with three decimals, for JSON.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}
