//! The planner: what one reconcile of a pipeline should do, as a pure function of the registry
//! state observed so far, the first-seen times, the clock and an optional human request.
//!
//! # Expected flow
//!
//! The driver lists every repository of the pipeline, then calls [`plan`]. When the planner needs
//! a digest it has not been given, it answers [`Planned::Needs`] with the tags to HEAD; the driver
//! resolves them and calls again. In a steady state one round is enough and costs one HEAD per
//! stage (its current tag); a second round only happens when a promotion is likely.
//!
//! # Guarantees
//!
//! - Deterministic: tags are ranked by the stage policies, never by listing order.
//! - A candidate whose digest already carries a tag this stage's template could have made for it
//!   (same version, any `{n}`) is up to date: a restart after a copy, or a rollback in the source
//!   stage, never makes a second rc tag for one digest.
//! - An existing target tag with another digest is a conflict unless the stage allows
//!   `overwrite`; release tags do not move.
//! - Promotions decided in one pass chain: a dev -> rc promotion makes the new rc the candidate of
//!   the next stage in the same plan.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::calendar::{self, Freeze};
use crate::config::{self, Approval, Pipeline, Stage};
use crate::policy::Selected;
use crate::reference::{self, Digest};
use crate::template::{Template, Values};

/// A repository: registry name (a key of the configuration's registries) and repository path.
/// Ordered by registry, then repository, so a plan's [`Planned::Needs`] are in a stable order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RepoKey {
    /// The registry's name in the configuration.
    pub registry: String,
    /// The repository path in that registry.
    pub repository: String,
}

impl fmt::Display for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// What the registry showed so far.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// All tags of each repository.
    pub tags: BTreeMap<RepoKey, Vec<String>>,
    /// Digests resolved by HEAD; `None` when the tag turned out to be absent.
    pub digests: BTreeMap<(RepoKey, String), Option<Digest>>,
    /// Manifests read whole by digest, for the copies that follow (not used by the planner).
    pub manifests: BTreeMap<Digest, crate::registry::Manifest>,
    /// When the listing was taken (not used by the planner).
    pub listed_at: Option<std::time::Instant>,
    /// Tags the driver has read as a stage's current before: not new, so no hint is worked out
    /// for them (see [`Needs`]), which keeps a steady round as cheap as without hints.
    pub settled: std::collections::HashSet<(RepoKey, String)>,
}

/// What a human asked for (`retagd promote`, later the API).
#[derive(Debug, Clone, Default)]
pub struct Intent {
    /// Index of the stage whose promotion is approved now: a manual stage promotes once its
    /// candidate has soaked for `min_age`.
    pub approve: Option<usize>,
    /// With `approve`: promote this tag of the source stage's repository instead of the
    /// candidate.
    pub source_tag: Option<String>,
    /// With `approve`: promote before `min_age` has passed (recorded as forced).
    pub force: bool,
    /// With `approve`: the digest the approver saw; a candidate with another one is not
    /// promoted ([`Action::Moved`]).
    pub digest: Option<Digest>,
    /// With `approve`: who approved, and why, as the promotion's record and events keep it.
    pub approver: Option<Approver>,
}

/// Who approved a promotion, as its record, events and status name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approver {
    /// An approver's name from the configuration, or the local user of `retagd promote`.
    pub by: String,
    /// Why, in the approver's words.
    pub reason: Option<String>,
}

/// The answer of one planning round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// Every decision is made.
    Complete(PipelinePlan),
    /// These tags' digests are needed first.
    Needs(Needs),
}

/// The digests a planning round needs, with hints on how to read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Every tag whose digest is needed.
    pub tags: BTreeSet<(RepoKey, String)>,
    /// Of those, the current tags of stages that an automatic stage promotes from: when such a
    /// tag is new, a copy almost always follows, and a GET gives the digest and the bytes the
    /// copy needs in one request (a HEAD where no copy follows: on Docker Hub a GET is a pull).
    pub sources: BTreeSet<(RepoKey, String)>,
    /// Of `sources`, those whose version the automatic stage has no tag for yet: new by the
    /// listing alone, without any memory of earlier rounds.
    pub new_versions: BTreeSet<(RepoKey, String)>,
}

/// The plan of one pipeline, stage by stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelinePlan {
    /// Pipeline name.
    pub pipeline: String,
    /// One entry per stage, in order.
    pub stages: Vec<StagePlan>,
}

/// A stage's current tag, what was selected and its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The selected tag.
    pub tag: String,
    /// Its digest.
    pub digest: Digest,
    /// Since when the stage has held it (its first sighting; now for a new one).
    pub since: SystemTime,
}

/// One stage in a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Stage name.
    pub stage: String,
    /// Registry name.
    pub registry: String,
    /// Repository.
    pub repository: String,
    /// The tag the stage's policy selects now (before this plan's promotions), if any.
    pub current: Option<Current>,
    /// Why there is no current tag, when there is none.
    pub no_current: Option<String>,
    /// The freeze covering the stage now, whatever its action (a promoted stage only).
    pub frozen: Option<Box<Freeze>>,
    /// What to do.
    pub action: Action,
}

/// A promotion: copy `digest` (selected as `from_tag` in `from_stage`) to `to_tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The source stage.
    pub from_stage: String,
    /// The source stage's registry name.
    pub from_registry: String,
    /// The source stage's repository.
    pub from_repository: String,
    /// The source tag (informative: the copy is by digest).
    pub from_tag: String,
    /// The digest selected, resolved once.
    pub digest: Digest,
    /// The tag to create.
    pub to_tag: String,
    /// Whether `to_tag` exists with another digest and the stage allows moving it.
    pub overwrite: bool,
}

