//! What a reconcile leaves behind besides tags: a promotion record for every tag it wrote (see
//! [`crate::record`]), and drift: a tag retagd wrote that now names another digest, because
//! someone pushed over it by hand. What is deployed from that tag is then no longer what was
//! approved, so a drifted stage promotes nothing onward, and with `promote.heal` the tag is put
//! back.
//!
//! # Cost
//!
//! A record is a few requests after the promotion's own (the empty config HEAD, the record's
//! upload, the artifact PUT, and the `sha256-<hex>` index GET and PUT where the registry has no
//! referrers API). A record that cannot be written never blocks or undoes its promotion: it
//! stays queued in memory (at most [`MAX_PENDING`] per pipeline) and is tried again at the
//! pipeline's next reconcile. Drift of a stage's current tag costs nothing: the round reads its
//! digest anyway. Other tags retagd wrote that are still listed are HEADed at most once per
//! [`SWEEP_EVERY`], at most [`SWEEP_TAGS`] of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

// Tokio's clock, so tests on paused time can reach the next sweep.
use tokio::time::Instant;

use super::plan::{self, Observed, PipelinePlan, Promotion, StagePlan};
use super::{Applied, Engine};
use crate::config::Pipeline;
use crate::record::{self, Record, Subject};
use crate::reference::Digest;

/// Records waiting to be written per pipeline; the oldest is dropped (and logged) beyond this.
pub const MAX_PENDING: usize = 100;
/// How often the tags retagd wrote that are not a stage's current one are checked for drift.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Tags HEADed per sweep and pipeline, newest writes first.
pub const SWEEP_TAGS: usize = 32;

/// One record written, or not, in a reconcile.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The stage promoted into.
    pub stage: String,
    /// The tag written.
    pub tag: String,
    /// The promoted digest (the record's subject).
    pub digest: Digest,
    /// The record artifact's digest, or why it could not be written (tried again next time).
    pub result: Result<Digest, String>,
}

/// A tag retagd wrote that names another digest now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The stage.
    pub stage: String,
    /// The tag.
    pub tag: String,
    /// What retagd wrote.
    pub expected: Digest,
    /// What the tag names now.
    pub found: Digest,
    /// With `promote.heal`: `Ok` when the tag was put back, else why not.
    pub healed: Option<Result<(), String>>,
}

impl Drift {
    /// Still drifted after this reconcile (not healed).
    pub fn open(&self) -> bool {
        !matches!(self.healed, Some(Ok(())))
    }
}

/// A record not written yet.
#[derive(Debug, Clone)]
struct Pending {
    registry: String,
    repository: String,
    subject: Subject,
    record: Record,
}

/// Records waiting per pipeline, and each pipeline's last sweep: when, and the drift it found
/// (reported again every round until the next sweep, or until the tag moves back or goes).
#[derive(Debug, Default)]
pub(super) struct Records {
    pending: Mutex<HashMap<String, Vec<Pending>>>,
    /// Repositories (registry, repository) where a record was written: the empty config is
    /// there, so the next record skips it.
    configs: Mutex<std::collections::HashSet<(String, String)>>,
    swept: Mutex<HashMap<String, (Instant, Vec<Drift>)>>,
}

impl Engine {
    /// The drift of `plan`'s stages (current tags, and a sweep of other written tags when one is
    /// due), healed where the stage says so. Under the pipeline's target locks.
    pub(super) async fn drift(
        &self,
        pipeline: &Pipeline,
        plan: &PipelinePlan,
        observed: &Observed,
    ) -> Vec<Drift> {
        let mut found = Vec::new();
        {
            let state = self.state();
            for s in &plan.stages {
                if let Some(c) = &s.current {
                    if let Some(expected) = state.written(&pipeline.name, &s.stage, &c.tag) {
                        if expected != c.digest {
                            found.push(drift(s, &c.tag, expected, c.digest.clone()));
                        }
                    }
                }
            }
        }
        found.extend(self.sweep(pipeline, plan, observed).await);
        for d in &mut found {
            let heal = pipeline
                .stages
                .iter()
                .find(|s| s.name == d.stage)
                .and_then(|s| s.promote.as_ref())
                .is_some_and(|p| p.heal);
            if heal {
                if let Some(s) = plan.stages.iter().find(|s| s.stage == d.stage) {
                    d.healed = Some(self.heal(pipeline, s, d).await);
                }
            }
            log_drift(&pipeline.name, d);
        }
        found
    }

