//! A real CNCF registry (`docker-registry serve`, distribution 2.8) per test, with filesystem
//! storage in a fresh temporary directory.
//!
//! The registry listens on `127.0.0.1:0`: Go binds a free port and the registry logs the real
//! address (`listening on 127.0.0.1:PORT`), which [`Registry::start`] reads from the log. So no
//! port is ever guessed and two test binaries never race for one.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::ProcessGuard;
use super::STARTUP_DEADLINE;

/// The registry binary, as installed by Debian's `docker-registry` package.
pub const REGISTRY_BIN: &str = "docker-registry";

/// How the registry authenticates clients.
#[derive(Clone, Debug, Default)]
pub enum RegistryAuth {
    /// Anonymous access to everything.
    #[default]
    None,
    /// HTTP Basic against an htpasswd file (bcrypt, made with `htpasswd -Bbn`).
    Htpasswd {
        /// The one user.
        user: String,
        /// Its password.
        password: String,
    },
    /// The Docker token scheme: 401 with a Bearer challenge pointing at `realm`; tokens are JWTs
    /// signed by a key whose certificate is in `root_cert_bundle`.
    Token {
        /// URL of the token endpoint, e.g. [`crate::support::token::TokenServer::realm`].
        realm: String,
        /// Service name: in the challenge, and the JWT audience the registry accepts.
        service: String,
        /// JWT issuer the registry trusts.
        issuer: String,
        /// PEM certificates whose keys may sign tokens.
        root_cert_bundle: PathBuf,
    },
}

/// TLS certificate and key for the registry (PEM files, e.g. from [`crate::support::pki::Pki`]).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Server certificate (chain) in PEM.
    pub cert: PathBuf,
    /// Its private key in PEM.
    pub key: PathBuf,
}

/// What kind of registry to start.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Client authentication.
    pub auth: RegistryAuth,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// POST manifest events (push; pull, also by HEAD; delete) to this webhook endpoint.
    pub notifications: Option<NotificationEndpoint>,
    /// Keep the storage in this directory (created if missing, never removed) instead of the
    /// temporary one, e.g. seeded data reused across benchmark runs.
    pub storage: Option<PathBuf>,
}

/// A webhook endpoint the registry POSTs events to (`notifications.endpoints` of the config).
///
/// The generated endpoint is named `retagd`, sends `Authorization: Bearer <bearer>`, times out
/// after 1 s, and after 3 consecutive failures backs off 100 ms before retrying (the registry
/// retries an event until it is accepted with a 2xx). Manifest events carry `references`
/// (`notifications.events.includereferences`). Blob events are not sent: their target media type
/// is `application/octet-stream`, which the endpoint ignores.
#[derive(Clone, Debug)]
pub struct NotificationEndpoint {
    /// Where the events are POSTed.
    pub url: String,
    /// The bearer token in the `Authorization` header of every POST.
    pub bearer: String,
    /// Actions the endpoint is not sent (`ignore.actions`), e.g. `pull`: every manifest HEAD
    /// is a pull event, and a client polling with HEAD would queue them ahead of the next push.
    pub ignored_actions: Vec<String>,
}

impl RegistryOptions {
    /// No authentication, plain HTTP.
    pub fn anonymous() -> RegistryOptions {
        RegistryOptions::default()
    }

    /// HTTP Basic with one user, plain HTTP.
    pub fn htpasswd(user: &str, password: &str) -> RegistryOptions {
        RegistryOptions {
            auth: RegistryAuth::Htpasswd {
                user: user.to_string(),
                password: password.to_string(),
            },
            ..RegistryOptions::default()
        }
    }

    /// Token authentication, plain HTTP.
    pub fn token(auth: RegistryAuth) -> RegistryOptions {
        RegistryOptions {
            auth,
            ..RegistryOptions::default()
        }
    }

