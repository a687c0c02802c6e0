//! `retagd status`, `approve`, `freeze` and `unfreeze`: clients of a running daemon's HTTP API,
//! for people at a terminal and for CI jobs that approve a release or stop the line.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::{io_failure, Failure};
use crate::reference::short_digest;

/// The daemon's default address (`server.listen`'s default).
const DEFAULT_URL: &str = "http://127.0.0.1:9090";

/// Where the daemon is.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The daemon's base URL.
    #[arg(long, env = "RETAGD_URL", default_value = DEFAULT_URL)]
    url: String,
}

impl Endpoint {
    /// The daemon at `url`.
    pub fn at(url: String) -> Endpoint {
        Endpoint { url }
    }

    /// Its base URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether a retagd daemon answers there: its `/healthz` within a second.
    pub fn answers(&self) -> bool {
        let Ok(target) = url(self, "healthz") else {
            return false;
        };
        let Ok(client) = client(Duration::from_secs(1)) else {
            return false;
        };
        matches!(
            exchange(client.get(target), "its health"),
            Ok((200, answer)) if text(&answer, "status") == "ok"
        )
    }
}

/// `retagd status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only this pipeline.
    pipeline: Option<String>,
    /// The API's JSON (or YAML) instead of a table.
    #[command(flatten)]
    output: super::Output,
    /// Redraw the table every 2 seconds until interrupted (Ctrl-C).
    #[arg(long)]
    watch: bool,
}

/// How often `retagd status --watch` redraws.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// `retagd approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(flatten)]
    approval: super::pipelines::Approval,
    #[command(flatten)]
    token: Token,
}

/// An approver's token, for the write API.
#[derive(Debug, Args)]
pub struct Token {
    /// File holding an approver's API token; without it, RETAGD_API_TOKEN.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// `retagd freeze`.
#[derive(Debug, Args)]
pub struct FreezeArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(flatten)]
    token: Token,
    /// Why promotions stop (shown in plans, the status and notifications).
    #[arg(long, required_unless_present = "list")]
    reason: Option<String>,
    /// A pipeline to freeze (repeat for several); every pipeline when none is given.
    #[arg(long = "pipeline", value_name = "PIPELINE")]
    pipelines: Vec<String>,
    /// A stage to freeze, in each frozen pipeline (repeat for several); every stage when none.
    #[arg(long = "stage", value_name = "STAGE")]
    stages: Vec<String>,
    /// When the freeze ends by itself: an RFC 3339 time or a duration from now (`2h`, `3d`).
    /// Without it the freeze holds until `retagd unfreeze`.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// List the freezes in force instead (configured and set through the API).
    #[arg(long, conflicts_with_all = ["reason", "pipelines", "stages", "until"])]
    list: bool,
}

/// `retagd version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    /// Only this binary's version, without asking a daemon.
    #[arg(long)]
    client: bool,
}

/// `retagd unfreeze`.
#[derive(Debug, Args)]
pub struct UnfreezeArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(flatten)]
    token: Token,
    /// The freeze to lift (`retagd freeze --list` shows ids); every freeze set through the API
    /// when omitted.
    id: Option<String>,
}

fn client(timeout: Duration) -> Result<reqwest::Client, Failure> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("retagd/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::Work(anyhow::Error::new(e).context("cannot set up the HTTP client")))
}

fn url(endpoint: &Endpoint, path: &str) -> Result<url::Url, Failure> {
    let mut base = url::Url::parse(&endpoint.url)
        .map_err(|e| Failure::Usage(anyhow::anyhow!("--url {:?}: {e}", endpoint.url)))?;
    // A daemon behind a path prefix (https://host/retagd) keeps it.
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    if !matches!(base.scheme(), "http" | "https") {
        return Err(Failure::Usage(anyhow::anyhow!(
            "--url {:?}: use http:// or https://",
            endpoint.url
        )));
    }
    base.join(path)
        .map_err(|e| Failure::Usage(anyhow::anyhow!("--url {:?}: {e}", endpoint.url)))
}

