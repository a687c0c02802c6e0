//! The promotion engine: observe a pipeline's repositories, plan with [`plan::plan`], apply the
//! plan through a [`Backend`] (the registry client, or an in-memory one in unit tests), and
//! return what happened as one [`Outcome`].
//!
//! # Expected flow
//!
//! One reconcile of a pipeline lists each of its repositories once, resolves the digests the
//! planner asks for (HEADs; one per stage in a steady state), plans, records first-seen times,
//! then copies the promotions in stage order, by digest. A promotion whose source stage failed
//! to receive its own promotion in this pass is skipped. A pipeline that cannot be planned is an
//! [`Outcome`] too, with the typed error in `plan`.
//!
//! # Guarantees
//!
//! - Idempotent: a reconcile right after another lists tags and HEADs current tags, and writes
//!   nothing; no manifest is fetched.
//! - The digest copied is the digest selected: the copy names it (`repo@sha256:...`), the
//!   source GET is verified against it and the PUT's answer must confirm it.
//! - One pipeline's failure is its own: the caller reconciles pipelines independently.

pub mod approval;
pub mod backend;
pub mod describe;
pub mod freeze;
pub mod history;
#[cfg(test)]
pub(crate) mod memory;
pub mod outcome;
pub mod plan;
mod records;
mod referrers;
pub mod state;
#[cfg(test)]
pub(crate) mod tests;
mod verify;
pub mod writers;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{stream, StreamExt as _};

use crate::config::Pipeline;
use crate::reference::Digest;
use crate::registry;
pub use approval::{approval_target, ApproveError, Approved, Asked, TargetError};
pub use backend::Backend;
pub use freeze::{FreezeError, Freezes};
pub use outcome::{Applied, Next, Outcome, PromotionError};
pub use plan::{
    Action, Approver, Intent, Observed, PipelinePlan, Planned, Promotion, StagePlan, Wait,
};
pub use records::{Drift, Recorded};
pub use referrers::Carried;
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
/// How long a listing is trusted to say that a target tag does not exist, so its copy skips the
/// destination HEAD: a reconcile plans within milliseconds of listing; one whose earlier copies
/// took longer (a large image across registries) HEADs again.
const LISTING_TRUSTED_FOR: Duration = Duration::from_secs(10);

/// Why a pipeline could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing a repository failed.
    #[error("cannot list tags of {repo}")]
    List {
        /// The repository.
        repo: plan::RepoKey,
        /// The cause.
        #[source]
        source: Box<registry::Error>,
    },
    /// Resolving a tag's digest failed.
    #[error("cannot resolve {repo}:{tag}")]
    Resolve {
        /// The repository.
        repo: plan::RepoKey,
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
        outcome::chain(self)
    }

    /// The bounded `reason` label of `retagd_reconcile_errors_total`: the registry's reason, or
    /// `unsettled`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::List { source, .. } | Error::Resolve { source, .. } => source.reason().as_str(),
            Error::Unsettled(_) => "unsettled",
        }
    }
}

