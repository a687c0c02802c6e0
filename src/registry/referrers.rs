//! Referrers: the signatures, attestations and SBOMs that hang off an image's digest, carried
//! into the repository the image is promoted to, bytes and digests unchanged.
//!
//! # What is carried
//!
//! - cosign's tags `sha256-<hex>.sig`, `.att` and `.sbom`: the tag, its manifest and its blobs
//!   (through [`super::copy`], so mounts and streamed transfers work as for images).
//! - OCI 1.1 referrers, listed by the referrers API (`GET /v2/<name>/referrers/<digest>`) where
//!   the source serves it, else by the referrers tag schema (the index tagged `sha256-<hex>`).
//!   Each is written to the target by digest. A target whose answer lacks `OCI-Subject` does not
//!   list referrers itself: its `sha256-<hex>` index is re-read right before it is extended, and
//!   entries someone else wrote there stay.
//! - The referrers of an index's children, and referrers of referrers (a signature on an SBOM),
//!   down to [`MAX_DEPTH`].
//!
//! A referrer whose `subject` names another digest is not one: it is skipped and reported.
//!
//! # Cost
//!
//! A [`Memo`] per promoted digest remembers what the target already has. A round where nothing
//! changed costs one HEAD per cosign or fallback tag the source's tag list shows for the digest
//! (or one referrers API GET per subject): no write, no blob, no manifest GET. A failure is
//! reported in the [`Report`] and not remembered, so the next round tries again.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use reqwest::header::{HeaderValue, ACCEPT};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{self, Scopes};
use super::manifest::{self, Contents, Manifest};
use super::transport::Request;
use super::{copy, Client, Error};
use crate::cosign::{Evidence, MAX_EVIDENCE_BYTES};
use crate::record;
use crate::reference::{Digest, Reference};

/// Referrers of referrers are followed this deep (image -> SBOM -> signature of the SBOM).
pub const MAX_DEPTH: usize = 2;
/// Referrers read per subject; a longer listing is cut there and reported.
pub const MAX_REFERRERS: usize = manifest::MAX_CHILDREN;
/// Subjects (the image, its children, referrers) looked at per digest and round.
pub const MAX_SUBJECTS: usize = 256;
/// artifactType of cosign's signature tags (`.sig`), as cosign writes it for OCI 1.1 referrers.
pub const COSIGN_SIGNATURE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// artifactType given to cosign's attestation tags (`.att`, DSSE envelopes) for the filter.
pub const COSIGN_ATTESTATION: &str = "application/vnd.dsse.envelope.v1+json";
/// artifactType given to cosign's SBOM tags (`.sbom`) for the filter.
pub const COSIGN_SBOM: &str = "application/vnd.dev.cosign.artifact.sbom.v1+json";
/// The cosign tag suffixes and the artifactType each stands for.
pub const COSIGN_TAGS: [(&str, &str); 3] = [
    ("sig", COSIGN_SIGNATURE),
    ("att", COSIGN_ATTESTATION),
    ("sbom", COSIGN_SBOM),
];

/// Where referrers come from and go to, and which ones.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The source registry.
    pub src: &'a Client,
    /// The source repository.
    pub src_repo: &'a str,
    /// The target registry.
    pub dst: &'a Client,
    /// The target repository.
    pub dst_repo: &'a str,
    /// artifactTypes carried; empty means all.
    pub artifact_types: &'a [String],
}

/// What the target already has for one promoted digest, so an unchanged round costs only
/// HEADs. Only what was carried in full is remembered.
#[derive(Debug, Clone, Default)]
pub struct Memo {
    /// The digest and, for an index, its children (read once: a digest never changes).
    subjects: Option<Vec<Digest>>,
    /// Whether the source serves the referrers API (asked once).
    source_api: Option<bool>,
    /// Whether the target lists referrers itself (`OCI-Subject` on a PUT, or a referrers API).
    target_api: Option<bool>,
    /// Per source cosign or fallback tag: the digest whose contents the target has.
    tags: BTreeMap<String, Digest>,
    /// Per subject: the digest of the referrers API answer whose referrers the target has.
    listings: BTreeMap<Digest, Digest>,
    /// Per subject: its referrers as last listed.
    entries: BTreeMap<Digest, Vec<Entry>>,
    /// Referrer manifests the target has.
    carried: BTreeSet<Digest>,
    /// Referrers left out for good (another subject, filtered out), with why.
    skipped: BTreeMap<Digest, String>,
    /// Per subject: the referrers the target's fallback index lists.
    indexed: BTreeMap<Digest, BTreeSet<Digest>>,
}

