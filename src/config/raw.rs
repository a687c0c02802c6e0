//! The configuration file as written: the serde shape users type, before validation.
//!
//! Every struct rejects unknown keys, so a typo is an error with its key path instead of a
//! silently ignored setting. Leaves stay plain strings and numbers; `validate` turns them into the
//! typed [`super::Config`], collecting every problem at once.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Defaults for every pipeline.
    #[serde(default)]
    pub defaults: Defaults,
    /// The HTTP listener.
    #[serde(default)]
    pub server: Server,
    /// Registries by name.
    pub registries: BTreeMap<String, Registry>,
    /// The promotion pipelines.
    pub pipelines: Vec<Pipeline>,
    /// Registry push webhooks in.
    #[serde(default)]
    pub webhooks: Webhooks,
    /// Where promotion events are posted.
    #[serde(default)]
    pub notifications: Vec<Notification>,
    /// Planned periods without promotions (a release calendar).
    #[serde(default)]
    pub freezes: Vec<Freeze>,
}

/// `[[freezes]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// Why; shown in plans, the status and the API.
    pub reason: String,
    /// Start, RFC 3339.
    pub from: String,
    /// End, RFC 3339.
    pub until: String,
    /// Pipelines covered; all when unset.
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// Stages covered; all when unset.
    #[serde(default)]
    pub stages: Vec<String>,
}

/// `[webhooks]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// File holding the shared secret every webhook must prove it knows.
    pub secret_file: Option<String>,
}

/// `[[notifications]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Where to POST (may itself be a secret, as Slack's are).
    pub url: Option<String>,
    /// A file holding the URL instead.
    pub url_file: Option<String>,
    /// `json` (default) or `slack`.
    pub format: Option<String>,
    /// Which events to send; all when unset.
    pub events: Option<Vec<String>>,
}

/// `[defaults]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// How often a pipeline reconciles when it sets no `interval`.
    pub interval: Option<String>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `IP:PORT` for /metrics, /healthz, /readyz and /api.
    pub listen: Option<String>,
    /// File holding the bearer token of the write API.
    pub api_token_file: Option<String>,
    /// Named holders of write-API tokens.
    #[serde(default)]
    pub approvers: Vec<Approver>,
    /// Directory for the small state file (first-seen times for `min_age`).
    pub state_dir: Option<String>,
    /// Seconds a client has to send a request's headers (also the longest idle keep-alive).
    pub header_read_timeout_secs: Option<u64>,
    /// Connections served at once.
    pub max_connections: Option<u32>,
    /// Webhook requests handled at once.
    pub max_webhook_requests: Option<u32>,
    /// File holding a bearer token the read API requires.
    pub read_token_file: Option<String>,
}

/// `[[server.approvers]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// Who approves with this token (recorded with each approval).
    pub name: String,
    /// File holding the token.
    pub token_file: String,
}

/// `[registries.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Base URL; the scheme decides TLS.
    pub url: String,
    /// User for Basic auth or the token server.
    pub username: Option<String>,
    /// File holding the password.
    pub password_file: Option<String>,
    /// A Docker `config.json` to take credentials from.
    pub docker_config: Option<String>,
    /// Extra CA certificate (PEM).
    pub ca_file: Option<String>,
    /// Requests in flight at once.
    pub max_concurrency: Option<u32>,
    /// Request rate ceiling.
    pub requests_per_second: Option<f64>,
    /// Tags asked for per page of a listing.
    pub page_size: Option<u32>,
    /// Seconds one request may take from start to last byte (blobs get more by size).
    pub request_timeout_secs: Option<u64>,
}

/// `[[pipelines]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Unique name.
    pub name: String,
    /// Registry name (a key of `registries`).
    pub registry: String,
    /// Repository path in that registry.
    pub repository: String,
    /// Reconcile interval.
    pub interval: Option<String>,
    /// Write a promotion record next to every promoted image (default true).
    pub records: Option<bool>,
    /// Stages in promotion order.
    pub stages: Vec<Stage>,
}

/// `[[pipelines.stages]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Unique name within the pipeline.
    pub name: String,
    /// Registry override.
    pub registry: Option<String>,
    /// Repository override.
    pub repository: Option<String>,
    /// Which tags belong to the stage.
    pub filter_tags: Option<FilterTags>,
    /// How its current tag is chosen.
    pub policy: Option<Policy>,
    /// How tags enter the stage.
    pub promote: Option<Promote>,
}

/// `filter_tags = { pattern, extract }`, as in Flux.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterTags {
    /// Regex searched in each tag.
    pub pattern: Option<String>,
    /// Expansion of the first match that the policy ranks.
    pub extract: Option<String>,
}

/// `policy = { semver | alphabetical | numerical }`; exactly one is set.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `{ range }`.
    pub semver: Option<Semver>,
    /// `{ order }`.
    pub alphabetical: Option<Ordered>,
    /// `{ order }`.
    pub numerical: Option<Ordered>,
}

/// `semver = { range }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Semver {
    /// A Masterminds range.
    pub range: String,
}

/// `{ order = "asc" | "desc" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ordered {
    /// `asc` (default) or `desc`.
    pub order: Option<String>,
}

/// `promote = { from, tag, approval, min_age, overwrite, windows }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The earlier stage promoted from.
    pub from: String,
    /// Target tag template.
    pub tag: String,
    /// `auto` or `manual`.
    pub approval: Option<String>,
    /// Soak time in the source stage.
    pub min_age: Option<String>,
    /// Whether an existing target tag with another digest may be moved.
    pub overwrite: Option<bool>,
    /// Whether a tag retagd wrote and someone moved is put back.
    pub heal: Option<bool>,
    /// When promotions into the stage may happen; any time when unset.
    pub windows: Option<Vec<Window>>,
    /// Whether and which signatures, attestations and SBOMs follow the image.
    pub referrers: Option<Referrers>,
    /// A signature every candidate must carry.
    pub verify: Option<Verify>,
}

/// `promote.verify = { cosign_key_file }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// A PEM ECDSA P-256 public key (`cosign.pub`).
    pub cosign_key_file: String,
}

/// `promote.referrers = { enabled, artifact_types, window }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Referrers {
    /// Carry referrers at all (default true).
    pub enabled: Option<bool>,
    /// Only these artifactTypes (default: all).
    pub artifact_types: Option<Vec<String>>,
    /// How long after its promotion a digest that is no longer current is still watched.
    pub window: Option<String>,
}

/// One of `promote.windows`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// `mon-fri`, `sat,sun`; every day when unset.
    pub days: Option<String>,
    /// `09:00-16:00`; the whole day when unset.
    pub hours: Option<String>,
    /// IANA time zone; UTC when unset.
    pub time_zone: Option<String>,
}