/// The decision for one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The stage is not promoted into (the first stage).
    Source,
    /// The candidate's digest already carries `tag` in this stage.
    UpToDate {
        /// The tag that carries it.
        tag: String,
    },
    /// Copy now.
    Promote(Promotion),
    /// Waits for a human (`approval = "manual"`).
    Pending(Promotion),
    /// Not yet: the candidate has not soaked for `min_age`, or the stage's promotion window is
    /// closed.
    Waiting {
        /// The promotion that will happen.
        promotion: Promotion,
        /// When it can happen.
        until: SystemTime,
        /// What it waits for.
        why: Wait,
    },
    /// A freeze holds promotions into the stage.
    Frozen {
        /// The promotion held.
        promotion: Promotion,
        /// The freeze (the one that ends last, when several cover the stage); boxed, as
        /// freezes are rare and every stage of every status would carry its size.
        freeze: Box<Freeze>,
    },
    /// An approval named a digest that is not the candidate's: the source stage moved since the
    /// approver looked, and nothing is promoted.
    Moved {
        /// The promotion the candidate would make now.
        promotion: Promotion,
        /// The digest the approval named.
        expected: Digest,
    },
    /// The target tag exists with another digest and `overwrite` is off.
    Conflict {
        /// The promotion refused.
        promotion: Promotion,
        /// The digest the target tag has.
        existing: Digest,
    },
    /// Nothing to promote: the source stage has no current tag.
    NoCandidate {
        /// Why.
        reason: String,
    },
    /// The promotion cannot be expressed (the template renders an invalid tag, the requested
    /// source tag does not exist).
    Invalid {
        /// Why.
        reason: String,
    },
    /// The stage requires a signature (`promote.verify`) and the candidate has no valid one:
    /// nothing is promoted; a later signature promotes it on the next round.
    Unverified {
        /// The promotion refused.
        promotion: Promotion,
        /// Why, in words.
        reason: String,
        /// Why, as the bounded `reason` label of `retagd_unverified_total`.
        code: &'static str,
    },
}

/// What a [`Action::Waiting`] stage waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The candidate's `min_age` in the source stage.
    Soak,
    /// The next opening of the stage's `promote.windows`.
    Window,
}

impl Wait {
    /// `min_age` or `window`, as plans, the API and metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Wait::Soak => "min_age",
            Wait::Window => "window",
        }
    }
}

/// A stage's current selection with what templates need.
#[derive(Debug, Clone)]
struct Chosen {
    tag: String,
    value: String,
    version: Option<semver::Version>,
    digest: Digest,
}

impl Chosen {
    fn from_selected(s: Selected<'_>, digest: Digest) -> Chosen {
        Chosen::from_parts(parts(s), digest)
    }

    fn from_parts((tag, value, version): Parts, digest: Digest) -> Chosen {
        Chosen {
            tag,
            value,
            version,
            digest,
        }
    }

    fn values(&self) -> Values<'_> {
        Values {
            tag: &self.tag,
            extract: &self.value,
            version: self.version.as_ref(),
        }
    }
}

/// A selection's owned parts (tag, ranked value, version), so it outlives the tag list.
type Parts = (String, String, Option<semver::Version>);

fn parts(s: Selected<'_>) -> Parts {
    (s.tag.to_string(), s.value, s.version)
}

/// The planner's one "not yet": a digest it needs is not in the snapshot, and has been added to
/// the round's [`Planned::Needs`]. `?` carries it up to [`plan`], which then returns the needs
/// instead of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NeedDigest;

/// What a stage holds now.
enum Held {
    /// The tag its policy selects, with its digest.
    Tag(Chosen),
    /// Nothing qualifies: why.
    Nothing(String),
}

/// What a promoted stage would copy.
enum Candidate {
    /// A tag of the source stage, with its digest.
    Chosen(Chosen),
    /// The source stage has no current tag: why.
    Absent(String),
    /// The source tag a human named cannot be promoted: why.
    Unusable(String),
}

/// Where a candidate stands in the stage it would be promoted into.
enum Target {
    /// Its digest already carries this tag there.
    Carries(String),
    /// The template renders no valid tag for it: why.
    Unrenderable(String),
    /// The tag to create does not exist yet.
    Free(String),
    /// The tag to create exists with another digest.
    Taken {
        /// The tag to create.
        to_tag: String,
        /// The digest it has now.
        existing: Digest,
    },
}

/// What one planning pass reads and never changes.
struct Context<'a> {
    pipeline: &'a Pipeline,
    /// When a digest was first observed as a stage's current (by stage index); unknown means now.
    first_seen: &'a dyn Fn(usize, &Digest) -> Option<SystemTime>,
    now: SystemTime,
    intent: &'a Intent,
    /// Freezes in force (the planner picks those covering each stage now).
    freezes: &'a [Freeze],
}

impl Context<'_> {
    /// The freeze covering `stage` now that ends last (an open-ended one last of all).
    fn freeze(&self, stage: &str) -> Option<&Freeze> {
        self.freezes
            .iter()
            .filter(|f| f.covers(&self.pipeline.name, stage, self.now))
            .max_by_key(|f| f.until.map_or((1, SystemTime::UNIX_EPOCH), |u| (0, u)))
    }
}

/// A promoted stage, as its decision sees it.
struct Step<'a> {
    stage: &'a Stage,
    rule: &'a config::Promotion,
    /// The stage promoted from.
    source: &'a Stage,
    key: RepoKey,
    current: Option<&'a Chosen>,
    /// A human approved this stage's promotion in this request.
    approved: bool,
    /// The freeze holding the stage, if one does.
    frozen: Option<&'a Freeze>,
}