/// One referrer as a listing gives it.
#[derive(Debug, Clone)]
struct Entry {
    digest: Digest,
    artifact_type: Option<String>,
    /// The descriptor as listed, written unchanged into a target's fallback index.
    raw: Value,
}

/// What one round of carrying did for one digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Referrers of the digest in the source (cosign tags count one each), after the filter.
    pub found: usize,
    /// Of those, how many the target has now.
    pub in_target: usize,
    /// Manifests written to the target in this round (referrers, cosign tags, fallback indexes).
    pub written: usize,
    /// Referrers left out, and why (their `subject` names another digest).
    pub skipped: Vec<String>,
    /// What failed; retried next round.
    pub failures: Vec<String>,
}

impl Report {
    /// `2 of 3 copied`, as the status shows it.
    pub fn summary(&self) -> String {
        format!("{} of {} copied", self.in_target, self.found)
    }
}

/// What one listing of a subject's referrers gave.
enum Listing {
    /// Unchanged since the target got all of it: the remembered entries.
    Known(Vec<Entry>),
    /// New or changed: the entries, and what to remember once all are carried.
    Fresh(Vec<Entry>, Remember),
    /// No referrers.
    None,
}

/// The key under which a listing is remembered once carried.
enum Remember {
    Tag(String, Digest),
    Answer(Digest),
}

/// `sha256-<hex>`: the referrers tag schema's tag for `digest`, and cosign's prefix.
pub fn fallback_tag(digest: &Digest) -> String {
    format!("sha256-{}", digest.hex())
}

/// Carries the referrers of `digest` (promoted from `route.src_repo` to `route.dst_repo`) that
/// the target does not have yet. `src_tags` is the source repository's tag list, as the round
/// already read it: a cosign or fallback tag not in it is not asked for. Never fails as a call:
/// what failed is in the report, and `memo` keeps only what was carried.
pub async fn carry(
    route: &Route<'_>,
    digest: &Digest,
    src_tags: &[String],
    memo: &mut Memo,
) -> Report {
    let tags: HashSet<&str> = src_tags.iter().map(String::as_str).collect();
    let mut report = Report::default();
    let mut counted: BTreeSet<String> = BTreeSet::new();
    let mut present: BTreeSet<String> = BTreeSet::new();
    let subjects = subjects(route, digest, memo, &mut report).await;
    let mut queue: Vec<(Digest, usize)> = subjects.into_iter().map(|d| (d, 0)).collect();
    queue.reverse();
    let mut seen = HashSet::new();
    while let Some((subject, depth)) = queue.pop() {
        if !seen.insert(subject.clone()) {
            continue;
        }
        if seen.len() > MAX_SUBJECTS {
            report.failures.push(format!(
                "more than {MAX_SUBJECTS} subjects below {digest}; the rest are left out"
            ));
            break;
        }
        let mut below = Vec::new();
        for (suffix, artifact_type) in COSIGN_TAGS {
            let tag = format!("{}.{suffix}", fallback_tag(&subject));
            if !tags.contains(tag.as_str()) || !wanted(route, Some(artifact_type)) {
                continue;
            }
            counted.insert(tag.clone());
            match cosign_tag(route, &tag, memo, &mut report).await {
                Ok(Some(d)) => {
                    present.insert(tag);
                    below.push(d);
                }
                Ok(None) => {
                    counted.remove(&tag);
                }
                Err(e) => report.failures.push(format!("{tag}: {e}")),
            }
        }
        let entries = match listing(route.src, route.src_repo, &subject, &tags, memo).await {
            Ok(Listing::None) => Vec::new(),
            Ok(Listing::Known(entries)) => entries,
            Ok(Listing::Fresh(entries, remember)) => {
                let before = report.failures.len();
                let carried = referrers(route, &subject, &entries, memo, &mut report).await;
                if report.failures.len() == before && carried {
                    match remember {
                        Remember::Tag(tag, d) => memo.tags.insert(tag, d),
                        Remember::Answer(d) => memo.listings.insert(subject.clone(), d),
                    };
                    memo.entries.insert(subject.clone(), entries.clone());
                }
                entries
            }
            Err(e) => {
                report.failures.push(format!("referrers of {subject}: {e}"));
                Vec::new()
            }
        };
        let mut in_target = Vec::new();
        for e in &entries {
            if memo.skipped.contains_key(&e.digest) {
                continue;
            }
            counted.insert(e.digest.to_string());
            if memo.carried.contains(&e.digest) {
                present.insert(e.digest.to_string());
                in_target.push(e.clone());
                below.push(e.digest.clone());
            }
        }
        if !in_target.is_empty() {
            if let Err(e) = fallback_index(route, &subject, &in_target, memo, &mut report).await {
                report.failures.push(format!(
                    "target referrers index {}: {e}",
                    fallback_tag(&subject)
                ));
            }
        }
        if depth < MAX_DEPTH {
            queue.extend(below.into_iter().rev().map(|d| (d, depth + 1)));
        }
    }
    report.skipped.extend(memo.skipped.values().cloned());
    report.found = counted.len();
    report.in_target = present.len();
    report
}

