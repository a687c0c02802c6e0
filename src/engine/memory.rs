//! An in-memory [`Backend`]: the unit-test seam of the driver (digest cache, re-checks of
//! unreadable tags, lock and slot ordering) and of the daemon's paused-time tests. It knows
//! repositories as tag -> digest maps and nothing of manifests, blobs or HTTP; the integration
//! tests stay on the real CNCF registry, the only judge of protocol behaviour.
//!
//! Besides answering, it counts calls per operation, fails an operation on a repository (or one
//! tag of it) with a given [`registry::Error`], answers HEAD `None` for the first HEADs of a
//! listed tag (the CNCF registry's "listed but not yet readable" race), and can make copies
//! take time or wait on a [`Notify`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Notify;

use super::backend::{Backend, Result};
use super::plan::{repo_key_of, Promotion, RepoKey, StagePlan};
use crate::reference::Digest;
use crate::registry::{self, HttpStatus};

/// A registry operation, to count calls and inject failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Backend::list_tags`].
    List,
    /// [`Backend::head`].
    Head,
    /// [`Backend::fetch`].
    Fetch,
    /// [`Backend::copy`], matched on the target repository and tag.
    Copy,
    /// [`Backend::attach`], matched on the target repository.
    Attach,
}

/// Builds the error a failing operation returns (`registry::Error` is not `Clone`).
type MakeError = Box<dyn Fn() -> registry::Error + Send + Sync>;

struct Failure {
    op: Op,
    repo: RepoKey,
    /// `None`: every tag of the repository.
    tag: Option<String>,
    error: MakeError,
}

#[derive(Default)]
struct Inner {
    repos: BTreeMap<RepoKey, BTreeMap<String, Digest>>,
    calls: HashMap<Op, usize>,
    heads: HashMap<(RepoKey, String), usize>,
    /// HEADs still to answer `None` per tag.
    unreadable: HashMap<(RepoKey, String), u32>,
    failures: Vec<Failure>,
    copy_delay: Duration,
    copy_gate: Option<Arc<Notify>>,
    /// Per copy: the target tag, whether the source manifest came with it, and whether the
    /// destination was known absent.
    known: Vec<(String, bool, bool)>,
    /// Records attached, per repository: the subject and the record's JSON.
    records: BTreeMap<RepoKey, Vec<(Digest, Vec<u8>)>>,
}

impl Inner {
    fn failure(&self, op: Op, repo: &RepoKey, tag: Option<&str>) -> Option<registry::Error> {
        self.failures
            .iter()
            .find(|f| f.op == op && f.repo == *repo && (f.tag.is_none() || f.tag.as_deref() == tag))
            .map(|f| (f.error)())
    }
}

/// Repositories in memory; see the module docs.
#[derive(Default)]
pub struct Memory {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").finish_non_exhaustive()
    }
}

/// A registry's answer with HTTP `status`, as the real client reports it (429: rate limited,
/// 401: auth, 404: not found).
pub fn http(registry: &str, status: u16) -> registry::Error {
    registry::Error::Status(Box::new(HttpStatus {
        registry: registry.to_string(),
        method: reqwest::Method::GET,
        path: "/v2/".to_string(),
        status,
        code: None,
        message: String::new(),
        retry_after: None,
        attempts: 1,
    }))
}

/// A distinct digest per `seed`.
pub fn digest(seed: &str) -> Digest {
    Digest::of(seed.as_bytes())
}

impl Memory {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Plain data, never held across an await.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pushes `tag` with a digest of its own (from its full name) and returns the digest.
    pub fn push(&self, registry: &str, repository: &str, tag: &str) -> Digest {
        let d = digest(&format!("{registry}/{repository}:{tag}"));
        self.set(registry, repository, tag, &d);
        d
    }

    /// Sets `tag` to `digest`, creating the repository.
    pub fn set(&self, registry: &str, repository: &str, tag: &str, digest: &Digest) {
        self.inner()
            .repos
            .entry(repo_key_of(registry, repository))
            .or_default()
            .insert(tag.to_string(), digest.clone());
    }

    /// The repository's tags and digests (empty when it does not exist).
    pub fn tags(&self, registry: &str, repository: &str) -> BTreeMap<String, Digest> {
        self.inner()
            .repos
            .get(&repo_key_of(registry, repository))
            .cloned()
            .unwrap_or_default()
    }

    /// The records attached in a repository, in order: subject and record.
    pub fn records(
        &self,
        registry: &str,
        repository: &str,
    ) -> Vec<(Digest, crate::record::Record)> {
        self.inner()
            .records
            .get(&repo_key_of(registry, repository))
            .into_iter()
            .flatten()
            .filter_map(|(d, bytes)| Some((d.clone(), crate::record::Record::read(bytes, d).ok()?)))
            .collect()
    }

