//! A real Prometheus (2.42, Debian's `prometheus` package) per test, scraping given targets every
//! second, with its TSDB in a fresh temporary directory; and `promtool check metrics`.
//!
//! Prometheus cannot listen on port 0 and report the port it got, so [`Prometheus::start`] picks
//! a free loopback port (binds `127.0.0.1:0`, reads the port, closes the socket) and starts
//! Prometheus on it. Another process may take the port in between: Prometheus then exits with
//! `address already in use` and is started again on a new port. Readiness is checked against the
//! flags of the answering server, so a test never talks to another test's Prometheus.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::ProcessGuard;
use super::{free_port, http_client, STARTUP_DEADLINE};

/// The Prometheus server binary, as installed by Debian's `prometheus` package.
pub const PROMETHEUS_BIN: &str = "prometheus";

/// Prometheus's command-line tool, from the same package.
pub const PROMTOOL_BIN: &str = "promtool";

/// The scrape job of the generated config.
pub const JOB: &str = "retagd";

/// How often a port lost to another process is replaced by a new one before the start fails.
const PORT_ATTEMPTS: u32 = 5;

/// A running Prometheus; dropping it kills the process and removes its storage.
pub struct Prometheus {
    /// The address it listens on (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    targets: Vec<SocketAddr>,
    process: ProcessGuard,
    storage: PathBuf,
    log_path: PathBuf,
    log_shown: bool,
    dir: TempDir,
}

/// Why a start attempt did not come up.
enum StartFailure {
    /// Another process took the port first.
    PortTaken,
}

impl Prometheus {
    /// Writes a config that scrapes `targets` (`http://ADDR/metrics`, job [`JOB`], every 1 s with
    /// a 900 ms timeout) into a fresh temporary directory, starts `prometheus` on a free loopback
    /// port and waits until `GET /-/ready` answers 200. Panics with Prometheus's log if it exits
    /// or is not ready within [`STARTUP_DEADLINE`].
    pub fn start(targets: &[SocketAddr]) -> Prometheus {
        Prometheus::start_on(targets, None)
    }

    /// Like [`Prometheus::start`], but tries `port` first. For the harness's own test of the
    /// retry when the picked port is taken; tests should call [`Prometheus::start`].
    pub fn start_trying_port_first(targets: &[SocketAddr], port: u16) -> Prometheus {
        Prometheus::start_on(targets, Some(port))
    }