/// Whether `artifact_type` passes the route's filter (all pass an empty filter; an unknown type
/// passes only an empty one).
fn wanted(route: &Route<'_>, artifact_type: Option<&str>) -> bool {
    route.artifact_types.is_empty()
        || artifact_type.is_some_and(|t| route.artifact_types.iter().any(|w| w == t))
}

/// The digest and the children of an index, read once per digest.
async fn subjects(
    route: &Route<'_>,
    digest: &Digest,
    memo: &mut Memo,
    report: &mut Report,
) -> Vec<Digest> {
    if let Some(s) = &memo.subjects {
        return s.clone();
    }
    let mut subjects = vec![digest.clone()];
    match route
        .src
        .get_manifest(route.src_repo, digest.as_str())
        .await
    {
        Ok(m) => {
            if let Ok(Contents::Index(children)) = manifest::contents(&m.bytes, &m.media_type) {
                subjects.extend(children.into_iter().map(|d| d.digest));
            }
            memo.subjects = Some(subjects.clone());
        }
        // Not from the source (pushed to the target by hand, or deleted there): nothing of it
        // to carry, and no reason to ask again.
        Err(e) if e.is_not_found() => {
            memo.subjects = Some(Vec::new());
            return Vec::new();
        }
        Err(e) => report
            .failures
            .push(format!("cannot read {digest} for its children: {e}")),
    }
    subjects
}

/// Brings one cosign tag to the target when its digest is not the one carried last; answers
/// the tag's digest, or `None` when the tag is gone.
async fn cosign_tag(
    route: &Route<'_>,
    tag: &str,
    memo: &mut Memo,
    report: &mut Report,
) -> Result<Option<Digest>, Error> {
    let Some(head) = route.src.head_manifest(route.src_repo, tag).await? else {
        return Ok(None);
    };
    if memo.tags.get(tag) == Some(&head.digest) {
        return Ok(Some(head.digest));
    }
    let src_ref = Reference {
        registry: route.src.host().to_string(),
        repository: route.src_repo.to_string(),
        tag: Some(tag.to_string()),
        digest: Some(head.digest.clone()),
    };
    let dst_ref = Reference {
        registry: route.dst.host().to_string(),
        repository: route.dst_repo.to_string(),
        tag: Some(tag.to_string()),
        digest: None,
    };
    // cosign rewrites `.sig` when it adds a signature: the tag moves with the source.
    let done = copy::copy(route.src, &src_ref, route.dst, &dst_ref, true).await?;
    if !done.up_to_date {
        report.written += 1;
    }
    memo.tags.insert(tag.to_string(), head.digest.clone());
    Ok(Some(head.digest))
}

