//! The commands that work on the configured pipelines: `plan`, `reconcile`, `promote`, `run`,
//! and how their plans print (a table for people, `--json` for programs).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};
use futures_util::future::{join_all, BoxFuture};
use serde_json::{json, Value};

use super::{io_failure, Failure};
use crate::calendar::Freeze;
use crate::config::{self, Config};
use crate::daemon::{self, Signal};
use crate::engine::describe::{action_text, plan_json, short};
use crate::engine::{self, Action, Approved, Asked, Engine, FreezeError, Intent, PipelinePlan};
use crate::metrics::Metrics;
use crate::reference::Digest;
use crate::registry::NoObserver;
use crate::server;
use crate::status::Status;

/// `--config` and the logging flags, shared by the pipeline commands.
#[derive(Debug, Args)]
pub struct Common {
    /// The configuration file (.toml, .yaml or .yml); RETAGD_* variables override its keys.
    #[arg(long, short, env = "RETAGD_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    /// Log lines on stderr as text or JSON (level from RETAGD_LOG, default info).
    #[arg(long, env = "RETAGD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// `retagd plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    common: Common,
    /// The JSON / YAML shape is documented in README.md and kept stable.
    #[command(flatten)]
    output: super::Output,
}

/// `retagd reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    common: Common,
}

/// What an approval names; shared by `retagd promote` and `retagd approve`.
#[derive(Debug, Args)]
pub struct Approval {
    /// The pipeline.
    #[arg(long)]
    pub pipeline: String,
    /// The stage to promote into.
    #[arg(long)]
    pub stage: String,
    /// Promote this tag of the source stage instead of its current one.
    #[arg(long)]
    pub tag: Option<String>,
    /// Promote even though the candidate has not been in the source stage for the stage's
    /// `min_age` yet (logged as forced).
    #[arg(long)]
    pub force: bool,
    /// The digest you approve (as `retagd plan` or `retagd status` shows it): if the candidate
    /// has another one by now, nothing is promoted.
    #[arg(long, value_name = "sha256:...")]
    pub digest: Option<Digest>,
    /// Why, recorded with the promotion (status, notifications, log).
    #[arg(long)]
    pub reason: Option<String>,
}

impl Approval {
    /// What the approval asks for besides its stage.
    pub fn asked(&self) -> Asked {
        // `retagd promote` runs as whoever runs it; through the API, the server puts the
        // approver's configured name here instead.
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_string());
        Asked {
            tag: self.tag.clone(),
            force: self.force,
            digest: self.digest.clone(),
            by: format!("{user} (retagd promote)"),
            reason: self.reason.clone(),
        }
    }
}

/// `retagd promote`.
#[derive(Debug, Args)]
pub struct PromoteArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    approval: Approval,
    /// A running daemon to approve through (default: the configuration's server.listen).
    /// When one answers there and an API token is at hand, the promotion goes through it, so
    /// its status, metrics and notifications show it at once.
    #[arg(long, env = "RETAGD_URL")]
    url: Option<String>,
    /// Promote here, even when a daemon answers.
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    token: super::remote::Token,
}

/// `retagd run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// After SIGTERM, how long reconciles in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    grace_period: Duration,
    /// Pipelines reconciling at once per registry.
    #[arg(long, default_value_t = crate::engine::DEFAULT_PARALLEL)]
    parallel: usize,
}

/// Sets up logging to stderr; `RETAGD_LOG` filters (`info`, `retagd=debug`, ...).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RETAGD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // A second initialisation (tests calling `run` twice) is harmless and ignored.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub(super) fn load(common: &Common, err: &mut dyn Write) -> Result<Config, Failure> {
    init_logging(common.log_format);
    let loaded = config::load(&common.config).map_err(|e| Failure::Usage(e.into()))?;
    for w in &loaded.warnings {
        writeln!(err, "warning: {w}").map_err(io_failure)?;
    }
    Ok(loaded.config)
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Work(anyhow::Error::new(e).context("cannot start the async runtime")))
}

