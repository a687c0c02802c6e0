//! What the daemon last saw of each pipeline: the source of `/api/v1/pipelines`, `/readyz`, and
//! of the events that are sent once per change rather than once per reconcile.
//!
//! A manual stage's pending promotion, or a conflict, is planned again on every reconcile until
//! someone acts; a failing promotion is retried with backoff. Notifying each time would be noise,
//! so [`Status::record`] returns an event only when what is pending, conflicting or failing
//! changes.

use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::SystemTime;

use crate::config::{EventKind, Pipeline};
use crate::engine::{Action, Applied, Drift, Outcome, Promotion, StagePlan};
use crate::notify::Event;
use crate::reference::Digest;

/// One pipeline as last seen.
#[derive(Debug, Clone)]
pub struct PipelineStatus {
    /// Stages in order.
    pub stages: Vec<StageStatus>,
    /// When the last reconcile ended.
    pub last_reconcile: Option<SystemTime>,
    /// When the last reconcile without any error ended.
    pub last_success: Option<SystemTime>,
    /// Why the last reconcile could not plan, if it could not.
    pub last_error: Option<String>,
    /// Promotion records not written yet (retried every reconcile).
    pub unrecorded: usize,
}

/// One stage as last seen.
#[derive(Debug, Clone)]
pub struct StageStatus {
    /// Stage name.
    pub name: String,
    /// Registry name.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// The stage in the last plan; `None` before the first.
    pub plan: Option<StagePlan>,
    /// The last promotion into this stage that succeeded, and when.
    pub last_promotion: Option<LastPromotion>,
    /// Why the last promotion into this stage failed; cleared by a success.
    pub last_error: Option<String>,
    /// The referrers of the digests watched for this stage (`2 of 3 copied`), and what failed
    /// in the last round; `None` for a stage that carries none.
    pub referrers: Option<ReferrersStatus>,
    /// Tags of the stage that retagd wrote and that name another digest now, as of the last
    /// reconcile (a healed one is listed once, in the reconcile that healed it).
    pub drift: Vec<Drift>,
    /// The last promotion record written into the stage (the artifact's digest).
    pub last_record: Option<Digest>,
    /// Why the last record could not be written; cleared when one is.
    pub record_error: Option<String>,
}

/// The referrers carried into a stage, as of the last reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferrersStatus {
    /// `2 of 3 copied`: in the target, of those found in the source.
    pub summary: String,
    /// What failed in the last round (retried next round).
    pub failures: Vec<String>,
    /// Referrers left out, and why.
    pub skipped: Vec<String>,
}

impl ReferrersStatus {
    /// The stage's reports of one reconcile taken together; `None` when there are none.
    fn of(outcome: &Outcome, stage: &str) -> Option<ReferrersStatus> {
        let mut total = crate::registry::referrers::Report::default();
        let mut any = false;
        for c in outcome.referrers.iter().filter(|c| c.stage == stage) {
            any = true;
            total.found += c.report.found;
            total.in_target += c.report.in_target;
            total.failures.extend(c.report.failures.iter().cloned());
            total.skipped.extend(c.report.skipped.iter().cloned());
        }
        any.then(|| ReferrersStatus {
            summary: total.summary(),
            failures: total.failures,
            skipped: total.skipped,
        })
    }
}

/// The last promotion into a stage that succeeded.
#[derive(Debug, Clone)]
pub struct LastPromotion {
    /// What was promoted.
    pub promotion: Promotion,
    /// When.
    pub at: SystemTime,
    /// Who approved it (`None` for an automatic promotion).
    pub approved_by: Option<String>,
    /// The approver's reason.
    pub reason: Option<String>,
    /// It skipped the stage's `min_age`.
    pub forced: bool,
}

/// A candidate as announcements key it: target tag and digest.
fn candidate(p: &Promotion) -> (String, String) {
    (p.to_tag.clone(), p.digest.as_str().to_string())
}

