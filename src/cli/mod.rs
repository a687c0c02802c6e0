//! The `retagd` command line.
//!
//! Every subcommand returns a [`Failure`] kind that `main` maps to the exit status: 0 success,
//! 1 the work failed or found nothing, 2 bad invocation or bad configuration (clap's own usage
//! errors also exit 2). Errors are printed once, by `main`, one sentence first.

mod export;
mod history;
mod pipelines;
mod remote;

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::calendar;
use crate::config::{self, Auth, Config};
use crate::policy::{self, Filter, Order, Policy, Selector};
use crate::reference::{self, Reference};
use crate::registry::{self, NoObserver, Registries};

/// The version with the commit and its date, as `--version` and `retagd version` print it.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILT_REVISION"),
    ", ",
    env!("BUILT_REVISION_DATE"),
    ")"
);

/// Promote container images dev -> rc -> release inside registries.
#[derive(Debug, Parser)]
#[command(name = "retagd", version = VERSION, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a configuration file and print its pipelines (exit 0 valid, 2 invalid).
    Check(CheckArgs),
    /// Select a tag from candidates exactly as a stage (and Flux's ImagePolicy) would.
    ///
    /// Candidate tags come from the arguments, or one per line from stdin when none are given.
    /// Prints the selected tag. Exit 1 when no tag qualifies (or, for numerical, a candidate is
    /// not a number); exit 2 for an invalid range, pattern or order.
    Policy(PolicyArgs),
    /// Copy an image to another tag, repository or registry, digest preserved.
    ///
    /// References look like 127.0.0.1:5000/myorg/app:v1.2.0-dev.3 or ...@sha256:HEX.
    /// Registries named in the config (by host) supply URL scheme, credentials, CA and limits;
    /// others are reached with ~/.docker/config.json credentials if any, over https (http on
    /// loopback). Within one repository only the manifest is copied; within one registry blobs
    /// are mounted; across registries missing blobs are streamed. Exit 1 when the copy fails.
    Copy(CopyArgs),
    /// Show what one reconcile would do, per pipeline and stage, without writing anything.
    ///
    /// For each stage: its current tag and digest, and the action: up to date, promote X -> Y,
    /// pending approval, waiting for min_age, conflict. Exit 1 when a pipeline cannot be
    /// planned (e.g. its registry is down).
    Plan(pipelines::PlanArgs),
    /// Run one reconcile that applies automatic promotions, then exit (for cron jobs and CI).
    ///
    /// Exit 1 when a promotion failed or conflicted or a pipeline could not be reconciled.
    Reconcile(pipelines::ReconcileArgs),
    /// Approve a promotion: promote into STAGE now (min_age, windows and freezes still hold
    /// unless --force).
    ///
    /// Promotes the source stage's current tag, or --tag. An existing target tag with another
    /// digest is still a conflict unless the stage allows overwrite.
    Promote(pipelines::PromoteArgs),
    /// The promotions of a pipeline, read back from the promotion records in its registries.
    ///
    /// Newest first. Needs no daemon and no state directory: the records live next to the
    /// images. Records that do not check out (not JSON of the record's shape, another
    /// pipeline's, attached to another image) are skipped with a warning. Exit 1 when a
    /// repository could not be read.
    History(history::HistoryArgs),
    /// The daemon: reconcile every pipeline on its interval until SIGTERM or SIGINT.
    ///
    /// SIGHUP reloads the configuration (an invalid one is logged and ignored).
    Run(pipelines::RunArgs),
    /// Show a running daemon's pipelines: each stage's tag, digest and state (up to date,
    /// pending approval, waiting, frozen, conflict, error), and what to do about it.
    ///
    /// Reads GET /api/v1/pipelines from --url (default http://127.0.0.1:9090). Exit 1 when the
    /// daemon cannot be reached, 2 for an unknown PIPELINE.
    Status(remote::StatusArgs),
    /// Approve a promotion through a running daemon's API (POST .../promote).
    ///
    /// The token comes from --token-file or RETAGD_API_TOKEN. Exit 0 when promoted (or already
    /// there), 1 when not (conflict, failure, nothing to promote), 2 when refused.
    Approve(remote::ApproveArgs),
    /// Stop promotions through a running daemon (POST /api/v1/freeze), e.g. during an incident.
    ///
    /// Nothing is promoted into a frozen stage, automatically or by approval, until the freeze
    /// ends (--until) or is lifted (`retagd unfreeze`); `--force` on an approval still passes.
    /// The freeze survives a restart (server.state_dir). `--list` shows the freezes in force.
    Freeze(remote::FreezeArgs),
    /// Lift a freeze (DELETE /api/v1/freeze/ID), or every freeze set through the API.
    Unfreeze(remote::UnfreezeArgs),
    /// Print the cluster side of the configuration for another tool.
    #[command(subcommand)]
    Export(Export),
    /// Print a shell completion script: `retagd completion bash > /etc/bash_completion.d/retagd`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `retagd man | man -l -`.
    Man,
    /// Print this retagd's version and commit, and a running daemon's (from /healthz).
    ///
    /// Exit 1 when the daemon cannot be reached (--client skips it).
    Version(remote::VersionArgs),
}

