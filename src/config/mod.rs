//! Configuration: the file users write, checked completely before anything runs.
//!
//! Loading has three layers. `figment` reads a TOML or YAML file (by extension) and overlays
//! `RETAGD_*` environment variables (`__` separates levels: `RETAGD_SERVER__LISTEN`). The merged
//! value is deserialized into [`raw`] structs that refuse unknown keys; `shape` repairs each
//! unknown key, missing key or wrong type and goes on, so all of them are found. Then `validate`
//! compiles those into [`Config`]: durations, URLs, regexes, ranges and templates parsed, names
//! resolved to indices, and every problem collected with its key path
//! (`pipelines[0].stages[2].promote.from: unknown stage "stagign" ...`) before failing; `locate`
//! gives each its line and column in the file.
//!
//! Nothing secret lives in the file: credentials are named by path (`password_file`,
//! `docker_config`) and read by the registry client, so this module never sees a secret and no
//! error it prints can contain one.

mod depth;
mod locate;
pub mod raw;
mod shape;
mod validate;

pub use depth::MAX_DEPTH;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format as _, Toml, Yaml};
use figment::value::{Tag, Value};
use figment::{Figment, Profile, Provider as _};
use url::Url;

use crate::policy::Selector;
use crate::template::Template;

/// Environment variables with the `RETAGD_` prefix that are not configuration overrides.
pub const RESERVED_ENV: [&str; 5] = [
    "RETAGD_CONFIG",
    "RETAGD_API_TOKEN",
    "RETAGD_URL",
    "RETAGD_LOG",
    "RETAGD_LOG_FORMAT",
];

/// Default `defaults.interval`: once a minute, as Flux's ImageRepository scans by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default `server.listen`: loopback only until the operator opens it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";
/// Default `max_concurrency` per registry.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 8;
/// Default `page_size` of tag listings: the most ECR accepts.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[defaults]`, resolved.
    pub defaults: Defaults,
    /// `[server]`, resolved.
    pub server: Server,
    /// Registries by name.
    pub registries: BTreeMap<String, Registry>,
    /// Pipelines in file order.
    pub pipelines: Vec<Pipeline>,
    /// `[webhooks]`, resolved.
    pub webhooks: Webhooks,
    /// `[[notifications]]` in file order.
    pub notifications: Vec<Notification>,
    /// `[[freezes]]` in file order, with ids `config-1`, `config-2`, ...
    pub freezes: Vec<crate::calendar::Freeze>,
}

/// `[webhooks]`.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    /// The shared secret's file; `None` turns the webhook endpoints off.
    pub secret_file: Option<PathBuf>,
}

/// The kinds of promotion event a notification endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// A promotion was copied.
    Success,
    /// A promotion failed.
    Failure,
    /// The target tag exists with another digest.
    Conflict,
    /// A manual stage has a new candidate waiting for approval.
    Pending,
    /// Someone set a freeze through the API.
    Freeze,
    /// Someone lifted a freeze.
    Unfreeze,
    /// A tag retagd wrote names another digest now (someone pushed over it).
    Drift,
}

impl EventKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [EventKind; 7] = [
        EventKind::Success,
        EventKind::Failure,
        EventKind::Conflict,
        EventKind::Pending,
        EventKind::Freeze,
        EventKind::Unfreeze,
        EventKind::Drift,
    ];

    /// The name used in the config, payloads and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Success => "success",
            EventKind::Failure => "failure",
            EventKind::Conflict => "conflict",
            EventKind::Pending => "pending",
            EventKind::Freeze => "freeze",
            EventKind::Unfreeze => "unfreeze",
            EventKind::Drift => "drift",
        }
    }
}

/// How a notification body is shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// retagd's own JSON event.
    Json,
    /// A Slack incoming-webhook message (`{"text": ...}`).
    Slack,
}

/// Where a notification goes. A Slack URL is a credential, so its `Debug` shows the host only
/// and it may come from a file.
#[derive(Clone)]
pub enum NotifyTarget {
    /// The URL, from the config.
    Url(Url),
    /// A file holding the URL, read at each delivery (so a rotated Secret takes effect).
    File(PathBuf),
}

