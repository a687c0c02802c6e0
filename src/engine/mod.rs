//! The promotion engine: observe a pipeline's repositories, plan with [`plan::plan`], apply the
//! plan with the registry client.
//!
//! # Expected flow
//!
//! One reconcile of a pipeline lists each of its repositories once, resolves the digests the
//! planner asks for (HEADs; one per stage in a steady state), plans, records first-seen times,
//! then copies the promotions in stage order, by digest. A promotion whose source stage failed
//! to receive its own promotion in this pass is skipped.
//!
//! # Guarantees
//!
//! - Idempotent: a reconcile right after another lists tags and HEADs current tags, and writes
//!   nothing; no manifest is fetched.
//! - The digest copied is the digest selected: the copy names it (`repo@sha256:...`), the
//!   source GET is verified against it and the PUT's answer must confirm it.
//! - One pipeline's failure is its own: the caller reconciles pipelines independently.

pub mod describe;
pub mod plan;
pub mod state;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{stream, StreamExt as _};

use crate::config::Pipeline;
use crate::reference::{Digest, Reference};
use crate::registry::{self, Registries};
pub use plan::{Action, Intent, Observed, PipelinePlan, Planned, Promotion, StagePlan};
pub use state::State;

/// Planning rounds beyond the number of stages before giving up: a stage can need a round of
/// its own after the one before it settles, and each round only adds digests.
const EXTRA_ROUNDS: usize = 3;
/// HEADs in flight per pipeline while resolving digests (the registry's own limit still holds).
const RESOLVE_WIDTH: usize = 8;
/// Pipelines reconciling at once per registry by default (`retagd run --parallel`); see
/// [`Engine::with_parallel`]. Twice the default `max_concurrency`, so the registry's request
/// slots stay busy while some pipelines plan.
pub const DEFAULT_PARALLEL: usize = 16;
/// A tag the listing showed but a HEAD did not find is HEADed again this many times, after
/// [`UNREADABLE_DELAY`], doubling. The CNCF registry (2.8) creates a pushed tag's directory,
/// which the listing shows, a moment before it writes the link a HEAD reads, and it sends its
/// push webhook before either: a reconcile woken by that webhook would otherwise find the new
/// tag "disappeared" and promote only at the next look (0.5 s later).
const UNREADABLE_RETRIES: u32 = 3;
/// First wait before looking again at a listed tag that a HEAD did not find (then 20, 40 ms).
const UNREADABLE_DELAY: Duration = Duration::from_millis(10);

/// Why a pipeline could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry named by a stage has no client (cannot happen with a validated config).
    #[error("registry {0} is not configured")]
    UnknownRegistry(String),
    /// Listing a repository failed.
    #[error("cannot list tags of {registry}/{repository}")]
    List {
        /// Registry name.
        registry: String,
        /// Repository.
        repository: String,
        /// The cause.
        #[source]
        source: Box<registry::Error>,
    },
    /// Resolving a tag's digest failed.
    #[error("cannot resolve {registry}/{repository}:{tag}")]
    Resolve {
        /// Registry name.
        registry: String,
        /// Repository.
        repository: String,
        /// Tag.
        tag: String,
        /// The cause.
        #[source]
        source: Box<registry::Error>,
    },
    /// The planner kept asking for digests (the registry changes under us).
    #[error("the plan did not settle after {0} rounds of digest lookups")]
    Unsettled(usize),
}

