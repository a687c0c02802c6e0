//! Manual approvals: which stage an approval names, and what it did. Shared by `retagd promote`,
//! the daemon and the HTTP API, so all three promote and answer alike.

use super::outcome::PromotionError;
use super::plan::{Action, Promotion};
use crate::config::Pipeline;
use crate::reference::Digest;

/// What a person asks for besides the stage: a tag of the source stage other than its current
/// one, and whether to skip the stage's `min_age` soak.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// Promote this tag of the source stage instead of its current one.
    pub tag: Option<String>,
    /// Promote before `min_age` has passed; the promotion is logged as forced.
    pub force: bool,
    /// The digest the approver saw: a candidate with another one is not promoted.
    pub digest: Option<crate::reference::Digest>,
    /// Who approves: an approver's name from the configuration, or the local user of
    /// `retagd promote`. Recorded with the promotion, never a token.
    pub by: String,
    /// Why, in the approver's words (optional).
    pub reason: Option<String>,
}

impl Asked {
    /// The intent of a reconcile that carries out this approval of stage `index`.
    pub fn intent(&self, index: usize) -> super::Intent {
        super::Intent {
            approve: Some(index),
            source_tag: self.tag.clone(),
            force: self.force,
            digest: self.digest.clone(),
            approver: Some(super::plan::Approver {
                by: self.by.clone(),
                reason: self.reason.clone(),
            }),
        }
    }
}

/// Why an approval names nothing that can be approved.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// No such pipeline.
    #[error("no pipeline {name:?} (pipelines: {known})")]
    NoPipeline {
        /// The name asked for.
        name: String,
        /// The configured ones, comma-separated.
        known: String,
    },
    /// No such stage in the pipeline.
    #[error("pipeline {pipeline} has no stage {name:?} (stages: {known})")]
    NoStage {
        /// The pipeline.
        pipeline: String,
        /// The name asked for.
        name: String,
        /// Its stages, comma-separated.
        known: String,
    },
    /// The stage is the pipeline's source: nothing promotes into it.
    #[error("stage {0} is not promoted into (it has no promote = {{...}})")]
    NotPromoted(String),
}

/// Finds the pipeline and the index of the stage an approval names.
pub fn approval_target<'a>(
    pipelines: &'a [Pipeline],
    pipeline: &str,
    stage: &str,
) -> Result<(&'a Pipeline, usize), TargetError> {
    let join = |names: Vec<&str>| names.join(", ");
    let p = pipelines
        .iter()
        .find(|p| p.name == pipeline)
        .ok_or_else(|| TargetError::NoPipeline {
            name: pipeline.to_string(),
            known: join(pipelines.iter().map(|p| p.name.as_str()).collect()),
        })?;
    let index = p
        .stages
        .iter()
        .position(|s| s.name == stage)
        .ok_or_else(|| TargetError::NoStage {
            pipeline: p.name.clone(),
            name: stage.to_string(),
            known: join(p.stages.iter().map(|s| s.name.as_str()).collect()),
        })?;
    if p.stages[index].promote.is_none() {
        return Err(TargetError::NotPromoted(stage.to_string()));
    }
    Ok((p, index))
}

/// What an approval did to the stage it named.
#[derive(Debug)]
pub enum Approved {
    /// Copied, or found copied already (`up_to_date`: an earlier run wrote it).
    Promoted {
        /// What was promoted.
        promotion: Promotion,
        /// Whether the target already had it.
        up_to_date: bool,
        /// Whether the approval skipped the stage's `min_age` soak.
        forced: bool,
    },
    /// The copy failed.
    Failed {
        /// What was tried.
        promotion: Promotion,
        /// Why it failed.
        error: PromotionError,
    },
    /// The stage already holds the candidate, as `tag`.
    UpToDate {
        /// The stage's tag for it.
        tag: String,
    },
    /// The target tag exists with another digest and the stage does not allow moving it.
    Conflict {
        /// What would have been promoted.
        promotion: Promotion,
        /// The digest the target tag holds.
        existing: Digest,
    },
    /// Nothing was promoted; the stage's action says why.
    NotPromoted(Action),
}

/// Why an approval was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum ApproveError {
    /// It names no promotable stage.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The pipeline could not be planned.
    #[error("{}", .0.chain())]
    Plan(#[from] super::Error),
    /// The daemon is stopping.
    #[error("retagd is stopping; approve again once it is back")]
    Stopping,
    /// The approval's task ended without an answer (a bug; the log has it).
    #[error("the approval failed inside retagd; see its log")]
    Internal,
}