impl Step<'_> {
    /// When the target stage can take `promotion`. Not while a freeze holds the stage; not
    /// before the candidate has been seen in the source stage for `min_age` (manual stages too:
    /// an approval does not skip the soak); not outside the stage's windows. A forced approval
    /// passes all three. Then at once when automatic or approved, else on approval.
    fn gate(&self, cx: &Context<'_>, promotion: Promotion) -> Action {
        if let (true, Some(expected)) = (self.approved, &cx.intent.digest) {
            if *expected != promotion.digest {
                return Action::Moved {
                    promotion,
                    expected: expected.clone(),
                };
            }
        }
        let forced = self.approved && cx.intent.force;
        if let (Some(freeze), false) = (self.frozen, forced) {
            return Action::Frozen {
                promotion,
                freeze: Box::new(freeze.clone()),
            };
        }
        let soaked = self.rule.min_age.map_or(cx.now, |min_age| {
            (cx.first_seen)(self.rule.from, &promotion.digest).unwrap_or(cx.now) + min_age
        });
        let ready = soaked.max(cx.now);
        // Windows are validated non-empty, so one opens within a week; `ready` if not.
        let open = calendar::next_open(&self.rule.windows, ready).unwrap_or(ready);
        if open > cx.now && !forced {
            let why = if open > ready {
                Wait::Window
            } else {
                Wait::Soak
            };
            return Action::Waiting {
                promotion,
                until: open,
                why,
            };
        }
        match self.rule.approval {
            _ if self.approved => Action::Promote(promotion),
            Approval::Manual => Action::Pending(promotion),
            Approval::Auto => Action::Promote(promotion),
        }
    }

    /// The promotion of `candidate` to `to_tag` out of the source stage.
    fn promotion(&self, candidate: &Chosen, to_tag: String, overwrite: bool) -> Promotion {
        Promotion {
            from_stage: self.source.name.clone(),
            from_registry: self.source.registry.clone(),
            from_repository: self.source.repository.clone(),
            from_tag: candidate.tag.clone(),
            digest: candidate.digest.clone(),
            to_tag,
            overwrite,
        }
    }
}

/// State threaded through one planning pass.
struct Pass<'a> {
    observed: &'a Observed,
    /// Tags this plan creates, by repository, with their digests.
    created: BTreeMap<RepoKey, Vec<(String, Digest)>>,
    /// Digests asked for. Its tags are non-empty exactly when a lookup in this pass returned
    /// [`NeedDigest`]: from then on the pass only collects what the next round needs.
    needs: Needs,
    /// Each planned stage's current as observed: what an approver saw.
    seen: Vec<Option<Chosen>>,
    /// Each planned stage's current after this pass's promotion into it: what the stages after
    /// it promote.
    chained: Vec<Option<Chosen>>,
}