    /// Calls of `op` so far (failed ones included).
    pub fn calls(&self, op: Op) -> usize {
        self.inner().calls.get(&op).copied().unwrap_or(0)
    }

    /// What each copy was told it could skip: (target tag, source manifest given, destination
    /// known absent).
    pub fn copies_known(&self) -> Vec<(String, bool, bool)> {
        self.inner().known.clone()
    }

    /// Reads of one tag so far (HEADs and GETs).
    pub fn heads(&self, registry: &str, repository: &str, tag: &str) -> usize {
        let key = (repo_key_of(registry, repository), tag.to_string());
        self.inner().heads.get(&key).copied().unwrap_or(0)
    }

    /// Every tag HEADed so far, as `repository:tag`, with its count.
    pub fn headed(&self) -> BTreeMap<String, usize> {
        self.inner()
            .heads
            .iter()
            .map(|((key, tag), n)| (format!("{}:{tag}", key.repository), *n))
            .collect()
    }

    /// Sets every counter back to zero.
    pub fn reset_counts(&self) {
        let mut inner = self.inner();
        inner.calls.clear();
        inner.heads.clear();
    }

    /// Makes `op` on the repository (only for `tag`, when given; for a copy, the target tag)
    /// fail with what `error` builds.
    pub fn fail(
        &self,
        op: Op,
        registry: &str,
        repository: &str,
        tag: Option<&str>,
        error: impl Fn() -> registry::Error + Send + Sync + 'static,
    ) {
        self.inner().failures.push(Failure {
            op,
            repo: repo_key_of(registry, repository),
            tag: tag.map(str::to_string),
            error: Box::new(error),
        });
    }

    /// Lets every operation succeed again.
    pub fn recover(&self) {
        self.inner().failures.clear();
    }

    /// The next `heads` HEADs of `tag` answer `None`, while the listing shows it.
    pub fn unreadable(&self, registry: &str, repository: &str, tag: &str, heads: u32) {
        let key = (repo_key_of(registry, repository), tag.to_string());
        self.inner().unreadable.insert(key, heads);
    }

    /// Every copy sleeps `delay` before it writes, so concurrent reconciles interleave.
    pub fn delay_copies(&self, delay: Duration) {
        self.inner().copy_delay = delay;
    }

    /// Every copy from now on waits for a notification of the returned [`Notify`] before it
    /// writes (never notified: a copy stuck for good).
    pub fn hold_copies(&self) -> Arc<Notify> {
        let gate = Arc::new(Notify::new());
        self.inner().copy_gate = Some(gate.clone());
        gate
    }

    fn count(&self, op: Op) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner();
        *inner.calls.entry(op).or_default() += 1;
        inner
    }

    fn copy_now(&self, p: &Promotion, to: &StagePlan) -> Result<registry::Report> {
        let mut inner = self.inner();
        let target = repo_key_of(&to.registry, &to.repository);
        if let Some(e) = inner.failure(Op::Copy, &target, Some(&p.to_tag)) {
            return Err(e);
        }
        let source = repo_key_of(&p.from_registry, &p.from_repository);
        let has_source = inner
            .repos
            .get(&source)
            .is_some_and(|tags| tags.values().any(|d| *d == p.digest));
        if !has_source {
            return Err(http(&p.from_registry, 404));
        }
        let path = match (
            source.registry == target.registry,
            source.repository == target.repository,
        ) {
            (true, true) => registry::Path::SameRepository,
            (true, false) => registry::Path::Mount,
            (false, _) => registry::Path::Transfer,
        };
        let tags = inner.repos.entry(target).or_default();
        let up_to_date = match tags.get(&p.to_tag) {
            Some(existing) if *existing == p.digest => true,
            Some(existing) if !p.overwrite => {
                return Err(registry::Error::TagHoldsOtherDigest {
                    reference: format!("{}:{}", to.repository, p.to_tag),
                    existing: existing.clone(),
                    wanted: p.digest.clone(),
                });
            }
            _ => false,
        };
        tags.insert(p.to_tag.clone(), p.digest.clone());
        Ok(registry::Report {
            digest: p.digest.clone(),
            path,
            up_to_date,
            manifests_pushed: usize::from(!up_to_date),
            blobs_mounted: 0,
            blobs_uploaded: 0,
            bytes_uploaded: 0,
            blobs_present: 0,
            subject: Some(crate::record::Subject {
                digest: p.digest.clone(),
                media_type: registry::manifest::OCI_MANIFEST.to_string(),
                size: 1,
            }),
        })
    }
}