impl fmt::Debug for NotifyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotifyTarget::Url(u) => write!(
                f,
                "Url({}://{}/...)",
                u.scheme(),
                u.host_str().unwrap_or("")
            ),
            NotifyTarget::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// `[[notifications]]`.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Where to POST.
    pub target: NotifyTarget,
    /// Body shape.
    pub format: NotifyFormat,
    /// The events sent.
    pub events: std::collections::BTreeSet<EventKind>,
}

/// `[defaults]`.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Reconcile interval of pipelines that set none.
    pub interval: Duration,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct Server {
    /// Listen address of the HTTP server.
    pub listen: SocketAddr,
    /// Bearer token file of the write API (the approver [`API_TOKEN_APPROVER`]).
    pub api_token_file: Option<PathBuf>,
    /// Named approvers, each with a token file of its own; with `api_token_file`, the tokens
    /// the write API accepts. None of either disables writes.
    pub approvers: Vec<Approver>,
    /// Where the state file lives; `None` keeps state in memory (a restart restarts the
    /// `min_age` clocks, which only ever delays a promotion).
    pub state_dir: Option<PathBuf>,
    /// How much the listener gives one client (`server.header_read_timeout_secs`,
    /// `server.max_connections`, `server.max_webhook_requests`).
    pub limits: Limits,
    /// A bearer token file the read API (`/api/v1/...` GETs) then requires; `None` leaves reads
    /// open. `/healthz`, `/readyz` and `/metrics` stay open either way (probes and scrapers).
    pub read_token_file: Option<PathBuf>,
}

/// Default `server.header_read_timeout_secs`: 10 s, plenty for a client on a slow link and short
/// enough that idle or stalled connections cannot pile up.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `server.max_connections`: far above what probes, scrapers, the CLI and registry
/// webhooks open, far below a normal file-descriptor limit (1,024).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default `server.max_webhook_requests`: webhooks only wake pipelines, so a few at a time
/// suffice; the rest are answered 503 at once.
pub const DEFAULT_MAX_WEBHOOK_REQUESTS: u32 = 16;

/// What the HTTP listener gives its clients; see the README's reliability section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers, from the connection's start or the end of the previous
    /// response; a connection that takes longer (or idles longer) is closed.
    pub header_read_timeout: Duration,
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: u32,
    /// Webhook requests in progress at once; more get 503. They are counted apart from the
    /// connections so a webhook flood leaves room for `/healthz` and `/metrics`.
    pub max_webhook_requests: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_webhook_requests: DEFAULT_MAX_WEBHOOK_REQUESTS,
        }
    }
}

/// The name approvals through `server.api_token_file` are recorded under.
pub const API_TOKEN_APPROVER: &str = "api-token";

/// Someone (or some CI system) who may approve through the write API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    /// Recorded with each approval; never the token.
    pub name: String,
    /// Where the token is (read at each request, by the secret-file rule).
    pub token_file: PathBuf,
    /// The configuration key that names the file, for errors.
    pub key: String,
}

impl Server {
    /// Every token the write API accepts, `api_token_file` as [`API_TOKEN_APPROVER`] last.
    pub fn all_approvers(&self) -> Vec<Approver> {
        let mut all = self.approvers.clone();
        if let Some(file) = &self.api_token_file {
            all.push(Approver {
                name: API_TOKEN_APPROVER.to_string(),
                token_file: file.clone(),
                key: "server.api_token_file".to_string(),
            });
        }
        all
    }
}

/// How retagd authenticates to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// No credentials.
    Anonymous,
    /// A user and a file holding the password (Basic, or for the token server).
    Password {
        /// The user name.
        username: String,
        /// Where the password is.
        password_file: PathBuf,
    },
    /// Credentials from a Docker `config.json` (`auths`, helpers).
    DockerConfig(PathBuf),
}

