//! `promote.verify`: a planned promotion into a stage that requires a signature becomes
//! [`Action::Unverified`] unless the candidate carries a cosign signature by the stage's key.
//! Checked after planning (the planner does no I/O), before anything is copied; `retagd plan`
//! shows the same answer. A later signature promotes the candidate on the next round, since the
//! check runs again on every round that plans the promotion.

use super::plan::{self, Observed, PipelinePlan};
use super::{outcome, Action, Engine};
use crate::config::Pipeline;
use crate::cosign;

impl Engine {
    /// Replaces each `Promote` into a stage with `promote.verify` whose candidate is not signed
    /// by the stage's key with [`Action::Unverified`].
    pub(super) async fn verify(
        &self,
        pipeline: &Pipeline,
        mut plan: PipelinePlan,
        observed: &Observed,
    ) -> PipelinePlan {
        for index in 0..plan.stages.len() {
            let Some(verify) = pipeline
                .stages
                .get(index)
                .and_then(|s| s.promote.as_ref())
                .and_then(|p| p.verify.as_ref())
            else {
                continue;
            };
            let Action::Promote(p) = &plan.stages[index].action else {
                continue;
            };
            // Signatures hang off the digest where it came from. A source stage promoted in
            // this same plan does not have them yet: look where its own promotion copies from.
            let (mut registry, mut repository) = (&p.from_registry, &p.from_repository);
            let mut from = p.from_stage.as_str();
            while let Some(Action::Promote(q)) = plan
                .stages
                .iter()
                .find(|s| s.stage == from)
                .map(|s| &s.action)
            {
                if q.digest != p.digest {
                    break;
                }
                (registry, repository, from) =
                    (&q.from_registry, &q.from_repository, &q.from_stage);
            }
            let no_tags = Vec::new();
            let tags = observed
                .tags
                .get(&plan::repo_key_of(registry, repository))
                .unwrap_or(&no_tags);
            let refusal = match self
                .backend()
                .signatures(registry, repository, &p.digest, tags)
                .await
            {
                Ok(evidence) => cosign::verify(&verify.key, &evidence, &p.digest)
                    .err()
                    .map(|r| (r.to_string(), r.reason())),
                Err(e) => Some((
                    format!("cannot read its signatures: {}", outcome::chain(&e)),
                    "unreadable",
                )),
            };
            if let Some((reason, code)) = refusal {
                // Every round while it lasts; the status and the notification say it once.
                tracing::info!(
                    pipeline = %pipeline.name,
                    stage = %plan.stages[index].stage,
                    digest = %p.digest,
                    key = %verify.cosign_key_file.display(),
                    reason = code,
                    "unverified: {reason}; not promoting {}",
                    p.from_tag
                );
                let promotion = p.clone();
                plan.stages[index].action = Action::Unverified {
                    promotion,
                    reason,
                    code,
                };
            }
        }
        plan
    }
}
