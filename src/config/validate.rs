//! Compiles the [`raw`] file into a [`Config`], collecting every problem with its key path.
//!
//! Errors make the configuration unusable; warnings are legal but probably not what the user
//! meant (a stage promoted into without a filter, a template whose tags the target stage's own
//! filter would not see). `retagd check` prints both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use url::Url;

use super::Limits;
use super::{
    raw, Approval, Approver, Auth, Config, Defaults, EventKind, Notification, NotifyFormat,
    NotifyTarget, Pipeline, Problem, Promotion, Registry, Server, Stage, Webhooks,
    API_TOKEN_APPROVER, DEFAULT_INTERVAL, DEFAULT_LISTEN, DEFAULT_MAX_CONCURRENCY,
    DEFAULT_PAGE_SIZE,
};
use crate::calendar;
use crate::policy::{self, Filter, Order, Policy, Selector};
use crate::reference;
use crate::template::{Template, Values, Var};

/// Names of registries, pipelines and stages: they appear in URLs, metric labels and logs.
static NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$").expect("constant pattern"));

/// Slower than this, one reconcile would take hours.
const MIN_REQUESTS_PER_SECOND: f64 = 0.01;

/// Below this a poll interval mostly burns registry rate limits.
const SHORT_INTERVAL: Duration = Duration::from_secs(10);

/// Filters compiled so far, by `(pattern, extract)`. Fleets repeat a few patterns across
/// hundreds of stages, and each compiled regex costs about 25 KB of memory (plus its search
/// caches once used) and 0.1 ms to build; a clone shares the compiled one.
type Filters = HashMap<(Option<String>, Option<String>), Result<Filter, policy::FilterError>>;

/// The result of validation: a config when every part compiled, and what was found.
pub(super) struct Checked {
    pub config: Option<Config>,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

#[derive(Default)]
struct Problems {
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Problems {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem::new(path, message));
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem::new(path, message));
    }

    /// Records the error of `result` at `path` and passes its value on.
    fn check<T, E: std::fmt::Display>(&mut self, path: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.error(path, e.to_string())).ok()
    }
}

pub(super) fn validate(file: raw::File) -> Checked {
    let mut p = Problems::default();

    let interval = match &file.defaults.interval {
        Some(text) => duration(&mut p, "defaults.interval", text, true),
        None => Some(DEFAULT_INTERVAL),
    };
    let inherited = file.pipelines.iter().any(|pl| pl.interval.is_none());
    if inherited {
        short_interval(&mut p, "defaults.interval", interval);
    }
    let server = server(&mut p, &file.server);
    let webhooks = Webhooks {
        secret_file: nonempty_path(&mut p, "webhooks.secret_file", &file.webhooks.secret_file),
    };
    let notifications: Vec<Notification> = file
        .notifications
        .iter()
        .enumerate()
        .filter_map(|(i, n)| notification(&mut p, &format!("notifications[{i}]"), n))
        .collect();

    let mut registries = BTreeMap::new();
    for (name, reg) in &file.registries {
        if let Some(r) = registry(&mut p, name, reg) {
            registries.insert(name.clone(), r);
        }
    }

    let mut pipelines = Vec::new();
    let mut seen = HashSet::new();
    let mut filters = Filters::new();
    for (i, raw) in file.pipelines.iter().enumerate() {
        let path = format!("pipelines[{i}]");
        if !seen.insert(raw.name.as_str()) {
            p.error(
                format!("{path}.name"),
                format!("duplicate pipeline name {:?}", raw.name),
            );
        }
        if let Some(pl) = pipeline(
            &mut p,
            &mut filters,
            &path,
            raw,
            &file,
            interval.unwrap_or(DEFAULT_INTERVAL),
        ) {
            pipelines.push(pl);
        }
    }
    if file.pipelines.is_empty() {
        p.error(
            "pipelines",
            "no pipeline is defined (add at least one [[pipelines]])",
        );
    }
    for name in file.registries.keys() {
        let used = file.pipelines.iter().any(|pl| {
            pl.registry == *name
                || pl
                    .stages
                    .iter()
                    .any(|s| s.registry.as_deref() == Some(name))
        });
        if !used {
            p.warn(format!("registries.{name}"), "not used by any pipeline");
        }
    }

    let freezes = freezes(&mut p, &file);

    let config = match (interval, server) {
        (Some(interval), Some(server)) if p.errors.is_empty() => Some(Config {
            defaults: Defaults { interval },
            server,
            registries,
            pipelines,
            webhooks,
            notifications,
            freezes,
        }),
        _ => None,
    };
    Checked {
        config,
        errors: p.errors,
        warnings: p.warnings,
    }
}