/// Observes, plans and applies; shared by `plan`, `reconcile`, `promote` and `run`.
pub struct Engine {
    backend: std::sync::RwLock<Arc<dyn Backend>>,
    state: Mutex<State>,
    /// Freezes from the configuration and the API, consulted by every plan.
    freezes: Mutex<Freezes>,
    /// Digests of tags that are not a stage's current tag, from earlier reconciles. Deciding a
    /// promotion needs the digest of every tag of the target stage; re-reading them on every
    /// pass while a promotion waits for approval would cost one HEAD per tag per interval.
    /// Current tags are always read fresh; an entry goes when its tag leaves the listing.
    known: Mutex<HashMap<(plan::RepoKey, String), Digest>>,
    /// The tags read as a stage's current in each repository, while they stay listed: a current
    /// tag not among them is new, and worth a GET when an automatic stage promotes from it.
    currents: Mutex<HashMap<plan::RepoKey, HashSet<String>>>,
    /// One reconcile at a time per target repository, so two pipelines promoting into one
    /// repository cannot both compute and PUT the same next `{n}`.
    locks: Mutex<HashMap<plan::RepoKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Pipelines reconciling or planning at once, per registry they read or write (see
    /// [`Engine::with_parallel`]), created as registries are first used.
    slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    parallel: usize,
    /// Promoted digests whose referrers are watched, with what their targets have.
    referrers: referrers::Watched,
    /// Promotion records not written yet, and drift sweeps.
    records: records::Records,
    /// One state-file write at a time (see [`Engine::save_state_in_turn`]).
    saving: tokio::sync::Mutex<()>,
    /// `state_dir`: where retagd's writers on one machine (the daemon, `retagd promote`,
    /// `retagd reconcile`) take a lock per target repository.
    writers: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over these registries ([`registry::Registries`], or an in-memory backend in
    /// tests) and state.
    pub fn new(backend: Arc<dyn Backend>, state: State) -> Engine {
        Engine {
            backend: std::sync::RwLock::new(backend),
            state: Mutex::new(state),
            freezes: Mutex::new(Freezes::in_memory()),
            known: Mutex::new(HashMap::new()),
            currents: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            parallel: DEFAULT_PARALLEL,
            referrers: referrers::Watched::default(),
            records: records::Records::default(),
            saving: tokio::sync::Mutex::new(()),
            writers: None,
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

    /// Makes retagd's writers sharing `state_dir` exclusive of each other per target
    /// repository, so a listing is authoritative among them (see [`writers`]).
    #[must_use]
    pub fn with_writers_lock(mut self, state_dir: &std::path::Path) -> Engine {
        self.writers = Some(state_dir.to_path_buf());
        self
    }

    /// Plans with these freezes (loaded from `state_dir`, with the configuration's calendar).
    #[must_use]
    pub fn with_freezes(self, freezes: Freezes) -> Engine {
        *self.freezes() = freezes;
        self
    }

    /// The freezes every plan consults; the API sets and lifts them here.
    pub fn freezes(&self) -> std::sync::MutexGuard<'_, Freezes> {
        // Plain data, changed only after its file is written.
        self.freezes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swaps in new clients (after a configuration reload); reconciles in flight finish with
    /// the old ones, and the state stays.
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        *self.backend.write().unwrap_or_else(|e| e.into_inner()) = backend;
    }

    fn backend(&self) -> Arc<dyn Backend> {
        self.backend
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
        self.plan_holding_slots(pipeline, intent, record)
            .await
            .map(|(plan, _)| plan)
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
    ) -> Result<(PipelinePlan, Observed), Error> {
        let mut observed = self.list(pipeline).await?;
        let now = SystemTime::now();
        let freezes = self.freezes().current(now);
        let rounds = pipeline.stages.len() + EXTRA_ROUNDS;
        for round in 0..rounds {
            let planned = {
                let state = self.state();
                let first_seen = |stage: usize, digest: &Digest| {
                    state.first_seen(&pipeline.name, &pipeline.stages[stage].name, digest)
                };
                plan::plan(pipeline, &observed, &first_seen, now, intent, &freezes)
            };
            match planned {
                Planned::Complete(p) => {
                    let p = self.verify(pipeline, p, &observed).await;
                    if record {
                        let mut state = self.state();
                        for s in &p.stages {
                            if let Some(c) = &s.current {
                                state.observe(&pipeline.name, &s.stage, &c.digest, now);
                            }
                        }
                    }
                    return Ok((p, observed));
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
        observed.listed_at = Some(Instant::now());
        // Forget digests of tags that are gone (deleted, or moved away and back).
        let listed = |key: &plan::RepoKey, tag: &String| {
            observed
                .tags
                .get(key)
                .is_none_or(|tags| tags.iter().any(|t| t == tag))
        };
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|(key, tag), _| listed(key, tag));
        let mut currents = self.currents.lock().unwrap_or_else(|e| e.into_inner());
        for (key, seen) in currents.iter_mut() {
            seen.retain(|tag| listed(key, tag));
        }
        let settled = observed
            .tags
            .keys()
            .filter_map(|key| currents.get(key).map(|seen| (key, seen)))
            .flat_map(|(key, seen)| seen.iter().map(move |tag| (key.clone(), tag.clone())))
            .collect();
        drop(currents);
        observed.settled = settled;
        Ok(observed)
    }

    async fn list_one(&self, key: plan::RepoKey) -> Result<(plan::RepoKey, Vec<String>), Error> {
        match self
            .backend()
            .list_tags(&key.registry, &key.repository)
            .await
        {
            Ok(tags) => Ok((key, tags)),
            // A repository nobody pushed to yet has no tags.
            Err(e) if e.is_not_found() => Ok((key, Vec::new())),
            Err(source) => Err(Error::List {
                repo: key,
                source: Box::new(source),
            }),
        }
    }

    /// The digest `tag` names now (`None`: absent), keyed as the planner asked; with `fetch`,
    /// by a GET that also returns the manifest a copy will need.
    async fn resolve_one(
        &self,
        key: plan::RepoKey,
        tag: String,
        fetch: bool,
    ) -> Result<Resolved, Error> {
        let backend = self.backend();
        // Every tag the planner asks about was in the listing (see `UNREADABLE_RETRIES`).
        let (mut delay, mut retries) = (UNREADABLE_DELAY, 0);
        loop {
            let head = || async {
                backend
                    .head(&key.registry, &key.repository, &tag)
                    .await
                    .map(|d| d.map(|d| (d, None)))
            };
            let answer = if fetch {
                match backend.fetch(&key.registry, &key.repository, &tag).await {
                    Ok(m) => Ok(m.map(|m| (m.digest.clone(), Some(m)))),
                    // A manifest the copy could not use either (too large, an unknown kind):
                    // its digest still decides the plan, which reports what the copy meets.
                    Err(e) => {
                        tracing::debug!(tag = %tag, error = %outcome::chain(&e), "reading the manifest failed; HEAD instead");
                        head().await
                    }
                }
            } else {
                head().await
            };
            match answer {
                Ok(None) if retries < UNREADABLE_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Ok(found) => return Ok(((key, tag), found)),
                Err(source) => {
                    return Err(Error::Resolve {
                        repo: key,
                        tag,
                        source: Box::new(source),
                    })
                }
            }
        }
    }

    /// Resolves what the planner needs. The first round (`cached` false) asks for the stages'
    /// current tags, always read fresh; a new one that an automatic stage promotes from is read
    /// with a GET (see [`plan::Needs`]): new by the listing (no tag of its version in the
    /// target yet), or by memory (this repository's current tags were read before, and not
    /// this one). Later rounds take digests of other tags from the cache when it has them.
    async fn resolve(
        &self,
        observed: &mut Observed,
        needs: plan::Needs,
        cached: bool,
    ) -> Result<(), Error> {
        let mut tags = needs.tags;
        if cached {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            tags.retain(|need| match known.get(need) {
                Some(d) => {
                    observed.digests.insert(need.clone(), Some(d.clone()));
                    false
                }
                None => true,
            });
        }
        let asked: Vec<(plan::RepoKey, String, bool)> = {
            let currents = self.currents.lock().unwrap_or_else(|e| e.into_inner());
            tags.into_iter()
                .map(|(key, tag)| {
                    let need = (key, tag);
                    let new_by_memory = currents
                        .get(&need.0)
                        .is_some_and(|seen| !seen.is_empty() && !seen.contains(&need.1));
                    let fetch = needs.new_versions.contains(&need)
                        || (needs.sources.contains(&need) && new_by_memory);
                    (need.0, need.1, fetch)
                })
                .collect()
        };
        let resolved: Vec<Result<_, Error>> = stream::iter(asked)
            .map(|(key, tag, fetch)| self.resolve_one(key, tag, fetch))
            .buffer_unordered(RESOLVE_WIDTH)
            .collect()
            .await;
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut currents = self.currents.lock().unwrap_or_else(|e| e.into_inner());
        for r in resolved {
            let (k, found) = r?;
            let digest = found.map(|(d, manifest)| {
                if let Some(m) = manifest {
                    observed.manifests.insert(d.clone(), m);
                }
                d
            });
            match (cached, &digest) {
                (true, Some(d)) => {
                    known.insert(k.clone(), d.clone());
                }
                (false, _) => {
                    currents.entry(k.0.clone()).or_default().insert(k.1.clone());
                }
                _ => {}
            }
            observed.digests.insert(k, digest);
        }
        Ok(())
    }

    /// Copies the plan's promotions in stage order and logs each as one event. A promotion out
    /// of a stage whose own promotion failed in this pass is skipped.
    /// Once `stopping` says so, no further copy starts (the one in flight finishes). The
    /// promotion into the stage `intent` approves with `force` is marked forced.
    async fn apply(
        &self,
        pipeline: &Pipeline,
        (plan, observed): (&PipelinePlan, &Observed),
        intent: &Intent,
        (exclusive, drift): (bool, &[Drift]),
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Vec<Applied> {
        // Retagd's writers exclude each other (`exclusive`), so a tag absent from a listing
        // this recent is absent still, but for writers outside retagd (see the README).
        let fresh = exclusive
            && observed
                .listed_at
                .is_some_and(|at| at.elapsed() < LISTING_TRUSTED_FOR);
        let mut failed: HashSet<&str> = HashSet::new();
        let mut applied = Vec::new();
        for (index, stage) in plan.stages.iter().enumerate() {
            let Action::Promote(p) = &stage.action else {
                // A promotion out of a stage whose candidate was refused has nothing to copy.
                if matches!(stage.action, Action::Unverified { .. }) {
                    failed.insert(stage.stage.as_str());
                }
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
            // A stage healed in this pass was planned from the bytes it held before, as a
            // source and as a target: the next pass (at once, see `Outcome::next`) plans again.
            let healed = |name: &str| drift.iter().any(|d| !d.open() && d.stage == name);
            if healed(&p.from_stage) || healed(&stage.stage) {
                tracing::info!(pipeline = %pipeline.name, stage = %stage.stage, from_stage = %p.from_stage, "healed in this pass: planned again next pass");
                continue;
            }
            let started = Instant::now();
            let drifted = drift.iter().find(|d| d.open() && d.stage == p.from_stage);
            let result = if let Some(d) = drifted {
                Err(PromotionError::Drifted {
                    from_stage: d.stage.clone(),
                    tag: d.tag.clone(),
                })
            } else if failed.contains(p.from_stage.as_str()) {
                Err(PromotionError::Skipped {
                    from_stage: p.from_stage.clone(),
                })
            } else {
                let target = plan::repo_key_of(&stage.registry, &stage.repository);
                let known = crate::registry::Known {
                    source: observed.manifests.get(&p.digest),
                    destination_absent: fresh
                        && !p.overwrite
                        && observed
                            .tags
                            .get(&target)
                            .is_some_and(|tags| !tags.contains(&p.to_tag)),
                };
                self.backend()
                    .copy(p, stage, known)
                    .await
                    .map_err(PromotionError::Copy)
            };
            let approver = intent
                .approver
                .as_ref()
                .filter(|_| intent.approve == Some(index));
            let done = Applied {
                stage: stage.stage.clone(),
                promotion: p.clone(),
                result,
                duration: started.elapsed(),
                forced: intent.force && intent.approve == Some(index),
                approved_by: approver.map(|a| a.by.clone()),
                reason: approver.and_then(|a| a.reason.clone()),
            };
            log_applied(&pipeline.name, stage, &done);
            match &done.result {
                Ok(_) => {
                    let now = SystemTime::now();
                    let mut state = self.state();
                    state.observe(&pipeline.name, &stage.stage, &p.digest, now);
                    state.wrote(&pipeline.name, &stage.stage, &p.to_tag, &p.digest, now);
                }
                Err(_) => {
                    failed.insert(stage.stage.as_str());
                }
            }
            applied.push(done);
        }
        applied
    }

    /// One reconcile: plan (recording first-seen times), apply, save the state, log a summary.
    /// Never fails as a call: a pipeline that cannot be planned is an [`Outcome`] too.
    pub async fn reconcile(
        &self,
        pipeline: &Pipeline,
        intent: &Intent,
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Outcome {
        let started = Instant::now();
        let (mut applied, mut referrers, mut records, mut drift, mut after) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), None);
        let plan = {
            let held = self.lock_targets(pipeline).await;
            self.plan_holding_slots(pipeline, intent, true)
                .await
                .map(|(plan, observed)| (plan, observed, held))
        };
        let plan = match plan {
            Ok((plan, observed, held)) => {
                drift = self.drift(pipeline, &plan, &observed).await;
                let view = (&plan, &observed);
                let exclusive = (held.exclusive, &drift[..]);
                applied = self
                    .apply(pipeline, view, intent, exclusive, stopping)
                    .await;
                if pipeline.records {
                    self.queue_records(pipeline, &applied);
                }
                // Records before referrers, which take them on to later stages.
                if !stopping() {
                    records = self.write_records(&pipeline.name).await;
                    referrers = self
                        .carry_referrers(pipeline, &plan, &observed, &applied)
                        .await;
                }
                after = self.plan_after(pipeline, &plan, &observed, &applied);
                drop(held);
                Ok(plan)
            }
            Err(e) => Err(e),
        };
        self.save_state_in_turn().await;
        let outcome = Outcome {
            pipeline: pipeline.name.clone(),
            plan,
            applied,
            duration: started.elapsed(),
            at: SystemTime::now(),
            referrers,
            records,
            unrecorded: self.unrecorded(&pipeline.name),
            drift,
            after,
        };
        outcome.log();
        outcome
    }

    /// The plan as it stands after `applied`, when something was written: the planner again over
    /// what this reconcile observed plus the tags it wrote, without asking the registry (`None`
    /// when nothing was written, or the planner needs a digest nobody read).
    fn plan_after(
        &self,
        pipeline: &Pipeline,
        plan: &PipelinePlan,
        observed: &Observed,
        applied: &[Applied],
    ) -> Option<PipelinePlan> {
        if !applied.iter().any(Applied::wrote) {
            return None;
        }
        let mut seen = Observed {
            tags: observed.tags.clone(),
            digests: observed.digests.clone(),
            ..Observed::default()
        };
        for a in applied.iter().filter(|a| a.result.is_ok()) {
            let stage = plan.stages.iter().find(|s| s.stage == a.stage)?;
            let key = plan::repo_key_of(&stage.registry, &stage.repository);
            let tags = seen.tags.entry(key.clone()).or_default();
            if !tags.contains(&a.promotion.to_tag) {
                tags.push(a.promotion.to_tag.clone());
            }
            seen.digests.insert(
                (key, a.promotion.to_tag.clone()),
                Some(a.promotion.digest.clone()),
            );
        }
        let now = SystemTime::now();
        let freezes = self.freezes().current(now);
        let state = self.state();
        let first_seen = |stage: usize, digest: &Digest| {
            state.first_seen(&pipeline.name, &pipeline.stages[stage].name, digest)
        };
        match plan::plan(
            pipeline,
            &seen,
            &first_seen,
            now,
            &Intent::default(),
            &freezes,
        ) {
            Planned::Complete(p) => Some(p),
            Planned::Needs(_) => None,
        }
    }

    /// Takes the pipeline's registry slots, then the locks of the repositories it promotes into;
    /// both in name order, so two pipelines sharing registries or repositories cannot deadlock.
    async fn lock_targets(&self, pipeline: &Pipeline) -> Held {
        let targets: BTreeSet<plan::RepoKey> = pipeline
            .stages
            .iter()
            .filter(|s| s.promote.is_some())
            .map(plan::repo_key)
            .collect();
        let locks: Vec<_> = {
            let mut all = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            targets
                .iter()
                .map(|k| all.entry(k.clone()).or_default().clone())
                .collect()
        };
        let slots = self.slots(pipeline).await;
        let mut held = Vec::with_capacity(locks.len());
        for lock in locks {
            held.push(lock.lock_owned().await);
        }
        // Then the same repositories across processes, in the same order.
        let files = match &self.writers {
            Some(dir) => writers::lock(dir, &targets).await,
            None => None,
        };
        Held {
            _slots: slots,
            _locks: held,
            exclusive: files.is_some(),
            _files: files,
        }
    }

    /// The pipeline's promotions as its registries' records say (see [`history`]).
    pub async fn history(
        &self,
        pipeline: &Pipeline,
        stage: Option<&str>,
        limit: usize,
    ) -> history::History {
        history::read(self.backend().as_ref(), pipeline, stage, limit).await
    }

    /// Writes the state file if anything changed; a failure is logged, not fatal (it only
    /// restarts `min_age` clocks after a restart).
    pub fn save_state(&self) {
        if let Err(e) = self.state().save() {
            tracing::warn!(error = %e, "cannot save state");
        }
    }

    /// [`Engine::save_state`] after a reconcile, without blocking others: the file is written
    /// on a blocking thread, outside the state's lock (planning reads it), one save at a time.
    /// Reconciles that end while one is written share the next: a fleet that finishes together
    /// writes the file a few times, not once per pipeline.
    async fn save_state_in_turn(&self) {
        let _turn = self.saving.lock().await;
        let Some(snapshot) = self.state().snapshot() else {
            return;
        };
        let written = tokio::task::spawn_blocking(move || snapshot.write()).await;
        let failed = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(error = %failed, "cannot save state");
        self.state().mark_unsaved();
    }
}

/// A tag of a repository and the digest it names (`None`: absent), with the manifest when it
/// was read whole.
type Resolved = (
    (plan::RepoKey, String),
    Option<(Digest, Option<crate::registry::Manifest>)>,
);

/// The slots and repository locks one reconcile holds until it ends.
struct Held {
    _slots: Vec<tokio::sync::OwnedSemaphorePermit>,
    _locks: Vec<tokio::sync::OwnedMutexGuard<()>>,
    /// The target repositories' lock files in `state_dir`, when there is one.
    _files: Option<Vec<std::fs::File>>,
    /// No other retagd process on this machine writes the target repositories meanwhile.
    exclusive: bool,
}

/// One log event per promotion tried.
fn log_applied(pipeline: &str, stage: &StagePlan, a: &Applied) {
    let p = &a.promotion;
    let duration_ms = a.duration.as_millis() as u64;
    match &a.result {
        Ok(report) => tracing::info!(
            pipeline = %pipeline,
            stage = %stage.stage,
            from_tag = %p.from_tag,
            to_tag = %p.to_tag,
            digest = %p.digest,
            registry = %stage.registry,
            repository = %stage.repository,
            duration_ms,
            forced = a.forced,
            result = if report.up_to_date { "up_to_date" } else { "success" },
            "promoted {} -> {}",
            p.from_tag,
            p.to_tag
        ),
        Err(error) => tracing::error!(
            pipeline = %pipeline,
            stage = %stage.stage,
            from_tag = %p.from_tag,
            to_tag = %p.to_tag,
            digest = %p.digest,
            registry = %stage.registry,
            repository = %stage.repository,
            duration_ms,
            result = "failure",
            reason = error.reason(),
            error = %error.chain(),
            "promotion {} -> {} failed",
            p.from_tag,
            p.to_tag
        ),
    }
}