/// Sends `request` and returns the status and the JSON body.
fn exchange(request: reqwest::RequestBuilder, what: &str) -> Result<(u16, Value), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Work(e.into()))?;
    let (client, request) = request.build_split();
    let request = request.map_err(|e| Failure::Usage(anyhow::Error::new(e.without_url())))?;
    // The daemon's address, without a query: the URL the person gave, to check.
    let mut at = request.url().clone();
    at.set_query(None);
    runtime.block_on(async {
        let answer = client.execute(request).await.map_err(|e| {
            Failure::Work(anyhow::Error::new(e.without_url()).context(format!(
                "cannot reach retagd at {at} for {what} (--url or RETAGD_URL)"
            )))
        })?;
        let status = answer.status().as_u16();
        let body = answer.bytes().await.map_err(|e| {
            Failure::Work(anyhow::anyhow!(
                "reading retagd's answer: {}",
                e.without_url()
            ))
        })?;
        let json = serde_json::from_slice(&body).map_err(|e| {
            Failure::Work(anyhow::anyhow!(
                "retagd answered {status} with a body that is not JSON ({e})"
            ))
        })?;
        Ok((status, json))
    })
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A stage's STATE cell: what the stage is doing or waiting for, in a few words.
fn state_cell(s: &Value) -> String {
    let action = s.get("action").unwrap_or(&Value::Null);
    let p = action.get("promotion").unwrap_or(&Value::Null);
    let step = || format!("{} -> {}", text(p, "from_tag"), text(p, "to_tag"));
    let kind = text(action, "kind");
    let open_drift = s.get("drift").and_then(Value::as_array).and_then(|d| {
        d.iter()
            .find(|d| d.get("healed") != Some(&Value::Bool(true)))
    });
    if let Some(d) = open_drift {
        return format!(
            "drift: {} is {} (retagd wrote {})",
            text(d, "tag"),
            short_digest(text(d, "found")),
            short_digest(text(d, "expected"))
        );
    }
    if s.get("last_error").is_some_and(|e| !e.is_null())
        && matches!(kind, "promote" | "pending" | "waiting" | "frozen")
    {
        return format!("error ({})", step());
    }
    match kind {
        "source" => "source".to_string(),
        "up_to_date" => "up to date".to_string(),
        "promote" => format!("promoting {}", step()),
        "pending" => format!("pending approval: {}", step()),
        "waiting" => format!(
            "waiting for {} until {}: {}",
            if text(action, "why") == "window" {
                "window"
            } else {
                "min_age"
            },
            text(action, "until"),
            step()
        ),
        "frozen" => {
            let f = action.get("freeze").unwrap_or(&Value::Null);
            format!("frozen by {}: {}", text(f, "by"), step())
        }
        "conflict" => format!("conflict: {} exists", text(p, "to_tag")),
        "unverified" => format!("unverified ({}): {}", text(action, "code"), step()),
        "no_candidate" => "nothing to promote".to_string(),
        "invalid" => "invalid".to_string(),
        _ => "not reconciled yet".to_string(),
    }
}

/// The table `retagd status` prints.
pub fn status_table(answer: &Value) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "PIPELINE".into(),
        "STAGE".into(),
        "TAG".into(),
        "DIGEST".into(),
        "STATE".into(),
    ]];
    let mut notes = Vec::new();
    let empty = Vec::new();
    let pipelines = answer
        .get("pipelines")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for p in pipelines {
        let name = text(p, "pipeline");
        if let Some(e) = p.get("last_error").and_then(Value::as_str) {
            notes.push(format!("{name}: last reconcile failed: {e}"));
        }
        let stages = p.get("stages").and_then(Value::as_array).unwrap_or(&empty);
        for (i, s) in stages.iter().enumerate() {
            let current = s.get("current").filter(|c| !c.is_null());
            rows.push([
                if i == 0 {
                    name.to_string()
                } else {
                    String::new()
                },
                text(s, "stage").to_string(),
                current.map_or("(none)".to_string(), |c| text(c, "tag").to_string()),
                current.map_or(String::new(), |c| short_digest(text(c, "digest"))),
                state_cell(s),
            ]);
            if let Some(p) = s.get("pending").filter(|p| !p.is_null()) {
                notes.push(format!(
                    "{name}/{stage}: {} -> {} waits for approval: retagd approve --pipeline {name} --stage {stage} --digest {}",
                    text(p, "from_tag"),
                    text(p, "to_tag"),
                    text(p, "digest"),
                    stage = text(s, "stage"),
                ));
            }
            if let Some(f) = s.get("frozen").filter(|f| !f.is_null()) {
                notes.push(format!(
                    "{name}/{}: frozen ({})",
                    text(s, "stage"),
                    freeze_line(f)
                ));
            }
            if let Some(e) = s.get("last_error").and_then(Value::as_str) {
                notes.push(format!(
                    "{name}/{}: last promotion failed: {e}",
                    text(s, "stage")
                ));
            }
        }
    }
    let mut out = super::columns(&rows);
    for n in notes {
        out.push_str(&n);
        out.push('\n');
    }
    out
}