/// `[[freezes]]`: each names known pipelines and stages, and ends after it starts.
fn freezes(p: &mut Problems, file: &raw::File) -> Vec<calendar::Freeze> {
    let now = std::time::SystemTime::now();
    let mut out = Vec::new();
    for (i, raw) in file.freezes.iter().enumerate() {
        let path = format!("freezes[{i}]");
        if raw.reason.trim().is_empty() {
            p.error(
                format!("{path}.reason"),
                "is empty; say why promotions stop",
            );
        }
        let from = p.check(&format!("{path}.from"), calendar::parse_time(&raw.from));
        let until = p.check(&format!("{path}.until"), calendar::parse_time(&raw.until));
        let pipelines: Vec<&raw::Pipeline> = file
            .pipelines
            .iter()
            .filter(|pl| raw.pipelines.is_empty() || raw.pipelines.contains(&pl.name))
            .collect();
        for (j, name) in raw.pipelines.iter().enumerate() {
            if !file.pipelines.iter().any(|pl| pl.name == *name) {
                let known: Vec<&str> = file.pipelines.iter().map(|pl| pl.name.as_str()).collect();
                p.error(
                    format!("{path}.pipelines[{j}]"),
                    format!(
                        "unknown pipeline {name:?} (pipelines: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        for (j, name) in raw.stages.iter().enumerate() {
            if !pipelines
                .iter()
                .any(|pl| pl.stages.iter().any(|s| s.name == *name))
            {
                let mut known: Vec<&str> = pipelines
                    .iter()
                    .flat_map(|pl| pl.stages.iter().map(|s| s.name.as_str()))
                    .collect();
                known.sort_unstable();
                known.dedup();
                p.error(
                    format!("{path}.stages[{j}]"),
                    format!(
                        "no stage {name:?} in the pipelines it covers (stages: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        let (Some(from), Some(until)) = (from, until) else {
            continue;
        };
        if until <= from {
            p.error(format!("{path}.until"), "is not after from");
            continue;
        }
        if until <= now {
            p.warn(
                format!("{path}.until"),
                "is in the past; the freeze is over",
            );
        }
        out.push(calendar::Freeze {
            id: format!("config-{}", i + 1),
            reason: raw.reason.clone(),
            by: "config".into(),
            pipelines: raw.pipelines.clone(),
            stages: raw.stages.clone(),
            from,
            until: Some(until),
        });
    }
    out
}

fn duration(p: &mut Problems, path: &str, text: &str, positive: bool) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if positive && d.is_zero() => {
            p.error(
                path,
                format!("{text:?} is zero; give a positive duration such as 30s or 5m"),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            p.error(
                path,
                format!("invalid duration {text:?}: {e} (write e.g. 30s, 5m, 1h30m)"),
            );
            None
        }
    }
}

/// Warns at `path` when `interval` burns rate limits.
fn short_interval(p: &mut Problems, path: &str, interval: Option<Duration>) {
    if let Some(i) = interval.filter(|i| *i < SHORT_INTERVAL) {
        p.warn(
            path,
            format!("{} is very short: each reconcile lists tags, which counts against registry rate limits (webhooks give faster promotion)", humantime::format_duration(i)),
        );
    }
}

fn name(p: &mut Problems, path: &str, what: &str, value: &str) {
    if !NAME.is_match(value) {
        p.error(
            path,
            format!("invalid {what} name {value:?} (letters, digits, '.', '_', '-'; at most 63, starting with a letter or digit)"),
        );
    }
}

fn nonempty_path(
    p: &mut Problems,
    path: &str,
    value: &Option<String>,
) -> Option<std::path::PathBuf> {
    match value.as_deref() {
        Some("") => {
            p.error(path, "is empty; give a file path or remove the key");
            None
        }
        Some(v) => Some(v.into()),
        None => None,
    }
}

fn server(p: &mut Problems, raw: &raw::Server) -> Option<Server> {
    let listen = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            p.error(
                "server.listen",
                format!("invalid address {listen:?} (write IP:PORT, e.g. 127.0.0.1:9090 or 0.0.0.0:9090)"),
            );
            None
        }
    };
    let api_token_file = nonempty_path(p, "server.api_token_file", &raw.api_token_file);
    let state_dir = nonempty_path(p, "server.state_dir", &raw.state_dir);
    let mut approvers: Vec<Approver> = Vec::new();
    for (i, a) in raw.approvers.iter().enumerate() {
        let path = format!("server.approvers[{i}]");
        let name_ok = !a.name.is_empty()
            && a.name.len() <= 64
            && a.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
        if !name_ok {
            p.error(
                format!("{path}.name"),
                format!(
                    "{:?} is not a name (1 to 64 of letters, digits, '.', '_', '-', '@')",
                    a.name.chars().take(80).collect::<String>()
                ),
            );
            continue;
        }
        let reserved = a.name == API_TOKEN_APPROVER && raw.api_token_file.is_some();
        if reserved || approvers.iter().any(|b| b.name == a.name) {
            p.error(
                format!("{path}.name"),
                format!(
                    "{:?} is taken{}; each approver needs a name of its own",
                    a.name,
                    if reserved {
                        " by server.api_token_file"
                    } else {
                        ""
                    }
                ),
            );
            continue;
        }
        let key = format!("{path}.token_file");
        if let Some(token_file) = nonempty_path(p, &key, &Some(a.token_file.clone())) {
            approvers.push(Approver {
                name: a.name.clone(),
                token_file,
                key,
            });
        }
    }
    let read_token_file = nonempty_path(p, "server.read_token_file", &raw.read_token_file);
    let limits = server_limits(p, raw);
    Some(Server {
        listen: listen?,
        api_token_file,
        approvers,
        state_dir,
        limits,
        read_token_file,
    })
}

/// `server.header_read_timeout_secs`, `server.max_connections`, `server.max_webhook_requests`:
/// each at least 1 (0 would refuse everything).
fn server_limits(p: &mut Problems, raw: &raw::Server) -> Limits {
    let mut positive = |key: &str, value: Option<u64>, default: u64| match value {
        Some(0) => {
            p.error(format!("server.{key}"), "must be at least 1");
            default
        }
        Some(v) => v,
        None => default,
    };
    let defaults = Limits::default();
    let header_read_timeout = positive(
        "header_read_timeout_secs",
        raw.header_read_timeout_secs,
        defaults.header_read_timeout.as_secs(),
    );
    let max_connections = positive(
        "max_connections",
        raw.max_connections.map(u64::from),
        u64::from(defaults.max_connections),
    );
    let max_webhook_requests = positive(
        "max_webhook_requests",
        raw.max_webhook_requests.map(u64::from),
        u64::from(defaults.max_webhook_requests),
    );
    Limits {
        header_read_timeout: Duration::from_secs(header_read_timeout),
        max_connections: u32::try_from(max_connections).unwrap_or(u32::MAX),
        max_webhook_requests: u32::try_from(max_webhook_requests).unwrap_or(u32::MAX),
    }
}

fn notification(p: &mut Problems, path: &str, raw: &raw::Notification) -> Option<Notification> {
    let target = match (&raw.url, &raw.url_file) {
        (Some(url), None) => match Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                Some(NotifyTarget::Url(u))
            }
            // The URL may hold a token (Slack's do): never echo it.
            _ => {
                p.error(
                    format!("{path}.url"),
                    "is not an http:// or https:// URL (its value is not shown: it may hold a token)",
                );
                None
            }
        },
        (None, Some(_)) => {
            nonempty_path(p, &format!("{path}.url_file"), &raw.url_file).map(NotifyTarget::File)
        }
        (Some(_), Some(_)) => {
            p.error(path, "set url or url_file, not both");
            None
        }
        (None, None) => {
            p.error(path, "needs url (or url_file, a file holding the URL)");
            None
        }
    };
    let format = match raw.format.as_deref() {
        None | Some("json") => Some(NotifyFormat::Json),
        Some("slack") => Some(NotifyFormat::Slack),
        Some(other) => {
            p.error(
                format!("{path}.format"),
                format!("unknown format {other:?} (json or slack)"),
            );
            None
        }
    };
    let mut events = std::collections::BTreeSet::new();
    match &raw.events {
        None => events.extend(EventKind::ALL),
        Some(list) => {
            if list.is_empty() {
                p.error(
                    format!("{path}.events"),
                    "is empty; list events or remove the key to send all",
                );
            }
            for (j, e) in list.iter().enumerate() {
                match EventKind::ALL.iter().find(|k| k.as_str() == e) {
                    Some(k) => {
                        events.insert(*k);
                    }
                    None => p.error(
                        format!("{path}.events[{j}]"),
                        format!("unknown event {e:?} (success, failure, conflict, pending)"),
                    ),
                }
            }
        }
    }
    Some(Notification {
        target: target?,
        format: format?,
        events,
    })
}

fn registry(p: &mut Problems, name: &str, raw: &raw::Registry) -> Option<Registry> {
    let path = format!("registries.{name}");
    self::name(p, &path, "registry", name);
    let url = registry_url(p, &format!("{path}.url"), &raw.url);

    let password_file = nonempty_path(p, &format!("{path}.password_file"), &raw.password_file);
    let docker_config = nonempty_path(p, &format!("{path}.docker_config"), &raw.docker_config);
    let ca_file = nonempty_path(p, &format!("{path}.ca_file"), &raw.ca_file);
    let auth = match (&raw.username, password_file, docker_config) {
        (None, None, None) => Auth::Anonymous,
        (Some(u), Some(f), None) if !u.is_empty() => Auth::Password {
            username: u.clone(),
            password_file: f,
        },
        (None, None, Some(d)) => Auth::DockerConfig(d),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            p.error(
                &path,
                "set either username + password_file or docker_config, not both",
            );
            Auth::Anonymous
        }
        (Some(u), None, None) if !u.is_empty() => {
            p.error(
                format!("{path}.password_file"),
                "missing: username needs password_file",
            );
            Auth::Anonymous
        }
        (Some(_), _, None) => {
            p.error(format!("{path}.username"), "is empty");
            Auth::Anonymous
        }
        (None, Some(_), None) => {
            p.error(
                format!("{path}.username"),
                "missing: password_file needs username",
            );
            Auth::Anonymous
        }
    };

    let max_concurrency = raw.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
    if max_concurrency == 0 {
        p.error(format!("{path}.max_concurrency"), "must be at least 1");
    }
    if let Some(rps) = raw.requests_per_second {
        if !(rps.is_finite() && rps >= MIN_REQUESTS_PER_SECOND) {
            p.error(
                format!("{path}.requests_per_second"),
                format!("must be at least {MIN_REQUESTS_PER_SECOND} (one request per 100 s), not {rps}; remove the key for no limit"),
            );
        }
    }
    let page_size = raw.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if page_size == 0 || page_size > 10_000 {
        p.error(
            format!("{path}.page_size"),
            format!("must be 1 to 10000, not {page_size}"),
        );
    } else if page_size > 1000 {
        p.warn(
            format!("{path}.page_size"),
            "ECR refuses pages over 1000 tags",
        );
    }
    let url = url?;
    if ca_file.is_some() && url.scheme() == "http" {
        p.warn(
            format!("{path}.ca_file"),
            "ignored: the registry URL is plain http",
        );
    }
    Some(Registry {
        name: name.to_string(),
        url,
        auth,
        ca_file,
        max_concurrency,
        requests_per_second: raw.requests_per_second,
        page_size,
        request_timeout: request_timeout(p, &path, raw.request_timeout_secs),
    })
}