/// `retagd check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file (.toml, .yaml or .yml); RETAGD_* variables override its keys.
    #[arg(long, short, env = "RETAGD_CONFIG", value_name = "FILE")]
    pub config: PathBuf,
    #[command(flatten)]
    output: Output,
}

/// `retagd export ...`.
#[derive(Debug, clap::Subcommand)]
pub enum Export {
    /// Flux ImageRepository and ImagePolicy objects whose filters and policies are the stages'
    /// own text, so Flux selects in the cluster what retagd promotes (YAML on stdout).
    Flux(export::FluxArgs),
}

/// `-o table|json|yaml`, as kubectl, flux and argocd spell it; `--json` stays as `-o json`.
#[derive(Debug, Clone, Args)]
pub struct Output {
    /// How to print: a table for people, or JSON / YAML (the same documented shape) for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Table)]
    output: Format,
    /// The same as `-o json`.
    #[arg(long)]
    json: bool,
}

/// What [`Output`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Table,
    /// The JSON documented in README.md.
    Json,
    /// The same as YAML.
    Yaml,
}

impl Output {
    /// The format asked for.
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.output
        }
    }

    /// `value` as JSON or YAML text ending in a newline; `None` for a table, which the caller
    /// renders itself.
    pub fn data(&self, value: &serde_json::Value) -> Result<Option<String>, Failure> {
        let text = match self.format() {
            Format::Table => return Ok(None),
            Format::Json => serde_json::to_string_pretty(value)
                .map(|t| t + "\n")
                .map_err(|e| Failure::Work(e.into()))?,
            Format::Yaml => serde_yaml::to_string(value).map_err(|e| Failure::Work(e.into()))?,
        };
        Ok(Some(text))
    }
}

/// Rows as left-aligned columns two spaces apart, one line each, for the tables people read.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `retagd policy`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["semver", "alphabetical", "numerical"])))]
pub struct PolicyArgs {
    /// Greatest version within a Masterminds/Flux range, e.g. ">=1.0.0-0" or "^1.2 || ~2.0".
    #[arg(long, value_name = "RANGE", allow_hyphen_values = true)]
    pub semver: Option<String>,
    /// Byte order: "asc" picks the greatest, "desc" the least.
    #[arg(long, value_name = "ORDER")]
    pub alphabetical: Option<String>,
    /// Numeric order: "asc" picks the greatest, "desc" the least.
    #[arg(long, value_name = "ORDER")]
    pub numerical: Option<String>,
    /// Regex a tag must match (searched anywhere; anchor it with ^...$).
    #[arg(long, value_name = "REGEX", allow_hyphen_values = true)]
    pub pattern: Option<String>,
    /// What the policy ranks instead of the tag: an expansion of the match, e.g. '$ts' or '${1}'.
    #[arg(
        long,
        value_name = "TEMPLATE",
        requires = "pattern",
        allow_hyphen_values = true
    )]
    pub extract: Option<String>,
    /// Candidate tags; read from stdin, one per line, when none are given.
    #[arg(value_name = "TAG")]
    pub tags: Vec<String>,
}

/// `retagd copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Configuration file with the registries' URLs and credentials (optional).
    #[arg(long, short, env = "RETAGD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The image to copy.
    #[arg(value_name = "SRC")]
    pub src: String,
    /// Where to copy it (a tag, or the same digest).
    #[arg(value_name = "DST")]
    pub dst: String,
    #[command(flatten)]
    output: Output,
}

/// How a subcommand failed, which decides the exit status.
#[derive(Debug)]
pub enum Failure {
    /// The work failed or found nothing (exit 1).
    Work(anyhow::Error),
    /// Bad invocation, input or configuration (exit 2).
    Usage(anyhow::Error),
}