impl Pass<'_> {
    fn tags(&self, key: &RepoKey) -> Vec<&str> {
        let mut tags: Vec<&str> = self
            .observed
            .tags
            .get(key)
            .map(|t| t.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if let Some(created) = self.created.get(key) {
            tags.extend(created.iter().map(|(t, _)| t.as_str()));
        }
        tags
    }

    /// The digest of `tag`, `None` when it is absent.
    fn digest(&mut self, key: &RepoKey, tag: &str) -> Result<Option<Digest>, NeedDigest> {
        if let Some((_, d)) = self
            .created
            .get(key)
            .and_then(|c| c.iter().find(|(t, _)| t == tag))
        {
            return Ok(Some(d.clone()));
        }
        match self.observed.digests.get(&(key.clone(), tag.to_string())) {
            Some(d) => Ok(d.clone()),
            None => {
                self.needs.tags.insert((key.clone(), tag.to_string()));
                Err(NeedDigest)
            }
        }
    }

    /// Stage `index`: what it holds and what to do. Every stage asks for its current tag's
    /// digest, even after another was missing, so that one round asks for them all; decisions
    /// stop at the first missing digest.
    fn stage(&mut self, cx: &Context<'_>, index: usize) -> Result<StagePlan, NeedDigest> {
        let stage = &cx.pipeline.stages[index];
        let (current, no_current) = match self.current(cx, index) {
            Ok(Held::Tag(c)) => (Some(c), None),
            Ok(Held::Nothing(reason)) => (None, Some(reason)),
            Err(NeedDigest) => (None, None),
        };
        self.seen.push(current.clone());
        let action = if self.needs.tags.is_empty() {
            self.action(cx, index, current.as_ref())
        } else {
            Err(NeedDigest)
        };
        // A promotion decided now makes its tag this stage's current for the stages after it.
        let promoted = match &action {
            Ok(Action::Promote(p)) => self.create(stage, p),
            _ => None,
        };
        self.chained.push(promoted.or_else(|| current.clone()));
        Ok(StagePlan {
            stage: stage.name.clone(),
            registry: stage.registry.clone(),
            repository: stage.repository.clone(),
            current: current.map(|c| Current {
                since: (cx.first_seen)(index, &c.digest).unwrap_or(cx.now),
                tag: c.tag,
                digest: c.digest,
            }),
            no_current,
            frozen: stage
                .promote
                .as_ref()
                .and_then(|_| cx.freeze(&stage.name))
                .map(|f| Box::new(f.clone())),
            action: action?,
        })
    }

    /// Stage `index`'s current selection; a digest it needs is hinted (see [`Needs`]).
    fn current(&mut self, cx: &Context<'_>, index: usize) -> Result<Held, NeedDigest> {
        let stage = &cx.pipeline.stages[index];
        let key = repo_key(stage);
        let tags = self.tags(&key);
        let selected = match stage.selector.select(tags.iter().copied()) {
            Ok(s) => parts(s),
            Err(e) => return Ok(Held::Nothing(e.to_string())),
        };
        let tag = selected.0.clone();
        let digest = match self.digest(&key, &tag) {
            Ok(d) => d,
            Err(NeedDigest) => {
                self.hint(cx, index, &key, &selected);
                return Err(NeedDigest);
            }
        };
        Ok(match digest {
            Some(digest) => Held::Tag(Chosen::from_parts(selected, digest)),
            None => Held::Nothing(format!("selected tag {tag} disappeared from the registry")),
        })
    }

    /// Marks stage `index`'s current tag (`selected`) as a likely copy source when an automatic
    /// stage promotes from it, and as a new version when that stage has no tag for it yet.
    fn hint(&mut self, cx: &Context<'_>, index: usize, key: &RepoKey, selected: &Parts) {
        let (tag, value, version) = selected;
        if self.observed.settled.contains(&(key.clone(), tag.clone())) {
            return;
        }
        let values = Values {
            tag,
            extract: value,
            version: version.as_ref(),
        };
        let mut source = false;
        let mut new_version = false;
        for target in &cx.pipeline.stages {
            let Some(rule) = target
                .promote
                .as_ref()
                .filter(|r| r.from == index && r.approval == Approval::Auto)
            else {
                continue;
            };
            source = true;
            let existing = self.tags(&repo_key(target));
            new_version |= !in_family(&rule.tag, &values, &existing);
        }
        let need = (key.clone(), tag.clone());
        if new_version {
            self.needs.new_versions.insert(need.clone());
        }
        if source {
            self.needs.sources.insert(need);
        }
    }

    /// Records `promotion`'s new tag in `stage`; the stage's new selection if it is that tag.
    fn create(&mut self, stage: &Stage, promotion: &Promotion) -> Option<Chosen> {
        let key = repo_key(stage);
        self.created
            .entry(key.clone())
            .or_default()
            .push((promotion.to_tag.clone(), promotion.digest.clone()));
        let tags = self.tags(&key);
        let selected = stage.selector.select(tags.iter().copied()).ok()?;
        (selected.tag == promotion.to_tag)
            .then(|| Chosen::from_selected(selected, promotion.digest.clone()))
    }

    /// The action for stage `index`, whose current selection is `current`.
    fn action(
        &mut self,
        cx: &Context<'_>,
        index: usize,
        current: Option<&Chosen>,
    ) -> Result<Action, NeedDigest> {
        let stage = &cx.pipeline.stages[index];
        let Some(rule) = &stage.promote else {
            return Ok(Action::Source);
        };
        let step = Step {
            stage,
            rule,
            source: &cx.pipeline.stages[rule.from],
            key: repo_key(stage),
            current,
            approved: cx.intent.approve == Some(index),
            frozen: cx.freeze(&stage.name),
        };
        let candidate = match self.candidate(cx, &step)? {
            Candidate::Chosen(c) => c,
            Candidate::Absent(reason) => return Ok(Action::NoCandidate { reason }),
            Candidate::Unusable(reason) => return Ok(Action::Invalid { reason }),
        };
        Ok(match self.target(&step, &candidate)? {
            Target::Carries(tag) => Action::UpToDate { tag },
            Target::Unrenderable(reason) => Action::Invalid { reason },
            Target::Taken { to_tag, existing } if !rule.overwrite => Action::Conflict {
                promotion: step.promotion(&candidate, to_tag, false),
                existing,
            },
            Target::Taken { to_tag, .. } => step.gate(cx, step.promotion(&candidate, to_tag, true)),
            Target::Free(to_tag) => step.gate(cx, step.promotion(&candidate, to_tag, false)),
        })
    }

    /// What `step` would copy: the source tag a human named, else the source stage's current.
    fn candidate(&mut self, cx: &Context<'_>, step: &Step<'_>) -> Result<Candidate, NeedDigest> {
        if let (true, Some(tag)) = (step.approved, &cx.intent.source_tag) {
            return self.named(step.source, tag);
        }
        // A human approves what they saw: the source stage's observed current, never a tag this
        // same pass is about to create.
        let held = if step.approved {
            &self.seen[step.rule.from]
        } else {
            &self.chained[step.rule.from]
        };
        Ok(match held {
            Some(c) => Candidate::Chosen(c.clone()),
            None => Candidate::Absent(format!("stage {} has no current tag", step.source.name)),
        })
    }

    /// The source stage's tag a human named, with what templates need.
    fn named(&mut self, source: &Stage, tag: &str) -> Result<Candidate, NeedDigest> {
        let key = repo_key(source);
        if !self.tags(&key).contains(&tag) {
            return Ok(Candidate::Unusable(format!(
                "tag {tag} does not exist in {key}"
            )));
        }
        let selected = match source.selector.select([tag]) {
            Ok(s) => s,
            Err(e) => {
                return Ok(Candidate::Unusable(format!(
                    "tag {tag} is not one stage {} would select: {e}",
                    source.name
                )))
            }
        };
        Ok(match self.digest(&key, tag)? {
            Some(digest) => Candidate::Chosen(Chosen::from_selected(selected, digest)),
            None => Candidate::Unusable(format!("tag {tag} disappeared from the registry")),
        })
    }

    /// Where `candidate` stands in `step`'s stage.
    fn target(&mut self, step: &Step<'_>, candidate: &Chosen) -> Result<Target, NeedDigest> {
        if let Some(c) = step.current.filter(|c| c.digest == candidate.digest) {
            return Ok(Target::Carries(c.tag.clone()));
        }
        let values = candidate.values();
        let tags: Vec<String> = self
            .tags(&step.key)
            .into_iter()
            .map(str::to_string)
            .collect();
        if let Some(tag) = self.carrier(step, &values, &tags, &candidate.digest)? {
            return Ok(Target::Carries(tag));
        }
        let template = &step.rule.tag;
        let n = template.next_counter(&values, tags.iter().map(String::as_str));
        let to_tag = template.render(&values, n);
        if !reference::is_valid_tag(&to_tag) {
            return Ok(Target::Unrenderable(format!(
                "template {template} renders {to_tag:?} for {}, which is not a valid tag",
                candidate.tag
            )));
        }
        if !tags.contains(&to_tag) {
            return Ok(Target::Free(to_tag));
        }
        Ok(match self.digest(&step.key, &to_tag)? {
            Some(existing) if existing == candidate.digest => Target::Carries(to_tag),
            Some(existing) => Target::Taken { to_tag, existing },
            None => Target::Free(to_tag),
        })
    }

    /// A tag of `step`'s stage already carrying `digest`: any its filter passes, or one the
    /// template could have made for this candidate even if the filter does not pass it (a
    /// template/filter mismatch must not mint a new tag every pass). Every unknown digest among
    /// them is asked for in the same round.
    fn carrier(
        &mut self,
        step: &Step<'_>,
        values: &Values<'_>,
        tags: &[String],
        digest: &Digest,
    ) -> Result<Option<String>, NeedDigest> {
        let family = family(&step.rule.tag, values, tags);
        let mut missing = Ok(None);
        for tag in tags
            .iter()
            .filter(|t| step.stage.selector.filter().apply(t).is_some() || family.contains(t))
        {
            match self.digest(&step.key, tag) {
                Ok(Some(d)) if d == *digest => return Ok(Some(tag.clone())),
                Ok(_) => {}
                Err(need) => missing = Err(need),
            }
        }
        missing
    }
}

/// The repository a stage lives in.
pub fn repo_key(stage: &Stage) -> RepoKey {
    repo_key_of(&stage.registry, &stage.repository)
}