    /// The same options, served over HTTPS.
    pub fn with_tls(mut self, cert: &Path, key: &Path) -> RegistryOptions {
        self.tls = Some(TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        });
        self
    }

    /// The same options, and the registry POSTs manifest events to `url` with
    /// `Authorization: Bearer <bearer>` (see [`NotificationEndpoint`]).
    pub fn with_notifications(mut self, url: &str, bearer: &str) -> RegistryOptions {
        self.notifications = Some(NotificationEndpoint {
            url: url.to_string(),
            bearer: bearer.to_string(),
            ignored_actions: Vec::new(),
        });
        self
    }

    /// With [`Self::with_notifications`]: pull events (GETs and HEADs of manifests) are not
    /// sent, only pushes and deletes.
    pub fn ignoring_pull_events(mut self) -> RegistryOptions {
        if let Some(endpoint) = &mut self.notifications {
            endpoint.ignored_actions = vec!["pull".to_string()];
        }
        self
    }

    /// Keeps the registry's storage in `dir` (created if missing and kept after the registry
    /// stops), so data seeded once can be served again by later registries.
    pub fn with_storage(mut self, dir: &Path) -> RegistryOptions {
        self.storage = Some(dir.to_path_buf());
        self
    }
}

/// A running registry process; dropping it kills the process and removes its storage (unless
/// it was given one with [`RegistryOptions::with_storage`]).
pub struct Registry {
    /// The address it listens on (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    process: ProcessGuard,
    tls: bool,
    log_path: PathBuf,
    log_shown: bool,
    storage: PathBuf,
    dir: TempDir,
}

impl Registry {
    /// Writes a config into a fresh temporary directory, starts `docker-registry serve` on
    /// `127.0.0.1:0`, reads the bound port from its log and waits until `GET /v2/` gets an HTTP
    /// answer. Panics with the registry's log if it exits or is not ready within
    /// [`STARTUP_DEADLINE`].
    pub fn start(options: RegistryOptions) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("retagd-registry-")
            .tempdir()
            .expect("create the registry temp dir");
        let config_path = dir.path().join("config.yml");
        let storage = options
            .storage
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let config = config_yaml(dir.path(), &storage, &options);
        std::fs::write(&config_path, config).expect("write the registry config");

