//! The `retagd` binary as users run it: exit statuses, messages on stderr, and the example
//! configurations. Each broken configuration in `tests/configs/broken/` states the message it
//! must produce in its first line (`# expect: KEY.PATH: message`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::process::retagd;

fn run(cmd: &mut Command) -> (i32, String, String) {
    outcome(cmd.output().expect("retagd runs"))
}

/// Exit status, stdout and stderr of a finished run.
fn outcome(out: Output) -> (i32, String, String) {
    (
        out.status.code().expect("retagd exits with a status"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = retagd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("retagd starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("stdin accepts the tags");
    outcome(child.wait_with_output().expect("retagd finishes"))
}

#[test]
fn the_example_configurations_are_valid_and_equal() {
    let (code, toml, err) = run(retagd()
        .args(["check", "--config"])
        .arg(repo("config/retagd.toml")));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.is_empty(),
        "no warnings expected for the example: {err}"
    );
    let (code, yaml, err) = run(retagd()
        .args(["check", "--config"])
        .arg(repo("config/retagd.yaml")));
    assert_eq!(code, 0, "{err}");
    // Same pipelines from both formats: everything after the first (file name) line matches.
    let body = |s: &str| s.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&toml), body(&yaml));
    assert!(
        toml.contains("dev -> staging as v{major}.{minor}.{patch}-rc.{n} (auto)"),
        "{toml}"
    );
    assert!(
        toml.contains("staging -> production as v{major}.{minor}.{patch} (manual)"),
        "{toml}"
    );
}

#[test]
fn every_broken_configuration_exits_2_naming_its_key_path() {
    let dir = repo("tests/configs/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("broken configs exist")
        .map(|e| e.expect("readable entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "at least 12 broken configs, found {}",
        files.len()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable config");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an '# expect:' first line", file.display()));
        let (code, out, err) = run(retagd().args(["check", "--config"]).arg(&file));
        assert_eq!(code, 2, "{}: {err}", file.display());
        assert!(
            out.is_empty(),
            "{}: nothing on stdout, got {out}",
            file.display()
        );
        assert!(
            err.starts_with("error: invalid config "),
            "{}: {err}",
            file.display()
        );
        assert!(
            err.contains(expect),
            "{}: expected {expect:?} in:\n{err}",
            file.display()
        );
        for secret in ["s3cr3t-pa55", "hunter2", "XXXXSECRET"] {
            assert!(
                !err.contains(secret),
                "{} leaked a secret: {err}",
                file.display()
            );
        }
    }
}