/// A registry's `request_timeout_secs`: at least 1.
fn request_timeout(p: &mut Problems, path: &str, secs: Option<u64>) -> Duration {
    match secs {
        Some(0) => {
            p.error(format!("{path}.request_timeout_secs"), "must be at least 1");
            super::DEFAULT_REQUEST_TIMEOUT
        }
        Some(s) => Duration::from_secs(s),
        None => super::DEFAULT_REQUEST_TIMEOUT,
    }
}

fn registry_url(p: &mut Problems, path: &str, text: &str) -> Option<Url> {
    if !text.contains("://") {
        p.error(
            path,
            format!("{text:?} has no scheme; write https://{text} (or http:// for a plain-HTTP registry)"),
        );
        return None;
    }
    let url = match Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            // The text may carry credentials; name the problem, not the value.
            p.error(path, format!("invalid URL: {e}"));
            return None;
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        p.error(
            path,
            "credentials in the URL are not allowed (they would end up in logs); use username + password_file",
        );
        return None;
    }
    if !matches!(url.scheme(), "http" | "https") {
        p.error(
            path,
            format!("scheme {:?} is not http or https", url.scheme()),
        );
        return None;
    }
    if url.host().is_none() {
        p.error(path, format!("{text:?} has no host"));
        return None;
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        p.error(
            path,
            format!("{text:?} must be just scheme://host[:port]; the registry API lives at /v2/ on that host"),
        );
        return None;
    }
    Some(url)
}