/// `retagd status`: exit 1 when the daemon cannot be reached.
pub fn status(args: &StatusArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let path = match &args.pipeline {
        Some(p) => format!("api/v1/pipelines/{}", urlencode(p)),
        None => "api/v1/pipelines".to_string(),
    };
    let target = url(&args.endpoint, &path)?;
    let client = client(Duration::from_secs(30))?;
    loop {
        let (code, answer) = exchange(client.get(target.clone()), "the status")?;
        let answer = match code {
            200 if args.pipeline.is_some() => serde_json::json!({ "pipelines": [answer] }),
            200 => answer,
            _ => return Err(refused(code, &answer)),
        };
        let printed = match args.output.data(&answer)? {
            Some(text) => text,
            None => status_table(&answer),
        };
        if !args.watch {
            return out.write_all(printed.as_bytes()).map_err(io_failure);
        }
        // Home and clear, then the table and when it was read.
        let stamp = crate::calendar::format_time(std::time::SystemTime::now());
        write!(
            out,
            "\x1b[H\x1b[2J{printed}\n{stamp}  (every 2s; Ctrl-C stops)\n"
        )
        .and_then(|()| out.flush())
        .map_err(io_failure)?;
        std::thread::sleep(WATCH_EVERY);
    }
}

fn token(args: &Token) -> Result<String, Failure> {
    given_token(args)?.ok_or_else(|| {
        Failure::Usage(anyhow::anyhow!(
            "no API token: pass --token-file FILE or set RETAGD_API_TOKEN"
        ))
    })
}

/// The token of `--token-file`, else `RETAGD_API_TOKEN`; `None` when neither is given.
pub fn given_token(args: &Token) -> Result<Option<String>, Failure> {
    let usage = |m: String| Failure::Usage(anyhow::anyhow!(m));
    let token = match &args.token_file {
        Some(path) => crate::secret::read("--token-file", path)
            .map_err(|e| usage(e.to_string()))?
            .expose()
            .to_string(),
        None => match std::env::var("RETAGD_API_TOKEN") {
            Ok(t) => t.trim().to_string(),
            Err(_) => return Ok(None),
        },
    };
    if token.is_empty() {
        return Err(usage("the API token is empty".into()));
    }
    Ok(Some(token))
}

/// `retagd approve`: exit 0 promoted or already there, 1 not promoted (conflict, failure,
/// nothing to promote), 2 refused (token, names).
pub fn approve(args: &ApproveArgs, out: &mut dyn Write) -> Result<(), Failure> {
    approve_at(&args.endpoint, &token(&args.token)?, &args.approval, out)
}