/// The key of `registry`'s `repository`.
pub fn repo_key_of(registry: &str, repository: &str) -> RepoKey {
    RepoKey {
        registry: registry.to_string(),
        repository: repository.to_string(),
    }
}

/// Plans one pipeline; see the module docs. `first_seen` gives when a digest was first
/// observed as a stage's current (by stage index); unknown means now. `freezes` are those in
/// force, from the configuration and the API; the planner keeps those covering each stage now.
pub fn plan(
    pipeline: &Pipeline,
    observed: &Observed,
    first_seen: &dyn Fn(usize, &Digest) -> Option<SystemTime>,
    now: SystemTime,
    intent: &Intent,
    freezes: &[Freeze],
) -> Planned {
    let cx = Context {
        pipeline,
        first_seen,
        now,
        intent,
        freezes,
    };
    let count = pipeline.stages.len();
    let mut pass = Pass {
        observed,
        created: BTreeMap::new(),
        needs: Needs::default(),
        seen: Vec::with_capacity(count),
        chained: Vec::with_capacity(count),
    };
    let mut stages = Vec::with_capacity(count);
    for index in 0..count {
        // Not `collect`: a missing digest must not stop the stages after it from asking.
        if let Ok(stage) = pass.stage(&cx, index) {
            stages.push(stage);
        }
    }
    if pass.needs.tags.is_empty() {
        Planned::Complete(PipelinePlan {
            pipeline: pipeline.name.clone(),
            stages,
        })
    } else {
        Planned::Needs(pass.needs)
    }
}

/// Whether `template` could have rendered one of `tags` for `values`: [`family`] is not empty,
/// found in one pass without collecting it.
fn in_family(template: &Template, values: &Values<'_>, tags: &[&str]) -> bool {
    if template.has_counter() {
        template.next_counter(values, tags.iter().copied()) > 1
    } else {
        let only = template.render(values, 1);
        tags.contains(&only.as_str())
    }
}

/// The existing tags `template` could have rendered for `values` with any counter (or the one
/// tag it renders, without `{n}`).
fn family<'t>(template: &Template, values: &Values<'_>, tags: &'t [String]) -> Vec<&'t String> {
    if !template.has_counter() {
        let only = template.render(values, 1);
        return tags.iter().filter(|t| **t == only).collect();
    }
    tags.iter()
        .filter(|t| template.next_counter(values, [t.as_str()]) > 1)
        .collect()
}