/// The OCI referrers of `subject` in the source: the referrers API's answer, or the fallback
/// index when the source has no referrers API.
async fn listing(
    src: &Client,
    src_repo: &str,
    subject: &Digest,
    tags: &HashSet<&str>,
    memo: &mut Memo,
) -> Result<Listing, Error> {
    if memo.source_api != Some(false) {
        let scopes = Scopes::from([auth::pull(src_repo)]);
        let mut req = Request::new(
            Method::GET,
            src.url(&format!("/v2/{src_repo}/referrers/{subject}"))?,
            &scopes,
        );
        req.headers
            .insert(ACCEPT, HeaderValue::from_static(manifest::OCI_INDEX));
        let answer = src
            .transport
            .fetch(&req, manifest::MAX_MANIFEST_BYTES)
            .await?;
        match answer.status {
            s if s.is_success() => {
                memo.source_api = Some(true);
                let hash = Digest::of(&answer.body);
                if memo.listings.get(subject) == Some(&hash) {
                    return Ok(Listing::Known(
                        memo.entries.get(subject).cloned().unwrap_or_default(),
                    ));
                }
                let entries =
                    parse_index(&answer.body).map_err(|what| src.transport.protocol(&req, what))?;
                return Ok(Listing::Fresh(entries, Remember::Answer(hash)));
            }
            // No referrers API (the CNCF registry 2.8, GHCR): the tag schema.
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::BAD_REQUEST => {
                memo.source_api = Some(false);
            }
            _ => return Err(src.unexpected(&req, &answer)),
        }
    }
    let tag = fallback_tag(subject);
    if !tags.contains(tag.as_str()) {
        return Ok(Listing::None);
    }
    let Some(head) = src.head_manifest(src_repo, &tag).await? else {
        return Ok(Listing::None);
    };
    if memo.tags.get(&tag) == Some(&head.digest) {
        return Ok(Listing::Known(
            memo.entries.get(subject).cloned().unwrap_or_default(),
        ));
    }
    let index = src.get_manifest(src_repo, head.digest.as_str()).await?;
    if index.media_type != manifest::OCI_INDEX {
        return Err(Error::Protocol {
            registry: src.name().to_string(),
            what: format!(
                "{}:{tag} is a {}, not a referrers index",
                src_repo, index.media_type
            ),
        });
    }
    let entries = parse_index(&index.bytes).map_err(|what| Error::Protocol {
        registry: src.name().to_string(),
        what: format!("{}:{tag}: {what}", src_repo),
    })?;
    Ok(Listing::Fresh(entries, Remember::Tag(tag, head.digest)))
}

/// The `manifests` of a referrers index, at most [`MAX_REFERRERS`] of them.
fn parse_index(body: &[u8]) -> Result<Vec<Entry>, String> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Option<Vec<Value>>,
    }
    let index: Index = serde_json::from_slice(body)
        .map_err(|e| format!("referrers index is not a JSON index: {e}"))?;
    let listed = index.manifests.unwrap_or_default();
    if listed.len() > MAX_REFERRERS {
        return Err(format!(
            "{} referrers listed (limit {MAX_REFERRERS})",
            listed.len()
        ));
    }
    listed
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let digest = raw
                .get("digest")
                .and_then(Value::as_str)
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| format!("manifests[{i}] has no valid digest"))?;
            let artifact_type = raw
                .get("artifactType")
                .and_then(Value::as_str)
                .map(str::to_string);
            Ok(Entry {
                digest,
                artifact_type,
                raw,
            })
        })
        .collect()
}

/// Copies the entries the target lacks; true when none was left out by a failure.
async fn referrers(
    route: &Route<'_>,
    subject: &Digest,
    entries: &[Entry],
    memo: &mut Memo,
    report: &mut Report,
) -> bool {
    let mut all = true;
    for e in entries {
        if memo.carried.contains(&e.digest) || memo.skipped.contains_key(&e.digest) {
            continue;
        }
        if e.artifact_type.is_some() && !wanted(route, e.artifact_type.as_deref()) {
            memo.skipped.insert(
                e.digest.clone(),
                format!("{}: artifactType not carried", e.digest),
            );
            continue;
        }
        if let Err(err) = referrer(route, subject, e, memo, report).await {
            report
                .failures
                .push(format!("referrer {}: {err}", e.digest));
            all = false;
        }
    }
    all
}

/// What a referrer manifest says about itself.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Described {
    subject: Option<SubjectField>,
    artifact_type: Option<String>,
    config: Option<ConfigField>,
}