fn pipeline(
    p: &mut Problems,
    filters: &mut Filters,
    path: &str,
    raw: &raw::Pipeline,
    file: &raw::File,
    default_interval: Duration,
) -> Option<Pipeline> {
    name(p, &format!("{path}.name"), "pipeline", &raw.name);
    known_registry(p, &format!("{path}.registry"), &raw.registry, file);
    valid_repository(p, &format!("{path}.repository"), &raw.repository);
    let interval = match &raw.interval {
        Some(text) => duration(p, &format!("{path}.interval"), text, true),
        None => Some(default_interval),
    };
    // A short defaults.interval is reported once, at its own key.
    if raw.interval.is_some() {
        short_interval(p, &format!("{path}.interval"), interval);
    }
    if raw.stages.is_empty() {
        p.error(
            format!("{path}.stages"),
            "a pipeline needs at least one stage",
        );
    }

    let mut stages: Vec<Stage> = Vec::new();
    let mut seen = HashSet::new();
    let mut complete = true;
    for (i, st) in raw.stages.iter().enumerate() {
        let spath = format!("{path}.stages[{i}]");
        name(p, &format!("{spath}.name"), "stage", &st.name);
        if !seen.insert(st.name.as_str()) {
            p.error(
                format!("{spath}.name"),
                format!(
                    "duplicate stage name {:?} in pipeline {:?}",
                    st.name, raw.name
                ),
            );
        }
        match stage(p, filters, &spath, i, st, raw, file, &stages) {
            Some(s) => stages.push(s),
            None => complete = false,
        }
    }
    if !complete {
        return None;
    }
    Some(Pipeline {
        name: raw.name.clone(),
        interval: interval?,
        records: raw.records.unwrap_or(true),
        stages,
    })
}

#[allow(clippy::too_many_arguments)]
fn stage(
    p: &mut Problems,
    filters: &mut Filters,
    path: &str,
    index: usize,
    raw: &raw::Stage,
    pipeline: &raw::Pipeline,
    file: &raw::File,
    earlier: &[Stage],
) -> Option<Stage> {
    if let Some(r) = &raw.registry {
        known_registry(p, &format!("{path}.registry"), r, file);
    }
    if let Some(r) = &raw.repository {
        valid_repository(p, &format!("{path}.repository"), r);
    }
    let registry = raw.registry.as_ref().unwrap_or(&pipeline.registry);
    let repository = raw.repository.as_ref().unwrap_or(&pipeline.repository);

    let filter = match &raw.filter_tags {
        None => Some(Filter::all()),
        Some(f) => match filter(filters, f.pattern.as_deref(), f.extract.as_deref()) {
            Ok(filter) => Some(filter),
            Err(e) => {
                let key = match e {
                    policy::FilterError::Pattern { .. } => "pattern",
                    _ => "extract",
                };
                p.error(format!("{path}.filter_tags.{key}"), e.to_string());
                None
            }
        },
    };
    let policy = stage_policy(p, path, raw.policy.as_ref());

    let promote = match (&raw.promote, index) {
        (None, _) => None,
        (Some(_), 0) => {
            p.error(
                format!("{path}.promote"),
                "the first stage cannot be promoted into: builds land there (move promote to a later stage)",
            );
            None
        }
        (Some(pr), _) => promotion(p, path, index, pr, pipeline, earlier),
    };
    if raw.promote.is_some() && index > 0 && raw.filter_tags.is_none() {
        p.warn(
            format!("{path}.filter_tags"),
            "a stage that is promoted into has no filter, so every tag in its repository counts as already in it",
        );
    }

    let selector = Selector::new(filter?, policy?);
    if let Some(promotion) = &promote {
        sample_check(p, path, promotion, earlier, &selector);
    } else if raw.promote.is_some() {
        return None;
    }
    Some(Stage {
        name: raw.name.clone(),
        registry: registry.clone(),
        repository: repository.clone(),
        selector,
        promote,
    })
}

/// `Filter::new`, compiled once per distinct pattern and extract.
fn filter(
    filters: &mut Filters,
    pattern: Option<&str>,
    extract: Option<&str>,
) -> Result<Filter, policy::FilterError> {
    filters
        .entry((pattern.map(str::to_string), extract.map(str::to_string)))
        .or_insert_with(|| Filter::new(pattern, extract))
        .clone()
}

