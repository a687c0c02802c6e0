//! `retagd history`: a pipeline's promotions, read back from the promotion records in its
//! registries (see [`crate::engine::history`]); no daemon and no state directory needed.

use std::io::Write;
use std::sync::Arc;

use clap::Args;

use super::pipelines::{load, runtime, Common};
use super::{io_failure, Failure};
use crate::engine::describe::short;
use crate::engine::history::{self, History};
use crate::registry::NoObserver;

/// `retagd history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    common: Common,
    /// The pipeline.
    #[arg(long)]
    pipeline: String,
    /// Only promotions into this stage.
    #[arg(long)]
    stage: Option<String>,
    /// At most this many promotions, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// The JSON / YAML shape is documented in README.md ("Promotion records").
    #[command(flatten)]
    output: super::Output,
}

/// Prints the promotions; exit 1 when a stage's repository could not be read.
pub fn history(
    args: &HistoryArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let config = load(&args.common, err)?;
    let pipeline = config
        .pipelines
        .iter()
        .find(|p| p.name == args.pipeline)
        .ok_or_else(|| {
            let known: Vec<&str> = config.pipelines.iter().map(|p| p.name.as_str()).collect();
            Failure::Usage(anyhow::anyhow!(
                "no pipeline {:?} (pipelines: {})",
                args.pipeline,
                known.join(", ")
            ))
        })?;
    if let Some(stage) = &args.stage {
        if !pipeline.stages.iter().any(|s| &s.name == stage) {
            let known: Vec<&str> = pipeline.stages.iter().map(|s| s.name.as_str()).collect();
            return Err(Failure::Usage(anyhow::anyhow!(
                "pipeline {} has no stage {stage:?} (stages: {})",
                pipeline.name,
                known.join(", ")
            )));
        }
    }
    let registries =
        crate::daemon::connect(&config, Arc::new(NoObserver)).map_err(Failure::Usage)?;
    let found = runtime()?.block_on(history::read(
        registries.as_ref(),
        pipeline,
        args.stage.as_deref(),
        args.limit,
    ));
    match args.output.data(&found.json(&pipeline.name))? {
        Some(text) => out.write_all(text.as_bytes()).map_err(io_failure)?,
        None => out
            .write_all(table(&found).as_bytes())
            .map_err(io_failure)?,
    }
    for why in &found.skipped {
        writeln!(err, "warning: skipped a record: {why}").map_err(io_failure)?;
    }
    if found.errors.is_empty() {
        Ok(())
    } else {
        Err(Failure::Work(anyhow::anyhow!(
            "cannot read promotion records:\n  {}",
            found.errors.join("\n  ")
        )))
    }
}

/// The history as a table for people, newest first.
pub fn table(found: &History) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "TIME".into(),
        "STAGE".into(),
        "PROMOTION".into(),
        "DIGEST".into(),
        "APPROVAL".into(),
        "REASON".into(),
    ]];
    for e in &found.entries {
        let r = &e.record;
        let approval = match (&r.approved_by, r.forced) {
            (Some(by), true) => format!("{by} (forced)"),
            (Some(by), false) => by.clone(),
            (None, _) => r.approval.clone(),
        };
        let digest = r
            .digest
            .parse()
            .map_or_else(|_| r.digest.clone(), |d| short(&d));
        rows.push([
            r.time.clone(),
            r.stage.clone(),
            format!("{} -> {}", r.from.tag, r.to.tag),
            digest,
            approval,
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    if rows.len() == 1 {
        return "no promotion records found\n".to_string();
    }
    super::columns(&rows)
}