fn engine(config: &Config) -> Result<Engine, Failure> {
    daemon::build(config, Arc::new(NoObserver)).map_err(Failure::Usage)
}

/// `retagd plan`: one reconcile without writing anything (not even the state file).
pub fn plan(args: &PlanArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    let config = load(&args.common, err)?;
    let engine = engine(&config)?;
    // Pipelines concurrently: a slow registry delays only its own pipelines (the per-registry
    // limits apply underneath).
    let results = runtime()?.block_on(join_all(config.pipelines.iter().map(|p| async {
        (
            p.name.clone(),
            engine.plan(p, &Intent::default(), false).await,
        )
    })));
    let now = SystemTime::now();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let pipelines: Vec<Value> = results
        .iter()
        .map(|(name, r)| match r {
            Ok(plan) => plan_json(plan),
            Err(e) => json!({"pipeline": name, "error": e.chain(), "stages": []}),
        })
        .collect();
    if let Some(text) = args.output.data(&json!({ "pipelines": pipelines }))? {
        out.write_all(text.as_bytes()).map_err(io_failure)?;
    } else {
        for (name, r) in &results {
            match r {
                Ok(plan) => out
                    .write_all(plan_text(plan, now).as_bytes())
                    .map_err(io_failure)?,
                Err(e) => {
                    writeln!(out, "pipeline {name}: error: {}\n", e.chain()).map_err(io_failure)?
                }
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Work(anyhow::anyhow!(
            "{failed} pipeline(s) could not be planned"
        )));
    }
    Ok(())
}

/// `retagd reconcile`: one pass that applies automatic promotions.
pub fn reconcile(
    args: &ReconcileArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let config = load(&args.common, err)?;
    let engine = engine(&config)?;
    let intent = Intent::default();
    let outcomes = runtime()?.block_on(join_all(
        config
            .pipelines
            .iter()
            .map(|p| engine.reconcile(p, &intent, &|| false)),
    ));
    let now = SystemTime::now();
    let mut problems = Vec::new();
    for outcome in &outcomes {
        let name = &outcome.pipeline;
        // The plan as it stands after the promotions, so what prints is what is there now.
        if let Some(plan) = outcome.after.as_ref().or(outcome.plan.as_ref().ok()) {
            out.write_all(plan_text(plan, now).as_bytes())
                .map_err(io_failure)?;
        }
        for a in &outcome.applied {
            match &a.result {
                Ok(_) => writeln!(
                    out,
                    "promoted {}/{}: {} -> {} ({})",
                    name, a.stage, a.promotion.from_tag, a.promotion.to_tag, a.promotion.digest
                ),
                Err(e) => writeln!(out, "failed {}/{}: {}", name, a.stage, e.chain()),
            }
            .map_err(io_failure)?;
        }
        warn_records(outcome, err)?;
        problems.extend(outcome.problems());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::Work(anyhow::anyhow!(
            "{} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )))
    }
}

/// `retagd promote` through a daemon answering at `--url` (default: `server.listen`), with the
/// token of `--token-file`, `RETAGD_API_TOKEN` or `server.api_token_file`. `None`: no daemon
/// answers, or no token is at hand (said on stderr): promote here.
fn promote_through_daemon(
    args: &PromoteArgs,
    config: &Config,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<Option<Result<(), Failure>>, Failure> {
    let url = args.url.clone().unwrap_or_else(|| {
        let mut listen = config.server.listen;
        if listen.ip().is_unspecified() {
            listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{listen}")
    });
    let daemon = super::remote::Endpoint::at(url);
    if !daemon.answers() {
        // Said whether the address was given or derived: a daemon listening elsewhere than the
        // file's server.listen (RETAGD_SERVER__LISTEN set for it alone) would otherwise miss the
        // promotion until its next look without anyone being told.
        writeln!(
            err,
            "note: no retagd answers at {} ({}); promoting here (--local says this is meant)",
            daemon.url(),
            if args.url.is_some() {
                "--url or RETAGD_URL"
            } else {
                "server.listen; --url names another address"
            }
        )
        .map_err(io_failure)?;
        return Ok(None);
    }
    let token = match super::remote::given_token(&args.token)? {
        Some(t) => Some(t),
        None => config
            .server
            .api_token_file
            .as_ref()
            .and_then(|f| crate::secret::read("server.api_token_file", f).ok())
            .map(|s| s.expose().to_string()),
    };
    let Some(token) = token else {
        writeln!(
            err,
            "note: retagd runs at {} but no API token is at hand (--token-file, RETAGD_API_TOKEN, \
             or a readable server.api_token_file): promoting here; the daemon shows it at its \
             next look (--local says this is meant)",
            daemon.url()
        )
        .map_err(io_failure)?;
        return Ok(None);
    };
    writeln!(
        err,
        "approving through the daemon at {} (--local promotes here)",
        daemon.url()
    )
    .map_err(io_failure)?;
    Ok(Some(super::remote::approve_at(
        &daemon,
        &token,
        &args.approval,
        out,
    )))
}

/// A promotion record that could not be written does not fail the command (the promotion
/// stands), but a one-shot run does not try again: say so on stderr, and for drift too.
fn warn_records(outcome: &engine::Outcome, err: &mut dyn Write) -> Result<(), Failure> {
    let name = &outcome.pipeline;
    for r in &outcome.records {
        if let Err(e) = &r.result {
            writeln!(
                err,
                "warning: {name}/{}: the promotion record of {} was not written: {e}",
                r.stage, r.tag
            )
            .map_err(io_failure)?;
        }
    }
    for d in outcome.drift.iter().filter(|d| d.open()) {
        writeln!(
            err,
            "warning: {name}/{}: drift: {} names {}, retagd wrote {}{}",
            d.stage,
            d.tag,
            d.found,
            d.expected,
            match &d.healed {
                Some(Err(e)) => format!(" (putting it back failed: {e})"),
                _ => String::new(),
            }
        )
        .map_err(io_failure)?;
    }
    Ok(())
}

/// `retagd promote`: the manual approval of one stage's promotion.
pub fn promote(
    args: &PromoteArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let config = load(&args.common, err)?;
    let (pipeline, index) = engine::approval_target(
        &config.pipelines,
        &args.approval.pipeline,
        &args.approval.stage,
    )
    .map_err(|e| Failure::Usage(e.into()))?;
    if !args.local {
        if let Some(done) = promote_through_daemon(args, &config, out, err)? {
            return done;
        }
    }
    let engine = engine(&config)?;
    let intent = args.approval.asked().intent(index);
    let outcome = runtime()?.block_on(engine.reconcile(pipeline, &intent, &|| false));
    warn_records(&outcome, err)?;
    let approved = outcome
        .approved(index)
        .map_err(|e| Failure::Work(e.into()))?;
    let name = &pipeline.name;
    let stage = &args.approval.stage;
    match approved {
        Approved::Promoted {
            promotion: p,
            forced,
            ..
        } => writeln!(
            out,
            "promoted {name}/{stage}: {} -> {} ({}){}",
            p.from_tag,
            p.to_tag,
            p.digest,
            if forced { ", forced past min_age" } else { "" }
        )
        .map_err(io_failure),
        Approved::Failed { error, .. } => Err(Failure::Work(anyhow::anyhow!(
            "promotion into {stage} failed: {}",
            error.chain()
        ))),
        Approved::UpToDate { tag } => {
            writeln!(out, "already up to date: {name}/{stage} has it as {tag}").map_err(io_failure)
        }
        Approved::Conflict {
            promotion,
            existing,
        } => Err(Failure::Work(anyhow::anyhow!(
            "nothing promoted into {stage}: conflict: {} exists with {} (not {}); not overwriting",
            promotion.to_tag,
            short(&existing),
            short(&promotion.digest)
        ))),
        Approved::NotPromoted(action) => Err(Failure::Work(anyhow::anyhow!(
            "nothing promoted into {stage}: {}{}",
            action_text(&action, SystemTime::now()),
            if matches!(action, Action::Waiting { .. } | Action::Frozen { .. }) {
                " (--force promotes now)"
            } else {
                ""
            }
        ))),
    }
}

/// `retagd run`: the daemon, until SIGTERM or SIGINT.
pub fn run(args: &RunArgs, err: &mut dyn Write) -> Result<(), Failure> {
    let config = load(&args.common, err)?;
    let options = daemon::Options {
        config_path: args.common.config.clone(),
        grace: args.grace_period,
        parallel: args.parallel,
    };
    runtime()?.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        forward_signals(tx).map_err(|e| Failure::Work(e.into()))?;
        let wiring = daemon::Wiring {
            connect: Box::new(|config, observer| {
                daemon::connect(config, observer).map(|r| r as Arc<dyn engine::Backend>)
            }),
            serve: Box::new(|listener, shared, stop| {
                Box::pin(server::serve(listener, shared, stop))
            }),
        };
        daemon::run(config, options, wiring, rx)
            .await
            .map_err(Failure::Usage)
    })
}

/// The daemon as the HTTP server reaches it: this is where `retagd run` wires the two together,
/// so neither module imports the other.
impl server::Handle for daemon::Shared {
    fn status(&self) -> &Status {
        &self.status
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn config(&self) -> Arc<Config> {
        self.routes().config.clone()
    }

    fn approve(
        self: Arc<Self>,
        pipeline: String,
        stage: String,
        asked: Asked,
    ) -> BoxFuture<'static, Result<Approved, engine::ApproveError>> {
        Box::pin(async move { daemon::Shared::approve(&self, &pipeline, &stage, asked).await })
    }

    fn pushed(&self, host: Option<&str>, repository: &str) -> Vec<String> {
        daemon::Shared::pushed(self, host, repository)
    }

    fn history(
        self: Arc<Self>,
        pipeline: String,
        stage: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Option<Arc<Value>>> {
        Box::pin(
            async move { daemon::Shared::history(&self, &pipeline, stage.as_deref(), limit).await },
        )
    }

    fn freezes(&self) -> Vec<Freeze> {
        daemon::Shared::freezes(self)
    }

    fn freeze(&self, freeze: Freeze) -> Result<(), FreezeError> {
        daemon::Shared::freeze(self, freeze)
    }

    fn unfreeze(&self, id: Option<&str>, by: &str) -> Result<Vec<Freeze>, FreezeError> {
        daemon::Shared::unfreeze(self, id, by)
    }
}

/// SIGTERM and SIGINT stop, SIGHUP reloads.
fn forward_signals(tx: tokio::sync::mpsc::Sender<Signal>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = term.recv() => Signal::Stop,
                _ = int.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// The human table of a plan.
pub fn plan_text(plan: &PipelinePlan, now: SystemTime) -> String {
    use std::fmt::Write as _;
    let mut s = format!("pipeline {}\n", plan.pipeline);
    let width = plan
        .stages
        .iter()
        .map(|st| st.stage.len())
        .max()
        .unwrap_or(0);
    let tag_width = plan
        .stages
        .iter()
        .map(|st| st.current.as_ref().map_or(6, |c| c.tag.len()))
        .max()
        .unwrap_or(0);
    for st in &plan.stages {
        let (tag, digest) = match &st.current {
            Some(c) => (c.tag.clone(), short(&c.digest)),
            None => ("(none)".to_string(), String::new()),
        };
        let _ = write!(
            s,
            "  {:<width$}  {:<tag_width$}  {:<19}  {}",
            st.stage,
            tag,
            digest,
            action_text(&st.action, now)
        );
        if let Some(why) = &st.no_current {
            let _ = write!(s, " [no current tag: {why}]");
        }
        s.push('\n');
    }
    s.push('\n');
    s
}
