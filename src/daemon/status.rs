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
use crate::engine::{self, Action, Applied, PipelinePlan, Promotion, StagePlan};
use crate::notify::Event;

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
    pub last_promotion: Option<(Promotion, SystemTime)>,
    /// Why the last promotion into this stage failed; cleared by a success.
    pub last_error: Option<String>,
}

impl StageStatus {
    /// The promotion waiting for approval, if any.
    pub fn pending(&self) -> Option<&Promotion> {
        match self.plan.as_ref().map(|p| &p.action) {
            Some(Action::Pending(p)) => Some(p),
            _ => None,
        }
    }
}

/// What was last announced per stage, so an unchanged situation is not announced again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Announced {
    pending: Option<(String, String)>,
    conflict: Option<(String, String)>,
    failure: Option<(String, String, String)>,
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
            })
            .collect(),
        last_reconcile: None,
        last_success: None,
        last_error: None,
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

    /// Records one reconcile's outcome and returns the events it is the first to show.
    pub fn record(
        &self,
        pipeline: &Pipeline,
        outcome: &Result<(PipelinePlan, Vec<Applied>), engine::Error>,
        at: SystemTime,
    ) -> Vec<Event> {
        let mut all = self.pipelines.write().unwrap_or_else(|e| e.into_inner());
        let entry = all.entry(pipeline.name.clone()).or_insert_with(|| Entry {
            status: blank(pipeline),
            announced: BTreeMap::new(),
        });
        entry.status.last_reconcile = Some(at);
        let (plan, applied) = match outcome {
            Err(e) => {
                entry.status.last_error = Some(e.chain());
                return Vec::new();
            }
            Ok(done) => done,
        };
        entry.status.last_error = None;
        if applied.iter().all(|a| a.result.is_ok()) {
            entry.status.last_success = Some(at);
        }
        let mut events = Vec::new();
        for st in &plan.stages {
            let Some(stage) = entry.status.stages.iter_mut().find(|s| s.name == st.stage) else {
                continue;
            };
            stage.plan = Some(st.clone());
            let was = entry.announced.entry(st.stage.clone()).or_default();
            let mut now = Announced::default();
            let event = |kind, p: &Promotion| Event {
                kind,
                pipeline: pipeline.name.clone(),
                stage: st.stage.clone(),
                registry: st.registry.clone(),
                repository: st.repository.clone(),
                from_tag: p.from_tag.clone(),
                to_tag: p.to_tag.clone(),
                digest: p.digest.as_str().to_string(),
                existing_digest: None,
                error: None,
                time: at,
            };
            match &st.action {
                Action::Pending(p) => {
                    now.pending = Some((p.to_tag.clone(), p.digest.as_str().to_string()));
                    if was.pending != now.pending {
                        events.push(event(EventKind::Pending, p));
                    }
                }
                Action::Conflict {
                    promotion,
                    existing,
                } => {
                    now.conflict = Some((
                        promotion.to_tag.clone(),
                        promotion.digest.as_str().to_string(),
                    ));
                    if was.conflict != now.conflict {
                        events.push(Event {
                            existing_digest: Some(existing.as_str().to_string()),
                            ..event(EventKind::Conflict, promotion)
                        });
                    }
                }
                _ => {}
            }
            now.failure = was.failure.clone();
            if let Some(a) = applied.iter().find(|a| a.stage == st.stage) {
                match &a.result {
                    Ok(_) => {
                        stage.last_promotion = Some((a.promotion.clone(), at));
                        stage.last_error = None;
                        now.failure = None;
                        events.push(event(EventKind::Success, &a.promotion));
                    }
                    Err(error) => {
                        stage.last_error = Some(error.clone());
                        let key = (
                            a.promotion.to_tag.clone(),
                            a.promotion.digest.as_str().to_string(),
                            error.clone(),
                        );
                        if was.failure.as_ref() != Some(&key) {
                            events.push(Event {
                                error: Some(error.clone()),
                                ..event(EventKind::Failure, &a.promotion)
                            });
                        }
                        now.failure = Some(key);
                    }
                }
            }
            *was = now;
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