impl Backend for Memory {
    fn list_tags<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let inner = self.count(Op::List);
            let key = repo_key_of(registry, repository);
            if let Some(e) = inner.failure(Op::List, &key, None) {
                return Err(e);
            }
            match inner.repos.get(&key) {
                Some(tags) => Ok(tags.keys().cloned().collect()),
                None => Err(http(registry, 404)),
            }
        })
    }

    fn head<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<Digest>>> {
        Box::pin(async move {
            let mut inner = self.count(Op::Head);
            let key = (repo_key_of(registry, repository), tag.to_string());
            *inner.heads.entry(key.clone()).or_default() += 1;
            if let Some(e) = inner.failure(Op::Head, &key.0, Some(tag)) {
                return Err(e);
            }
            if let Some(left) = inner.unreadable.get_mut(&key).filter(|n| **n > 0) {
                *left -= 1;
                return Ok(None);
            }
            Ok(inner.repos.get(&key.0).and_then(|t| t.get(tag)).cloned())
        })
    }

    /// A manifest whose bytes are its tag's digest text: enough for the driver, which only
    /// hands it to [`Backend::copy`].
    fn fetch<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, Result<Option<registry::Manifest>>> {
        Box::pin(async move {
            let mut inner = self.count(Op::Fetch);
            let key = (repo_key_of(registry, repository), tag.to_string());
            *inner.heads.entry(key.clone()).or_default() += 1;
            if let Some(e) = inner.failure(Op::Fetch, &key.0, Some(tag)) {
                return Err(e);
            }
            if let Some(left) = inner.unreadable.get_mut(&key).filter(|n| **n > 0) {
                *left -= 1;
                return Ok(None);
            }
            Ok(inner
                .repos
                .get(&key.0)
                .and_then(|t| t.get(tag))
                .map(|digest| registry::Manifest {
                    bytes: bytes::Bytes::from(digest.to_string()),
                    digest: digest.clone(),
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                }))
        })
    }

    fn copy<'a>(
        &'a self,
        promotion: &'a Promotion,
        to: &'a StagePlan,
        known: registry::Known<'a>,
    ) -> BoxFuture<'a, Result<registry::Report>> {
        Box::pin(async move {
            {
                let mut inner = self.inner();
                inner.known.push((
                    promotion.to_tag.clone(),
                    known.source.is_some(),
                    known.destination_absent,
                ));
            }
            let (delay, gate) = {
                let inner = self.count(Op::Copy);
                (inner.copy_delay, inner.copy_gate.clone())
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(gate) = gate {
                gate.notified().await;
            }
            self.copy_now(promotion, to)
        })
    }

    /// The in-memory registry holds tags and digests only, no referrers: nothing to carry.
    fn referrers<'a>(
        &'a self,
        _job: &'a super::backend::ReferrerJob<'a>,
        _memo: &'a mut registry::referrers::Memo,
    ) -> BoxFuture<'a, Result<registry::referrers::Report>> {
        Box::pin(async move { Ok(registry::referrers::Report::default()) })
    }

    fn host(&self, registry: &str) -> String {
        format!("{registry}.example")
    }

    fn attach<'a>(
        &'a self,
        job: &'a super::backend::RecordJob<'a>,
    ) -> BoxFuture<'a, Result<Digest>> {
        Box::pin(async move {
            let mut inner = self.count(Op::Attach);
            let key = repo_key_of(job.registry, job.repository);
            if let Some(e) = inner.failure(Op::Attach, &key, None) {
                return Err(e);
            }
            inner
                .records
                .entry(key)
                .or_default()
                .push((job.subject.clone(), job.artifact.layer.clone()));
            Ok(Digest::of(&job.artifact.manifest))
        })
    }

    /// The records attached about `subjects` (the tag list plays no part here).
    fn records<'a>(
        &'a self,
        registry: &'a str,
        repository: &'a str,
        subjects: &'a [Digest],
        _tags: &'a [String],
    ) -> BoxFuture<'a, Result<registry::referrers::Found>> {
        Box::pin(async move {
            let inner = self.inner();
            let mut found = registry::referrers::Found::default();
            for (subject, layer) in inner
                .records
                .get(&repo_key_of(registry, repository))
                .into_iter()
                .flatten()
                .filter(|(d, _)| subjects.contains(d))
            {
                match crate::record::Record::read(layer, subject) {
                    Ok(r) => found.records.push((Digest::of(layer), r)),
                    Err(why) => found.skipped.push(why),
                }
            }
            Ok(found)
        })
    }

    /// No referrers, so no signatures either.
    fn signatures<'a>(
        &'a self,
        _registry: &'a str,
        _repository: &'a str,
        _digest: &'a Digest,
        _tags: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<crate::cosign::Evidence>>> {
        Box::pin(async move { Ok(Vec::new()) })
    }
}