impl StageStatus {
    /// Takes on the stage's plan and its promotion's result (if one was tried); returns the
    /// events that differ from what `was` last announced, and updates `was`.
    fn record(
        &mut self,
        st: &StagePlan,
        applied: Option<&Applied>,
        was: &mut Announced,
        at: SystemTime,
        event: impl Fn(EventKind, &Promotion) -> Event,
    ) -> Vec<Event> {
        self.plan = Some(st.clone());
        let mut events = Vec::new();
        let mut now = Announced::default();
        match &st.action {
            Action::Pending(p) => {
                now.pending = Some(candidate(p));
                if was.pending != now.pending {
                    events.push(event(EventKind::Pending, p));
                }
            }
            Action::Conflict {
                promotion,
                existing,
            } => {
                now.conflict = Some(candidate(promotion));
                if was.conflict != now.conflict {
                    events.push(Event {
                        existing_digest: Some(existing.as_str().to_string()),
                        ..event(EventKind::Conflict, promotion)
                    });
                }
            }
            Action::Unverified {
                promotion, reason, ..
            } => {
                now.unverified = Some(candidate(promotion));
                if was.unverified != now.unverified {
                    events.push(Event {
                        error: Some(format!("unverified: {reason}")),
                        ..event(EventKind::Failure, promotion)
                    });
                }
            }
            _ => {}
        }
        // A failure stays current while the stage still means to promote that candidate.
        let wanted = match &st.action {
            Action::Promote(p)
            | Action::Pending(p)
            | Action::Waiting { promotion: p, .. }
            | Action::Frozen { promotion: p, .. } => Some(candidate(p)),
            _ => None,
        };
        now.failure = was.failure.take().filter(|k| Some(k) == wanted.as_ref());
        if now.failure.is_none() {
            self.last_error = None;
        }
        match applied.map(|a| (a, &a.result)) {
            Some((a, Ok(_))) => {
                self.last_promotion = Some(LastPromotion {
                    promotion: a.promotion.clone(),
                    at,
                    approved_by: a.approved_by.clone(),
                    reason: a.reason.clone(),
                    forced: a.forced,
                });
                self.last_error = None;
                now.failure = None;
                events.push(Event {
                    approved_by: a.approved_by.clone(),
                    reason: a.reason.clone(),
                    forced: a.forced,
                    ..event(EventKind::Success, &a.promotion)
                });
            }
            Some((a, Err(error))) => {
                let error = error.chain();
                self.last_error = Some(error.clone());
                let key = candidate(&a.promotion);
                if now.failure.as_ref() != Some(&key) {
                    events.push(Event {
                        error: Some(error),
                        ..event(EventKind::Failure, &a.promotion)
                    });
                }
                now.failure = Some(key);
            }
            None => {}
        }
        *was = now;
        events
    }

    /// The promotion waiting for approval, if any.
    pub fn pending(&self) -> Option<&Promotion> {
        match self.plan.as_ref().map(|p| &p.action) {
            Some(Action::Pending(p)) => Some(p),
            _ => None,
        }
    }
}

/// The `drift` event of one drifted tag.
fn drift_event(pipeline: &str, st: &StagePlan, d: &Drift, at: SystemTime) -> Event {
    Event {
        kind: EventKind::Drift,
        pipeline: pipeline.to_string(),
        stage: st.stage.clone(),
        registry: st.registry.clone(),
        repository: st.repository.clone(),
        from_tag: d.tag.clone(),
        to_tag: d.tag.clone(),
        digest: d.expected.to_string(),
        existing_digest: Some(d.found.to_string()),
        error: d.healed.as_ref().and_then(|h| h.as_ref().err().cloned()),
        approved_by: None,
        reason: matches!(d.healed, Some(Ok(()))).then(|| "put back".to_string()),
        forced: false,
        freeze_id: None,
        until: None,
        time: at,
    }
}