#[derive(Deserialize)]
struct SubjectField {
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigField {
    media_type: Option<String>,
}

/// One referrer to the target: found there by a HEAD, or read, checked and written by digest.
async fn referrer(
    route: &Route<'_>,
    subject: &Digest,
    e: &Entry,
    memo: &mut Memo,
    report: &mut Report,
) -> Result<(), Error> {
    let dst_scopes = Scopes::from([auth::pull_push(route.dst_repo)]);
    if route
        .dst
        .head_manifest_with(route.dst_repo, e.digest.as_str(), &dst_scopes)
        .await?
        .is_some()
    {
        memo.carried.insert(e.digest.clone());
        return Ok(());
    }
    let m: Manifest = route
        .src
        .get_manifest(route.src_repo, e.digest.as_str())
        .await?;
    let described: Option<Described> = serde_json::from_slice(&m.bytes).ok();
    let named = described
        .as_ref()
        .and_then(|d| d.subject.as_ref())
        .map(|s| s.digest.clone());
    if named.as_deref() != Some(subject.as_str()) {
        let why = format!(
            "{} is listed as a referrer of {subject} but its subject is {}; not carried",
            e.digest,
            named.as_deref().unwrap_or("missing")
        );
        tracing::warn!(referrer = %e.digest, subject = %subject, "{why}");
        memo.skipped.insert(e.digest.clone(), why);
        return Ok(());
    }
    if e.artifact_type.is_none() {
        let own = described.as_ref().and_then(|d| {
            d.artifact_type
                .clone()
                .or_else(|| d.config.as_ref().and_then(|c| c.media_type.clone()))
        });
        if !wanted(route, own.as_deref()) {
            memo.skipped.insert(
                e.digest.clone(),
                format!("{}: artifactType not carried", e.digest),
            );
            return Ok(());
        }
    }
    let src_ref = Reference {
        registry: route.src.host().to_string(),
        repository: route.src_repo.to_string(),
        tag: None,
        digest: Some(m.digest.clone()),
    };
    let dst_ref = Reference {
        registry: route.dst.host().to_string(),
        repository: route.dst_repo.to_string(),
        tag: None,
        digest: Some(m.digest.clone()),
    };
    let (_, acknowledged) =
        copy::push_by_digest(route.src, &src_ref, route.dst, &dst_ref, &m).await?;
    report.written += 1;
    if acknowledged {
        memo.target_api = Some(true);
    }
    memo.carried.insert(e.digest.clone());
    Ok(())
}

/// Lists `carried` in the target's `sha256-<hex>` index when the target does not list referrers
/// itself: re-read, merged (every entry already there stays), written only when it grew.
async fn fallback_index(
    route: &Route<'_>,
    subject: &Digest,
    carried: &[Entry],
    memo: &mut Memo,
    report: &mut Report,
) -> Result<(), Error> {
    let listed_before = memo
        .indexed
        .get(subject)
        .is_some_and(|known| carried.iter().all(|e| known.contains(&e.digest)));
    if memo.target_api == Some(true) || listed_before {
        return Ok(());
    }
    let dst_scopes = Scopes::from([auth::pull_push(route.dst_repo)]);
    if memo.target_api.is_none() {
        let mut req = Request::new(
            Method::GET,
            route
                .dst
                .url(&format!("/v2/{}/referrers/{subject}", route.dst_repo))?,
            &dst_scopes,
        );
        req.headers
            .insert(ACCEPT, HeaderValue::from_static(manifest::OCI_INDEX));
        let answer = route
            .dst
            .transport
            .fetch(&req, manifest::MAX_MANIFEST_BYTES)
            .await?;
        let serves = answer.status.is_success();
        memo.target_api = Some(serves);
        if serves {
            return Ok(());
        }
    }
    let entries: Vec<(String, Value)> = carried
        .iter()
        .map(|e| (e.digest.to_string(), e.raw.clone()))
        .collect();
    let (wrote, listed) = extend_index(route.dst, route.dst_repo, subject, &entries).await?;
    if wrote {
        report.written += 1;
    }
    let known = memo.indexed.entry(subject.clone()).or_default();
    known.extend(listed.iter().filter_map(|d| d.parse::<Digest>().ok()));
    known.extend(carried.iter().map(|e| e.digest.clone()));
    Ok(())
}

/// Extends the `sha256-<hex>` index of `subject` in `repo` with the `entries` (digest,
/// descriptor) it does not list yet: re-read right before, every entry already there kept,
/// written only when it grew. Returns whether it wrote, and the digests it listed before.
async fn extend_index(
    dst: &Client,
    repo: &str,
    subject: &Digest,
    entries: &[(String, Value)],
) -> Result<(bool, BTreeSet<String>), Error> {
    let scopes = Scopes::from([auth::pull_push(repo)]);
    let tag = fallback_tag(subject);
    let existing = match dst.get_manifest_with(repo, &tag, None, &scopes).await {
        Ok(m) => Some(m),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let mut index = match &existing {
        Some(m) if m.media_type == manifest::OCI_INDEX => serde_json::from_slice::<Value>(&m.bytes)
            .ok()
            .filter(|v| v.get("manifests").is_none_or(Value::is_array))
            .ok_or_else(|| Error::Protocol {
                registry: dst.name().to_string(),
                what: format!("{repo}:{tag} is not a JSON index; left alone"),
            })?,
        Some(m) => {
            return Err(Error::Protocol {
                registry: dst.name().to_string(),
                what: format!(
                    "{repo}:{tag} is a {}, not a referrers index; left alone",
                    m.media_type
                ),
            })
        }
        None => serde_json::json!({
            "schemaVersion": 2,
            "mediaType": manifest::OCI_INDEX,
            "manifests": [],
        }),
    };
    let listed: BTreeSet<String> = index
        .get("manifests")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| d.get("digest").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<Value> = entries
        .iter()
        .filter(|(d, _)| !listed.contains(d))
        .map(|(_, raw)| raw.clone())
        .collect();
    if missing.is_empty() {
        return Ok((false, listed));
    }
    if let Some(Value::Array(manifests)) = index.get_mut("manifests") {
        manifests.extend(missing);
    } else if let Some(object) = index.as_object_mut() {
        object.insert("manifests".into(), Value::Array(missing));
    }
    let bytes = bytes::Bytes::from(serde_json::to_vec(&index).unwrap_or_default());
    let m = Manifest {
        digest: Digest::of(&bytes),
        bytes,
        media_type: manifest::OCI_INDEX.to_string(),
    };
    dst.put_manifest(repo, &tag, &m, &scopes).await?;
    Ok((true, listed))
}

/// Writes a promotion record about `subject` into `repo`: the empty config (HEADed first,
/// unless `config_present`: an earlier record in this repository wrote it) and the record's
/// layer, the artifact manifest by digest, and its entry in the `sha256-<hex>` index unless the
/// registry lists referrers itself (`OCI-Subject` on the PUT). Returns the artifact manifest's
/// digest. Nothing is overwritten: the manifest is written by digest, the index only grows.
pub async fn attach(
    dst: &Client,
    repo: &str,
    subject: &Digest,
    artifact: &record::Artifact,
    (time, config_present): (&str, bool),
) -> Result<Digest, Error> {
    let scopes = Scopes::from([auth::pull_push(repo)]);
    // The two blobs at once: they do not depend on each other.
    let config = async {
        let empty = Digest::of(record::EMPTY_BYTES);
        if config_present || copy::has_blob(dst, repo, &empty, &scopes).await? {
            return Ok(());
        }
        copy::put_small_blob(dst, repo, record::EMPTY_BYTES, &scopes).await
    };
    let layer = copy::put_small_blob(dst, repo, &artifact.layer, &scopes);
    futures_util::try_join!(config, layer)?;
    let bytes = bytes::Bytes::from(artifact.manifest.clone());
    let m = Manifest {
        digest: Digest::of(&bytes),
        bytes,
        media_type: manifest::OCI_MANIFEST.to_string(),
    };
    let headers = dst
        .put_manifest(repo, m.digest.as_str(), &m, &scopes)
        .await?;
    if !headers.contains_key("oci-subject") {
        let entry = (m.digest.to_string(), artifact.descriptor(time));
        extend_index(dst, repo, subject, &[entry]).await?;
    }
    Ok(m.digest)
}

/// Promotion records read per repository at most (two requests each), so a repository stuffed
/// with artifacts of the record type cannot hold a history request for long.
pub const MAX_RECORDS: usize = 2_000;

/// What [`records`] found in one repository: the records, and what was skipped and why.
#[derive(Debug, Default)]
pub struct Found {
    /// The records read and checked, with the digest of the manifest that holds each.
    pub records: Vec<(Digest, record::Record)>,
    /// Artifacts of the record type that did not pass [`record::Record::read`], with why.
    pub skipped: Vec<String>,
}

/// The promotion records in `repo` about the given subjects (at most [`MAX_SUBJECTS`]): listed
/// by the referrers API where the registry serves it, else by each subject's `sha256-<hex>`
/// index when `tags` (the repository's listing) shows one. Each is read and checked; a record
/// that does not check out is skipped with the reason, never returned.
pub async fn records(
    src: &Client,
    repo: &str,
    subjects: &[Digest],
    tags: &[String],
) -> Result<Found, Error> {
    let tags: HashSet<&str> = tags.iter().map(String::as_str).collect();
    let mut memo = Memo::default();
    let mut found = Found::default();
    let mut seen = HashSet::new();
    for subject in subjects.iter().take(MAX_SUBJECTS) {
        let entries = match listing(src, repo, subject, &tags, &mut memo).await? {
            Listing::Fresh(entries, _) | Listing::Known(entries) => entries,
            Listing::None => continue,
        };
        for e in entries
            .iter()
            .filter(|e| e.artifact_type.as_deref() == Some(record::ARTIFACT_TYPE))
            .take(MAX_REFERRERS)
        {
            if !seen.insert(e.digest.clone()) {
                continue;
            }
            if seen.len() > MAX_RECORDS {
                found.skipped.push(format!(
                    "{repo}: more than {MAX_RECORDS} promotion records; the rest are not read"
                ));
                return Ok(found);
            }
            match read_record(src, repo, subject, &e.digest).await {
                Ok(Ok(r)) => found.records.push((e.digest.clone(), r)),
                Ok(Err(why)) => {
                    let why = format!("{repo}@{}: {why}", e.digest);
                    tracing::warn!(record = %e.digest, "skipping a promotion record: {why}");
                    found.skipped.push(why);
                }
                Err(err) if err.is_not_found() => {
                    found
                        .skipped
                        .push(format!("{repo}@{}: listed but gone", e.digest));
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(found)
}

/// One record: its manifest and layer, read and checked against `subject`. The outer error is
/// the registry's; the inner one says why the artifact is not a record to trust.
async fn read_record(
    src: &Client,
    repo: &str,
    subject: &Digest,
    digest: &Digest,
) -> Result<Result<record::Record, String>, Error> {
    let m = src.get_manifest(repo, digest.as_str()).await?;
    let (layer, size, about) = match record::Record::layer_of(&m.bytes) {
        Ok(found) => found,
        Err(why) => return Ok(Err(why)),
    };
    if about != *subject {
        return Ok(Err(format!(
            "listed as a referrer of {subject} but its subject is {about}"
        )));
    }
    let bytes = blob(src, repo, &layer, size).await?;
    Ok(record::Record::read(&bytes, subject))
}

/// A Sigstore bundle's artifactType and layer media type.
pub const SIGSTORE_BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// cosign's simple-signing layer media type.
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding a simple-signing payload's signature.
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The artifactType some referrers indexes give bundles (cosign 3 has been seen writing it).
const EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Signature manifests read per candidate; more are not looked at.
pub const MAX_SIGNATURE_MANIFESTS: usize = 16;

/// The cosign signatures of `digest` in `repo`, unchecked: the simple-signing layers of its
/// `.sig` tag (when `tags`, the repository's listing, shows one) and the OCI 1.1 referrers that
/// are cosign signatures or Sigstore bundles (from the referrers API, else the fallback index).
pub async fn signatures(
    src: &Client,
    repo: &str,
    digest: &Digest,
    tags: &[String],
) -> Result<Vec<Evidence>, Error> {
    let tags: HashSet<&str> = tags.iter().map(String::as_str).collect();
    let mut found = Vec::new();
    let sig_tag = format!("{}.sig", fallback_tag(digest));
    if tags.contains(sig_tag.as_str()) {
        let m = src.get_manifest(repo, &sig_tag).await?;
        evidence(src, repo, &m, &mut found).await?;
    }
    let entries = match listing(src, repo, digest, &tags, &mut Memo::default()).await? {
        Listing::Fresh(entries, _) | Listing::Known(entries) => entries,
        Listing::None => Vec::new(),
    };
    let candidates = entries.iter().filter(|e| {
        e.artifact_type
            .as_deref()
            .is_none_or(|t| [COSIGN_SIGNATURE, SIGSTORE_BUNDLE, EMPTY].contains(&t))
    });
    for e in candidates.take(MAX_SIGNATURE_MANIFESTS) {
        let m = src.get_manifest(repo, e.digest.as_str()).await?;
        let described: Option<Described> = serde_json::from_slice(&m.bytes).ok();
        let subject = described
            .as_ref()
            .and_then(|d| d.subject.as_ref())
            .map(|s| s.digest.as_str());
        if subject == Some(digest.as_str()) {
            evidence(src, repo, &m, &mut found).await?;
        }
    }
    Ok(found)
}

/// The signatures one manifest holds: simple-signing layers with their annotation, and
/// Sigstore bundle layers.
async fn evidence(
    src: &Client,
    repo: &str,
    m: &Manifest,
    found: &mut Vec<Evidence>,
) -> Result<(), Error> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layers {
        layers: Option<Vec<Layer>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Layer {
        media_type: Option<String>,
        digest: String,
        size: u64,
        annotations: Option<BTreeMap<String, String>>,
    }
    let Ok(parsed) = serde_json::from_slice::<Layers>(&m.bytes) else {
        return Ok(());
    };
    for layer in parsed
        .layers
        .unwrap_or_default()
        .into_iter()
        .take(MAX_SIGNATURE_MANIFESTS)
    {
        let Ok(digest) = layer.digest.parse::<Digest>() else {
            continue;
        };
        let signature = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            .cloned();
        match (layer.media_type.as_deref(), signature) {
            (Some(SIMPLE_SIGNING), Some(signature)) => {
                let payload = blob(src, repo, &digest, layer.size).await?;
                found.push(Evidence::SimpleSigning {
                    payload: payload.to_vec(),
                    signature,
                });
            }
            (Some(SIGSTORE_BUNDLE), _) => {
                let bytes = blob(src, repo, &digest, layer.size).await?;
                found.push(Evidence::Bundle(bytes.to_vec()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// A small blob (a payload, a bundle), read whole and verified by digest.
async fn blob(src: &Client, repo: &str, digest: &Digest, size: u64) -> Result<bytes::Bytes, Error> {
    if size > MAX_EVIDENCE_BYTES {
        return Err(Error::TooLarge {
            registry: src.name().to_string(),
            what: format!("signature blob {digest}"),
            limit: MAX_EVIDENCE_BYTES,
            size: Some(size),
        });
    }
    let scopes = Scopes::from([auth::pull(repo)]);
    let req = Request::new(
        Method::GET,
        src.url(&format!("/v2/{repo}/blobs/{digest}"))?,
        &scopes,
    );
    let answer = src.transport.fetch(&req, MAX_EVIDENCE_BYTES).await?;
    if !answer.status.is_success() {
        return Err(src.unexpected(&req, &answer));
    }
    let actual = Digest::of(&answer.body);
    if actual != *digest {
        return Err(Error::DigestMismatch {
            registry: src.name().to_string(),
            what: format!("blob {repo}@{digest}"),
            expected: digest.clone(),
            actual,
        });
    }
    Ok(answer.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn the_fallback_tag_is_sha256_dash_hex() {
        let d: Digest = D.parse().unwrap();
        assert_eq!(fallback_tag(&d), format!("sha256-{}", &D[7..]));
    }

    #[test]
    fn a_referrers_index_is_read_or_refused_with_a_reason() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":3,"artifactType":"application/spdx+json","annotations":{{"a":"b"}}}}]}}"#
        );
        let entries = parse_index(body.as_bytes()).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            entries[0].artifact_type.as_deref(),
            Some("application/spdx+json")
        );
        assert_eq!(entries[0].raw["annotations"]["a"], "b");
        assert!(parse_index(b"<html>").unwrap_err().contains("not a JSON"));
        assert!(parse_index(br#"{"manifests":[{"digest":"sha256:../x"}]}"#).is_err());
        let many = format!(
            r#"{{"manifests":[{}]}}"#,
            vec![format!(r#"{{"digest":"{D}"}}"#); MAX_REFERRERS + 1].join(",")
        );
        assert!(parse_index(many.as_bytes()).unwrap_err().contains("limit"));
        assert!(parse_index(br#"{"manifests":null}"#).unwrap().is_empty());
    }

    #[test]
    fn the_report_reads_as_the_status_shows_it() {
        let r = Report {
            found: 3,
            in_target: 2,
            ..Report::default()
        };
        assert_eq!(r.summary(), "2 of 3 copied");
    }
}