fn known_registry(p: &mut Problems, path: &str, name: &str, file: &raw::File) {
    if !file.registries.contains_key(name) {
        let known: Vec<&str> = file.registries.keys().map(String::as_str).collect();
        p.error(
            path,
            format!(
                "unknown registry {name:?} (registries: {})",
                known.join(", ")
            ),
        );
    }
}

fn valid_repository(p: &mut Problems, path: &str, repository: &str) {
    if !reference::is_valid_repository(repository) {
        p.error(path, format!("invalid repository {repository:?} (lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'; no registry host, no tag)"));
    }
}

fn stage_policy(p: &mut Problems, path: &str, raw: Option<&raw::Policy>) -> Option<Policy> {
    let ppath = format!("{path}.policy");
    let Some(raw) = raw else {
        p.error(ppath, "missing: choose one of semver = { range = \"...\" }, alphabetical = { order = \"asc\" }, numerical = { order = \"asc\" }");
        return None;
    };
    let set: Vec<&str> = [
        raw.semver.as_ref().map(|_| "semver"),
        raw.alphabetical.as_ref().map(|_| "alphabetical"),
        raw.numerical.as_ref().map(|_| "numerical"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if set.len() != 1 {
        let found = if set.is_empty() {
            "none".to_string()
        } else {
            set.join(" and ")
        };
        p.error(
            ppath,
            format!("exactly one of semver, alphabetical, numerical must be set; found {found}"),
        );
        return None;
    }
    let order = |p: &mut Problems, key: &str, o: &raw::Ordered| -> Option<Order> {
        let text = o.order.as_deref().unwrap_or("asc");
        p.check(&format!("{ppath}.{key}.order"), text.parse::<Order>())
    };
    if let Some(s) = &raw.semver {
        return p.check(&format!("{ppath}.semver.range"), Policy::semver(&s.range));
    }
    if let Some(a) = &raw.alphabetical {
        return order(p, "alphabetical", a)
            .map(|o| Policy::Alphabetical(policy::AlphabeticalPolicy::new(o)));
    }
    raw.numerical
        .as_ref()
        .and_then(|n| order(p, "numerical", n))
        .map(|o| Policy::Numerical(policy::NumericalPolicy::new(o)))
}

fn promotion(
    p: &mut Problems,
    path: &str,
    index: usize,
    raw: &raw::Promote,
    pipeline: &raw::Pipeline,
    earlier: &[Stage],
) -> Option<Promotion> {
    let ppath = format!("{path}.promote");
    let names: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
    let from = match names.iter().position(|n| *n == raw.from) {
        None => {
            p.error(
                format!("{ppath}.from"),
                format!(
                    "unknown stage {:?} (stages: {})",
                    raw.from,
                    names.join(", ")
                ),
            );
            None
        }
        Some(i) if i == index => {
            p.error(
                format!("{ppath}.from"),
                "a stage cannot promote from itself",
            );
            None
        }
        Some(i) if i > index => {
            p.error(
                format!("{ppath}.from"),
                format!(
                    "{:?} comes after {:?}; promotions go from an earlier stage to a later one",
                    raw.from, pipeline.stages[index].name
                ),
            );
            None
        }
        Some(i) => Some(i),
    };
    let template = p.check(&format!("{ppath}.tag"), Template::parse(&raw.tag));
    let approval = match raw.approval.as_deref() {
        None | Some("manual") => Some(Approval::Manual),
        Some("auto") => Some(Approval::Auto),
        Some(other) => {
            p.error(
                format!("{ppath}.approval"),
                format!("invalid approval {other:?} (use \"auto\" or \"manual\")"),
            );
            None
        }
    };
    let min_age = match &raw.min_age {
        Some(text) => Some(duration(p, &format!("{ppath}.min_age"), text, false)?),
        None => None,
    };
    let windows: Vec<Option<calendar::Window>> = raw
        .windows
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, w)| {
            p.check(
                &format!("{ppath}.windows[{i}]"),
                calendar::Window::parse(
                    w.days.as_deref(),
                    w.hours.as_deref(),
                    w.time_zone.as_deref(),
                ),
            )
        })
        .collect();
    if raw.windows.as_ref().is_some_and(Vec::is_empty) {
        p.error(
            format!("{ppath}.windows"),
            "is empty, which would never promote; remove the key to promote at any time",
        );
    }

    // The source stage must provide what the template uses. An earlier stage that failed to
    // compile is reported on its own; nothing more to say about it here.
    if let (Some(t), Some(from)) = (&template, from) {
        if let Some(source) = earlier.get(from) {
            let needs_version: Vec<String> = t
                .variables()
                .filter(|v| v.needs_version())
                .map(|v| v.to_string())
                .collect();
            if !needs_version.is_empty() && !matches!(source.selector.policy(), Policy::Semver(_)) {
                p.error(
                    format!("{ppath}.tag"),
                    format!(
                        "{} need{} a version, but stage {:?} has the {} policy (use semver there, or {{tag}} / {{extract}} here)",
                        needs_version.join(", "),
                        if needs_version.len() == 1 { "s" } else { "" },
                        source.name,
                        source.selector.policy().kind()
                    ),
                );
            }
            for var in t.variables() {
                if var == Var::Extract && !source.selector.filter().has_extract() {
                    p.error(
                        format!("{ppath}.tag"),
                        format!(
                            "{{extract}} needs filter_tags.extract on stage {:?}",
                            source.name
                        ),
                    );
                }
            }
        }
    }

    Some(Promotion {
        from: from?,
        tag: template?,
        approval: approval?,
        min_age,
        overwrite: raw.overwrite.unwrap_or(false),
        heal: raw.heal.unwrap_or(false),
        windows: windows.into_iter().collect::<Option<_>>()?,
        referrers: referrers(p, &ppath, raw.referrers.as_ref())?,
        verify: match &raw.verify {
            Some(v) => Some(verify(p, &ppath, v)?),
            None => None,
        },
    })
}