impl Failure {
    /// The exit status for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Work(_) => 1,
            Failure::Usage(_) => 2,
        }
    }

    /// The error to print.
    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Work(e) | Failure::Usage(e) => e,
        }
    }
}

/// An image reference as `retagd copy` takes it: `host/repo:tag`, optionally with skopeo's
/// `docker://` transport in front; skopeo's other transports are named as such.
fn image_reference(which: &str, text: &str) -> Result<Reference, Failure> {
    let plain = text.strip_prefix("docker://").unwrap_or(text);
    // `host:PORT/...` is a registry whatever the host is called.
    let port = |rest: &str| {
        rest.split_once('/')
            .is_some_and(|(p, _)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    const TRANSPORTS: [&str; 6] = [
        "oci",
        "oci-archive",
        "dir",
        "docker-archive",
        "docker-daemon",
        "containers-storage",
    ];
    if let Some((transport, _)) = plain
        .split_once(':')
        .filter(|(t, rest)| TRANSPORTS.contains(t) && !port(rest))
    {
        return Err(Failure::Usage(anyhow::anyhow!(
            "{which}: {transport}: is a skopeo transport; retagd copies between registries (host/repo:tag, or docker://host/repo:tag)"
        )));
    }
    plain.parse().map_err(|e: reference::Error| {
        Failure::Usage(anyhow::Error::new(e).context(which.to_string()))
    })
}

/// Bytes for people: `512 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Runs one subcommand; output goes to `out`, warnings to `err`.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    match cli.command {
        Command::Check(args) => check(&args, out, err),
        Command::Policy(args) => select(&args, &mut std::io::stdin().lock(), out),
        Command::Copy(args) => copy(&args, out, err),
        Command::Plan(args) => pipelines::plan(&args, out, err),
        Command::Reconcile(args) => pipelines::reconcile(&args, out, err),
        Command::Promote(args) => pipelines::promote(&args, out, err),
        Command::History(args) => history::history(&args, out, err),
        Command::Run(args) => pipelines::run(&args, err),
        Command::Status(args) => remote::status(&args, out),
        Command::Approve(args) => remote::approve(&args, out),
        Command::Freeze(args) => remote::freeze(&args, out),
        Command::Unfreeze(args) => remote::unfreeze(&args, out),
        Command::Version(args) => remote::version(&args, out),
        Command::Export(Export::Flux(args)) => export::run(&args, out, err),
        Command::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "retagd", out);
            Ok(())
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(out)
                .map_err(io_failure)
        }
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::Work(anyhow::Error::new(e).context("cannot write output"))
}