#[test]
fn environment_variables_override_keys_and_are_named_in_errors() {
    let config = repo("config/retagd.toml");
    let (code, out, err) = run(retagd()
        .args(["check", "--config"])
        .arg(&config)
        .env("RETAGD_SERVER__LISTEN", "0.0.0.0:9999")
        .env("RETAGD_DEFAULTS__INTERVAL", "5m")
        .env("RETAGD_API_TOKEN", "not-config"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("serving on 0.0.0.0:9999"), "{out}");
    assert!(out.contains("(every 5m)"), "{out}");

    let (code, _, err) = run(retagd()
        .args(["check", "--config"])
        .arg(&config)
        .env("RETAGD_SERVER__LISTEN", "nowhere"));
    assert_eq!(code, 2);
    assert!(
        err.contains("RETAGD_SERVER__LISTEN")
            && err.contains("server.listen: invalid address \"nowhere\""),
        "{err}"
    );

    let (code, _, err) = run(retagd()
        .args(["check", "--config"])
        .arg(&config)
        .env("RETAGD_SERVR__LISTEN", "0.0.0.0:1"));
    assert_eq!(code, 2);
    assert!(
        err.contains("RETAGD_SERVR__LISTEN") && err.contains("servr: unknown key"),
        "{err}"
    );

    // The config file itself may come from RETAGD_CONFIG.
    let (code, _, err) = run(retagd().arg("check").env("RETAGD_CONFIG", &config));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn unreadable_or_unknown_files_exit_2() {
    let (code, _, err) = run(retagd().args(["check", "--config", "/nonexistent/retagd.toml"]));
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: cannot read config file /nonexistent/retagd.toml: "),
        "{err}"
    );
    let (code, _, err) = run(retagd().args(["check", "--config", "retagd.json"]));
    assert_eq!(code, 2);
    assert!(err.contains("must end in .toml, .yaml or .yml"), "{err}");
}

#[test]
fn warnings_go_to_stderr_and_do_not_fail_the_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("warn.toml");
    std::fs::write(
        &file,
        r#"
[registries.local]
url = "http://127.0.0.1:5000"
[registries.unused]
url = "https://registry.example.com"
[[pipelines]]
name = "api"
registry = "local"
repository = "myorg/api"
interval = "2s"
[[pipelines.stages]]
name = "dev"
policy = { semver = { range = ">=0.0.0-0" } }
[[pipelines.stages]]
name = "release"
filter_tags = { pattern = '^release-' }
policy = { semver = { range = "*" } }
promote = { from = "dev", tag = "v{major}.{minor}.{patch}", approval = "auto" }
"#,
    )
    .expect("write config");
    let (code, out, err) = run(retagd().args(["check", "--config"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is valid"), "{out}");
    assert!(
        err.contains("warn.toml:4:13: registries.unused: not used by any pipeline"),
        "{err}"
    );
    assert!(
        err.contains("warn.toml:10:1: pipelines[0].interval: 2s is very short"),
        "{err}"
    );
    assert!(err.contains("warn.toml:18:27: pipelines[0].stages[1].promote.tag: for a source version like 1.2.3-rc.1 the template gives \"v1.2.3\""), "{err}");
}

#[test]
fn policy_selects_from_arguments_and_stdin() {
    let (code, out, err) = run(retagd().args([
        "policy",
        "--semver",
        ">=1.0.0-0",
        "--pattern",
        r"^v\d+\.\d+\.\d+-dev\.\d+$",
        "v1.2.0-dev.2",
        "v1.2.0-dev.10",
        "v1.2.0",
        "latest",
    ]));
    assert_eq!((code, out.as_str()), (0, "v1.2.0-dev.10\n"), "{err}");

    let (code, out, err) = run_with_stdin(
        &[
            "policy",
            "--numerical",
            "asc",
            "--pattern",
            r"^build-(\d+)$",
            "--extract",
            "$1",
        ],
        "build-9\r\nbuild-10\n\nmain\n",
    );
    assert_eq!((code, out.as_str()), (0, "build-10\n"), "{err}");

    let (code, out, _) = run_with_stdin(&["policy", "--alphabetical", "desc"], "b\na\nc\n");
    assert_eq!((code, out.as_str()), (0, "a\n"));
}

#[test]
fn policy_exits_1_when_nothing_qualifies_and_2_when_the_policy_is_invalid() {
    let (code, out, err) = run(retagd().args(["policy", "--semver", ">=2.0.0", "1.0.0", "1.5.0"]));
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.starts_with("error: no tag matched: 2 of 2 tag(s) passed the filter, but none is a version in range \">=2.0.0\""), "{err}");

    let (code, _, err) = run(retagd().args(["policy", "--numerical", "asc", "1", "two"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("\"two\"") && err.contains("not a number"),
        "{err}"
    );

    let (code, _, err) = run_with_stdin(&["policy", "--semver", "*"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no tag matched"), "{err}");

    for (args, needle) in [
        (
            vec!["policy", "--semver", ">=1.0 ||", "1.0.0"],
            "invalid semver range",
        ),
        (
            vec!["policy", "--semver", "", "1.0.0"],
            "the range is empty",
        ),
        (
            vec!["policy", "--alphabetical", "up", "a"],
            "invalid order \"up\"",
        ),
        (
            vec!["policy", "--semver", "*", "--pattern", "(", "1.0.0"],
            "invalid pattern",
        ),
        (
            vec![
                "policy",
                "--semver",
                "*",
                "--pattern",
                "(a)",
                "--extract",
                "$2",
                "a",
            ],
            "refers to $2",
        ),
    ] {
        let (code, _, err) = run(retagd().args(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Each cause is said once.
    let (_, _, err) = run(retagd().args(["policy", "--semver", ">=1.0.0 <", "1.0.0"]));
    assert_eq!(err.matches("improper constraint").count(), 1, "{err}");
}

#[test]
fn bad_invocations_exit_2_and_help_exits_0() {
    for args in [
        vec![],
        vec!["frobnicate"],
        vec!["policy", "1.0.0"],
        vec!["policy", "--semver", "*", "--alphabetical", "asc", "a"],
        vec!["policy", "--semver", "*", "--extract", "$1", "a"],
        vec!["check"],
    ] {
        let (code, _, err) = run(retagd().args(&args));
        assert_eq!(code, 2, "{args:?}: {err}");
    }
    for args in [
        vec!["--help"],
        vec!["check", "--help"],
        vec!["policy", "--help"],
        vec!["--version"],
    ] {
        let (code, out, err) = run(retagd().args(&args));
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(!out.is_empty());
    }
}

#[test]
fn version_names_the_commit_and_says_which_daemon_url_it_cannot_reach() {
    let (code, out, _) = run(retagd().arg("--version"));
    assert_eq!(code, 0);
    assert!(
        out.starts_with("retagd 0.") && out.contains("(commit "),
        "{out}"
    );
    let (code, out, _) = run(retagd().args(["version", "--client"]));
    assert_eq!(code, 0);
    assert!(out.contains("(commit "), "{out}");
    // Nothing listens on port 1: the client's line, then which URL failed.
    let (code, out, err) = run(retagd().args(["version", "--url", "http://127.0.0.1:1"]));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("(commit "), "{out}");
    assert!(
        err.contains("cannot reach retagd at http://127.0.0.1:1/healthz"),
        "{err}"
    );
}

#[test]
fn output_json_and_yaml_carry_the_same_data_and_json_stays_an_alias() {
    let config = repo("config/retagd.toml");
    let config = config.to_str().unwrap();
    let (code, json, _) = run(retagd().args(["check", "-c", config, "-o", "json"]));
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["pipelines"][0]["name"], "api-gateway");
    assert_eq!(json["pipelines"][0]["stages"][1]["promote"]["from"], "dev");
    let (code, yaml, _) = run(retagd().args(["check", "-c", config, "--output", "yaml"]));
    assert_eq!(code, 0);
    let yaml: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(yaml, json);
    let (_, alias, _) = run(retagd().args(["check", "-c", config, "--json"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&alias).unwrap(),
        json
    );
    let (code, _, err) = run(retagd().args(["check", "-c", config, "-o", "xml"]));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn completion_scripts_and_the_man_page_are_generated_from_the_commands() {
    for (shell, needle) in [
        ("bash", "_retagd()"),
        ("zsh", "#compdef retagd"),
        ("fish", "complete -c retagd"),
    ] {
        let (code, out, err) = run(retagd().args(["completion", shell]));
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains(needle) && out.contains("freeze"),
            "{shell}: {out}"
        );
    }
    let (code, out, _) = run(retagd().arg("man"));
    assert_eq!(code, 0);
    assert!(
        out.contains(".TH retagd 1") && out.contains("reconcile"),
        "{out}"
    );
}

#[test]
fn export_flux_gives_each_stage_an_image_policy_equal_to_its_filter_and_policy() {
    let config = repo("config/retagd.toml");
    let config = config.to_str().unwrap();
    let (code, yaml, err) = run(retagd().args([
        "export",
        "flux",
        "-c",
        config,
        "--namespace",
        "apps",
        "--secret-ref",
        "regcred",
    ]));
    assert_eq!(code, 0, "{err}");
    let docs: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let (_, checked, _) = run(retagd().args(["check", "-c", config, "-o", "json"]));
    let checked: serde_json::Value = serde_json::from_str(&checked).unwrap();
    let stages = checked["pipelines"][0]["stages"].as_array().unwrap();
    let repositories: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ImageRepository")
        .collect();
    assert_eq!(repositories.len(), 1, "one repository for the three stages");
    let repository = repositories[0];
    assert_eq!(repository["apiVersion"], "image.toolkit.fluxcd.io/v1");
    assert_eq!(
        repository["spec"]["image"],
        "127.0.0.1:5000/myorg/api-gateway"
    );
    assert_eq!(
        repository["spec"]["insecure"], true,
        "the example registry is http://"
    );
    assert_eq!(repository["spec"]["secretRef"]["name"], "regcred");
    let policies: Vec<&serde_json::Value> =
        docs.iter().filter(|d| d["kind"] == "ImagePolicy").collect();
    assert_eq!(policies.len(), stages.len());
    for (policy, stage) in policies.iter().zip(stages) {
        let name = stage["name"].as_str().unwrap();
        assert_eq!(policy["metadata"]["name"], format!("api-gateway-{name}"));
        assert_eq!(policy["metadata"]["namespace"], "apps");
        assert_eq!(
            policy["spec"]["imageRepositoryRef"]["name"],
            repository["metadata"]["name"]
        );
        assert_eq!(
            policy["spec"]["filterTags"]["pattern"], stage["pattern"],
            "{name}"
        );
        // `semver >=1.0.0-0` as check prints it, the same text as Flux's range.
        let range = policy["spec"]["policy"]["semver"]["range"]
            .as_str()
            .unwrap();
        assert_eq!(
            format!("semver {range}"),
            stage["policy"].as_str().unwrap(),
            "{name}"
        );
        assert!(
            yaml.contains(&format!(
                "{{\"$imagepolicy\": \"apps:api-gateway-{name}\"}}"
            )),
            "{yaml}"
        );
    }
    let (code, _, err) = run(retagd().args(["export", "flux", "-c", config, "--pipeline", "web"]));
    assert_eq!(code, 2);
    assert!(err.contains("pipelines: api-gateway"), "{err}");
}

/// `retagd export flux` of `config`, checked by tests/flux/validate.py against the schemas of
/// Flux's CRDs; its report and whether it passed.
fn flux_schema_check(config: &std::path::Path) -> (bool, String) {
    let config = config.to_str().expect("a UTF-8 path");
    let (code, yaml, err) = run(retagd().args(["export", "flux", "-c", config]));
    assert_eq!(code, 0, "{err}");
    let mut python = Command::new("python3")
        .arg(repo("tests/flux/validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test installs it, with jsonschema via kubernetes-validate)");
    python
        .stdin
        .take()
        .expect("python3's stdin")
        .write_all(yaml.as_bytes())
        .expect("the export to python3");
    let out = python.wait_with_output().expect("python3 ends");
    let report = format!(
        "{}{}\n{yaml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
fn export_flux_is_valid_against_flux_crd_schemas() {
    let (ok, report) = flux_schema_check(&repo("config/retagd.toml"));
    assert!(ok, "{report}");
    // Intervals humantime would write as `1h 30m` or `1day`, an extract, every policy kind.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = dir.path().join("odd.toml");
    std::fs::write(
        &config,
        r#"
[registries.hub]
url = "https://registry-1.docker.io"

[[pipelines]]
name = "Odd_Name.1"
registry = "hub"
repository = "library/nginx"
interval = "1h30m"

[[pipelines.stages]]
name = "builds"
filter_tags = { pattern = '^main-(?P<ts>\d+)$', extract = '$ts' }
policy = { numerical = { order = "asc" } }

[[pipelines.stages]]
name = "names"
policy = { alphabetical = { order = "desc" } }

[[pipelines]]
name = "daily"
registry = "hub"
repository = "library/redis"
interval = "36h"

[[pipelines.stages]]
name = "dev"
policy = { semver = { range = "^1.2 || ~2.0" } }
"#,
    )
    .expect("the configuration written");
    let (ok, report) = flux_schema_check(&config);
    assert!(ok, "{report}");
    assert!(
        report.contains("interval: 1h30m") && report.contains("interval: 36h"),
        "{report}"
    );
}

#[test]
fn a_reader_that_goes_away_ends_the_command_quietly() {
    let mut child = retagd()
        .arg("man")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the pipe before the page is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("error"),
        "{out:?}"
    );
}

#[test]
fn a_taken_listen_address_names_the_variable_that_moves_it() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = held.local_addr().expect("its address");
    let (code, _, err) = run(retagd()
        .args(["run", "--config"])
        .arg(repo("config/retagd.toml"))
        .env("RETAGD_SERVER__LISTEN", address.to_string()));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("cannot listen on {address} (server.listen; another port: RETAGD_SERVER__LISTEN=127.0.0.1:PORT)")),
        "{err}"
    );
}