/// `promote.verify`: the key file is read and must hold a P-256 public key, so a wrong key is a
/// configuration error at start rather than every candidate refused.
fn verify(p: &mut Problems, ppath: &str, raw: &raw::Verify) -> Option<super::Verify> {
    let path = format!("{ppath}.verify.cosign_key_file");
    let file = nonempty_path(p, &path, &Some(raw.cosign_key_file.clone()))?;
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => {
            p.error(path, format!("cannot read {}: {e}", file.display()));
            return None;
        }
    };
    match crate::cosign::PublicKey::from_pem(&text) {
        Ok(key) => Some(super::Verify {
            cosign_key_file: file,
            key,
        }),
        Err(e) => {
            p.error(path, format!("{}: {e}", file.display()));
            None
        }
    }
}

/// `promote.referrers`, defaults filled in.
fn referrers(
    p: &mut Problems,
    ppath: &str,
    raw: Option<&raw::Referrers>,
) -> Option<super::Referrers> {
    let mut out = super::Referrers::default();
    let Some(raw) = raw else {
        return Some(out);
    };
    out.enabled = raw.enabled.unwrap_or(true);
    out.artifact_types = raw.artifact_types.clone().unwrap_or_default();
    for (i, t) in out.artifact_types.iter().enumerate() {
        if t.is_empty() || t.len() > 255 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.error(
                format!("{ppath}.referrers.artifact_types[{i}]"),
                format!("{t:?} is not a media type (e.g. \"application/spdx+json\")"),
            );
        }
    }
    if let Some(text) = &raw.window {
        out.window = duration(p, &format!("{ppath}.referrers.window"), text, false)?;
    }
    Some(out)
}