        let log_path = dir.path().join("registry.log");
        // From here on, the guard kills the child whatever happens.
        let process = ProcessGuard::watched(serve(&config_path, &log_path));
        let mut registry = Registry {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            process,
            tls: options.tls.is_some(),
            log_path,
            log_shown: false,
            storage,
            dir,
        };
        registry.addr = registry.wait_for_listen_line();
        registry.wait_until_ready();
        registry
    }

    /// Kills the registry process (SIGKILL, as a crash); [`Registry::restart`] brings it back.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
    }

    /// Kills the registry process if it runs and starts it again on the same config and
    /// storage; it listens on a new port, so proxies must be pointed at [`Registry::addr`].
    pub fn restart(&mut self) {
        self.kill();
        // The new process logs its own `listening on` line: keep the old log beside it.
        let old = self.log_path.with_extension("log.before-restart");
        std::fs::rename(&self.log_path, &old).expect("move the registry log aside");
        self.process =
            ProcessGuard::watched(serve(&self.dir.path().join("config.yml"), &self.log_path));
        self.addr = self.wait_for_listen_line();
        self.wait_until_ready();
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `GET /v2/<repo>/<kind>/<reference>` (`kind`: `manifests` or `blobs`) read from the
    /// registry itself, accepting OCI indexes and manifests; the bytes, `None` unless 200.
    #[allow(dead_code)] // The benchmarks share this file and do not call it.
    pub async fn read(&self, repo: &str, kind: &str, reference: &str) -> Option<Vec<u8>> {
        let answer = super::http_client()
            .get(format!("{}/v2/{repo}/{kind}/{reference}", self.url()))
            .header(
                "accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .await
            .expect("the registry answers");
        if !answer.status().is_success() {
            return None;
        }
        Some(answer.bytes().await.expect("the body").to_vec())
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Whether the registry serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The file holding the registry's stdout and stderr (its log and access log).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The registry's log so far, for a failing test to print.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// The storage root (`rootdirectory` of the filesystem driver).
    pub fn storage_dir(&self) -> PathBuf {
        self.storage.clone()
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.process.kill();
        self.log_shown = true;
        panic!("registry {why}; its log:\n{}", self.log())
    }

    /// Distribution logs `listening on ADDR` right after binding (`, tls` follows for HTTPS).
    fn wait_for_listen_line(&mut self) -> SocketAddr {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            let log = self.log();
            if let Some(addr) = parse_listen_addr(&log) {
                return addr;
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                self.fail(&format!("exited before listening ({status})"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("logged no `listening on` in {STARTUP_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls `GET /v2/` until any HTTP answer comes back. This is done with a raw HTTP/1.0
    /// request so that it needs no runtime: for an HTTPS registry the answer is Go's
    /// `400 Client sent an HTTP request to an HTTPS server`, which still proves the server loop
    /// is running.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if http_answers(self.addr) {
                return;
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                self.fail(&format!("exited while starting ({status})"));
            }
            if Instant::now() >= deadline {
                self.fail(&format!("did not answer GET /v2/ in {STARTUP_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Stopped before its log is read, so that the log is complete.
        let _ = self.process.kill();
        if std::thread::panicking() && !self.log_shown {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            let shown = lines.len().min(60);
            let (addr, path) = (self.addr, self.log_path.display());
            eprintln!(
                "--- registry {addr} log (last {shown} lines of {path}) ---\n{tail}\n--- end ---"
            );
        }
    }
}

/// Starts `docker-registry serve CONFIG`, logging to a new file at `log_path`.
fn serve(config_path: &Path, log_path: &Path) -> Child {
    let log = File::create(log_path).expect("create the registry log file");
    let log_err = log.try_clone().expect("clone the registry log handle");
    Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        // Settings from the environment would override the generated config.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("start `{REGISTRY_BIN} serve` (apt-get install -y docker-registry): {e}")
        })
}

fn parse_listen_addr(log: &str) -> Option<SocketAddr> {
    let start = log.find("listening on ")? + "listening on ".len();
    let rest = &log[start..];
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))?;
    rest[..end].parse().ok()
}

fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

/// YAML strings: a JSON string literal is a valid double-quoted YAML scalar.
fn q(value: &str) -> String {
    serde_json::to_string(value).expect("encode a YAML string")
}

fn qp(path: &Path) -> String {
    q(path.to_str().expect("test paths are UTF-8"))
}

/// The log level must stay `info`: the bound port is read from an info line.
fn config_yaml(dir: &Path, storage: &Path, options: &RegistryOptions) -> String {
    let mut yaml = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
         \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:0\n  secret: retagd-test-http-secret\n",
        data = qp(storage),
    );
    if let Some(tls) = &options.tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            qp(&tls.cert),
            qp(&tls.key)
        ));
    }
    match &options.auth {
        RegistryAuth::None => {}
        RegistryAuth::Htpasswd { user, password } => {
            let path = dir.join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .unwrap_or_else(|e| panic!("run htpasswd (apt-get install -y apache2-utils): {e}"));
            assert!(
                out.status.success(),
                "htpasswd -Bbn failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(&path, &out.stdout).expect("write the htpasswd file");
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: retagd-test\n    path: {}\n",
                qp(&path)
            ));
        }
        RegistryAuth::Token {
            realm,
            service,
            issuer,
            root_cert_bundle,
        } => {
            yaml.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    \
                 rootcertbundle: {}\n",
                q(realm),
                q(service),
                q(issuer),
                qp(root_cert_bundle)
            ));
        }
    }
    if let Some(endpoint) = &options.notifications {
        // `headers` is an http.Header: each value is a list.
        yaml.push_str(&format!(
            "notifications:\n  events:\n    includereferences: true\n  endpoints:\n    \
             - name: retagd\n      url: {}\n      headers:\n        Authorization: [{}]\n      \
             timeout: 1s\n      threshold: 3\n      backoff: 100ms\n      \
             ignoredmediatypes: [application/octet-stream]\n",
            q(&endpoint.url),
            q(&format!("Bearer {}", endpoint.bearer))
        ));
        if !endpoint.ignored_actions.is_empty() {
            let actions: Vec<String> = endpoint.ignored_actions.iter().map(|a| q(a)).collect();
            yaml.push_str(&format!(
                "      ignore:\n        actions: [{}]\n",
                actions.join(", ")
            ));
        }
    }
    yaml
}
