//! What one reconcile did, as one typed value: the plan (or why there is none), each promotion's
//! result with its typed error, and the questions every consumer asks of it. The daemon's
//! recorder fans it out to the status, metrics, notifications and wake-ups; `retagd reconcile`
//! and `retagd promote` read the same value, so no caller interprets a reconcile on its own.

use std::time::{Duration, SystemTime};

use super::approval::Approved;
use super::plan::{Action, PipelinePlan, Promotion, StagePlan};
use super::Error;
use crate::reference::Digest;
use crate::registry;

/// Why one promotion was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    /// The promotion into its source stage failed earlier in the same pass, so its candidate is
    /// not there to copy.
    #[error("skipped: the promotion into {from_stage} failed in this pass")]
    Skipped {
        /// The source stage whose own promotion failed.
        from_stage: String,
    },
    /// The source stage's tag names another digest than retagd wrote (drift): what it holds
    /// now was never approved, so it is not promoted onward.
    #[error(
        "not promoted: {tag} in {from_stage} was moved outside retagd (drift); put it back or heal"
    )]
    Drifted {
        /// The drifted stage.
        from_stage: String,
        /// Its drifted tag.
        tag: String,
    },
    /// The copy failed.
    #[error(transparent)]
    Copy(#[from] registry::Error),
}

impl PromotionError {
    /// The bounded `reason` label of the promotion-failure metrics: the registry's reason, or
    /// `skipped`.
    pub fn reason(&self) -> &'static str {
        match self {
            PromotionError::Skipped { .. } => "skipped",
            PromotionError::Drifted { .. } => "drift",
            PromotionError::Copy(e) => e.reason().as_str(),
        }
    }

    /// The error and its causes on one line.
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// One promotion applied (or refused) in a reconcile.
#[derive(Debug)]
pub struct Applied {
    /// The stage promoted into.
    pub stage: String,
    /// What was promoted.
    pub promotion: Promotion,
    /// The copy's report, or why it failed.
    pub result: Result<registry::Report, PromotionError>,
    /// How long it took.
    pub duration: Duration,
    /// Approved with `force`, before the stage's `min_age` had passed.
    pub forced: bool,
    /// Who approved it, for a promotion someone approved ([`super::Intent::approver`]).
    pub approved_by: Option<String>,
    /// The reason the approver gave.
    pub reason: Option<String>,
}

impl Applied {
    /// True when the target tag changed (not a failure, not found copied already).
    pub fn wrote(&self) -> bool {
        matches!(&self.result, Ok(r) if !r.up_to_date)
    }
}

/// What the pipeline's task should do next, as far as this reconcile can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// A promotion changed what stages select: look again at once, so status and metrics show
    /// the new version (the caller bounds how many times in a row).
    Now,
    /// All went well: wait for the interval.
    Interval,
    /// Something failed: retry after a backoff.
    Backoff,
}

/// One reconcile of one pipeline.
#[derive(Debug)]
pub struct Outcome {
    /// The pipeline's name.
    pub pipeline: String,
    /// The plan, or why the pipeline could not be planned (then nothing was applied).
    pub plan: Result<PipelinePlan, Error>,
    /// The promotions tried, in stage order.
    pub applied: Vec<Applied>,
    /// From the start of the reconcile (including lock waits) to its end.
    pub duration: Duration,
    /// When it ended.
    pub at: SystemTime,
    /// The referrers carried into promoted stages, one entry per watched digest.
    pub referrers: Vec<super::Carried>,
    /// The promotion records written or tried in this reconcile (new ones and earlier failures).
    pub records: Vec<super::Recorded>,
    /// Records of this pipeline still waiting to be written after it.
    pub unrecorded: usize,
    /// Tags retagd wrote that name another digest now, healed or not.
    pub drift: Vec<super::Drift>,
    /// The plan as it stands after this reconcile's promotions, when it wrote any and that can
    /// be told without asking the registry again (what `retagd reconcile` prints).
    pub after: Option<PipelinePlan>,
}

impl Outcome {
    /// Planned, and every promotion tried succeeded.
    pub fn succeeded(&self) -> bool {
        self.plan.is_ok() && self.applied.iter().all(|a| a.result.is_ok())
    }

    /// The promotions that failed.
    pub fn failures(&self) -> impl Iterator<Item = (&Applied, &PromotionError)> {
        self.applied
            .iter()
            .filter_map(|a| a.result.as_ref().err().map(|e| (a, e)))
    }

    /// The stages whose tag this reconcile changed, with the plan's view of them.
    pub fn written(&self) -> impl Iterator<Item = &StagePlan> {
        let stages = self.plan.as_ref().map(|p| &p.stages[..]).unwrap_or(&[]);
        self.applied
            .iter()
            .filter(|a| a.wrote())
            .filter_map(move |a| stages.iter().find(|s| s.stage == a.stage))
    }