/// Renders the template for a typical source version and warns when the target stage's own
/// filter would not see the result: such a stage would be promoted into again on every pass.
fn sample_check(
    p: &mut Problems,
    path: &str,
    promotion: &Promotion,
    earlier: &[Stage],
    target: &Selector,
) {
    let Some(source) = earlier.get(promotion.from) else {
        return;
    };
    let version = semver::Version::parse("1.2.3-rc.1").ok();
    let sample_tag = "v1.2.3-rc.1";
    let values = Values {
        tag: sample_tag,
        extract: "1.2.3",
        version: version
            .as_ref()
            .filter(|_| matches!(source.selector.policy(), Policy::Semver(_))),
    };
    let rendered = promotion.tag.render(&values, 1);
    if !reference::is_valid_tag(&rendered) {
        // Parsing checked the fixed text; what is left is a template that outgrows a tag once
        // the variables are in (a long prefix and `{tag}`): say so now, not at the first
        // promotion.
        p.warn(
            format!("{path}.promote.tag"),
            format!(
                "for a source tag like {sample_tag} the template gives {} characters, not a valid tag (at most {}); promotions of such tags will be refused",
                rendered.len(),
                reference::MAX_TAG_LEN
            ),
        );
        return;
    }
    if target.filter().apply(&rendered).is_none() {
        p.warn(
            format!("{path}.promote.tag"),
            format!(
                "for a source version like 1.2.3-rc.1 the template gives {rendered:?}, which this stage's filter {:?} does not match; promoted tags would not count as in this stage",
                target.filter().pattern().unwrap_or("")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse, Error, Format};

    #[test]
    fn a_short_default_interval_is_reported_at_defaults_once() {
        let text = "[defaults]\ninterval = \"2s\"\n[registries.r]\nurl = \"http://127.0.0.1:5000\"\n[[pipelines]]\nname = \"a\"\nregistry = \"r\"\nrepository = \"x/a\"\n[[pipelines.stages]]\nname = \"dev\"\npolicy = { semver = { range = \"*\" } }\n[[pipelines]]\nname = \"b\"\nregistry = \"r\"\nrepository = \"x/b\"\n[[pipelines.stages]]\nname = \"dev\"\npolicy = { semver = { range = \"*\" } }\n";
        let loaded =
            super::super::parse(text, super::super::Format::Toml, "f.toml").expect("valid");
        let paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(paths, ["defaults.interval"]);
        assert!(loaded.warnings[0].message.starts_with("2s is very short"));
    }

    #[test]
    fn a_pattern_repeated_across_stages_is_compiled_once() {
        let mut filters = Filters::new();
        let dev = r"^v\d+\.\d+\.\d+-dev\.\d+$";
        let a = filter(&mut filters, Some(dev), None).expect("valid");
        let b = filter(&mut filters, Some(dev), None).expect("valid");
        assert_eq!(filters.len(), 1);
        assert_eq!((a.pattern(), b.pattern()), (Some(dev), Some(dev)));
        assert!(b.apply("v1.2.0-dev.3").is_some() && b.apply("v1.2.0").is_none());
        // Another extract over the same pattern is another filter.
        let c = filter(&mut filters, Some(r"^v(?P<n>\d+)"), Some("$n")).expect("valid");
        assert_eq!(c.apply("v7").as_deref(), Some("7"));
        assert_eq!(filters.len(), 2);
    }

    #[test]
    fn a_bad_pattern_shared_by_pipelines_is_reported_at_each_key() {
        let mut text = String::from("[registries.r]\nurl = \"http://127.0.0.1:5000\"\n");
        for i in 0..2 {
            text.push_str(&format!(
                "[[pipelines]]\nname = \"p{i}\"\nregistry = \"r\"\nrepository = \"a/p{i}\"\n\
                 [[pipelines.stages]]\nname = \"dev\"\nfilter_tags = {{ pattern = '^v(' }}\n\
                 policy = {{ alphabetical = {{ order = \"asc\" }} }}\n"
            ));
        }
        let Err(Error::Invalid { problems, .. }) = parse(&text, Format::Toml, "t") else {
            panic!("a bad pattern must be refused");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pipelines[0].stages[0].filter_tags.pattern",
                "pipelines[1].stages[0].filter_tags.pattern"
            ]
        );
    }

    #[test]
    fn approvers_need_names_of_their_own_and_api_token_file_is_one_of_them() {
        let base = "[registries.r]\nurl = \"http://127.0.0.1:5000\"\n[server]\napi_token_file = \"/t/api\"\n";
        let approver = |name: &str, file: &str| {
            format!("[[server.approvers]]\nname = \"{name}\"\ntoken_file = \"{file}\"\n")
        };
        let one_pipeline = "[[pipelines]]\nname = \"p\"\nregistry = \"r\"\nrepository = \"a/p\"\n\
                            [[pipelines.stages]]\nname = \"dev\"\n\
                            policy = { alphabetical = { order = \"asc\" } }\n";
        let good = format!(
            "{base}{}{}{one_pipeline}",
            approver("alice", "/t/a"),
            approver("ci@github", "/t/c")
        );
        let config = parse(&good, Format::Toml, "t").expect("valid").config;
        let names: Vec<(String, String)> = config
            .server
            .all_approvers()
            .into_iter()
            .map(|a| (a.name, a.key))
            .collect();
        assert_eq!(
            names,
            [
                ("alice".into(), "server.approvers[0].token_file".into()),
                ("ci@github".into(), "server.approvers[1].token_file".into()),
                (API_TOKEN_APPROVER.into(), "server.api_token_file".into()),
            ]
        );
        let bad = format!(
            "{base}{}{}{}{}{one_pipeline}",
            approver("alice", "/t/a"),
            approver("alice", "/t/b"),
            approver("api-token", "/t/c"),
            approver("has space", "")
        );
        let Err(Error::Invalid { problems, .. }) = parse(&bad, Format::Toml, "t") else {
            panic!("bad approvers must be refused");
        };
        let found: Vec<(&str, bool)> = problems
            .iter()
            .map(|p| {
                (
                    p.path.as_str(),
                    p.message.contains("taken") || p.message.contains("not a name"),
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("server.approvers[1].name", true),
                ("server.approvers[2].name", true),
                ("server.approvers[3].name", true),
            ]
        );
    }

    #[test]
    fn windows_and_freezes_name_the_key_that_is_wrong() {
        let pipeline = |promote: &str| {
            format!(
                "[registries.r]\nurl = \"http://127.0.0.1:5000\"\n\
                 [[pipelines]]\nname = \"p\"\nregistry = \"r\"\nrepository = \"a/p\"\n\
                 [[pipelines.stages]]\nname = \"dev\"\npolicy = {{ alphabetical = {{ order = \"asc\" }} }}\n\
                 [[pipelines.stages]]\nname = \"prod\"\npolicy = {{ alphabetical = {{ order = \"asc\" }} }}\n\
                 promote = {{ from = \"dev\", tag = \"{{tag}}-prod\", {promote} }}\n"
            )
        };
        let good = format!(
            "{}[[freezes]]\nreason = \"year end\"\nfrom = \"2026-12-20T00:00:00+01:00\"\n\
             until = \"2030-01-04T00:00:00Z\"\nstages = [\"prod\"]\n",
            pipeline(
                r#"windows = [{ days = "mon-fri", hours = "09:00-16:00", time_zone = "Europe/Berlin" }]"#
            )
        );
        let config = parse(&good, Format::Toml, "t").expect("valid").config;
        let promote = config.pipelines[0].stages[1].promote.as_ref().unwrap();
        assert_eq!(promote.windows.len(), 1);
        assert_eq!(config.freezes[0].id, "config-1");
        assert_eq!(config.freezes[0].by, "config");

        let bad = format!(
            "{}[[freezes]]\nreason = \"\"\nfrom = \"soon\"\nuntil = \"2030-01-01T00:00:00Z\"\n\
             pipelines = [\"q\"]\nstages = [\"qa\"]\n\
             [[freezes]]\nreason = \"x\"\nfrom = \"2030-01-02T00:00:00Z\"\nuntil = \"2030-01-01T00:00:00Z\"\n",
            pipeline(r#"windows = [{ days = "mon-fry" }, { time_zone = "Mars/Olympus" }, { hours = "9-5" }]"#)
        );
        let Err(Error::Invalid { problems, .. }) = parse(&bad, Format::Toml, "t") else {
            panic!("bad windows and freezes must be refused");
        };
        let found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        let paths: Vec<&str> = found.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            paths,
            [
                "pipelines[0].stages[1].promote.windows[0]",
                "pipelines[0].stages[1].promote.windows[1]",
                "pipelines[0].stages[1].promote.windows[2]",
                "freezes[0].reason",
                "freezes[0].from",
                "freezes[0].pipelines[0]",
                "freezes[0].stages[0]",
                "freezes[1].until",
            ],
            "{found:#?}"
        );
        assert!(found[1].1.contains("Mars/Olympus"), "{found:#?}");
        assert!(found[5].1.contains("pipelines: p"), "{found:#?}");
        let empty = pipeline("windows = []");
        let Err(Error::Invalid { problems, .. }) = parse(&empty, Format::Toml, "t") else {
            panic!("an empty window list must be refused");
        };
        assert_eq!(problems[0].path, "pipelines[0].stages[1].promote.windows");
    }

    #[test]
    fn promote_referrers_default_on_and_verify_needs_a_readable_p256_key() {
        let pipeline = |promote_extra: &str| {
            format!(
                "[registries.r]\nurl = \"http://127.0.0.1:5000\"\n\
                 [[pipelines]]\nname = \"p\"\nregistry = \"r\"\nrepository = \"a/p\"\n\
                 [[pipelines.stages]]\nname = \"dev\"\n\
                 policy = {{ alphabetical = {{ order = \"asc\" }} }}\n\
                 [[pipelines.stages]]\nname = \"rc\"\nrepository = \"a/rc\"\n\
                 policy = {{ alphabetical = {{ order = \"asc\" }} }}\n\
                 promote = {{ from = \"dev\", tag = \"{{tag}}\"{promote_extra} }}\n"
            )
        };
        let promotion = |text: &str| {
            parse(text, Format::Toml, "t").map(|l| l.config.pipelines[0].stages[1].promote.clone())
        };
        let default = promotion(&pipeline("")).expect("valid").expect("promote");
        assert_eq!(default.referrers, super::super::Referrers::default());
        assert!(default.referrers.enabled && default.verify.is_none());
        let set = promotion(&pipeline(
            ", referrers = { enabled = false, artifact_types = [\"application/spdx+json\"], window = \"2h\" }",
        ))
        .expect("valid")
        .expect("promote");
        assert_eq!(
            (
                set.referrers.enabled,
                set.referrers.artifact_types,
                set.referrers.window
            ),
            (
                false,
                vec!["application/spdx+json".to_string()],
                Duration::from_secs(7200)
            )
        );
        let refused = |extra: &str| match promotion(&pipeline(extra)) {
            Err(Error::Invalid { problems, .. }) => problems
                .iter()
                .map(|p| p.path.clone())
                .collect::<Vec<_>>()
                .join(" "),
            other => panic!("{extra}: {other:?}"),
        };
        assert!(refused(", referrers = { window = \"soon\" }").contains("referrers.window"));
        assert!(refused(", referrers = { artifact_types = [\"a b\"] }")
            .contains("referrers.artifact_types[0]"));
        assert!(
            refused(", verify = { cosign_key_file = \"/nonexistent/cosign.pub\" }")
                .contains("verify.cosign_key_file")
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let not_a_key = dir.path().join("cosign.pub");
        std::fs::write(&not_a_key, "hello").expect("write");
        assert!(refused(&format!(
            ", verify = {{ cosign_key_file = \"{}\" }}",
            not_a_key.display()
        ))
        .contains("verify.cosign_key_file"));
    }

    /// Issue 20, item 5: `check` passed a template that can never render a valid tag.
    #[test]
    fn templates_that_cannot_render_a_valid_tag_are_reported() {
        let config = |template: &str| {
            format!(
                "[registries.r]\nurl = \"http://127.0.0.1:5000\"\n\
                 [[pipelines]]\nname = \"p\"\nregistry = \"r\"\nrepository = \"a/p\"\n\
                 [[pipelines.stages]]\nname = \"dev\"\n\
                 policy = {{ alphabetical = {{ order = \"asc\" }} }}\n\
                 [[pipelines.stages]]\nname = \"rc\"\n\
                 policy = {{ alphabetical = {{ order = \"asc\" }} }}\n\
                 promote = {{ from = \"dev\", tag = \"{template}\" }}\n"
            )
        };
        let never = format!("{}{{tag}}", "p".repeat(138));
        let Err(Error::Invalid { problems, .. }) = parse(&config(&never), Format::Toml, "t") else {
            panic!("a 138-character fixed text must be refused");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "pipelines[0].stages[1].promote.tag");
        assert!(
            problems[0].message.contains("138 characters"),
            "{problems:?}"
        );
        let outgrows = format!("{}{{tag}}", "p".repeat(120));
        let loaded = parse(&config(&outgrows), Format::Toml, "t").expect("legal");
        let warnings: Vec<(&str, &str)> = loaded
            .warnings
            .iter()
            .map(|w| (w.path.as_str(), w.message.as_str()))
            .collect();
        assert!(
            warnings.iter().any(
                |(path, message)| *path == "pipelines[0].stages[1].promote.tag"
                    && message.contains("gives 131 characters, not a valid tag")
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_short_default_interval_is_warned_about_once_where_it_is_set() {
        let pipeline = |name: &str| {
            format!(
                "[[pipelines]]\nname = \"{name}\"\nregistry = \"r\"\nrepository = \"x/{name}\"\n\
                 [[pipelines.stages]]\nname = \"dev\"\npolicy = {{ semver = {{ range = \"*\" }} }}\n"
            )
        };
        let text = format!(
            "[defaults]\ninterval = \"2s\"\n[registries.r]\nurl = \"http://127.0.0.1:5000\"\n{}{}",
            pipeline("a"),
            pipeline("b")
        );
        let loaded = parse(&text, Format::Toml, "t").expect("valid");
        let paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(paths, ["defaults.interval"]);
    }
}