/// `[registries.NAME]`.
#[derive(Debug, Clone)]
pub struct Registry {
    /// The key in `registries`.
    pub name: String,
    /// Base URL (scheme and authority; the API lives at `/v2/`).
    pub url: Url,
    /// Credentials.
    pub auth: Auth,
    /// Extra CA certificate.
    pub ca_file: Option<PathBuf>,
    /// Requests in flight at once, shared by everything that talks to this registry.
    pub max_concurrency: u32,
    /// Request rate ceiling; `None` for none.
    pub requests_per_second: Option<f64>,
    /// Tags asked for per listing page.
    pub page_size: u32,
    /// How long one request may take from its start to its last byte, retries aside (a
    /// registry dripping its answer makes progress, so the read timeout alone never fires).
    /// A blob copy gets this plus one second per MiB.
    pub request_timeout: Duration,
}

/// Default `request_timeout_secs` of a registry: 120 s, twice the read timeout, for a tag list
/// page, a manifest or a token.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// `[[pipelines]]`.
#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Unique name.
    pub name: String,
    /// Reconcile interval.
    pub interval: Duration,
    /// Write a promotion record into the target repository after each promotion (see
    /// [`crate::record`]); on by default, so "who promoted this" has an answer in the registry.
    pub records: bool,
    /// Stages in promotion order.
    pub stages: Vec<Stage>,
}

/// `[[pipelines.stages]]`, with registry and repository resolved.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Unique within the pipeline.
    pub name: String,
    /// Registry name (a key of [`Config::registries`]).
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Filter and policy choosing the stage's current tag.
    pub selector: Selector,
    /// How tags enter this stage; `None` for the first.
    pub promote: Option<Promotion>,
}

/// Whether a promotion happens by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// As soon as a candidate qualifies.
    Auto,
    /// When a person approves (`retagd promote`, the API).
    Manual,
}

impl fmt::Display for Approval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Approval::Auto => "auto",
            Approval::Manual => "manual",
        })
    }
}

/// `promote = { ... }`.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// Index of the source stage in the pipeline (always an earlier one).
    pub from: usize,
    /// The target tag template.
    pub tag: Template,
    /// Auto or manual.
    pub approval: Approval,
    /// How long a candidate must have been seen in the source stage.
    pub min_age: Option<Duration>,
    /// Whether an existing target tag with another digest may be moved.
    pub overwrite: bool,
    /// A tag retagd wrote that someone moved (drift) is put back to the digest retagd wrote;
    /// off by default: drift is reported, and a person decides.
    pub heal: bool,
    /// When promotions into the stage may happen; always when empty.
    pub windows: Vec<crate::calendar::Window>,
    /// Which referrers follow a promoted image into this stage.
    pub referrers: Referrers,
    /// The key whose cosign signature a candidate needs before it is promoted here.
    pub verify: Option<Verify>,
}

/// `promote.verify`: only a candidate signed with this key (cosign, key-based) is promoted.
#[derive(Debug, Clone)]
pub struct Verify {
    /// Where the key was read from, for messages.
    pub cosign_key_file: PathBuf,
    /// The key, read and checked at start.
    pub key: crate::cosign::PublicKey,
}

/// `promote.referrers`: the signatures, attestations and SBOMs carried with a promotion into
/// another repository or registry, and for how long late ones are still looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referrers {
    /// On by default: an image promoted without its signature fails admission policies later.
    pub enabled: bool,
    /// artifactTypes carried; empty carries all.
    pub artifact_types: Vec<String>,
    /// A digest promoted this recently is still watched for referrers after the stage moved on
    /// (default [`DEFAULT_REFERRERS_WINDOW`]); the current digest always is.
    pub window: Duration,
}

/// 24 h: CI signs and attests within minutes to hours of a push.
pub const DEFAULT_REFERRERS_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Default for Referrers {
    fn default() -> Referrers {
        Referrers {
            enabled: true,
            artifact_types: Vec::new(),
            window: DEFAULT_REFERRERS_WINDOW,
        }
    }
}

/// One problem, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `pipelines[0].stages[2].promote.from`, or `.` for the whole file.
    pub path: String,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
    /// Where in the file, when the file has the key (an environment variable may set it).
    pub location: Option<Location>,
}

impl Problem {
    /// A problem not yet located in the file.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
            location: None,
        }
    }
}