/// What was last announced per stage, so an unchanged situation is not announced again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Announced {
    pending: Option<(String, String)>,
    conflict: Option<(String, String)>,
    /// The target tag and digest of the failing promotion: a failure is announced once per
    /// candidate, not per retry (error texts differ between attempts).
    failure: Option<(String, String)>,
    /// The candidate refused for want of a valid signature, announced once (as a failure).
    unverified: Option<(String, String)>,
    /// Drifted tags and the digests they were found at, announced once each.
    drift: std::collections::BTreeSet<(String, String)>,
}

#[derive(Debug)]
struct Entry {
    status: PipelineStatus,
    announced: BTreeMap<String, Announced>,
}

/// Every pipeline's status, shared by the pipeline tasks (writers) and the HTTP server.
#[derive(Debug, Default)]
pub struct Status {
    pipelines: RwLock<BTreeMap<String, Entry>>,
}

fn blank(pipeline: &Pipeline) -> PipelineStatus {
    PipelineStatus {
        stages: pipeline
            .stages
            .iter()
            .map(|s| StageStatus {
                name: s.name.clone(),
                registry: s.registry.clone(),
                repository: s.repository.clone(),
                plan: None,
                last_promotion: None,
                last_error: None,
                referrers: None,
                drift: Vec::new(),
                last_record: None,
                record_error: None,
            })
            .collect(),
        last_reconcile: None,
        last_success: None,
        last_error: None,
        unrecorded: 0,
    }
}

impl Status {
    /// Takes on a (new) configuration: pipelines that are gone are forgotten, new or changed
    /// ones start blank (not reconciled yet), unchanged names keep what was seen.
    pub fn configure(&self, pipelines: &[Pipeline]) {
        let mut all = self.pipelines.write().unwrap_or_else(|e| e.into_inner());
        all.retain(|name, _| pipelines.iter().any(|p| &p.name == name));
        for p in pipelines {
            let fresh = blank(p);
            let same_shape = all.get(&p.name).is_some_and(|e| {
                e.status.stages.len() == fresh.stages.len()
                    && e.status.stages.iter().zip(&fresh.stages).all(|(a, b)| {
                        (&a.name, &a.registry, &a.repository)
                            == (&b.name, &b.registry, &b.repository)
                    })
            });
            if !same_shape {
                all.insert(
                    p.name.clone(),
                    Entry {
                        status: fresh,
                        announced: BTreeMap::new(),
                    },
                );
            }
        }
    }

    /// Records one reconcile's outcome and returns the events it is the first to show. A
    /// pipeline no longer configured (an approval that finished after a reload) is not brought
    /// back.
    pub fn record(&self, outcome: &Outcome) -> Vec<Event> {
        let mut all = self.pipelines.write().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = all.get_mut(&outcome.pipeline) else {
            return Vec::new();
        };
        let at = outcome.at;
        entry.status.last_reconcile = Some(at);
        entry.status.unrecorded = outcome.unrecorded;
        for r in &outcome.records {
            if let Some(stage) = entry.status.stages.iter_mut().find(|s| s.name == r.stage) {
                match &r.result {
                    Ok(d) => {
                        stage.last_record = Some(d.clone());
                        stage.record_error = None;
                    }
                    Err(e) => stage.record_error = Some(e.clone()),
                }
            }
        }
        let plan = match &outcome.plan {
            Err(e) => {
                entry.status.last_error = Some(e.chain());
                return Vec::new();
            }
            Ok(plan) => plan,
        };
        entry.status.last_error = None;
        if outcome.succeeded() {
            entry.status.last_success = Some(at);
        }
        let mut events = Vec::new();
        for st in &plan.stages {
            let Some(stage) = entry.status.stages.iter_mut().find(|s| s.name == st.stage) else {
                continue;
            };
            let was = entry.announced.entry(st.stage.clone()).or_default();
            let applied = outcome.applied.iter().find(|a| a.stage == st.stage);
            let event = |kind, p: &Promotion| Event {
                kind,
                pipeline: outcome.pipeline.clone(),
                stage: st.stage.clone(),
                registry: st.registry.clone(),
                repository: st.repository.clone(),
                from_tag: p.from_tag.clone(),
                to_tag: p.to_tag.clone(),
                digest: p.digest.as_str().to_string(),
                existing_digest: None,
                error: None,
                approved_by: None,
                reason: None,
                forced: false,
                freeze_id: None,
                until: None,
                time: at,
            };
            let drift: Vec<Drift> = outcome
                .drift
                .iter()
                .filter(|d| d.stage == st.stage)
                .cloned()
                .collect();
            let announced = std::mem::take(&mut was.drift);
            let mut kept = std::collections::BTreeSet::new();
            for d in &drift {
                let key = (d.tag.clone(), d.found.to_string());
                if !announced.contains(&key) {
                    events.push(drift_event(&outcome.pipeline, st, d, at));
                }
                if d.open() {
                    kept.insert(key);
                }
            }
            events.extend(stage.record(st, applied, was, at, event));
            was.drift = kept;
            stage.drift = drift;
            stage.referrers = ReferrersStatus::of(outcome, &st.stage);
        }
        events
    }