fn check(args: &CheckArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    let loaded = config::load(&args.config).map_err(|e| Failure::Usage(e.into()))?;
    for w in &loaded.warnings {
        writeln!(err, "warning: {w}").map_err(io_failure)?;
    }
    let config = &loaded.config;
    let data = serde_json::json!({
        "valid": true,
        "warnings": loaded.warnings.iter().map(|w| serde_json::json!({"path": w.path, "message": w.message})).collect::<Vec<_>>(),
        "listen": config.server.listen.to_string(),
        "registries": config.registries.values().map(|r| serde_json::json!({
            "name": r.name, "url": r.url.as_str(), "max_concurrency": r.max_concurrency,
        })).collect::<Vec<_>>(),
        "pipelines": config.pipelines.iter().map(|p| serde_json::json!({
            "name": p.name,
            "interval": humantime::format_duration(p.interval).to_string(),
            "stages": p.stages.iter().map(|s| serde_json::json!({
                "name": s.name,
                "registry": s.registry,
                "repository": s.repository,
                "pattern": s.selector.filter().pattern(),
                "extract": s.selector.filter().extract(),
                "policy": s.selector.policy().to_string(),
                "promote": s.promote.as_ref().map(|pr| serde_json::json!({
                    "from": p.stages.get(pr.from).map(|f| f.name.as_str()),
                    "tag": pr.tag.to_string(),
                    "approval": pr.approval.to_string(),
                    "min_age": pr.min_age.map(|d| humantime::format_duration(d).to_string()),
                    "overwrite": pr.overwrite,
                    "windows": pr.windows.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "freezes": config.freezes.iter().map(crate::engine::describe::freeze_json).collect::<Vec<_>>(),
    });
    let text = match args.output.data(&data)? {
        Some(text) => text,
        None => summary(&args.config.display().to_string(), config),
    };
    out.write_all(text.as_bytes()).map_err(io_failure)
}

/// The human summary `retagd check` prints.
pub fn summary(origin: &str, config: &Config) -> String {
    let stages: usize = config.pipelines.iter().map(|p| p.stages.len()).sum();
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "{origin} is valid: {} registr{}, {} pipeline(s), {stages} stage(s); serving on {}.",
        config.registries.len(),
        if config.registries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        config.pipelines.len(),
        config.server.listen,
    );
    let _ = writeln!(s, "\nregistries:");
    for r in config.registries.values() {
        let auth = match &r.auth {
            Auth::Anonymous => "anonymous".to_string(),
            Auth::Password { username, .. } => format!("user {username} (password from file)"),
            Auth::DockerConfig(path) => format!("credentials from {}", path.display()),
        };
        let rate = r
            .requests_per_second
            .map_or("no rate limit".to_string(), |r| format!("{r} req/s"));
        let _ = writeln!(
            s,
            "  {:<12} {}  {auth}, {} in flight, {rate}",
            r.name, r.url, r.max_concurrency
        );
    }
    for p in &config.pipelines {
        let _ = writeln!(
            s,
            "\npipeline {} (every {}):",
            p.name,
            humantime::format_duration(p.interval)
        );
        let width = p.stages.iter().map(|st| st.name.len()).max().unwrap_or(0);
        for st in &p.stages {
            let filter = st.selector.filter();
            let mut f = match filter.pattern() {
                Some(pattern) => format!("tags /{pattern}/"),
                None => "all tags".to_string(),
            };
            if let Some(e) = filter.extract() {
                let _ = write!(f, " extract {e:?}");
            }
            let _ = writeln!(
                s,
                "  {:<width$}  {}/{}  {f}, {}",
                st.name,
                st.registry,
                st.repository,
                st.selector.policy()
            );
        }
        for st in &p.stages {
            let Some(pr) = &st.promote else { continue };
            let from = p.stages.get(pr.from).map_or("?", |s| s.name.as_str());
            let mut line = format!("  {from} -> {} as {} ({}", st.name, pr.tag, pr.approval);
            if let Some(age) = pr.min_age {
                let _ = write!(line, ", after {}", humantime::format_duration(age));
            }
            if pr.overwrite {
                line.push_str(", may overwrite");
            }
            if !pr.windows.is_empty() {
                let windows: Vec<String> = pr.windows.iter().map(ToString::to_string).collect();
                let _ = write!(line, ", in {}", windows.join(" or "));
            }
            let _ = writeln!(s, "{line})");
        }
    }
    if !config.freezes.is_empty() {
        s.push_str("\nfreezes:\n");
    }
    for f in &config.freezes {
        let names = |n: &[String]| {
            if n.is_empty() {
                "*".to_string()
            } else {
                n.join(",")
            }
        };
        let _ = writeln!(
            s,
            "  {}  {}/{}  {} to {}: {}",
            f.id,
            names(&f.pipelines),
            names(&f.stages),
            calendar::format_time(f.from),
            f.until.map_or("lifted".to_string(), calendar::format_time),
            f.reason
        );
    }
    s
}

fn copy(args: &CopyArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    let usage = |e: anyhow::Error| Failure::Usage(e);
    let src = image_reference("SRC", &args.src)?;
    let dst = image_reference("DST", &args.dst)?;
    let configured = match &args.config {
        Some(path) => {
            let loaded = config::load(path).map_err(|e| usage(e.into()))?;
            for w in &loaded.warnings {
                writeln!(err, "warning: {w}").map_err(io_failure)?;
            }
            loaded.config.registries
        }
        None => Default::default(),
    };
    let registries = Registries::new(
        &configured,
        Registries::default_docker_config(),
        Arc::new(NoObserver),
    )
    .map_err(|e| usage(e.into()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::Work(anyhow::Error::new(e).context("cannot start the async runtime"))
        })?;
    let report = runtime
        .block_on(async {
            let from = registries.for_host(&src.registry)?;
            let to = registries.for_host(&dst.registry)?;
            registry::copy(&from, &src, &to, &dst, true).await
        })
        .map_err(|e| {
            Failure::Work(anyhow::Error::new(e).context(format!("cannot copy {src} to {dst}")))
        })?;
    let data = serde_json::json!({
        "source": src.to_string(),
        "destination": dst.to_string(),
        "digest": report.digest.as_str(),
        "path": format!("{:?}", report.path).to_lowercase(),
        "up_to_date": report.up_to_date,
        "manifests_pushed": report.manifests_pushed,
        "blobs_mounted": report.blobs_mounted,
        "blobs_uploaded": report.blobs_uploaded,
        "bytes_uploaded": report.bytes_uploaded,
        "blobs_present": report.blobs_present,
    });
    if let Some(text) = args.output.data(&data)? {
        return out.write_all(text.as_bytes()).map_err(io_failure);
    }
    writeln!(out, "{}", describe_copy(&report, &src, &dst)).map_err(io_failure)?;
    writeln!(out, "digest {}", report.digest).map_err(io_failure)
}

/// One line saying what a copy did.
pub fn describe_copy(report: &registry::Report, src: &Reference, dst: &Reference) -> String {
    if report.up_to_date {
        return format!("already up to date: {dst}");
    }
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let mut what = Vec::new();
    if report.blobs_mounted > 0 {
        what.push(format!("mounted {}", plural(report.blobs_mounted, "blob")));
    }
    if report.blobs_uploaded > 0 {
        what.push(format!(
            "uploaded {} ({})",
            plural(report.blobs_uploaded, "blob"),
            size(report.bytes_uploaded)
        ));
    }
    if report.blobs_present > 0 {
        what.push(format!(
            "{} already present",
            plural(report.blobs_present, "blob")
        ));
    }
    let how = match report.path {
        registry::Path::SameRepository => "same repository, manifest only".to_string(),
        _ => {
            what.push(format!(
                "pushed {}",
                plural(report.manifests_pushed, "manifest")
            ));
            what.join(", ")
        }
    };
    format!("copied {src} -> {dst} ({how})")
}

fn select(args: &PolicyArgs, stdin: &mut dyn BufRead, out: &mut dyn Write) -> Result<(), Failure> {
    let usage = |e: policy::Error| Failure::Usage(e.into());
    let filter = Filter::new(args.pattern.as_deref(), args.extract.as_deref())
        .map_err(|e| usage(e.into()))?;
    let policy = match (&args.semver, &args.alphabetical, &args.numerical) {
        (Some(range), _, _) => Policy::semver(range).map_err(usage)?,
        (_, Some(order), _) => Policy::Alphabetical(policy::AlphabeticalPolicy::new(
            order.parse::<Order>().map_err(usage)?,
        )),
        (_, _, Some(order)) => Policy::Numerical(policy::NumericalPolicy::new(
            order.parse::<Order>().map_err(usage)?,
        )),
        // clap's "kind" group requires one of the three.
        (None, None, None) => {
            return Err(Failure::Usage(anyhow::anyhow!(
                "choose a policy: --semver, --alphabetical or --numerical"
            )))
        }
    };
    let selector = Selector::new(filter, policy);

    let mut from_stdin = Vec::new();
    if args.tags.is_empty() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!(
            "reading tags from stdin, one per line; end with Ctrl-D (or give them as arguments)"
        );
    }
    let tags: &[String] = if args.tags.is_empty() {
        for (n, line) in stdin.lines().enumerate() {
            let line = line.map_err(|e| {
                Failure::Usage(
                    anyhow::Error::new(e)
                        .context(format!("cannot read tag on stdin line {}", n + 1)),
                )
            })?;
            let tag = line.trim();
            if !tag.is_empty() {
                from_stdin.push(tag.to_string());
            }
        }
        &from_stdin
    } else {
        &args.tags
    };

    match selector.select(tags.iter().map(String::as_str)) {
        Ok(selected) => writeln!(out, "{}", selected.tag).map_err(io_failure),
        Err(e) if e.is_invalid_selector() => Err(usage(e)),
        Err(e) => Err(Failure::Work(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_takes_skopeo_s_docker_transport_and_names_the_others() {
        let r = image_reference("SRC", "docker://127.0.0.1:5000/myorg/app:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", Some("v1"))
        );
        for text in ["oci:/tmp/layout:v1", "dir:/tmp/x", "docker-daemon:app:v1"] {
            let Err(Failure::Usage(e)) = image_reference("SRC", text) else {
                panic!("{text} accepted");
            };
            assert!(e.to_string().contains("skopeo transport"), "{e}");
        }
        // A registry on port 5000 of a host named `oci` is still a registry.
        assert!(image_reference("DST", "oci:5000/app:v1").is_ok());
    }

    #[test]
    fn sizes_read_in_the_unit_that_fits() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(300 * 1024), "300.0 KiB");
        assert_eq!(size(96 << 20), "96.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
    }
}