impl Error {
    /// The error and its causes on one line, as `{:#}` prints an `anyhow` error.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// One promotion applied (or refused) by [`Engine::apply`].
#[derive(Debug)]
pub struct Applied {
    /// The stage promoted into.
    pub stage: String,
    /// What was promoted.
    pub promotion: Promotion,
    /// The copy's report, or why it failed.
    pub result: Result<registry::Report, String>,
    /// How long it took.
    pub duration: Duration,
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

/// What an approval did to the stage it named; shared by `retagd promote` and the HTTP API.
#[derive(Debug)]
pub enum Approved {
    /// Copied, or found copied already (`up_to_date`: an earlier run wrote it).
    Promoted {
        /// What was promoted.
        promotion: Promotion,
        /// Whether the target already had it.
        up_to_date: bool,
    },
    /// The copy failed.
    Failed {
        /// What was tried.
        promotion: Promotion,
        /// Why it failed.
        error: String,
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

impl Approved {
    /// The outcome for stage `index` of a reconcile made with [`Intent::approve`].
    pub fn of(plan: &PipelinePlan, applied: &[Applied], index: usize) -> Approved {
        let Some(stage) = plan.stages.get(index) else {
            return Approved::NotPromoted(Action::Invalid {
                reason: format!("the plan has no stage {index}"),
            });
        };
        if let Some(a) = applied.iter().find(|a| a.stage == stage.stage) {
            return match &a.result {
                Ok(report) => Approved::Promoted {
                    promotion: a.promotion.clone(),
                    up_to_date: report.up_to_date,
                },
                Err(e) => Approved::Failed {
                    promotion: a.promotion.clone(),
                    error: e.clone(),
                },
            };
        }
        match &stage.action {
            Action::UpToDate { tag } => Approved::UpToDate { tag: tag.clone() },
            Action::Conflict {
                promotion,
                existing,
            } => Approved::Conflict {
                promotion: promotion.clone(),
                existing: existing.clone(),
            },
            other => Approved::NotPromoted(other.clone()),
        }
    }
}

/// Observes, plans and applies; shared by `plan`, `reconcile`, `promote` and `run`.
pub struct Engine {
    registries: std::sync::RwLock<Arc<Registries>>,
    state: Mutex<State>,
    /// Digests of tags that are not a stage's current tag, from earlier reconciles. Deciding a
    /// promotion needs the digest of every tag of the target stage; re-reading them on every
    /// pass while a promotion waits for approval would cost one HEAD per tag per interval.
    /// Current tags are always read fresh; an entry goes when its tag leaves the listing.
    known: Mutex<HashMap<(plan::RepoKey, String), Digest>>,
    /// One reconcile at a time per target repository, so two pipelines promoting into one
    /// repository cannot both compute and PUT the same next `{n}`.
    locks: Mutex<HashMap<plan::RepoKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Pipelines reconciling or planning at once, per registry they read or write (see
    /// [`Engine::with_parallel`]), created as registries are first used.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    parallel: usize,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over these clients and state.
    pub fn new(registries: Arc<Registries>, state: State) -> Engine {
        Engine {
            registries: std::sync::RwLock::new(registries),
            state: Mutex::new(state),
            known: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            parallel: DEFAULT_PARALLEL,
        }
    }

    /// Bounds the pipelines that reconcile or plan at once to `parallel` per registry. A
    /// pipeline holds its tag lists, parsed versions and digests from its listing to its last
    /// copy; without a bound, a fleet woken at once (start-up, a reload) lists every repository
    /// before any pipeline gets its HEADs through the registry's `max_concurrency`, and the
    /// daemon holds every list at the same time (at 1,000 pipelines of 1,000 tags, most of its
    /// 138 MiB). Per registry, so pipelines stuck on an unresponsive registry (up to five 60 s
    /// read timeouts) hold up only that registry's pipelines.
    #[must_use]
    pub fn with_parallel(mut self, parallel: usize) -> Engine {
        self.parallel = parallel.max(1);
        self
    }

    /// Swaps in new clients (after a configuration reload); reconciles in flight finish with
    /// the old ones, and the state stays.
    pub fn set_registries(&self, registries: Arc<Registries>) {
        *self.registries.write().unwrap_or_else(|e| e.into_inner()) = registries;
    }

    fn registries(&self) -> Arc<Registries> {
        self.registries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn client(&self, name: &str) -> Result<Arc<registry::Client>, Error> {
        self.registries()
            .get(name)
            .ok_or_else(|| Error::UnknownRegistry(name.to_string()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Only plain data behind it; a panic elsewhere cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the pipeline's repositories and plans, resolving digests as the planner asks.
    /// With `record`, the stages' current digests are remembered for `min_age`.
    pub async fn plan(
        &self,
        pipeline: &Pipeline,
        intent: &Intent,
        record: bool,
    ) -> Result<PipelinePlan, Error> {
        let _slots = self.slots(pipeline).await;
        self.plan_holding_slots(pipeline, intent, record).await
    }

    /// Waits for a slot of every registry `pipeline` uses, in name order, so two pipelines
    /// that share registries cannot each hold one the other waits for.
    async fn slots(&self, pipeline: &Pipeline) -> Vec<tokio::sync::OwnedSemaphorePermit> {
        let names: BTreeSet<&str> = pipeline
            .stages
            .iter()
            .map(|s| s.registry.as_str())
            .collect();
        let semaphores: Vec<_> = {
            let mut all = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            names
                .into_iter()
                .map(|name| {
                    all.entry(name.to_string())
                        .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.parallel)))
                        .clone()
                })
                .collect()
        };
        let mut held = Vec::with_capacity(semaphores.len());
        for semaphore in semaphores {
            // Never closed, so a permit always comes.
            if let Ok(permit) = semaphore.acquire_owned().await {
                held.push(permit);
            }
        }
        held
    }

    async fn plan_holding_slots(
        &self,
        pipeline: &Pipeline,
        intent: &Intent,
        record: bool,
    ) -> Result<PipelinePlan, Error> {
        let mut observed = self.list(pipeline).await?;
        let now = SystemTime::now();
        let rounds = pipeline.stages.len() + EXTRA_ROUNDS;
        for round in 0..rounds {
            let planned = {
                let state = self.state();
                let first_seen = |stage: usize, digest: &Digest| {
                    state.first_seen(&pipeline.name, &pipeline.stages[stage].name, digest)
                };
                plan::plan(pipeline, &observed, &first_seen, now, intent)
            };
            match planned {
                Planned::Complete(p) => {
                    if record {
                        let mut state = self.state();
                        for s in &p.stages {
                            if let Some(c) = &s.current {
                                state.observe(&pipeline.name, &s.stage, &c.digest, now);
                            }
                        }
                    }
                    return Ok(p);
                }
                // The first round asks for the current tags: always fresh.
                Planned::Needs(needs) => self.resolve(&mut observed, needs, round > 0).await?,
            }
        }
        Err(Error::Unsettled(rounds))
    }

    async fn list(&self, pipeline: &Pipeline) -> Result<Observed, Error> {
        let repos: BTreeSet<plan::RepoKey> = pipeline.stages.iter().map(plan::repo_key).collect();
        let listed: Vec<Result<(plan::RepoKey, Vec<String>), Error>> = stream::iter(repos)
            .map(|key| self.list_one(key))
            .buffer_unordered(RESOLVE_WIDTH)
            .collect()
            .await;
        let mut observed = Observed::default();
        for r in listed {
            let (key, tags) = r?;
            observed.tags.insert(key, tags);
        }
        // Forget digests of tags that are gone (deleted, or moved away and back).
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|(key, tag), _| {
            observed
                .tags
                .get(key)
                .is_none_or(|tags| tags.iter().any(|t| t == tag))
        });
        Ok(observed)
    }

    async fn list_one(&self, key: plan::RepoKey) -> Result<(plan::RepoKey, Vec<String>), Error> {
        let client = self.client(&key.registry)?;
        match client.list_tags(&key.repository).await {
            Ok(list) => Ok((key, list.tags)),
            // A repository nobody pushed to yet has no tags.
            Err(e) if e.is_not_found() => Ok((key, Vec::new())),
            Err(source) => Err(Error::List {
                registry: key.registry,
                repository: key.repository,
                source: Box::new(source),
            }),
        }
    }

    #[allow(clippy::type_complexity)]
    async fn resolve_one(
        &self,
        key: plan::RepoKey,
        tag: String,
    ) -> Result<((plan::RepoKey, String), Option<Digest>), Error> {
        let client = self.client(&key.registry)?;
        // Every tag the planner asks about was in the listing (see `UNREADABLE_RETRIES`).
        let (mut delay, mut retries) = (UNREADABLE_DELAY, 0);
        loop {
            match client.head_manifest(&key.repository, &tag).await {
                Ok(None) if retries < UNREADABLE_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Ok(head) => return Ok(((key, tag), head.map(|h| h.digest))),
                Err(source) => {
                    return Err(Error::Resolve {
                        registry: key.registry,
                        repository: key.repository,
                        tag,
                        source: Box::new(source),
                    })
                }
            }
        }
    }

    async fn resolve(
        &self,
        observed: &mut Observed,
        mut needs: BTreeSet<(plan::RepoKey, String)>,
        cached: bool,
    ) -> Result<(), Error> {
        if cached {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            needs.retain(|need| match known.get(need) {
                Some(d) => {
                    observed.digests.insert(need.clone(), Some(d.clone()));
                    false
                }
                None => true,
            });
        }
        let resolved: Vec<Result<_, Error>> = stream::iter(needs)
            .map(|(key, tag)| self.resolve_one(key, tag))
            .buffer_unordered(RESOLVE_WIDTH)
            .collect()
            .await;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for r in resolved {
            let (k, d) = r?;
            if let (true, Some(d)) = (cached, &d) {
                known.insert(k.clone(), d.clone());
            }
            observed.digests.insert(k, d);
        }
        Ok(())
    }

    /// Copies the plan's promotions in stage order and logs each as one event. A promotion out
    /// of a stage whose own promotion failed in this pass is skipped.
    /// Once `stopping` says so, no further copy starts (the one in flight finishes).
    pub async fn apply(
        &self,
        pipeline: &Pipeline,
        plan: &PipelinePlan,
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Vec<Applied> {
        let mut failed: HashSet<&str> = HashSet::new();
        let mut applied = Vec::new();
        for stage in &plan.stages {
            let Action::Promote(p) = &stage.action else {
                continue;
            };
            if stopping() {
                tracing::info!(pipeline = %pipeline.name, stage = %stage.stage, "stopping: promotion left for the next start");
                break;
            }
            // The tag is about to change: whatever digest we knew for it is stale.
            self.known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(
                    plan::repo_key_of(&stage.registry, &stage.repository),
                    p.to_tag.clone(),
                ));
            let started = Instant::now();
            let result = if failed.contains(p.from_stage.as_str()) {
                Err(format!(
                    "skipped: the promotion into {} failed in this pass",
                    p.from_stage
                ))
            } else {
                self.copy(stage, p)
                    .await
                    .map_err(|e| format!("{:#}", anyhow::Error::new(e)))
            };
            let duration = started.elapsed();
            match &result {
                Ok(report) => {
                    tracing::info!(
                        pipeline = %pipeline.name,
                        stage = %stage.stage,
                        from_tag = %p.from_tag,
                        to_tag = %p.to_tag,
                        digest = %p.digest,
                        registry = %stage.registry,
                        repository = %stage.repository,
                        duration_ms = duration.as_millis() as u64,
                        result = if report.up_to_date { "up_to_date" } else { "success" },
                        "promoted {} -> {}",
                        p.from_tag,
                        p.to_tag
                    );
                    let now = SystemTime::now();
                    self.state()
                        .observe(&pipeline.name, &stage.stage, &p.digest, now);
                }
                Err(error) => {
                    failed.insert(stage.stage.as_str());
                    tracing::error!(
                        pipeline = %pipeline.name,
                        stage = %stage.stage,
                        from_tag = %p.from_tag,
                        to_tag = %p.to_tag,
                        digest = %p.digest,
                        registry = %stage.registry,
                        repository = %stage.repository,
                        duration_ms = duration.as_millis() as u64,
                        result = "failure",
                        error = %error,
                        "promotion {} -> {} failed",
                        p.from_tag,
                        p.to_tag
                    );
                }
            }
            applied.push(Applied {
                stage: stage.stage.clone(),
                promotion: p.clone(),
                result,
                duration,
            });
        }
        applied
    }

    async fn copy(
        &self,
        stage: &StagePlan,
        p: &Promotion,
    ) -> Result<registry::Report, registry::Error> {
        let unknown =
            |name: &str| registry::Error::Refused(format!("registry {name} is not configured"));
        let registries = self.registries();
        let src = registries
            .get(&p.from_registry)
            .ok_or_else(|| unknown(&p.from_registry))?;
        let dst = registries
            .get(&stage.registry)
            .ok_or_else(|| unknown(&stage.registry))?;
        let src_ref = Reference {
            registry: src.host().to_string(),
            repository: p.from_repository.clone(),
            tag: Some(p.from_tag.clone()),
            digest: Some(p.digest.clone()),
        };
        let dst_ref = Reference {
            registry: dst.host().to_string(),
            repository: stage.repository.clone(),
            tag: Some(p.to_tag.clone()),
            digest: None,
        };
        registry::copy(&src, &src_ref, &dst, &dst_ref, p.overwrite).await
    }

    /// One reconcile: plan (recording first-seen times), apply, save the state, log a summary.
    pub async fn reconcile(
        &self,
        pipeline: &Pipeline,
        intent: &Intent,
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Result<(PipelinePlan, Vec<Applied>), Error> {
        let started = Instant::now();
        let targets: BTreeSet<plan::RepoKey> = pipeline
            .stages
            .iter()
            .filter(|s| s.promote.is_some())
            .map(plan::repo_key)
            .collect();
        let locks: Vec<_> = {
            let mut all = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            targets
                .into_iter()
                .map(|k| all.entry(k).or_default().clone())
                .collect()
        };
        // Slots before locks, and each in key order, so two pipelines sharing registries or
        // repositories cannot deadlock.
        let _slots = self.slots(pipeline).await;
        let mut _held = Vec::with_capacity(locks.len());
        for lock in locks {
            _held.push(lock.lock_owned().await);
        }
        let plan = self.plan_holding_slots(pipeline, intent, true).await?;
        let applied = self.apply(pipeline, &plan, stopping).await;
        self.save_state();
        let count = |f: fn(&Action) -> bool| plan.stages.iter().filter(|s| f(&s.action)).count();
        tracing::info!(
            pipeline = %pipeline.name,
            promoted = applied.iter().filter(|a| a.result.is_ok()).count(),
            failed = applied.iter().filter(|a| a.result.is_err()).count(),
            pending = count(|a| matches!(a, Action::Pending(_))),
            waiting = count(|a| matches!(a, Action::Waiting { .. })),
            conflicts = count(|a| matches!(a, Action::Conflict { .. })),
            duration_ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        for s in &plan.stages {
            if let Action::Conflict {
                promotion,
                existing,
            } = &s.action
            {
                tracing::warn!(
                    pipeline = %pipeline.name,
                    stage = %s.stage,
                    to_tag = %promotion.to_tag,
                    digest = %promotion.digest,
                    existing = %existing,
                    "conflict: {} exists with another digest; not overwriting",
                    promotion.to_tag
                );
            }
        }
        Ok((plan, applied))
    }

    /// Writes the state file if anything changed; a failure is logged, not fatal (it only
    /// restarts `min_age` clocks after a restart).
    pub fn save_state(&self) {
        if let Err(e) = self.state().save() {
            tracing::warn!(error = %e, "cannot save state");
        }
    }
}