    /// The drift of the other tags retagd wrote (still listed, no stage's current): HEADed when
    /// a sweep is due, else as the last sweep found it, for the tags still as they were. A round
    /// between sweeps looks only at what the last one found.
    async fn sweep(
        &self,
        pipeline: &Pipeline,
        plan: &PipelinePlan,
        observed: &Observed,
    ) -> Vec<Drift> {
        let still = |s: &StagePlan, tag: &str, expected: &Digest| {
            let current = s.current.as_ref().is_some_and(|c| c.tag == tag);
            let listed = observed
                .tags
                .get(&plan::repo_key_of(&s.registry, &s.repository))
                .is_some_and(|tags| tags.iter().any(|t| t == tag));
            !current
                && listed
                && self.state().written(&pipeline.name, &s.stage, tag).as_ref() == Some(expected)
        };
        let last = {
            let swept = self.records.swept.lock().unwrap_or_else(|e| e.into_inner());
            swept
                .get(&pipeline.name)
                .filter(|(at, _)| at.elapsed() < SWEEP_EVERY)
                .map(|(_, drift)| drift.clone())
        };
        if let Some(last) = last {
            return last
                .into_iter()
                .filter(|d| {
                    plan.stages
                        .iter()
                        .find(|s| s.stage == d.stage)
                        .is_some_and(|s| still(s, &d.tag, &d.expected))
                })
                .collect();
        }
        // Stage by stage, each stage's most recently written first. Most stages have none:
        // nothing is built for them (a set of a stage's tags would cost more than the sweep).
        let mut others: Vec<(&StagePlan, String, Digest)> = Vec::new();
        {
            let state = self.state();
            for s in &plan.stages {
                let written = state.written_tags(&pipeline.name, &s.stage);
                if written.is_empty() {
                    continue;
                }
                let listed = observed
                    .tags
                    .get(&plan::repo_key_of(&s.registry, &s.repository));
                for (tag, d) in written {
                    let current = s.current.as_ref().is_some_and(|c| c.tag == tag);
                    if !current && listed.is_some_and(|tags| tags.contains(&tag)) {
                        others.push((s, tag, d));
                    }
                }
            }
        }
        let mut found = Vec::new();
        for (s, tag, expected) in others.into_iter().take(SWEEP_TAGS) {
            match self.backend().head(&s.registry, &s.repository, &tag).await {
                Ok(Some(now)) if now != expected => found.push(drift(s, &tag, expected, now)),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(tag = %tag, error = %super::outcome::chain(&e), "drift sweep: HEAD failed");
                }
            }
        }
        self.records
            .swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pipeline.name.clone(), (Instant::now(), found.clone()));
        found
    }

    /// Puts `d.expected` back under `d.tag`, by digest: from the stage's own repository (a
    /// registry keeps an untagged manifest until garbage collection), else from the repository
    /// of the stage it is promoted from. Queues its record.
    async fn heal(&self, pipeline: &Pipeline, s: &StagePlan, d: &Drift) -> Result<(), String> {
        let own = (s.stage.clone(), s.registry.clone(), s.repository.clone());
        let source = pipeline
            .stages
            .iter()
            .find(|c| c.name == s.stage)
            .and_then(|c| c.promote.as_ref())
            .and_then(|p| pipeline.stages.get(p.from))
            .map(|f| (f.name.clone(), f.registry.clone(), f.repository.clone()));
        let mut last = String::new();
        let mut healed = None;
        for (from_stage, from_registry, from_repository) in std::iter::once(own).chain(source) {
            let p = Promotion {
                from_stage,
                from_registry,
                from_repository,
                from_tag: d.tag.clone(),
                digest: d.expected.clone(),
                to_tag: d.tag.clone(),
                overwrite: true,
            };
            match self
                .backend()
                .copy(&p, s, crate::registry::Known::default())
                .await
            {
                Ok(report) => {
                    healed = Some((p, report));
                    break;
                }
                Err(e) => last = super::outcome::chain(&e),
            }
        }
        let Some((p, report)) = healed else {
            return Err(last);
        };
        self.state().wrote(
            &pipeline.name,
            &s.stage,
            &d.tag,
            &d.expected,
            SystemTime::now(),
        );
        if pipeline.records {
            let reason = format!("heal: {} named {}; put back {}", d.tag, d.found, d.expected);
            let applied = Applied {
                stage: s.stage.clone(),
                promotion: p,
                result: Ok(report),
                duration: Duration::ZERO,
                forced: false,
                approved_by: None,
                reason: Some(reason),
            };
            self.queue_records(pipeline, std::slice::from_ref(&applied));
        }
        Ok(())
    }

    /// Queues a record for every promotion in `applied` that wrote its tag.
    pub(super) fn queue_records(&self, pipeline: &Pipeline, applied: &[Applied]) {
        // Most reconciles write nothing: no lock, no entry for them.
        if !applied.iter().any(Applied::wrote) {
            return;
        }
        let now = SystemTime::now();
        let backend = self.backend();
        let mut all = self
            .records
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let queue = all.entry(pipeline.name.clone()).or_default();
        for a in applied {
            let Ok(report) = &a.result else { continue };
            let Some(subject) = report.subject.clone().filter(|_| !report.up_to_date) else {
                continue;
            };
            let Some(stage) = pipeline.stages.iter().find(|s| s.name == a.stage) else {
                continue;
            };
            let p = &a.promotion;
            let record = Record {
                pipeline: pipeline.name.clone(),
                stage: a.stage.clone(),
                from: record::From {
                    stage: p.from_stage.clone(),
                    registry: backend.host(&p.from_registry),
                    repository: p.from_repository.clone(),
                    tag: p.from_tag.clone(),
                },
                to: record::To {
                    registry: backend.host(&stage.registry),
                    repository: stage.repository.clone(),
                    tag: p.to_tag.clone(),
                },
                digest: p.digest.to_string(),
                time: Record::time_of(now),
                approval: if a.approved_by.is_some() {
                    "manual"
                } else {
                    "auto"
                }
                .to_string(),
                approved_by: a.approved_by.clone(),
                reason: a.reason.clone(),
                forced: a.forced,
                min_age: Record::seconds(stage.promote.as_ref().and_then(|p| p.min_age)),
                retagd_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            queue.push(Pending {
                registry: stage.registry.clone(),
                repository: stage.repository.clone(),
                subject,
                record,
            });
        }
        if queue.len() > MAX_PENDING {
            let dropped = queue.len() - MAX_PENDING;
            tracing::error!(
                pipeline = %pipeline.name,
                dropped,
                "promotion records could not be written for too long; the oldest are dropped"
            );
            queue.drain(..dropped);
        }
    }

    /// Writes the pipeline's queued records, oldest first; what fails stays queued.
    pub(super) async fn write_records(&self, pipeline: &str) -> Vec<Recorded> {
        let queued = self
            .records
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pipeline)
            .unwrap_or_default();
        let backend = self.backend();
        let mut out = Vec::with_capacity(queued.len());
        let mut left = Vec::new();
        for p in queued {
            let artifact = p.record.artifact(&p.subject);
            let repo = (p.registry.clone(), p.repository.clone());
            let config_present = self
                .records
                .configs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&repo);
            let job = super::backend::RecordJob {
                registry: &p.registry,
                repository: &p.repository,
                subject: &p.subject.digest,
                artifact: &artifact,
                time: &p.record.time,
                config_present,
            };
            let result = backend
                .attach(&job)
                .await
                .map_err(|e| super::outcome::chain(&e));
            {
                // A failure may be the config gone (deleted by hand): write it again next time.
                let mut configs = self
                    .records
                    .configs
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if result.is_ok() {
                    configs.insert(repo);
                } else {
                    configs.remove(&repo);
                }
            }
            match &result {
                Ok(d) => tracing::info!(
                    pipeline = %pipeline,
                    stage = %p.record.stage,
                    tag = %p.record.to.tag,
                    record = %d,
                    "promotion recorded"
                ),
                Err(e) => {
                    tracing::warn!(
                        pipeline = %pipeline,
                        stage = %p.record.stage,
                        tag = %p.record.to.tag,
                        error = %e,
                        "promotion record not written; trying again at the next reconcile"
                    );
                    left.push(p.clone());
                }
            }
            out.push(Recorded {
                stage: p.record.stage.clone(),
                tag: p.record.to.tag.clone(),
                digest: p.subject.digest.clone(),
                result,
            });
        }
        if !left.is_empty() {
            let mut all = self
                .records
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let queue = all.entry(pipeline.to_string()).or_default();
            left.append(queue);
            *queue = left;
        }
        out
    }

    /// Records of `pipeline` still waiting to be written.
    pub fn unrecorded(&self, pipeline: &str) -> usize {
        self.records
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(pipeline)
            .map_or(0, Vec::len)
    }
}

fn drift(s: &StagePlan, tag: &str, expected: Digest, found: Digest) -> Drift {
    Drift {
        stage: s.stage.clone(),
        tag: tag.to_string(),
        expected,
        found,
        healed: None,
    }
}

fn log_drift(pipeline: &str, d: &Drift) {
    match &d.healed {
        Some(Ok(())) => tracing::warn!(
            pipeline = %pipeline, stage = %d.stage, tag = %d.tag,
            expected = %d.expected, found = %d.found,
            "drift healed: {} was moved outside retagd; put back", d.tag
        ),
        Some(Err(e)) => tracing::error!(
            pipeline = %pipeline, stage = %d.stage, tag = %d.tag,
            expected = %d.expected, found = %d.found, error = %e,
            "drift: {} was moved outside retagd, and healing it failed", d.tag
        ),
        None => tracing::warn!(
            pipeline = %pipeline, stage = %d.stage, tag = %d.tag,
            expected = %d.expected, found = %d.found,
            "drift: {} was moved outside retagd; nothing is promoted out of {} until it is resolved",
            d.tag, d.stage
        ),
    }
}