    fn start_on(targets: &[SocketAddr], first_port: Option<u16>) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("retagd-prometheus-")
            .tempdir()
            .expect("create the Prometheus temp dir");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config_yaml(targets)).expect("write the Prometheus config");
        let log_path = dir.path().join("prometheus.log");

        let port = first_port.unwrap_or_else(free_port);
        let storage = dir.path().join("data-1");
        // From here on, the guard kills the child whatever happens.
        let process = spawn(&config_path, &storage, port, &log_path);
        let mut prometheus = Prometheus {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            targets: targets.to_vec(),
            process,
            storage,
            log_path,
            log_shown: false,
            dir,
        };
        let mut attempt = 1;
        loop {
            match prometheus.wait_until_ready() {
                Ok(()) => return prometheus,
                Err(StartFailure::PortTaken) if attempt < PORT_ATTEMPTS => {
                    attempt += 1;
                    prometheus.stop();
                    let port = free_port();
                    // A fresh TSDB directory: nothing of the failed attempt is reused.
                    let storage = prometheus.dir.path().join(format!("data-{attempt}"));
                    prometheus.process = spawn(&config_path, &storage, port, &prometheus.log_path);
                    prometheus.addr.set_port(port);
                    prometheus.storage = storage;
                }
                Err(StartFailure::PortTaken) => prometheus.fail(&format!(
                    "lost the picked port to another process {PORT_ATTEMPTS} times"
                )),
            }
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The targets it scrapes.
    pub fn targets(&self) -> &[SocketAddr] {
        &self.targets
    }

    /// The file holding Prometheus's stdout and stderr (`--log.level=warn`).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Prometheus's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// The last 60 lines of the log, headed by where it is, for panic messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let shown = lines.len().min(60);
        format!(
            "--- Prometheus {} log (last {shown} lines of {}) ---\n{}\n--- end ---",
            self.addr,
            self.log_path.display(),
            lines[lines.len() - shown..].join("\n")
        )
    }

    /// Runs an instant query (`GET /api/v1/query`) at the current time and returns
    /// `data.result`: for a vector, an array of `{"metric": {labels}, "value": [time, "value"]}`.
    /// Panics (with the log) unless Prometheus answers `status: success`.
    pub async fn query(&self, promql: &str) -> serde_json::Value {
        let mut url = url::Url::parse(&format!("{}/api/v1/query", self.url()))
            .expect("the Prometheus query URL parses");
        url.query_pairs_mut().append_pair("query", promql);
        let response = match http_client().get(url).send().await {
            Ok(response) => response,
            Err(e) => panic!("query {promql:?}: {e}\n{}", self.log_tail()),
        };
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "query {promql:?}: {status}, not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&body),
                self.log_tail()
            )
        });
        if json["status"] != "success" {
            panic!("query {promql:?}: {status}: {json}\n{}", self.log_tail());
        }
        json["data"]["result"].clone()
    }

    /// Waits (up to [`STARTUP_DEADLINE`]) until every target has been scraped successfully,
    /// i.e. `up == 1` for each. Panics with each target's last scrape error and the log.
    ///
    /// This takes about 5 s after the start however short the scrape interval: Prometheus 2.42
    /// hands discovered targets (static ones too) to the scrape manager on a fixed 5 s tick, and
    /// the first scrape follows within one interval. Start Prometheus early in a test.
    pub async fn wait_for_target_up(&self) {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let promql = format!("up{{job=\"{JOB}\"}} == 1");
        loop {
            let up = self.query(&promql).await;
            if up.as_array().map_or(0, Vec::len) == self.targets.len() {
                return;
            }
            if Instant::now() >= deadline {
                let states = self.target_states().await;
                panic!(
                    "not every target of Prometheus was up within {STARTUP_DEADLINE:?}; \
                     targets: {states}\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `scrapeUrl`, `health` and `lastError` of each active target, for failure messages.
    async fn target_states(&self) -> String {
        let url = format!("{}/api/v1/targets", self.url());
        let json: serde_json::Value = match http_client().get(&url).send().await {
            Ok(response) => serde_json::from_slice(&response.bytes().await.unwrap_or_default())
                .unwrap_or_default(),
            Err(e) => return format!("<GET {url}: {e}>"),
        };
        let states: Vec<String> = json["data"]["activeTargets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|t| {
                format!(
                    "{} {} {:?}",
                    t["scrapeUrl"].as_str().unwrap_or("?"),
                    t["health"].as_str().unwrap_or("?"),
                    t["lastError"].as_str().unwrap_or("")
                )
            })
            .collect();
        format!("[{}]", states.join("; "))
    }

    /// Kills and reaps the process (and its watchdog first).
    fn stop(&mut self) {
        let _ = self.process.kill();
    }

    fn fail(&mut self, why: &str) -> ! {
        self.stop();
        self.log_shown = true;
        panic!("Prometheus {why}\n{}", self.log_tail())
    }

    /// Polls until our Prometheus answers `GET /-/ready` with 200, the answering server being
    /// ours (its `storage.tsdb.path` flag is our directory).
    fn wait_until_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.process.try_wait() {
                if self.log().contains("address already in use") {
                    return Err(StartFailure::PortTaken);
                }
                self.fail(&format!("exited while starting ({status})"));
            }
            if let Some((200, _)) = http_get(self.addr, "/-/ready") {
                match http_get(self.addr, "/api/v1/status/flags") {
                    Some((200, body)) if self.is_ours(&body) => return Ok(()),
                    // Another Prometheus on the port we picked: ours is about to exit.
                    Some((200, _)) => {}
                    other => self.fail(&format!("answered /api/v1/status/flags with {other:?}")),
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!("was not ready in {STARTUP_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn is_ours(&self, flags: &[u8]) -> bool {
        let flags: serde_json::Value = serde_json::from_slice(flags).unwrap_or_default();
        flags["data"]["storage.tsdb.path"].as_str() == self.storage.to_str()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() && !self.log_shown {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Pipes `text` (a Prometheus text exposition) to `promtool check metrics` and returns what it
/// printed, stdout then stderr: empty when the exposition is clean, otherwise one line per
/// problem, e.g. `foo counter metrics should have "_total" suffix`, or `error while linting: ...`
/// for text that does not parse.
pub fn promtool_check_metrics(text: &str) -> String {
    let mut child = Command::new(PROMTOOL_BIN)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start `{PROMTOOL_BIN} check metrics` (apt-get install -y prometheus): {e}")
        });
    let mut stdin = child.stdin.take().expect("promtool's stdin is piped");
    let text = text.to_string();
    // Written from another thread, so that a full stdout pipe can never block both sides.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for `{PROMTOOL_BIN} check metrics`: {e}"));
    match writer.join() {
        Ok(Ok(())) => {}
        // promtool stops reading at a parse error; what it printed says why.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Ok(Err(e)) => panic!("write to `{PROMTOOL_BIN} check metrics`: {e}"),
        Err(_) => panic!("the thread writing to `{PROMTOOL_BIN} check metrics` panicked"),
    }
    let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
    report.push_str(&String::from_utf8_lossy(&output.stderr));
    report
}

/// Starts Prometheus on `127.0.0.1:port`, its stdout and stderr going to a fresh `log_path`, with
/// a watchdog that kills it when the test process ends.
fn spawn(config: &Path, storage: &Path, port: u16, log_path: &Path) -> ProcessGuard {
    let log = File::create(log_path).expect("create the Prometheus log file");
    let log_err = log.try_clone().expect("clone the Prometheus log handle");
    let child = Command::new(PROMETHEUS_BIN)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start `{PROMETHEUS_BIN}` (apt-get install -y prometheus): {e}")
        });
    ProcessGuard::watched(child)
}

fn config_yaml(targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: {JOB}\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}

/// A blocking `GET` over HTTP/1.0 (the server closes the connection after the answer), so that
/// the start needs no runtime. Returns the status and body, or `None` if nothing answered.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status_line = response[..head_end].split(|&b| b == b'\r').next()?;
    let status = std::str::from_utf8(status_line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, response[head_end + 4..].to_vec()))
}
