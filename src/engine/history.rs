//! A pipeline's promotions, read back from the promotion records in its registries: no local
//! database, so `retagd history` works on a fresh machine and after `state_dir` is lost, and
//! the daemon serves the same at `GET /api/v1/pipelines/{pipeline}/history`.
//!
//! Each promoted stage's repository is listed once; the subjects are the `sha256-<hex>` tags of
//! the referrers tag schema, or, where the registry has the referrers API and no such tags,
//! the digests of up to [`MAX_API_SUBJECTS`] of the stage's own tags. Records reach later
//! stages' repositories with the other referrers, so one record can be found in several: it is
//! counted once (by its artifact digest). A record is trusted only as far as it is checked: it
//! must be one ([`crate::record::Record::read`]), name this pipeline and one of its stages, and
//! that stage's repository; anything else is skipped with the reason.

use std::collections::BTreeSet;

use super::Backend;
use crate::config::Pipeline;
use crate::record::Record;
use crate::reference::Digest;
use crate::registry::{self, referrers};

/// Tags HEADed per stage for their digests, where the registry lists referrers through its API.
pub const MAX_API_SUBJECTS: usize = 64;

/// One promotion, as its record says.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The record.
    pub record: Record,
    /// The digest of the artifact manifest that holds it.
    pub artifact: Digest,
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct History {
    /// The promotions, newest first.
    pub entries: Vec<Entry>,
    /// Records not trusted, and why.
    pub skipped: Vec<String>,
    /// Stages whose repository could not be read, and why (the rest are still read).
    pub errors: Vec<String>,
}

/// Reads the pipeline's promotions (into `stage` only, when given), newest first, at most
/// `limit`. See the module docs.
pub async fn read(
    backend: &dyn Backend,
    pipeline: &Pipeline,
    stage: Option<&str>,
    limit: usize,
) -> History {
    let mut history = History::default();
    let mut seen = BTreeSet::new();
    let mut repos = BTreeSet::new();
    for s in pipeline.stages.iter().filter(|s| s.promote.is_some()) {
        if !repos.insert((s.registry.as_str(), s.repository.as_str())) {
            continue;
        }
        let found = match stage_records(backend, s).await {
            Ok(found) => found,
            Err(e) => {
                history.errors.push(format!(
                    "{}: {}/{}: {}",
                    s.name,
                    s.registry,
                    s.repository,
                    crate::engine::outcome::chain(&e)
                ));
                continue;
            }
        };
        history.skipped.extend(found.skipped);
        for (artifact, record) in found.records {
            if !seen.insert(artifact.clone()) {
                continue;
            }
            match trusted(pipeline, &record) {
                Ok(()) => {
                    if stage.is_none_or(|want| record.stage == want) {
                        history.entries.push(Entry { record, artifact });
                    }
                }
                Err(why) => {
                    let why = format!("{}/{}@{artifact}: {why}", s.registry, s.repository);
                    tracing::warn!(pipeline = %pipeline.name, "skipping a promotion record: {why}");
                    history.skipped.push(why);
                }
            }
        }
    }
    // Newest first; in one millisecond, the later stage first.
    let order = |stage: &str| pipeline.stages.iter().position(|s| s.name == stage);
    history.entries.sort_by(|a, b| {
        (b.record.at(), order(&b.record.stage)).cmp(&(a.record.at(), order(&a.record.stage)))
    });
    history.entries.truncate(limit);
    history
}

/// The records in one stage's repository.
async fn stage_records(
    backend: &dyn Backend,
    s: &crate::config::Stage,
) -> Result<referrers::Found, registry::Error> {
    let tags = match backend.list_tags(&s.registry, &s.repository).await {
        Ok(tags) => tags,
        Err(e) if e.is_not_found() => return Ok(referrers::Found::default()),
        Err(e) => return Err(e),
    };
    let mut subjects: Vec<Digest> = tags
        .iter()
        .filter_map(|t| t.strip_prefix("sha256-"))
        .filter(|hex| hex.len() == 64)
        .filter_map(|hex| format!("sha256:{hex}").parse().ok())
        .collect();
    if subjects.is_empty() {
        // No fallback indexes: a registry with the referrers API, or no records at all. The
        // stage's newest tags (by name) stand in for the subjects.
        let own: Vec<&String> = tags
            .iter()
            .filter(|t| s.selector.filter().apply(t).is_some())
            .collect();
        for tag in own.iter().rev().take(MAX_API_SUBJECTS) {
            if let Some(digest) = backend.head(&s.registry, &s.repository, tag).await? {
                if !subjects.contains(&digest) {
                    subjects.push(digest);
                }
            }
        }
    }
    backend
        .records(&s.registry, &s.repository, &subjects, &tags)
        .await
}

/// Whether a well-formed record belongs to this pipeline as configured now.
fn trusted(pipeline: &Pipeline, r: &Record) -> Result<(), String> {
    if r.pipeline != pipeline.name {
        return Err(format!(
            "a record of pipeline {:?}, not {:?}",
            crate::reference::shorten(&r.pipeline, 80),
            pipeline.name
        ));
    }
    let Some(stage) = pipeline.stages.iter().find(|s| s.name == r.stage) else {
        return Err(format!(
            "names stage {:?}, which the pipeline does not have",
            crate::reference::shorten(&r.stage, 80)
        ));
    };
    if stage.repository != r.to.repository {
        return Err(format!(
            "names stage {} in repository {:?}, but the stage is {}",
            stage.name,
            crate::reference::shorten(&r.to.repository, 200),
            stage.repository
        ));
    }
    Ok(())
}

impl History {
    /// The JSON that `retagd history -o json` prints and the API serves: `entries` are the
    /// records as written, each with the `artifact` digest that holds it.
    pub fn json(&self, pipeline: &str) -> serde_json::Value {
        let entries: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(&e.record).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("artifact".into(), e.artifact.to_string().into());
                }
                v
            })
            .collect();
        serde_json::json!({
            "pipeline": pipeline,
            "entries": entries,
            "skipped": self.skipped,
            "errors": self.errors,
        })
    }
}