    /// The pipelines not reconciled yet (`/readyz` is 503 while any is).
    pub fn not_ready(&self) -> Vec<String> {
        let all = self.pipelines.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|(_, e)| e.status.last_reconcile.is_none())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// One pipeline's status.
    pub fn get(&self, name: &str) -> Option<PipelineStatus> {
        let all = self.pipelines.read().unwrap_or_else(|e| e.into_inner());
        all.get(name).map(|e| e.status.clone())
    }

    /// Every pipeline's status, by name.
    pub fn all(&self) -> Vec<(String, PipelineStatus)> {
        let all = self.pipelines.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .map(|(name, e)| (name.clone(), e.status.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use crate::config::{self, Format};
    use crate::engine::plan::Current;
    use crate::engine::{PipelinePlan, PromotionError};
    use crate::reference::Digest;
    use crate::registry;

    fn pipeline() -> Pipeline {
        let text = include_str!("../config/retagd.toml");
        let loaded = config::parse(text, Format::Toml, "example").unwrap();
        loaded.config.pipelines[0].clone()
    }

    fn promotion(to_tag: &str, seed: &str) -> Promotion {
        Promotion {
            from_stage: "staging".into(),
            from_registry: "local".into(),
            from_repository: "myorg/api-gateway".into(),
            from_tag: "v1.2.0-rc.1".into(),
            digest: Digest::of(seed.as_bytes()),
            to_tag: to_tag.into(),
            overwrite: false,
        }
    }

    /// A plan whose production stage has `action`, and a failed copy of it when `failed`.
    fn outcome(action: Action, failed: Option<&str>) -> Outcome {
        let stage = |name: &str, action: Action| StagePlan {
            stage: name.into(),
            registry: "local".into(),
            repository: "myorg/api-gateway".into(),
            current: Some(Current {
                since: SystemTime::UNIX_EPOCH,
                tag: "v1".into(),
                digest: Digest::of(b"x"),
            }),
            no_current: None,
            frozen: None,
            action,
        };
        let applied = match (&action, failed) {
            (Action::Promote(p), Some(error)) => vec![Applied {
                stage: "production".into(),
                promotion: p.clone(),
                result: Err(PromotionError::Copy(registry::Error::Protocol {
                    registry: "local".into(),
                    what: error.into(),
                })),
                duration: Duration::ZERO,
                forced: false,
                approved_by: None,
                reason: None,
            }],
            _ => Vec::new(),
        };
        let plan = PipelinePlan {
            pipeline: "api-gateway".into(),
            stages: vec![
                stage("dev", Action::Source),
                stage("staging", Action::UpToDate { tag: "v1".into() }),
                stage("production", action),
            ],
        };
        Outcome {
            pipeline: plan.pipeline.clone(),
            plan: Ok(plan),
            applied,
            duration: Duration::ZERO,
            at: SystemTime::now(),
            referrers: Vec::new(),
            records: Vec::new(),
            unrecorded: 0,
            drift: Vec::new(),
            after: None,
        }
    }

    fn kinds(events: &[Event]) -> Vec<&'static str> {
        events.iter().map(|e| e.kind.as_str()).collect()
    }

    #[test]
    fn pending_conflict_and_failure_are_announced_once_per_candidate() {
        let p = pipeline();
        let status = Status::default();
        status.configure(std::slice::from_ref(&p));
        let record =
            |action: Action, failed: Option<&str>| kinds(&status.record(&outcome(action, failed)));
        let a = promotion("v1.2.0", "a");
        assert_eq!(record(Action::Pending(a.clone()), None), ["pending"]);
        assert!(record(Action::Pending(a.clone()), None).is_empty());
        // Retries of one failing candidate, with error texts that differ, announce once.
        assert_eq!(
            record(Action::Promote(a.clone()), Some("upload 1 failed")),
            ["failure"]
        );
        assert!(record(Action::Promote(a.clone()), Some("upload 2 failed")).is_empty());
        assert_eq!(
            status.get("api-gateway").unwrap().stages[2]
                .last_error
                .as_deref(),
            Some("registry local: upload 2 failed")
        );
        // Another candidate fails: announced; once nothing is promoted, the error is gone.
        let b = promotion("v1.2.1", "b");
        assert_eq!(
            record(Action::Promote(b), Some("upload failed")),
            ["failure"]
        );
        assert!(record(
            Action::UpToDate {
                tag: "v1.2.1".into()
            },
            None
        )
        .is_empty());
        assert_eq!(
            status.get("api-gateway").unwrap().stages[2].last_error,
            None
        );
        let conflict = || Action::Conflict {
            promotion: a.clone(),
            existing: Digest::of(b"other"),
        };
        assert_eq!(record(conflict(), None), ["conflict"]);
        assert!(record(conflict(), None).is_empty());
    }

    #[test]
    fn drift_is_announced_once_per_digest_found_and_again_when_it_comes_back() {
        let p = pipeline();
        let status = Status::default();
        status.configure(std::slice::from_ref(&p));
        let drifted = |found: &[u8], healed: Option<Result<(), String>>| {
            let mut o = outcome(Action::UpToDate { tag: "v1".into() }, None);
            o.drift = vec![Drift {
                stage: "production".into(),
                tag: "v1".into(),
                expected: Digest::of(b"x"),
                found: Digest::of(found),
                healed,
            }];
            o
        };
        let events = status.record(&drifted(b"forged", None));
        assert_eq!(kinds(&events), ["drift"]);
        assert_eq!(
            events[0].existing_digest,
            Some(Digest::of(b"forged").to_string())
        );
        assert!(status.record(&drifted(b"forged", None)).is_empty());
        assert_eq!(
            status.get("api-gateway").unwrap().stages[2].drift[0].found,
            Digest::of(b"forged")
        );
        // Pushed over again with other bytes: a new announcement.
        assert_eq!(kinds(&status.record(&drifted(b"again", None))), ["drift"]);
        // Healed in this reconcile: said once (as put back), then gone from the status.
        let healed = status.record(&drifted(b"again", Some(Ok(()))));
        assert!(healed.is_empty(), "announced already: {healed:?}");
        assert!(status
            .record(&outcome(Action::UpToDate { tag: "v1".into() }, None))
            .is_empty());
        assert!(status.get("api-gateway").unwrap().stages[2]
            .drift
            .is_empty());
        // The same forgery later is news again.
        assert_eq!(kinds(&status.record(&drifted(b"forged", None))), ["drift"]);
    }

    #[test]
    fn a_pipeline_removed_by_a_reload_is_not_brought_back() {
        let status = Status::default();
        status.configure(&[]);
        let events = status.record(&outcome(Action::Source, None));
        assert!(events.is_empty());
        assert!(status.get("api-gateway").is_none());
    }
}