/// The approval through the daemon at `endpoint` with `token`; shared by `retagd approve` and
/// `retagd promote` when a daemon answers.
pub fn approve_at(
    endpoint: &Endpoint,
    token: &str,
    approval: &super::pipelines::Approval,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let path = format!(
        "api/v1/pipelines/{}/stages/{}/promote",
        urlencode(&approval.pipeline),
        urlencode(&approval.stage)
    );
    let target = url(endpoint, &path)?;
    let body = serde_json::json!({
        "tag": approval.tag,
        "force": approval.force,
        "digest": approval.digest.as_ref().map(|d| d.as_str()),
        "reason": approval.reason,
    });
    // A promotion across registries may stream gigabytes before the answer.
    let request = client(Duration::from_secs(3600))?
        .post(target)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    let (code, answer) = exchange(request, "the approval")?;
    match code {
        200 => {
            let line = match text(&answer, "result") {
                "up_to_date" => format!(
                    "already up to date: {}/{} has it as {}",
                    approval.pipeline,
                    approval.stage,
                    text(&answer, "tag")
                ),
                _ => {
                    let p = answer.get("promotion").cloned().unwrap_or(Value::Null);
                    let forced = answer.get("forced") == Some(&Value::Bool(true));
                    format!(
                        "promoted {}/{}: {} -> {} ({}){}",
                        approval.pipeline,
                        approval.stage,
                        text(&p, "from_tag"),
                        text(&p, "to_tag"),
                        text(&p, "digest"),
                        if forced { ", forced past min_age" } else { "" }
                    )
                }
            };
            writeln!(out, "{line}").map_err(io_failure)
        }
        409 if matches!(text(&answer, "result"), "waiting" | "frozen") => {
            Err(Failure::Work(anyhow::anyhow!(
                "retagd answered {code}: {} (--force promotes now)",
                text(&answer, "error")
            )))
        }
        _ => Err(refused(code, &answer)),
    }
}

/// A freeze as one line: `f-1a2b3c4d by alice, app/production, until 2026-12-05T09:00:00Z:
/// incident 42`.
fn freeze_line(f: &Value) -> String {
    let names = |key: &str| {
        let list: Vec<&str> = f
            .get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if list.is_empty() {
            "*".to_string()
        } else {
            list.join(",")
        }
    };
    format!(
        "{} by {}, {}/{}, {}: {}",
        text(f, "id"),
        text(f, "by"),
        names("pipelines"),
        names("stages"),
        match f.get("until").and_then(Value::as_str) {
            Some(u) => format!("until {u}"),
            None => "until lifted".to_string(),
        },
        text(f, "reason")
    )
}

/// `--until`: an RFC 3339 time as given, or a duration from now as RFC 3339.
fn until(text: &str) -> Result<String, Failure> {
    if crate::calendar::parse_time(text).is_ok() {
        return Ok(text.to_string());
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| std::time::SystemTime::now().checked_add(d))
        .map(crate::calendar::format_time)
        .ok_or_else(|| {
            Failure::Usage(anyhow::anyhow!(
                "--until {text:?}: give an RFC 3339 time (2026-12-24T09:00:00Z) or a duration (2h, 3d)"
            ))
        })
}

/// Maps an answer that is not `ok` to the exit code: refused (bad request, token, names) is
/// 2, anything else 1.
fn refused(code: u16, answer: &Value) -> Failure {
    let error = anyhow::anyhow!("retagd answered {code}: {}", text(answer, "error"));
    match code {
        400 | 401 | 403 | 404 => Failure::Usage(error),
        _ => Failure::Work(error),
    }
}

/// `retagd freeze`: sets a freeze (or lists them with `--list`).
pub fn freeze(args: &FreezeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let target = url(&args.endpoint, "api/v1/freeze")?;
    if args.list {
        let (code, answer) = exchange(client(Duration::from_secs(30))?.get(target), "the freezes")?;
        if code != 200 {
            return Err(refused(code, &answer));
        }
        let freezes = answer.get("freezes").and_then(Value::as_array);
        let lines: Vec<String> = freezes.into_iter().flatten().map(freeze_line).collect();
        let text = if lines.is_empty() {
            "no freeze in force\n".to_string()
        } else {
            lines.join("\n") + "\n"
        };
        return out.write_all(text.as_bytes()).map_err(io_failure);
    }
    let body = serde_json::json!({
        "reason": args.reason,
        "pipelines": args.pipelines,
        "stages": args.stages,
        "until": args.until.as_deref().map(until).transpose()?,
    });
    let request = client(Duration::from_secs(30))?
        .post(target)
        .bearer_auth(token(&args.token)?)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    let (code, answer) = exchange(request, "the freeze")?;
    if code != 201 {
        return Err(refused(code, &answer));
    }
    writeln!(out, "frozen: {}", freeze_line(&answer)).map_err(io_failure)
}