    /// The stages that conflict: the target tag holds another digest and may not move.
    pub fn conflicts(&self) -> impl Iterator<Item = (&StagePlan, &Promotion, &Digest)> {
        let stages = self.plan.as_ref().map(|p| &p.stages[..]).unwrap_or(&[]);
        stages.iter().filter_map(|s| match &s.action {
            Action::Conflict {
                promotion,
                existing,
            } => Some((s, promotion, existing)),
            _ => None,
        })
    }

    /// The wake-up decision.
    pub fn next(&self) -> Next {
        let healed = self.drift.iter().any(|d| d.healed.is_some() && !d.open());
        if self.applied.iter().any(Applied::wrote) || healed {
            Next::Now
        } else if self.succeeded() {
            Next::Interval
        } else {
            Next::Backoff
        }
    }

    /// The first time a held promotion may go ahead by itself: a soak ends, a window opens or
    /// a freeze runs out. The daemon looks again then rather than an interval later.
    pub fn waiting_until(&self) -> Option<SystemTime> {
        let stages = self.plan.as_ref().map(|p| &p.stages[..]).unwrap_or(&[]);
        stages
            .iter()
            .filter_map(|s| match &s.action {
                Action::Waiting { until, .. } => Some(*until),
                Action::Frozen { freeze, .. } => freeze.until,
                _ => None,
            })
            .min()
    }

    /// Why the reconcile did not succeed, as the bounded `reason` label of
    /// `retagd_reconcile_errors_total`: the planning error's, else the first failed promotion's.
    pub fn error_reason(&self) -> Option<&'static str> {
        match &self.plan {
            Err(e) => Some(e.reason()),
            Ok(_) => self.failures().next().map(|(_, e)| e.reason()),
        }
    }

    /// Everything that needs a person's attention, one line each: the planning error, stages
    /// whose promotion cannot be expressed (`invalid`), failed promotions and conflicts.
    /// `retagd reconcile` exits 1 when there is any, so CI notices.
    pub fn problems(&self) -> Vec<String> {
        let name = &self.pipeline;
        let mut problems = Vec::new();
        match &self.plan {
            Err(e) => problems.push(format!("{name}: {}", e.chain())),
            Ok(plan) => problems.extend(plan.stages.iter().filter_map(|s| match &s.action {
                Action::Invalid { reason } => {
                    Some(format!("{name}/{}: invalid: {reason}", s.stage))
                }
                _ => None,
            })),
        }
        for (a, e) in self.failures() {
            problems.push(format!("{name}/{}: {}", a.stage, e.chain()));
        }
        for (s, promotion, _) in self.conflicts() {
            problems.push(format!(
                "{name}/{}: conflict: {} exists with another digest",
                s.stage, promotion.to_tag
            ));
        }
        problems
    }

    /// What the approval of stage `index` (a reconcile made with [`super::Intent::approve`])
    /// did to that stage.
    pub fn approved(self, index: usize) -> Result<Approved, Error> {
        let plan = self.plan?;
        let Some(stage) = plan.stages.get(index) else {
            return Ok(Approved::NotPromoted(Action::Invalid {
                reason: format!("the plan has no stage {index}"),
            }));
        };
        if let Some(a) = self.applied.into_iter().find(|a| a.stage == stage.stage) {
            return Ok(match a.result {
                Ok(report) => Approved::Promoted {
                    promotion: a.promotion,
                    up_to_date: report.up_to_date,
                    forced: a.forced,
                },
                Err(error) => Approved::Failed {
                    promotion: a.promotion,
                    error,
                },
            });
        }
        Ok(match &stage.action {
            Action::UpToDate { tag } => Approved::UpToDate { tag: tag.clone() },
            Action::Conflict {
                promotion,
                existing,
            } => Approved::Conflict {
                promotion: promotion.clone(),
                existing: existing.clone(),
            },
            other => Approved::NotPromoted(other.clone()),
        })
    }

    /// The engine's one summary line per reconcile, and a warning per conflict. A reconcile that
    /// could not plan is reported by its caller (the daemon logs it, the commands print it), so
    /// the cause is shown once.
    pub(super) fn log(&self) {
        let name = &self.pipeline;
        let duration_ms = self.duration.as_millis() as u64;
        let Ok(plan) = &self.plan else {
            return;
        };
        let count = |f: fn(&Action) -> bool| plan.stages.iter().filter(|s| f(&s.action)).count();
        let failed = self.failures().count();
        tracing::info!(
            pipeline = %name,
            promoted = self.applied.len() - failed,
            failed,
            pending = count(|a| matches!(a, Action::Pending(_))),
            waiting = count(|a| matches!(a, Action::Waiting { .. })),
            frozen = count(|a| matches!(a, Action::Frozen { .. })),
            conflicts = count(|a| matches!(a, Action::Conflict { .. })),
            duration_ms,
            "reconciled"
        );
        for (s, promotion, existing) in self.conflicts() {
            tracing::warn!(
                pipeline = %name,
                stage = %s.stage,
                to_tag = %promotion.to_tag,
                digest = %promotion.digest,
                existing = %existing,
                "conflict: {} exists with another digest; not overwriting",
                promotion.to_tag
            );
        }
    }
}

/// An error and its causes on one line, as `{:#}` prints an `anyhow` error.
pub(super) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
