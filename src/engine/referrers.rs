//! Referrers after the copies of a reconcile: for every stage promoted from another repository
//! or registry, the referrers of its current digest (and of digests that were current within the
//! stage's `promote.referrers.window`) are carried from the source stage's repository, so a
//! signature or attestation pushed after the promotion follows by the next round.
//!
//! What the target already has is remembered per digest ([`referrers::Memo`]), so a round with
//! nothing new costs one HEAD per cosign or fallback tag the source's tag list shows. A failure
//! never undoes a promotion: it is in the [`Carried`] report (status, metric, log) and retried.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::backend::ReferrerJob;
use super::plan::{self, Observed, PipelinePlan};
use super::{Applied, Engine};
use crate::config::Pipeline;
use crate::reference::Digest;
use crate::registry::referrers;

/// The referrers of one digest, carried into one stage in one reconcile.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The stage carried into.
    pub stage: String,
    /// The promoted digest whose referrers these are.
    pub digest: Digest,
    /// What was found, copied, skipped and what failed.
    pub report: referrers::Report,
}

/// A watched digest: when it was last current in its stage, and what its target has.
type Watch = (Digest, SystemTime, referrers::Memo);

/// Digests watched per (pipeline, stage).
#[derive(Debug, Default)]
pub(super) struct Watched {
    stages: Mutex<HashMap<(String, String), Vec<Watch>>>,
}

impl Engine {
    /// Carries referrers into every promoted stage of `plan` (after `applied`), see the module
    /// docs.
    pub(super) async fn carry_referrers(
        &self,
        pipeline: &Pipeline,
        plan: &PipelinePlan,
        observed: &Observed,
        applied: &[Applied],
    ) -> Vec<Carried> {
        let mut out = Vec::new();
        let now = SystemTime::now();
        for (config, stage) in pipeline.stages.iter().zip(&plan.stages) {
            let Some(promote) = &config.promote else {
                continue;
            };
            let Some(from) = pipeline.stages.get(promote.from) else {
                continue;
            };
            if !promote.referrers.enabled
                || (from.registry == config.registry && from.repository == config.repository)
            {
                continue;
            }
            // The stage's digest after this reconcile: a successful promotion's, else the plan's.
            let current = applied
                .iter()
                .find(|a| a.stage == stage.stage && a.result.is_ok())
                .map(|a| a.promotion.digest.clone())
                .or_else(|| stage.current.as_ref().map(|c| c.digest.clone()));
            let key = (pipeline.name.clone(), stage.stage.clone());
            let mut watched = {
                let mut all = self
                    .referrers
                    .stages
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                all.remove(&key).unwrap_or_default()
            };
            if let Some(current) = &current {
                match watched.iter_mut().find(|(d, _, _)| d == current) {
                    Some(entry) => entry.1 = now,
                    None => watched.push((current.clone(), now, referrers::Memo::default())),
                }
            }
            watched.retain(|(d, at, _)| {
                Some(d) == current.as_ref()
                    || now.duration_since(*at).unwrap_or_default() <= promote.referrers.window
            });
            let no_tags = Vec::new();
            let source_tags = observed.tags.get(&plan::repo_key(from)).unwrap_or(&no_tags);
            for (digest, _, memo) in &mut watched {
                let job = ReferrerJob {
                    from_registry: &from.registry,
                    from_repository: &from.repository,
                    to_registry: &config.registry,
                    to_repository: &config.repository,
                    digest,
                    source_tags,
                    artifact_types: &promote.referrers.artifact_types,
                };
                let report = match self.backend().referrers(&job, memo).await {
                    Ok(report) => report,
                    Err(e) => referrers::Report {
                        failures: vec![e.to_string()],
                        ..referrers::Report::default()
                    },
                };
                log(&pipeline.name, &stage.stage, digest, &report);
                out.push(Carried {
                    stage: stage.stage.clone(),
                    digest: digest.clone(),
                    report,
                });
            }
            self.referrers
                .stages
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, watched);
        }
        out
    }
}

/// One event for a round that wrote or failed; quiet when nothing changed.
fn log(pipeline: &str, stage: &str, digest: &Digest, r: &referrers::Report) {
    if !r.failures.is_empty() {
        tracing::warn!(
            pipeline = %pipeline,
            stage = %stage,
            digest = %digest,
            found = r.found,
            in_target = r.in_target,
            failures = %r.failures.join("; "),
            "referrers: {}",
            r.summary()
        );
    } else if r.written > 0 {
        tracing::info!(
            pipeline = %pipeline,
            stage = %stage,
            digest = %digest,
            found = r.found,
            written = r.written,
            "referrers: {}",
            r.summary()
        );
    }
}
