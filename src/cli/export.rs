//! `retagd export flux`: the cluster side of the same configuration. Each stage's filter and
//! policy become a Flux `ImagePolicy` with the same text, so Flux selects in the cluster what
//! retagd promotes in the registry, and nobody writes the filters twice.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Args;
use serde_json::{json, Value};

use super::{io_failure, Failure};
use crate::config::{self, Config, Pipeline};
use crate::policy::Policy;

/// Flux's image automation API (image-reflector-controller, Flux 2.7 and later).
const API_VERSION: &str = "image.toolkit.fluxcd.io/v1";

/// `retagd export flux`.
#[derive(Debug, Args)]
pub struct FluxArgs {
    /// The configuration file.
    #[arg(long, short, env = "RETAGD_CONFIG", value_name = "FILE")]
    config: std::path::PathBuf,
    /// The namespace of the objects (and of the `$imagepolicy` markers).
    #[arg(long, default_value = "flux-system")]
    namespace: String,
    /// Only this pipeline (repeat for several); every pipeline when none is given.
    #[arg(long = "pipeline", value_name = "PIPELINE")]
    pipelines: Vec<String>,
    /// A Secret with registry credentials for the ImageRepositories (`spec.secretRef`).
    #[arg(long, value_name = "NAME")]
    secret_ref: Option<String>,
}

/// A Kubernetes object name (DNS-1123 subdomain, at most 63 here so it also fits labels):
/// lower case, `.` and `_` become `-`.
fn object_name(parts: &[&str]) -> String {
    let joined = parts.join("-").to_ascii_lowercase();
    let mut name: String = joined
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_matches('-').to_string()
}

/// What Flux's `spec.image` wants: the registry's host and port, Docker Hub as `docker.io`.
fn image(config: &Config, registry: &str, repository: &str) -> String {
    let host = config
        .registries
        .get(registry)
        .map(|r| match (r.url.host_str(), r.url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => registry.to_string(),
        })
        .unwrap_or_else(|| registry.to_string());
    let host = match host.as_str() {
        "registry-1.docker.io" | "index.docker.io" => "docker.io".to_string(),
        _ => host,
    };
    format!("{host}/{repository}")
}

/// A duration as Go writes it (`1h30m`, `45s`, `1500ms`): Flux's `interval` takes only that
/// form (`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`), not humantime's `1h 30m` or `1day`.
fn go_duration(d: std::time::Duration) -> String {
    let millis = d.as_millis();
    if !millis.is_multiple_of(1000) {
        return format!("{millis}ms");
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// The `spec.policy` of a stage, with its own text.
fn policy(policy: &Policy) -> Value {
    match policy {
        Policy::Semver(p) => json!({"semver": {"range": p.range().to_string()}}),
        Policy::Alphabetical(p) => json!({"alphabetical": {"order": p.order().to_string()}}),
        Policy::Numerical(p) => json!({"numerical": {"order": p.order().to_string()}}),
    }
}

/// The YAML stream: ImageRepositories first (one per distinct registry and repository), then
/// one ImagePolicy per stage, each after a comment with its Deployment marker.
pub fn flux(config: &Config, args: &FluxArgs) -> Result<String, Failure> {
    let chosen: Vec<&Pipeline> = config
        .pipelines
        .iter()
        .filter(|p| args.pipelines.is_empty() || args.pipelines.contains(&p.name))
        .collect();
    if let Some(unknown) = args
        .pipelines
        .iter()
        .find(|name| !config.pipelines.iter().any(|p| p.name == **name))
    {
        let known: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
        return Err(Failure::Usage(anyhow::anyhow!(
            "--pipeline {unknown:?}: no such pipeline (pipelines: {})",
            known.join(", ")
        )));
    }
    let ns = &args.namespace;
    // name -> (image, interval, plain HTTP)
    let mut repositories: BTreeMap<String, (String, String, bool)> = BTreeMap::new();
    let mut policies = Vec::new();
    for p in &chosen {
        for s in &p.stages {
            let reference = image(config, &s.registry, &s.repository);
            let repo_name = object_name(&[&s.registry, &s.repository]);
            let plain_http = config
                .registries
                .get(&s.registry)
                .is_some_and(|r| r.url.scheme() == "http");
            repositories.entry(repo_name.clone()).or_insert((
                reference.clone(),
                go_duration(p.interval),
                plain_http,
            ));
            let mut filter = serde_json::Map::new();
            if let Some(pattern) = s.selector.filter().pattern() {
                filter.insert("pattern".into(), json!(pattern));
            }
            if let Some(extract) = s.selector.filter().extract() {
                filter.insert("extract".into(), json!(extract));
            }
            let mut spec = json!({
                "imageRepositoryRef": {"name": repo_name},
                "policy": policy(s.selector.policy()),
            });
            if !filter.is_empty() {
                spec["filterTags"] = Value::Object(filter);
            }
            let name = object_name(&[&p.name, &s.name]);
            let doc = json!({
                "apiVersion": API_VERSION,
                "kind": "ImagePolicy",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            });
            let marker = format!(
                "# Stage {} of pipeline {}: in its Deployment, write\n#   image: {} # {{\"$imagepolicy\": \"{ns}:{name}\"}}\n",
                s.name, p.name, reference
            );
            policies.push((marker, doc));
        }
    }
    let yaml = |v: &Value| serde_yaml::to_string(v).map_err(|e| Failure::Work(e.into()));
    let mut out = format!(
        "# Generated by `retagd export flux` from {} (retagd {}); regenerate, do not edit.\n",
        args.config.display(),
        super::VERSION
    );
    for (name, (image, interval, plain_http)) in &repositories {
        let mut spec = json!({"image": image, "interval": interval});
        if *plain_http {
            // Flux speaks plain HTTP to a registry only when told to, as retagd's http:// URL is.
            spec["insecure"] = json!(true);
        }
        if let Some(secret) = &args.secret_ref {
            spec["secretRef"] = json!({"name": secret});
        }
        out.push_str("---\n");
        out.push_str(&yaml(&json!({
            "apiVersion": API_VERSION,
            "kind": "ImageRepository",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))?);
    }
    for (marker, doc) in &policies {
        out.push_str("---\n");
        out.push_str(marker);
        out.push_str(&yaml(doc)?);
    }
    Ok(out)
}

/// `retagd export flux`: loads the configuration and prints [`flux`].
pub fn run(args: &FluxArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    let loaded = config::load(&args.config).map_err(|e| Failure::Usage(e.into()))?;
    for w in &loaded.warnings {
        writeln!(err, "warning: {w}").map_err(io_failure)?;
    }
    out.write_all(flux(&loaded.config, args)?.as_bytes())
        .map_err(io_failure)
}

#[cfg(test)]
mod tests {
    use super::go_duration;
    use std::time::Duration;

    #[test]
    fn intervals_are_written_as_go_durations() {
        let d = Duration::from_secs;
        assert_eq!(go_duration(d(30)), "30s");
        assert_eq!(go_duration(d(60)), "1m");
        assert_eq!(go_duration(d(5400)), "1h30m");
        assert_eq!(go_duration(d(36 * 3600 + 1)), "36h1s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