/// How long until `until`, for messages.
pub fn remaining(until: SystemTime, now: SystemTime) -> Duration {
    until.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Format};

    const REPO: &str = "myorg/app";

    /// dev -> staging (rc, `staging`) -> production (release, `production`), in one repository.
    fn pipeline(staging: &str, production: &str) -> Pipeline {
        let text = format!(
            r#"
[registries.local]
url = "http://127.0.0.1:5000"

[[pipelines]]
name = "app"
registry = "local"
repository = "{REPO}"

[[pipelines.stages]]
name = "dev"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+-dev\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0-0" }} }}

[[pipelines.stages]]
name = "staging"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+-rc\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0-rc.0" }} }}
promote = {{ from = "dev", tag = "v{{major}}.{{minor}}.{{patch}}-rc.{{n}}", {staging} }}

[[pipelines.stages]]
name = "production"
filter_tags = {{ pattern = '^v\d+\.\d+\.\d+$' }}
policy = {{ semver = {{ range = ">=1.0.0" }} }}
promote = {{ from = "staging", tag = "v{{major}}.{{minor}}.{{patch}}", {production} }}
"#
        );
        let loaded = config::parse(&text, Format::Toml, "test").unwrap();
        loaded.config.pipelines[0].clone()
    }

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    /// All tags of `REPO` with their digests, all known.
    fn observed(tags: &[(&str, u8)]) -> Observed {
        let key = repo_key_of("local", REPO);
        let mut o = Observed::default();
        o.tags.insert(
            key.clone(),
            tags.iter().map(|(t, _)| t.to_string()).collect(),
        );
        for (t, d) in tags {
            o.digests
                .insert((key.clone(), t.to_string()), Some(digest(*d)));
        }
        o
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn run(p: &Pipeline, o: &Observed, intent: &Intent) -> Vec<Action> {
        run_at(p, o, intent, &|_, _| None)
    }

    fn run_at(
        p: &Pipeline,
        o: &Observed,
        intent: &Intent,
        first_seen: &dyn Fn(usize, &Digest) -> Option<SystemTime>,
    ) -> Vec<Action> {
        match plan(p, o, first_seen, now(), intent, &[]) {
            Planned::Complete(plan) => plan.stages.into_iter().map(|s| s.action).collect(),
            Planned::Needs(n) => panic!("needs {n:?}"),
        }
    }

    fn promote_to(action: &Action) -> Option<(&str, &str, &Digest)> {
        match action {
            Action::Promote(p) => Some((p.from_tag.as_str(), p.to_tag.as_str(), &p.digest)),
            _ => None,
        }
    }

    const AUTO: &str = r#"approval = "auto""#;
    const MANUAL: &str = r#"approval = "manual""#;

    #[test]
    fn a_new_dev_build_becomes_the_next_rc_and_a_manual_release_waits() {
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[("v1.2.0-dev.1", 1), ("v1.2.0-rc.1", 1), ("v1.2.0-dev.2", 2)]);
        let actions = run(&p, &o, &Intent::default());
        assert_eq!(actions[0], Action::Source);
        assert_eq!(
            promote_to(&actions[1]),
            Some(("v1.2.0-dev.2", "v1.2.0-rc.2", &digest(2)))
        );
        // The release candidate made in this same plan is what production waits for.
        match &actions[2] {
            Action::Pending(p) => assert_eq!(
                (p.from_tag.as_str(), p.to_tag.as_str()),
                ("v1.2.0-rc.2", "v1.2.0")
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_counter_continues_after_gaps_and_other_versions_do_not_count() {
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[
            ("v1.2.0-rc.1", 1),
            ("v1.2.0-rc.3", 3),
            ("v1.1.0-rc.9", 9),
            ("v1.2.0-dev.4", 4),
        ]);
        let actions = run(&p, &o, &Intent::default());
        assert_eq!(promote_to(&actions[1]).map(|p| p.1), Some("v1.2.0-rc.4"));
        let o = observed(&[("v1.1.0-rc.9", 9), ("v1.2.0-dev.4", 4)]);
        let actions = run(&p, &o, &Intent::default());
        assert_eq!(promote_to(&actions[1]).map(|p| p.1), Some("v1.2.0-rc.1"));
    }

    #[test]
    fn a_digest_that_already_has_an_rc_tag_is_not_promoted_again() {
        // The dev stage rolled back to a build that became rc.1 earlier; rc.2 is current.
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[("v1.2.0-dev.1", 1), ("v1.2.0-rc.1", 1), ("v1.2.0-rc.2", 2)]);
        let actions = run(&p, &o, &Intent::default());
        assert_eq!(
            actions[1],
            Action::UpToDate {
                tag: "v1.2.0-rc.1".into()
            }
        );
    }

    #[test]
    fn an_approval_promotes_what_the_source_stage_held_not_what_this_pass_creates() {
        // dev.2 arrived just before the approval: staging promotes it in this pass, but the
        // release is made from rc.1, the candidate the approver saw.
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[("v1.2.0-dev.1", 1), ("v1.2.0-rc.1", 1), ("v1.2.0-dev.2", 2)]);
        let approve = Intent {
            approve: Some(2),
            source_tag: None,
            force: false,
            digest: None,
            approver: None,
        };
        let actions = run(&p, &o, &approve);
        assert_eq!(promote_to(&actions[1]).map(|p| p.1), Some("v1.2.0-rc.2"));
        assert_eq!(
            promote_to(&actions[2]),
            Some(("v1.2.0-rc.1", "v1.2.0", &digest(1)))
        );
    }

    #[test]
    fn a_digest_with_any_tag_of_the_stage_is_not_promoted_again() {
        // The same build re-tagged as a newer version in dev already has rc.1 of 1.2.0.
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[("v1.2.0-rc.1", 1), ("v1.2.0-rc.2", 2), ("v1.2.1-dev.1", 1)]);
        assert_eq!(
            run(&p, &o, &Intent::default())[1],
            Action::UpToDate {
                tag: "v1.2.0-rc.1".into()
            }
        );
    }

    #[test]
    fn tags_the_template_made_count_even_when_the_filter_does_not_pass_them() {
        // The template writes rcN, the filter wants rc.N: without this, every pass would mint
        // another tag for the same digest.
        let p = two_stages(
            r#"{ pattern = '^v\d+\.\d+\.\d+-dev\.\d+$' }"#,
            r#"{ semver = { range = ">=0.0.0-0" } }"#,
            r"^v\d+\.\d+\.\d+-rc\.\d+$",
            "v{major}.{minor}.{patch}-rc{n}",
        );
        let o = observed(&[("v1.2.0-dev.1", 1), ("v1.2.0-rc1", 1)]);
        assert_eq!(
            run(&p, &o, &Intent::default())[1],
            Action::UpToDate {
                tag: "v1.2.0-rc1".into()
            }
        );
    }

    #[test]
    fn current_stages_are_up_to_date_and_cost_one_digest_each() {
        let p = pipeline(AUTO, MANUAL);
        let mut o = observed(&[
            ("v1.2.0-dev.1", 1),
            ("v1.2.0-rc.1", 1),
            ("v1.2.0", 1),
            ("v1.1.0-dev.1", 5),
        ]);
        let actions = run(&p, &o, &Intent::default());
        assert_eq!(
            actions[1],
            Action::UpToDate {
                tag: "v1.2.0-rc.1".into()
            }
        );
        assert_eq!(
            actions[2],
            Action::UpToDate {
                tag: "v1.2.0".into()
            }
        );
        // Knowing no digest, the first round asks for exactly the three current tags.
        o.digests.clear();
        match plan(&p, &o, &|_, _| None, now(), &Intent::default(), &[]) {
            Planned::Needs(n) => {
                let tags: Vec<&str> = n.tags.iter().map(|(_, t)| t.as_str()).collect();
                assert_eq!(tags, ["v1.2.0", "v1.2.0-dev.1", "v1.2.0-rc.1"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_existing_release_with_another_digest_is_a_conflict_unless_overwrite() {
        let o = observed(&[("v1.2.0-rc.2", 2), ("v1.2.0", 1)]);
        let p = pipeline(AUTO, AUTO);
        let actions = run(&p, &o, &Intent::default());
        match &actions[2] {
            Action::Conflict {
                promotion,
                existing,
            } => {
                assert_eq!(
                    (promotion.to_tag.as_str(), existing),
                    ("v1.2.0", &digest(1))
                );
            }
            other => panic!("{other:?}"),
        }
        let p = pipeline(AUTO, r#"approval = "auto", overwrite = true"#);
        let actions = run(&p, &o, &Intent::default());
        match &actions[2] {
            Action::Promote(p) => assert!(p.overwrite && p.to_tag == "v1.2.0"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn min_age_counts_from_the_first_sighting_in_the_source_stage() {
        let p = pipeline(r#"approval = "auto", min_age = "2h""#, MANUAL);
        let o = observed(&[("v1.2.0-dev.1", 1)]);
        let hour_ago = |_: usize, _: &Digest| Some(now() - Duration::from_secs(3600));
        match &run_at(&p, &o, &Intent::default(), &hour_ago)[1] {
            Action::Waiting {
                until, promotion, ..
            } => {
                assert_eq!(*until, now() + Duration::from_secs(3600));
                assert_eq!(promotion.to_tag, "v1.2.0-rc.1");
            }
            other => panic!("{other:?}"),
        }
        // Never seen before: the clock starts now.
        match &run(&p, &o, &Intent::default())[1] {
            Action::Waiting { until, .. } => assert_eq!(*until, now() + Duration::from_secs(7200)),
            other => panic!("{other:?}"),
        }
        let long_ago = |_: usize, _: &Digest| Some(now() - Duration::from_secs(3 * 3600));
        assert!(promote_to(&run_at(&p, &o, &Intent::default(), &long_ago)[1]).is_some());
    }

    fn freeze(pipelines: &[&str], stages: &[&str], until: Option<SystemTime>) -> Freeze {
        Freeze {
            id: "f-1".into(),
            reason: "incident 42".into(),
            by: "alice".into(),
            pipelines: pipelines.iter().map(|s| s.to_string()).collect(),
            stages: stages.iter().map(|s| s.to_string()).collect(),
            from: now() - Duration::from_secs(60),
            until,
        }
    }

    fn plan_with(p: &Pipeline, o: &Observed, intent: &Intent, freezes: &[Freeze]) -> PipelinePlan {
        match plan(p, o, &|_, _| None, now(), intent, freezes) {
            Planned::Complete(plan) => plan,
            Planned::Needs(n) => panic!("needs {n:?}"),
        }
    }

    #[test]
    fn a_freeze_holds_promotions_into_the_stages_it_covers_until_forced() {
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[("v1.2.0-dev.1", 1), ("v1.1.0", 7)]);
        let until = now() + Duration::from_secs(600);
        let staging = [freeze(&["app"], &["staging"], Some(until))];
        let plan = plan_with(&p, &o, &Intent::default(), &staging);
        match &plan.stages[1].action {
            Action::Frozen { promotion, freeze } => {
                assert_eq!(promotion.to_tag, "v1.2.0-rc.1");
                assert_eq!((freeze.by.as_str(), freeze.until), ("alice", Some(until)));
            }
            other => panic!("{other:?}"),
        }
        assert!(plan.stages[1].frozen.is_some());
        assert!(plan.stages[2].frozen.is_none(), "production is not covered");
        assert!(
            plan.stages[0].frozen.is_none(),
            "the source stage is never frozen"
        );
        // Another pipeline's freeze, or one that ended or has not begun, holds nothing.
        for other in [
            freeze(&["web"], &[], None),
            freeze(&[], &[], Some(now())),
            Freeze {
                from: now() + Duration::from_secs(1),
                ..freeze(&[], &[], None)
            },
        ] {
            let plan = plan_with(&p, &o, &Intent::default(), &[other]);
            assert!(promote_to(&plan.stages[1].action).is_some(), "{plan:?}");
        }
        // The one that ends last is shown; a forced approval passes.
        let both = [
            freeze(&[], &[], Some(until)),
            freeze(&["app"], &["staging"], None),
        ];
        let plan = plan_with(&p, &o, &Intent::default(), &both);
        assert_eq!(plan.stages[1].frozen.as_ref().and_then(|f| f.until), None);
        let forced = Intent {
            approve: Some(1),
            force: true,
            ..Intent::default()
        };
        let plan = plan_with(&p, &o, &forced, &both);
        assert!(promote_to(&plan.stages[1].action).is_some());
        let approved = Intent {
            approve: Some(1),
            ..Intent::default()
        };
        let plan = plan_with(&p, &o, &approved, &both);
        assert!(matches!(plan.stages[1].action, Action::Frozen { .. }));
    }

    #[test]
    fn outside_its_window_a_stage_waits_for_the_next_opening() {
        // now() is Friday 2027-01-15 08:00 UTC.
        let closed = r#"approval = "auto", windows = [{ days = "mon-fri", hours = "09:00-16:00", time_zone = "UTC" }]"#;
        let p = pipeline(closed, MANUAL);
        let o = observed(&[("v1.2.0-dev.1", 1)]);
        match &run(&p, &o, &Intent::default())[1] {
            Action::Waiting { until, why, .. } => {
                assert_eq!(*until, now() + Duration::from_secs(3600));
                assert_eq!(*why, Wait::Window);
            }
            other => panic!("{other:?}"),
        }
        let open = r#"approval = "auto", windows = [{ days = "fri", hours = "07:00-09:00" }, { days = "sat" }]"#;
        assert!(promote_to(&run(&pipeline(open, MANUAL), &o, &Intent::default())[1]).is_some());
        // A soak that ends after hours waits for the next opening after it, as a window wait.
        let soak = r#"approval = "auto", min_age = "9h", windows = [{ days = "mon-fri", hours = "09:00-16:00" }]"#;
        match &run(&pipeline(soak, MANUAL), &o, &Intent::default())[1] {
            Action::Waiting { until, why, .. } => {
                // Friday 17:00 is after hours: Monday 09:00.
                assert_eq!(*until, now() + Duration::from_secs((24 * 3 + 1) * 3600));
                assert_eq!(*why, Wait::Window);
            }
            other => panic!("{other:?}"),
        }
        // A soak that ends inside the window is a soak wait.
        let short = r#"approval = "auto", min_age = "2h", windows = [{ days = "fri", hours = "09:00-16:00" }]"#;
        match &run(&pipeline(short, MANUAL), &o, &Intent::default())[1] {
            Action::Waiting { why, until, .. } => {
                assert_eq!(
                    (*why, *until),
                    (Wait::Soak, now() + Duration::from_secs(7200))
                );
            }
            other => panic!("{other:?}"),
        }
        // An approval outside the window is refused unless forced.
        let manual = r#"approval = "manual", windows = [{ days = "sat-sun" }]"#;
        let p = pipeline(manual, MANUAL);
        let approve = Intent {
            approve: Some(1),
            ..Intent::default()
        };
        assert!(matches!(
            run(&p, &o, &approve)[1],
            Action::Waiting {
                why: Wait::Window,
                ..
            }
        ));
        let forced = Intent {
            force: true,
            ..approve
        };
        assert!(promote_to(&run(&p, &o, &forced)[1]).is_some());
    }

    #[test]
    fn an_approval_promotes_a_pending_stage_or_a_named_tag() {
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[("v1.2.0-rc.1", 1), ("v1.3.0-rc.1", 3)]);
        let approve = Intent {
            approve: Some(2),
            source_tag: None,
            force: false,
            digest: None,
            approver: None,
        };
        assert_eq!(
            promote_to(&run(&p, &o, &approve)[2]),
            Some(("v1.3.0-rc.1", "v1.3.0", &digest(3)))
        );
        let older = Intent {
            approve: Some(2),
            source_tag: Some("v1.2.0-rc.1".into()),
            force: false,
            digest: None,
            approver: None,
        };
        assert_eq!(
            promote_to(&run(&p, &o, &older)[2]),
            Some(("v1.2.0-rc.1", "v1.2.0", &digest(1)))
        );
        let missing = Intent {
            approve: Some(2),
            source_tag: Some("v9.9.9-rc.1".into()),
            force: false,
            digest: None,
            approver: None,
        };
        assert!(
            matches!(&run(&p, &o, &missing)[2], Action::Invalid { reason } if reason.contains("does not exist"))
        );
    }

    #[test]
    fn an_approval_naming_another_digest_promotes_nothing() {
        let p = pipeline(AUTO, MANUAL);
        let o = observed(&[("v1.3.0-rc.1", 3)]);
        let seen = |digest: Digest| Intent {
            approve: Some(2),
            source_tag: None,
            force: false,
            digest: Some(digest),
            approver: None,
        };
        match &run(&p, &o, &seen(digest(1)))[2] {
            Action::Moved {
                promotion,
                expected,
            } => assert_eq!((expected, &promotion.digest), (&digest(1), &digest(3))),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            promote_to(&run(&p, &o, &seen(digest(3)))[2]),
            Some(("v1.3.0-rc.1", "v1.3.0", &digest(3)))
        );
    }

    #[test]
    fn a_manual_stage_waits_for_min_age_and_only_a_forced_approval_skips_it() {
        let p = pipeline(AUTO, r#"approval = "manual", min_age = "24h""#);
        let o = observed(&[("v1.3.0-rc.1", 3)]);
        let hour_ago = |_: usize, _: &Digest| Some(now() - Duration::from_secs(3600));
        let day_ago = |_: usize, _: &Digest| Some(now() - Duration::from_secs(25 * 3600));
        let approval = |stage: usize, force: bool| Intent {
            approve: Some(stage),
            source_tag: None,
            force,
            digest: None,
            approver: None,
        };
        // Before the soak: waiting, with the time it ends, whether or not someone approves.
        let until = now() + Duration::from_secs(23 * 3600);
        for intent in [Intent::default(), approval(2, false)] {
            match &run_at(&p, &o, &intent, &hour_ago)[2] {
                Action::Waiting {
                    until: u,
                    promotion,
                    ..
                } => {
                    assert_eq!((*u, promotion.to_tag.as_str()), (until, "v1.3.0"));
                }
                other => panic!("{intent:?}: {other:?}"),
            }
        }
        // Forced: promoted now.
        assert!(promote_to(&run_at(&p, &o, &approval(2, true), &hour_ago)[2]).is_some());
        // After the soak: pending until someone approves, then promoted.
        assert!(matches!(
            &run_at(&p, &o, &Intent::default(), &day_ago)[2],
            Action::Pending(_)
        ));
        assert!(promote_to(&run_at(&p, &o, &approval(2, false), &day_ago)[2]).is_some());
        // Force on another stage's approval changes nothing here.
        assert!(matches!(
            &run_at(&p, &o, &approval(1, true), &hour_ago)[2],
            Action::Waiting { .. }
        ));
    }

    #[test]
    fn auto_stages_chain_in_one_pass_and_an_empty_source_has_no_candidate() {
        let p = pipeline(AUTO, AUTO);
        let o = observed(&[("v2.0.0-dev.3", 3)]);
        let actions = run(&p, &o, &Intent::default());
        assert_eq!(
            promote_to(&actions[1]),
            Some(("v2.0.0-dev.3", "v2.0.0-rc.1", &digest(3)))
        );
        assert_eq!(
            promote_to(&actions[2]),
            Some(("v2.0.0-rc.1", "v2.0.0", &digest(3)))
        );
        let o = observed(&[("latest", 1)]);
        let actions = run(&p, &o, &Intent::default());
        assert!(
            matches!(&actions[1], Action::NoCandidate { reason } if reason.contains("stage dev has no current tag"))
        );
    }

    /// A pipeline of two stages whose templates are given.
    fn two_stages(dev_filter: &str, policy: &str, rc_pattern: &str, template: &str) -> Pipeline {
        let text = format!(
            r#"
[registries.local]
url = "http://127.0.0.1:5000"

[[pipelines]]
name = "app"
registry = "local"
repository = "{REPO}"

[[pipelines.stages]]
name = "dev"
filter_tags = {dev_filter}
policy = {policy}

[[pipelines.stages]]
name = "rc"
filter_tags = {{ pattern = '{rc_pattern}' }}
policy = {{ alphabetical = {{ order = "asc" }} }}
promote = {{ from = "dev", tag = "{template}", approval = "auto" }}
"#
        );
        config::parse(&text, Format::Toml, "test")
            .unwrap()
            .config
            .pipelines[0]
            .clone()
    }

    #[test]
    fn templates_without_v_and_with_extract_render_and_count() {
        let p = two_stages(
            r#"{ pattern = '^\d+\.\d+\.\d+-dev\.\d+$' }"#,
            r#"{ semver = { range = ">=0.0.0-0" } }"#,
            r"^\d+\.\d+\.\d+-rc\.\d+$",
            "{major}.{minor}.{patch}-rc.{n}",
        );
        let o = observed(&[("1.4.2-dev.7", 7), ("1.4.2-rc.2", 2)]);
        assert_eq!(
            promote_to(&run(&p, &o, &Intent::default())[1]).map(|p| p.1),
            Some("1.4.2-rc.3")
        );

        let p = two_stages(
            r#"{ pattern = '^main-(?P<sha>[a-f0-9]+)-(?P<ts>\d+)$', extract = '$ts' }"#,
            r#"{ numerical = { order = "asc" } }"#,
            r"^rc-\d+-\d+$",
            "rc-{extract}-{n}",
        );
        let o = observed(&[
            ("main-abc123-1700000000", 1),
            ("main-def456-1700000500", 2),
            ("rc-1700000000-1", 1),
        ]);
        assert_eq!(
            promote_to(&run(&p, &o, &Intent::default())[1]),
            Some(("main-def456-1700000500", "rc-1700000500-1", &digest(2)))
        );
    }
}