/// `file:line:column`, as compilers print it, so editors and terminals jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file, as it was named.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.location {
            write!(f, "{at}: ")?;
        }
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The extension names no supported format.
    #[error("config file {0} must end in .toml, .yaml or .yml")]
    Format(PathBuf),
    /// The file is not well-formed TOML or YAML.
    #[error("invalid config {origin}: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// The parser's explanation, with line and column.
        message: String,
    },
    /// Unknown or missing keys, values of the wrong type, values that do not validate: all of
    /// them are listed, each with its place in the file.
    #[error("invalid config {origin}: {} problem(s):{}", problems.len(), list(problems))]
    Invalid {
        /// The file.
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// A configuration and the doubtful-but-legal things noticed while checking it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Warnings, with key paths.
    pub warnings: Vec<Problem>,
}

/// The file formats, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.toml`
    Toml,
    /// `.yaml` / `.yml`
    Yaml,
}

impl Format {
    /// The format a path's extension names.
    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Loads `path`, overlays `RETAGD_*` variables from the process environment, and validates.
pub fn load(path: &Path) -> Result<Loaded, Error> {
    let format = Format::of(path).ok_or_else(|| Error::Format(path.to_path_buf()))?;
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let reserved: Vec<String> = RESERVED_ENV
        .iter()
        .map(|name| name.trim_start_matches("RETAGD_").to_ascii_lowercase())
        .collect();
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
    let env = Env::prefixed("RETAGD_").split("__").ignore(&reserved);
    // Which variable set which key, so an error at that key can name the variable.
    let overrides: Vec<(String, String)> = env
        .iter()
        .map(|(key, _)| {
            let key = key.as_str().to_string();
            (
                format!("RETAGD_{}", key.to_ascii_uppercase().replace('.', "__")),
                key,
            )
        })
        .collect();
    let origin = path.display().to_string();
    check_depth(&text, format, &origin)?;
    let figment = base(&text, format).merge(env);
    from_figment(figment, &origin, &overrides, Some((&text, format)))
}

/// Parses configuration text without environment overrides; `origin` names it in messages.
pub fn parse(text: &str, format: Format, origin: &str) -> Result<Loaded, Error> {
    check_depth(text, format, origin)?;
    from_figment(base(text, format), origin, &[], Some((text, format)))
}

/// Refuses YAML nested deeper than [`MAX_DEPTH`] before the parser sees it: libyaml's time grows
/// with depth times size (100,000 levels took 43 s), TOML's parser has its own limit.
fn check_depth(text: &str, format: Format, origin: &str) -> Result<(), Error> {
    if format != Format::Yaml {
        return Ok(());
    }
    match depth::too_deep(text, MAX_DEPTH) {
        None => Ok(()),
        Some((line, column)) => Err(Error::Syntax {
            origin: origin.to_string(),
            message: format!(
                "nested deeper than {MAX_DEPTH} levels at line {line} column {column}"
            ),
        }),
    }
}

fn base(text: &str, format: Format) -> Figment {
    match format {
        Format::Toml => Figment::from(Toml::string(text)),
        Format::Yaml => Figment::from(Yaml::string(text)),
    }
}

/// `overrides` pairs each overriding variable with the key path it sets; `source` is the file's
/// text, to give each problem its line and column.
fn from_figment(
    figment: Figment,
    origin: &str,
    overrides: &[(String, String)],
    source: Option<(&str, Format)>,
) -> Result<Loaded, Error> {
    let describe = |path: &str| describe_origin(origin, path, overrides);
    // The merged file and environment as one tree. `Figment::extract` would clone it twice more
    // (merging profiles, then rebuilding it as the target), so a 1,000-pipeline config peaked at
    // three times its size. Neither provider uses profiles, so all of it is in the default one,
    // and the figment is dropped as soon as its data is copied out.
    let mut data = figment.data().map_err(|e| Error::Syntax {
        origin: origin.to_string(),
        message: syntax_message(&e),
    })?;
    drop(figment);
    let value = Value::Dict(
        Tag::Default,
        data.remove(&Profile::Default).unwrap_or_default(),
    );
    let mut shaped = shape::deserialize(&value);
    // A file without shape problems needs the tree again only to locate a warning or a
    // semantic error: it goes now, rebuilt from the text if one comes (a 1,000-pipeline file's
    // tree is several MiB, and validation builds the configuration beside it).
    let value = (!shaped.problems.is_empty()).then_some(value);
    let mut errors = shaped.problems.clone();
    let mut warnings = Vec::new();
    let mut config = None;
    if let Some(file) = shaped.file.take() {
        let checked = validate::validate(file);
        errors.extend(
            checked
                .errors
                .into_iter()
                .filter(|p| !shaped.is_repaired(&p.path)),
        );
        warnings = checked.warnings;
        config = checked.config;
    }
    let locate = |problems: &mut Vec<Problem>| {
        let Some((text, format)) = source else { return };
        if problems.is_empty() {
            return;
        }
        let rebuilt;
        let tree = match &value {
            Some(tree) => tree,
            None => {
                let data = base(text, format)
                    .data()
                    .ok()
                    .and_then(|mut d| d.remove(&Profile::Default));
                rebuilt = Value::Dict(Tag::Default, data.unwrap_or_default());
                &rebuilt
            }
        };
        for p in problems.iter_mut().take(MAX_LOCATED) {
            let segs = locate::segments(tree, &p.path);
            p.location = locate::position(text, format, &segs).map(|at| Location {
                file: origin.to_string(),
                line: at.line,
                column: at.column,
            });
        }
        // In file order; what the file does not hold (set by a variable) last.
        problems.sort_by_key(|p| {
            p.location
                .as_ref()
                .map_or((usize::MAX, 0), |l| (l.line, l.column))
        });
    };
    match config {
        Some(config) if errors.is_empty() => {
            // A warning on every start of a large file must not cost a second parse of it (a
            // 1,000-pipeline file: 700 KiB of text, 40 MiB to locate): it names its key only.
            if source.is_some_and(|(text, _)| text.len() <= MAX_LOCATE_WARNINGS_BYTES) {
                locate(&mut warnings);
            }
            Ok(Loaded { config, warnings })
        }
        _ => {
            locate(&mut errors);
            let origin = errors
                .iter()
                .map(|p| describe(&p.path))
                .find(|o| o != origin)
                .unwrap_or_else(|| origin.to_string());
            Err(Error::Invalid {
                origin,
                problems: errors,
            })
        }
    }
}

/// Problems located in the file, at most: each costs a parse of it.
const MAX_LOCATED: usize = 60;
/// Warnings of a valid file are located (file, line, column) only in files up to this size.
const MAX_LOCATE_WARNINGS_BYTES: usize = 64 << 10;

/// Names the file, and the environment variable when one set the key at `path`.
fn describe_origin(origin: &str, path: &str, overrides: &[(String, String)]) -> String {
    let vars: Vec<&str> = overrides
        .iter()
        .filter(|(_, key)| {
            key == path
                || key.starts_with(&format!("{path}."))
                || path.starts_with(&format!("{key}."))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if vars.is_empty() {
        origin.to_string()
    } else {
        format!("{origin} (with environment variable {})", vars.join(", "))
    }
}

/// The parser's explanation: where (line and column) and what is wrong, never the text of the
/// line. The TOML parser quotes the offending line under a caret, and a broken line may hold a
/// secret (a notification URL with its token), so every excerpt line (`5 | url = "...`, `  |   ^`)
/// is dropped before the message reaches a terminal or a log.
fn syntax_message(e: &figment::Error) -> String {
    let message = e
        .to_string()
        .lines()
        .filter(|line| !is_excerpt(line))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ");
    // figment appends a source name we already give.
    let message = ["in TOML source string", "in YAML source string"]
        .iter()
        .fold(message, |m, suffix| {
            m.trim_end_matches(suffix).trim_end().to_string()
        });
    // "TOML parse error at line 5, column 62 invalid basic string": a colon after the place.
    const COLUMN: &str = ", column ";
    let Some(column) = message.find(COLUMN).map(|i| i + COLUMN.len()) else {
        return message;
    };
    if !message.starts_with("TOML parse error at line") {
        return message;
    }
    let digits = &message[column..];
    let end = column
        + digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
    let (place, what) = message.split_at(end);
    if what.trim().is_empty() {
        place.to_string()
    } else {
        format!("{place}: {}", what.trim())
    }
}

/// Whether a line of a parser's message is a source excerpt: `  |`, `5 | text`, `  |    ^`.
fn is_excerpt(line: &str) -> bool {
    line.trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start()
        .starts_with('|')
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE_TOML: &str = include_str!("../../config/retagd.toml");
    const EXAMPLE_YAML: &str = include_str!("../../config/retagd.yaml");

    #[test]
    fn both_examples_load_to_the_same_pipelines() {
        let t = parse(EXAMPLE_TOML, Format::Toml, "toml").expect("valid toml");
        let y = parse(EXAMPLE_YAML, Format::Yaml, "yaml").expect("valid yaml");
        let shape = |c: &Config| {
            c.pipelines
                .iter()
                .flat_map(|p| {
                    p.stages.iter().map(move |s| {
                        let promote = s.promote.as_ref().map(|pr| {
                            (
                                pr.from,
                                pr.tag.to_string(),
                                pr.approval,
                                pr.min_age,
                                pr.overwrite,
                            )
                        });
                        (
                            p.name.clone(),
                            p.interval,
                            s.name.clone(),
                            s.registry.clone(),
                            s.repository.clone(),
                            s.selector.policy().to_string(),
                            promote,
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(&t.config), shape(&y.config));
        assert_eq!(t.config.server.listen, y.config.server.listen);
        assert!(t.warnings.is_empty() && y.warnings.is_empty());
    }

    /// The example with every commented key line switched on (`# key = ...`, `# key: ...`,
    /// `# [table]`, `# - key: ...` and YAML's nested `#   key: ...`), except alternatives, which
    /// say "instead of".
    fn uncommented(text: &str) -> String {
        let is_key = |rest: &str| {
            let rest = rest.trim_start().trim_start_matches("- ");
            let key = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            let table = rest.starts_with('[') && rest.trim_end().ends_with(']');
            table || (key > 0 && (rest[key..].starts_with(" =") || rest[key..].starts_with(':')))
        };
        text.lines()
            .map(|line| {
                let indent = line.len() - line.trim_start().len();
                match line.trim_start().strip_prefix("# ") {
                    Some(rest) if is_key(rest) && !rest.contains("instead of") => {
                        format!("{}{rest}\n", &line[..indent])
                    }
                    _ => format!("{line}\n"),
                }
            })
            .collect()
    }

    #[test]
    fn the_examples_load_with_every_optional_line_switched_on() {
        let t = parse(&uncommented(EXAMPLE_TOML), Format::Toml, "toml").expect("valid toml");
        let y = parse(&uncommented(EXAMPLE_YAML), Format::Yaml, "yaml").expect("valid yaml");
        for c in [&t.config, &y.config] {
            let production = &c.pipelines[0].stages[2];
            assert_eq!(production.registry, "prod");
            let promote = production.promote.as_ref().unwrap();
            assert_eq!(promote.min_age, Some(Duration::from_secs(86_400)));
            assert_eq!(promote.windows.len(), 1);
            assert_eq!(c.freezes.len(), 1);
            assert_eq!(c.freezes[0].stages, ["production"]);
            assert_eq!(c.pipelines[0].interval, Duration::from_secs(30));
            assert!(c.server.state_dir.is_some() && c.server.read_token_file.is_some());
            assert_eq!(c.notifications.len(), 1);
            assert!(c.webhooks.secret_file.is_some());
            let local = &c.registries["local"];
            assert_eq!(local.requests_per_second, Some(20.0));
            assert!(matches!(local.auth, Auth::Password { .. }));
        }
        assert_eq!(t.config.freezes, y.config.freezes);
        assert_eq!(
            t.warnings.iter().map(|w| &w.path).collect::<Vec<_>>(),
            y.warnings.iter().map(|w| &w.path).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_error_at_an_overridden_key_names_the_variable() {
        let overrides = [(
            "RETAGD_SERVER__LISTEN".to_string(),
            "server.listen".to_string(),
        )];
        assert_eq!(
            describe_origin("f.toml", "server.listen", &overrides),
            "f.toml (with environment variable RETAGD_SERVER__LISTEN)"
        );
        assert_eq!(
            describe_origin("f.toml", "server", &overrides),
            "f.toml (with environment variable RETAGD_SERVER__LISTEN)"
        );
        assert_eq!(
            describe_origin("f.toml", "defaults.interval", &overrides),
            "f.toml"
        );
    }

    #[test]
    fn syntax_errors_name_line_and_column_and_never_quote_the_line() {
        let text = "[server]\nlisten = \"127.0.0.1:9090\"\n\n[[notifications]]\nurl = \"https://hooks.example/services/SECRETTOKEN\n";
        let err = parse(text, Format::Toml, "x.toml").expect_err("invalid");
        let message = err.to_string();
        assert!(!message.contains("SECRETTOKEN"), "{message}");
        assert!(!message.contains("hooks.example"), "{message}");
        assert!(
            message.starts_with("invalid config x.toml: TOML parse error at line 5, column "),
            "{message}"
        );
        assert!(message.ends_with(": invalid basic string"), "{message}");
        for text in [
            "a:\n  b: [1, 2\n  c: \"https://x/SECRETTOKEN",
            "a: \"https://x/SECRETTOKEN\n  - b: [",
        ] {
            let message = parse(text, Format::Yaml, "x.yaml")
                .expect_err("invalid")
                .to_string();
            assert!(!message.contains("SECRETTOKEN"), "{message}");
            assert!(message.contains("line "), "{message}");
        }
    }

    #[test]
    fn deeply_nested_files_are_refused_at_once_in_both_formats() {
        let started = std::time::Instant::now();
        for (format, text) in [
            (Format::Yaml, format!("pipelines: {}", "[".repeat(100_000))),
            (
                Format::Yaml,
                format!("pipelines:\n{}", "- ".repeat(100_000)),
            ),
            (Format::Toml, format!("pipelines = {}", "[".repeat(100_000))),
        ] {
            let err = parse(&text, format, "deep").expect_err("too deep");
            assert!(matches!(err, Error::Syntax { .. }), "{err}");
        }
        let elapsed = started.elapsed();
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
        let err = parse(&"[".repeat(100_000), Format::Yaml, "deep").expect_err("too deep");
        assert_eq!(
            err.to_string(),
            "invalid config deep: nested deeper than 64 levels at line 1 column 64"
        );
    }

    const MANY_MISTAKES: &str = r#"[defaults]
interval = 30

[server]
listn = "127.0.0.1:9090"

[registries.local]
url = "http://127.0.0.1:5000"
max_concurrency = "hunter2"

[[pipelines]]
name = "app"
registry = "local"
repository = "myorg/app"

[[pipelines.stages]]
name = "dev"
policy = { semver = "1.x" }

[[pipelines.stages]]
name = "staging"
min_age = "1h"
policy = { semver = { range = ">=1.0.0" } }
promote = { from = "dev", tag = 5, aproval = "manual" }

[[pipelines.stages]]
name = "prod"
policy = { semver = { range = ">=1.0.0" } }
promote = { from = "stagign" }
"#;

    #[test]
    fn every_problem_of_every_kind_is_reported_at_once_with_line_and_column() {
        let Err(Error::Invalid { problems, .. }) = parse(MANY_MISTAKES, Format::Toml, "f.toml")
        else {
            panic!("invalid config expected");
        };
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "f.toml:2:1: defaults.interval: expected a string, found a number (durations are strings with a unit, e.g. \"90s\", \"24h\")",
                "f.toml:5:1: server.listn: unknown key (did you mean server.listen?)",
                "f.toml:9:1: registries.local.max_concurrency: expected a whole number, 0 or more, found a string",
                "f.toml:18:12: pipelines[0].stages[0].policy.semver: expected a table with the keys range, found a string",
                "f.toml:22:1: pipelines[0].stages[1].min_age: unknown key (did you mean pipelines[0].stages[1].promote.min_age?)",
                "f.toml:24:27: pipelines[0].stages[1].promote.tag: expected a string, found a number",
                "f.toml:24:36: pipelines[0].stages[1].promote.aproval: unknown key (did you mean pipelines[0].stages[1].promote.approval?)",
                "f.toml:29:1: pipelines[0].stages[2].promote.tag: missing (this key is required)",
                "f.toml:29:13: pipelines[0].stages[2].promote.from: unknown stage \"stagign\" (stages: dev, staging, prod)",
            ]
        );
        assert!(!lines.concat().contains("hunter2"));
    }

    #[test]
    fn yaml_problems_have_their_line_and_column_too() {
        let text = "defaults:\n  interval: 30\nregistries:\n  local:\n    url: http://127.0.0.1:5000\npipelines:\n  - name: app\n    registry: local\n    repository: myorg/app\n    stages:\n      - name: dev\n        policy: { semver: { range: 1 } }\n      - name: staging\n        min_age: 1h\n        policy: { semver: { range: \">=1\" } }\n        promote:\n          from: dev\n";
        let Err(Error::Invalid { problems, .. }) = parse(text, Format::Yaml, "f.yaml") else {
            panic!("invalid config expected");
        };
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "f.yaml:2:3: defaults.interval: expected a string, found a number (durations are strings with a unit, e.g. \"90s\", \"24h\")",
                "f.yaml:12:29: pipelines[0].stages[0].policy.semver.range: expected a string, found a number (a semver range is a string, e.g. \">=1.0.0\")",
                "f.yaml:14:9: pipelines[0].stages[1].min_age: unknown key (did you mean pipelines[0].stages[1].promote.min_age?)",
                "f.yaml:16:9: pipelines[0].stages[1].promote.tag: missing (this key is required)",
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = parse("[server\nlisten = 1", Format::Toml, "x.toml").expect_err("invalid");
        assert!(matches!(err, Error::Syntax { .. }), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, mutations};

    static SEEDS_TOML: &[&[u8]] = &[include_bytes!("../../config/retagd.toml")];
    static SEEDS_YAML: &[&[u8]] = &[include_bytes!("../../config/retagd.yaml")];

    #[test]
    fn fuzz_config_files_load_or_name_a_problem() {
        for (format, seeds) in [(Format::Toml, SEEDS_TOML), (Format::Yaml, SEEDS_YAML)] {
            fuzz("config files", mutations(seeds), |bytes| {
                let text = String::from_utf8_lossy(&bytes);
                if let Err(e) = parse(&text, format, "fuzz") {
                    proptest::prop_assert!(!e.to_string().is_empty());
                }
                Ok(())
            });
        }
    }

    /// The ways a file nests: flow sequences and maps, compact block entries, indentation.
    const NESTINGS: [&str; 5] = ["[", "{a: ", "- ", "? ", "a = ["];

    /// A mutated seed with up to 30,000 levels of one kind of nesting spliced in somewhere: a
    /// hostile file must be refused (or loaded) in well under a second whatever the depth, so a
    /// SIGHUP reload cannot stall.
    fn nested(
        seeds: &'static [&'static [u8]],
    ) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        (
            mutations(seeds),
            0..NESTINGS.len(),
            0..30_000usize,
            any::<usize>(),
            any::<bool>(),
        )
            .prop_map(|(mut bytes, kind, depth, at, newlines)| {
                let unit = NESTINGS[kind];
                let mut nest = Vec::with_capacity(depth * (unit.len() + 1));
                for level in 0..depth {
                    if newlines && kind >= 2 {
                        nest.push(b'\n');
                        nest.extend(std::iter::repeat_n(b' ', level % 16));
                    }
                    nest.extend_from_slice(unit.as_bytes());
                }
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, nest);
                bytes
            })
    }

    #[test]
    fn fuzz_deeply_nested_config_files_are_answered_quickly() {
        for (format, seeds) in [(Format::Toml, SEEDS_TOML), (Format::Yaml, SEEDS_YAML)] {
            fuzz("deeply nested config files", nested(seeds), |bytes| {
                let text = String::from_utf8_lossy(&bytes);
                let started = std::time::Instant::now();
                let result = parse(&text, format, "fuzz");
                let elapsed = started.elapsed();
                proptest::prop_assert!(
                    elapsed < std::time::Duration::from_secs(3),
                    "{format:?} took {elapsed:?}: {:?}",
                    result.err().map(|e| e.to_string())
                );
                Ok(())
            });
        }
    }
}