/// `retagd unfreeze`: lifts one freeze or every freeze set through the API.
pub fn unfreeze(args: &UnfreezeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let path = match &args.id {
        Some(id) => format!("api/v1/freeze/{}", urlencode(id)),
        None => "api/v1/freeze".to_string(),
    };
    let request = client(Duration::from_secs(30))?
        .delete(url(&args.endpoint, &path)?)
        .bearer_auth(token(&args.token)?);
    let (code, answer) = exchange(request, "lifting the freeze")?;
    if code != 200 {
        return Err(refused(code, &answer));
    }
    let lifted = answer.get("lifted").and_then(Value::as_array);
    let lines: Vec<String> = lifted
        .into_iter()
        .flatten()
        .map(|f| format!("lifted: {}\n", freeze_line(f)))
        .collect();
    let text = if lines.is_empty() {
        "no freeze set through the API to lift\n".to_string()
    } else {
        lines.concat()
    };
    out.write_all(text.as_bytes()).map_err(io_failure)
}

/// `retagd version`: this binary's version, then the daemon's at `--url` (exit 1 when it cannot
/// be reached), as `kubectl version` does.
pub fn version(args: &VersionArgs, out: &mut dyn Write) -> Result<(), Failure> {
    writeln!(out, "retagd {}", super::VERSION).map_err(io_failure)?;
    if args.client {
        return Ok(());
    }
    let target = url(&args.endpoint, "healthz")?;
    let (code, answer) = exchange(client(Duration::from_secs(5))?.get(target), "its version")?;
    if code != 200 {
        return Err(refused(code, &answer));
    }
    writeln!(
        out,
        "daemon at {}: retagd {} (commit {})",
        args.endpoint.url,
        text(&answer, "version"),
        text(&answer, "revision")
    )
    .map_err(io_failure)
}

/// Pipeline and stage names are `[A-Za-z0-9_.-]`; anything else is escaped so it cannot
/// change the path.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('.', "%2E")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_status_table_says_what_each_stage_waits_for() {
        let promotion =
            |from: &str, to: &str| json!({"from_tag": from, "to_tag": to, "digest": "sha256:ab"});
        let answer = json!({"pipelines": [{
            "pipeline": "app",
            "last_error": null,
            "stages": [
                {"stage": "dev", "current": {"tag": "v1-dev.2", "digest": "sha256:0123456789abcdef"},
                 "action": {"kind": "source"}, "pending": null, "frozen": null, "last_error": null},
                {"stage": "rc", "current": null,
                 "action": {"kind": "frozen", "promotion": promotion("v1-dev.2", "v1-rc.1"),
                            "freeze": {"id": "f-1", "by": "alice", "reason": "incident", "until": null}},
                 "pending": null,
                 "frozen": {"id": "f-1", "by": "alice", "reason": "incident", "until": null},
                 "last_error": null},
                {"stage": "release", "current": null,
                 "action": {"kind": "waiting", "why": "window", "until": "2027-01-18T08:00:00Z",
                            "promotion": promotion("v0-rc.1", "v0")},
                 "pending": null, "frozen": null, "last_error": null},
                {"stage": "mirror", "current": null,
                 "action": {"kind": "promote", "promotion": promotion("v0", "v0")},
                 "pending": null, "frozen": null, "last_error": "registry unavailable"}
            ]
        }]});
        let table = status_table(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("STATE"), "{table}");
        assert!(lines[1].ends_with("source"), "{table}");
        assert!(
            lines[2].ends_with("frozen by alice: v1-dev.2 -> v1-rc.1"),
            "{table}"
        );
        assert!(
            lines[3].ends_with("waiting for window until 2027-01-18T08:00:00Z: v0-rc.1 -> v0"),
            "{table}"
        );
        assert!(lines[4].ends_with("error (v0 -> v0)"), "{table}");
        assert!(
            table.contains("app/rc: frozen (f-1 by alice, */*, until lifted: incident)"),
            "{table}"
        );
        assert!(
            table.contains("app/mirror: last promotion failed: registry unavailable"),
            "{table}"
        );
    }
}
