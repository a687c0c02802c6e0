//! Copying an image `SRC -> DST` with the digest preserved, the cheapest way the pair allows.
//!
//! # Paths
//!
//! - **Same repository**: HEAD the destination; GET the source; PUT the same bytes. No blob is
//!   touched. When the destination tag exists, the source is HEADed first, so an up-to-date copy
//!   costs two HEADs and no GET (a GET counts as a pull on Docker Hub).
//! - **Same registry, other repository**: GET the root and its children, then mount every blob
//!   (`POST ...?mount=&from=`), push the children by digest, the root last. A refused mount
//!   (202) uploads into the session it opened; 401/403/404 fall back to a plain upload.
//! - **Other registry**: HEAD every blob on the destination, stream the missing ones (memory
//!   is bounded by a chunk: a 1 GiB layer is never held), then the children, then the root.
//!
//! # Guarantees
//!
//! Nothing is written that did not come from a digest-verified read: manifests are checked
//! before any PUT; a streamed blob is hashed on the way and its last chunk is held back until the
//! hash matches, so a corrupted transfer never completes an upload. Referrers (signatures,
//! SBOMs) are carried by [`super::referrers`], which copies each one through this module.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt as _, TryStreamExt as _};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::auth::{self, Scopes};
use super::manifest::{self, Contents, Descriptor, Manifest};
use super::transport::{Request, MAX_ERROR_BODY};
use super::{Client, Error};
use crate::reference::{Digest, Reference};

/// Index nesting followed (an index of indexes is legal, deeper is not seen in practice).
const MAX_DEPTH: usize = 3;
/// All child manifests of one image together; each is also capped at 4 MiB, but 1,024 of
/// those would be 4 GiB in memory.
const MAX_CHILDREN_BYTES: u64 = 64 << 20;

/// Which path a copy took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Source and destination in one repository: manifest only.
    SameRepository,
    /// One registry, two repositories: blobs mounted.
    Mount,
    /// Two registries: blobs streamed.
    Transfer,
}

/// What a copy did, for the command line and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The root manifest's digest, the same on both sides.
    pub digest: Digest,
    /// The path taken.
    pub path: Path,
    /// The destination already had this digest: nothing was written.
    pub up_to_date: bool,
    /// Manifests PUT (children and root).
    pub manifests_pushed: usize,
    /// Blobs mounted from the source repository.
    pub blobs_mounted: usize,
    /// Blobs uploaded (streamed) because they could not be mounted or were missing.
    pub blobs_uploaded: usize,
    /// Bytes in those uploads.
    pub bytes_uploaded: u64,
    /// Blobs the destination already had.
    pub blobs_present: usize,
    /// The root manifest as a referrer's `subject` names it; `None` when it was not read (up
    /// to date).
    pub subject: Option<crate::record::Subject>,
}

impl Report {
    fn new(digest: Digest, path: Path) -> Report {
        Report {
            digest,
            path,
            up_to_date: false,
            manifests_pushed: 0,
            blobs_mounted: 0,
            blobs_uploaded: 0,
            bytes_uploaded: 0,
            blobs_present: 0,
            subject: None,
        }
    }
}

/// How one blob got to the destination.
enum BlobOutcome {
    Mounted,
    Present,
    Uploaded(u64),
}

/// What the caller already knows, so a copy can skip requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// The source's root manifest, read by the caller (a GET instead of a HEAD when it resolved
    /// the source tag); used when its digest is the one copied.
    pub source: Option<&'a Manifest>,
    /// The destination tag was absent from a listing the caller took moments ago while no other
    /// retagd writer could write the repository: its HEAD is skipped. See the README's
    /// guarantee: a writer outside retagd has a window of the requests between that listing and
    /// the PUT.
    pub destination_absent: bool,
}

/// Copies `src_ref` (resolved by `src`) to `dst_ref` (on `dst`); see the module docs. A `dst_ref`
/// with a digest must name the source's digest. Without `overwrite`, a destination tag that
/// exists with another digest is refused ([`Error::TagHoldsOtherDigest`]) and left alone.
pub async fn copy(
    src: &Client,
    src_ref: &Reference,
    dst: &Client,
    dst_ref: &Reference,
    overwrite: bool,
) -> Result<Report, Error> {
    copy_knowing(src, src_ref, dst, dst_ref, overwrite, Known::default()).await
}

/// [`copy`], skipping the requests whose answers `known` already holds.
pub async fn copy_knowing(
    src: &Client,
    src_ref: &Reference,
    dst: &Client,
    dst_ref: &Reference,
    overwrite: bool,
    known: Known<'_>,
) -> Result<Report, Error> {
    let job = Job::new(src, src_ref, dst, dst_ref);
    let resolved = match (&src_ref.digest, known.destination_absent) {
        (Some(d), true) => Resolved::Copy(Some(d.clone())),
        _ => job.resolve(overwrite).await?,
    };
    let wanted = match resolved {
        Resolved::UpToDate(digest) => {
            let mut report = Report::new(digest, job.path);
            report.up_to_date = true;
            return Ok(report);
        }
        Resolved::Copy(wanted) => wanted,
    };
    let root = match (known.source, &wanted) {
        (Some(m), Some(w))
            if m.digest == *w && dst_ref.digest.as_ref().is_none_or(|d| *d == *w) =>
        {
            m.clone()
        }
        _ => job.root(wanted.as_ref()).await?,
    };
    let mut report = Report::new(root.digest.clone(), job.path);
    report.subject = Some(crate::record::Subject {
        digest: root.digest.clone(),
        media_type: root.media_type.clone(),
        size: root.bytes.len() as u64,
    });
    if job.path != Path::SameRepository {
        job.push_below_root(&root, &mut report).await?;
    }
    job.put_root(&root, &mut report).await?;
    Ok(report)
}

/// One copy: both ends, the path between them, and the token scopes each side's requests carry.
struct Job<'a> {
    src: &'a Client,
    src_ref: &'a Reference,
    dst: &'a Client,
    dst_ref: &'a Reference,
    path: Path,
    src_scopes: Scopes,
    dst_scopes: Scopes,
}

/// What the destination and source say before anything is read in full.
enum Resolved {
    /// The destination already holds this digest: nothing to write.
    UpToDate(Digest),
    /// Copy the source; its digest when it is already known.
    Copy(Option<Digest>),
}

impl<'a> Job<'a> {
    /// Decides the path. One scope set per registry for the whole copy, so one token serves
    /// every request; on one registry it includes pull on the source, which mounts need.
    fn new(
        src: &'a Client,
        src_ref: &'a Reference,
        dst: &'a Client,
        dst_ref: &'a Reference,
    ) -> Job<'a> {
        let same_registry = std::ptr::eq(src, dst);
        let path = match (same_registry, src_ref.repository == dst_ref.repository) {
            (true, true) => Path::SameRepository,
            (true, false) => Path::Mount,
            (false, _) => Path::Transfer,
        };
        let mut dst_scopes = Scopes::from([auth::pull_push(&dst_ref.repository)]);
        if path == Path::Mount {
            dst_scopes.insert(auth::pull(&src_ref.repository));
        }
        let src_scopes = if same_registry {
            dst_scopes.clone()
        } else {
            Scopes::from([auth::pull(&src_ref.repository)])
        };
        Job {
            src,
            src_ref,
            dst,
            dst_ref,
            path,
            src_scopes,
            dst_scopes,
        }
    }

    fn src_repo(&self) -> &'a str {
        &self.src_ref.repository
    }

    fn dst_repo(&self) -> &'a str {
        &self.dst_ref.repository
    }

    /// HEADs the destination, and the source only when the destination exists (an up-to-date
    /// copy costs two HEADs and no GET); refuses a digest the destination must not get.
    async fn resolve(&self, overwrite: bool) -> Result<Resolved, Error> {
        let (src_ref, dst_ref) = (self.src_ref, self.dst_ref);
        // A destination written `TAG@DIGEST` is about the tag: look it up by tag.
        let dst_lookup = dst_ref.tag.as_deref().unwrap_or(dst_ref.manifest_ref());
        let existing = self
            .dst
            .head_manifest_with(self.dst_repo(), dst_lookup, &self.dst_scopes)
            .await?
            .map(|h| h.digest);
        let wanted = match (&src_ref.digest, &existing) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(_)) => Some(
                self.src
                    .head_manifest_with(self.src_repo(), src_ref.manifest_ref(), &self.src_scopes)
                    .await?
                    .ok_or_else(|| Error::SourceMissing(src_ref.to_string()))?
                    .digest,
            ),
            (None, None) => None,
        };
        if let (Some(w), Some(d)) = (&wanted, &dst_ref.digest) {
            if w != d {
                return Err(digest_conflict(dst_ref, d, w));
            }
        }
        match (wanted, existing) {
            (Some(w), Some(e)) if w == e => Ok(Resolved::UpToDate(w)),
            (Some(w), Some(e)) if !overwrite => Err(Error::TagHoldsOtherDigest {
                reference: dst_ref.to_string(),
                existing: e,
                wanted: w,
            }),
            (wanted, _) => Ok(Resolved::Copy(wanted)),
        }
    }

    /// GETs the root manifest, by digest when known, and checks it against a digest the
    /// destination is written with.
    async fn root(&self, wanted: Option<&Digest>) -> Result<Manifest, Error> {
        let root_ref = wanted.map_or_else(
            || self.src_ref.manifest_ref().to_string(),
            |d| d.to_string(),
        );
        let root = self
            .src
            .get_manifest_with(self.src_repo(), &root_ref, wanted, &self.src_scopes)
            .await
            .map_err(|e| match e {
                e if e.is_not_found() => Error::SourceMissing(self.src_ref.to_string()),
                e => e,
            })?;
        if let Some(d) = &self.dst_ref.digest {
            if *d != root.digest {
                return Err(digest_conflict(self.dst_ref, d, &root.digest));
            }
        }
        Ok(root)
    }

    /// Mount or transfer: the child manifests, every blob, then the children by digest.
    async fn push_below_root(&self, root: &Manifest, report: &mut Report) -> Result<(), Error> {
        let (src, dst) = (self.src, self.dst);
        let children = children(src, self.src_repo(), root, &self.src_scopes).await?;
        let mut blobs = BTreeMap::new();
        for m in std::iter::once(root).chain(&children) {
            if let Contents::Image(descriptors) = contents(src, m)? {
                for d in descriptors {
                    blobs.entry(d.digest.clone()).or_insert(d);
                }
            }
        }
        let width = dst.transport.max_concurrency();
        let outcomes: Vec<BlobOutcome> = stream::iter(blobs.into_values())
            .map(|blob| self.copy_blob(blob))
            .buffer_unordered(width)
            .try_collect()
            .await?;
        for outcome in outcomes {
            match outcome {
                BlobOutcome::Mounted => report.blobs_mounted += 1,
                BlobOutcome::Present => report.blobs_present += 1,
                BlobOutcome::Uploaded(n) => {
                    report.blobs_uploaded += 1;
                    report.bytes_uploaded += n;
                }
            }
        }
        // Children by digest, deepest first (they are listed that way), before the root.
        for child in &children {
            dst.put_manifest(
                self.dst_repo(),
                child.digest.as_str(),
                child,
                &self.dst_scopes,
            )
            .await?;
            report.manifests_pushed += 1;
        }
        Ok(())
    }

    /// PUTs the root under the destination tag, or by digest when the destination has none.
    async fn put_root(&self, root: &Manifest, report: &mut Report) -> Result<(), Error> {
        let target = self
            .dst_ref
            .tag
            .clone()
            .unwrap_or_else(|| root.digest.to_string());
        self.dst
            .put_manifest(self.dst_repo(), &target, root, &self.dst_scopes)
            .await?;
        report.manifests_pushed += 1;
        Ok(())
    }
}

/// Copies `root`, already read from the source and verified, to the destination by its digest
/// (blobs and children first, as [`copy`] does). Returns the report and whether the destination's
/// answer carried `OCI-Subject`: a registry that says so keeps its referrers listing itself.
pub(super) async fn push_by_digest(
    src: &Client,
    src_ref: &Reference,
    dst: &Client,
    dst_ref: &Reference,
    root: &Manifest,
) -> Result<(Report, bool), Error> {
    let job = Job::new(src, src_ref, dst, dst_ref);
    let mut report = Report::new(root.digest.clone(), job.path);
    if job.path != Path::SameRepository {
        job.push_below_root(root, &mut report).await?;
    }
    let answer = dst
        .put_manifest(job.dst_repo(), root.digest.as_str(), root, &job.dst_scopes)
        .await?;
    report.manifests_pushed += 1;
    Ok((report, answer.contains_key("oci-subject")))
}

fn digest_conflict(dst_ref: &Reference, named: &Digest, source: &Digest) -> Error {
    Error::DestinationDigest {
        reference: dst_ref.to_string(),
        named: named.clone(),
        source_digest: source.clone(),
    }
}

fn contents(client: &Client, m: &Manifest) -> Result<Contents, Error> {
    manifest::contents(&m.bytes, &m.media_type).map_err(|source| Error::Manifest {
        registry: client.name().to_string(),
        what: m.digest.to_string(),
        source,
    })
}

/// Every manifest below `root`, children before their parents, each GET verified by digest and
/// size.
async fn children(
    src: &Client,
    repository: &str,
    root: &Manifest,
    scopes: &Scopes,
) -> Result<Vec<Manifest>, Error> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let mut level = vec![root.clone()];
    for depth in 0..=MAX_DEPTH {
        let mut wanted: Vec<Descriptor> = Vec::new();
        for m in &level {
            if let Contents::Index(c) = contents(src, m)? {
                wanted.extend(c.into_iter().filter(|d| seen.insert(d.digest.clone())));
            }
        }
        if seen.len() > manifest::MAX_CHILDREN {
            return Err(Error::IndexTooLarge {
                digest: root.digest.clone(),
                limit: format!(
                    "more than {} child manifests in all",
                    manifest::MAX_CHILDREN
                ),
            });
        }
        if wanted.is_empty() {
            break;
        }
        if depth == MAX_DEPTH {
            return Err(Error::IndexTooLarge {
                digest: root.digest.clone(),
                limit: format!("indexes nested deeper than {MAX_DEPTH} levels"),
            });
        }
        total = wanted.iter().fold(total, |t, d| t.saturating_add(d.size));
        if total > MAX_CHILDREN_BYTES {
            return Err(Error::IndexTooLarge {
                digest: root.digest.clone(),
                limit: format!("child manifests add up to more than {MAX_CHILDREN_BYTES} bytes"),
            });
        }
        let width = src.transport.max_concurrency();
        let fetched: Vec<Manifest> = stream::iter(wanted)
            .map(|d| child(src, repository, d, scopes))
            .buffered(width)
            .try_collect()
            .await?;
        // Deeper levels go first in the final list.
        out.splice(0..0, fetched.iter().cloned());
        level = fetched;
    }
    Ok(out)
}

/// One child manifest, verified by digest and by the size its index gave.
async fn child(
    src: &Client,
    repository: &str,
    d: Descriptor,
    scopes: &Scopes,
) -> Result<Manifest, Error> {
    let m = src
        .get_manifest_with(repository, d.digest.as_str(), Some(&d.digest), scopes)
        .await?;
    if m.bytes.len() as u64 != d.size {
        return Err(Error::SizeMismatch {
            registry: src.name().to_string(),
            what: format!("child manifest {} ({} bytes)", d.digest, m.bytes.len()),
            expected: d.size,
        });
    }
    Ok(m)
}

impl Job<'_> {
    /// Gets one blob to the destination: mounted, found there, or uploaded (the whole upload
    /// retried as one, since a streamed body cannot be replayed).
    async fn copy_blob(&self, blob: Descriptor) -> Result<BlobOutcome, Error> {
        let (dst, blob) = (self.dst, &blob);
        let uploads = dst.url(&format!("/v2/{}/blobs/uploads/", self.dst_repo()))?;
        let session = if self.path == Path::Mount {
            let mut url = uploads.clone();
            url.query_pairs_mut()
                .append_pair("mount", blob.digest.as_str())
                .append_pair("from", self.src_repo());
            let req = Request::new(Method::POST, url, &self.dst_scopes);
            let answer = dst.transport.fetch(&req, MAX_ERROR_BODY).await?;
            match answer.status {
                StatusCode::CREATED => return Ok(BlobOutcome::Mounted),
                // Mount refused, but an upload session is open: use it.
                StatusCode::ACCEPTED => Some(location(dst, &req, &answer.headers)?),
                // Harbor and others say "no mount" this way; upload instead.
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => None,
                _ => return Err(dst.unexpected(&req, &answer)),
            }
        } else if has_blob(dst, self.dst_repo(), &blob.digest, &self.dst_scopes).await? {
            return Ok(BlobOutcome::Present);
        } else {
            None
        };
        let session = Mutex::new(session);
        let uploaded = dst
            .transport
            .retrying(|| async {
                // A session opened by a refused mount serves the first attempt only.
                let opened = session.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.upload(&uploads, blob, opened).await
            })
            .await?;
        Ok(BlobOutcome::Uploaded(uploaded))
    }

    /// One upload attempt: open a session unless one is given, stream the source blob into a
    /// monolithic PUT, verify on the way. On failure the session is deleted (best effort).
    async fn upload(
        &self,
        uploads: &Url,
        blob: &Descriptor,
        session: Option<Url>,
    ) -> Result<u64, Error> {
        let dst = self.dst;
        let session = match session {
            Some(s) => s,
            None => {
                let req = Request::new(Method::POST, uploads.clone(), &self.dst_scopes);
                let answer = dst.transport.fetch(&req, MAX_ERROR_BODY).await?;
                if answer.status != StatusCode::ACCEPTED {
                    return Err(dst.unexpected(&req, &answer));
                }
                location(dst, &req, &answer.headers)?
            }
        };
        let result = self.stream_into(&session, blob).await;
        if result.is_err() {
            // Best effort: registries also expire abandoned sessions.
            let req = Request::new(Method::DELETE, session, &self.dst_scopes);
            let _ = dst.transport.fetch(&req, MAX_ERROR_BODY).await;
        }
        result.map(|()| blob.size)
    }

    /// GETs the blob from the source and PUTs it, verified on the way, into `session`.
    async fn stream_into(&self, session: &Url, blob: &Descriptor) -> Result<(), Error> {
        let (src, dst) = (self.src, self.dst);
        // Hold a slot on both registries, taken in one global order (the clients' addresses,
        // which are unique, unlike names) so opposite copies cannot deadlock; one slot for one
        // registry.
        let _slots = if std::ptr::eq(src, dst) {
            (Some(dst.transport.permit().await?), None)
        } else if (src as *const Client as usize) < (dst as *const Client as usize) {
            let a = src.transport.permit().await?;
            (Some(a), Some(dst.transport.permit().await?))
        } else {
            let a = dst.transport.permit().await?;
            (Some(a), Some(src.transport.permit().await?))
        };
        let get = Request::new(
            Method::GET,
            src.url(&format!("/v2/{}/blobs/{}", self.src_repo(), blob.digest))?,
            &self.src_scopes,
        );
        // One deadline for the whole GET and PUT, scaled by the blob's size: either side
        // dripping bytes would otherwise hold both slots for as long as it likes.
        let deadline = src.transport.blob_deadline(blob.size);
        src.transport
            .within(&get, deadline, self.stream_blob(&get, session, blob))
            .await
    }

    /// The GET and PUT of `stream_into`, without its slots and deadline.
    async fn stream_blob(
        &self,
        get: &Request<'_>,
        session: &Url,
        blob: &Descriptor,
    ) -> Result<(), Error> {
        let (src, dst) = (self.src, self.dst);
        let answer = src.transport.open(get).await?;
        if !answer.status().is_success() {
            return Err(src.transport.status_error(get, answer).await);
        }
        let failure = Arc::new(Mutex::new(None));
        let body = verified(
            answer.bytes_stream(),
            blob.clone(),
            src.name().to_string(),
            failure.clone(),
        );
        let mut url = session.clone();
        url.query_pairs_mut()
            .append_pair("digest", blob.digest.as_str());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(blob.size));
        let put = Request {
            method: Method::PUT,
            url,
            headers,
            body: None,
            scopes: &self.dst_scopes,
        };
        let sent = dst
            .transport
            .send_stream(&put, reqwest::Body::wrap_stream(body))
            .await;
        if let Some(e) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return Err(e);
        }
        let response = sent?;
        if response.status() != StatusCode::CREATED && !response.status().is_success() {
            return Err(dst.transport.status_error(&put, response).await);
        }
        Ok(())
    }
}

/// Whether `repo` has the blob (a HEAD).
pub(super) async fn has_blob(
    dst: &Client,
    repo: &str,
    digest: &Digest,
    scopes: &Scopes,
) -> Result<bool, Error> {
    let req = Request::new(
        Method::HEAD,
        dst.url(&format!("/v2/{repo}/blobs/{digest}"))?,
        scopes,
    );
    let answer = dst.transport.fetch(&req, MAX_ERROR_BODY).await?;
    match answer.status {
        s if s.is_success() => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(dst.unexpected(&req, &answer)),
    }
}

/// Writes a small blob held in memory (a promotion record, the empty config) into `repo`,
/// retried as one: a single POST with the digest and the bytes (the spec's monolithic upload,
/// one request), or, from a registry that opens a session instead (202), a PUT into it.
pub(super) async fn put_small_blob(
    dst: &Client,
    repo: &str,
    bytes: &[u8],
    scopes: &Scopes,
) -> Result<(), Error> {
    let digest = Digest::of(bytes);
    let mut url = dst.url(&format!("/v2/{repo}/blobs/uploads/"))?;
    url.query_pairs_mut().append_pair("digest", digest.as_str());
    let body = Bytes::copy_from_slice(bytes);
    let octets = || {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers
    };
    dst.transport
        .retrying(|| async {
            let post = Request {
                method: Method::POST,
                url: url.clone(),
                headers: octets(),
                body: Some(body.clone()),
                scopes,
            };
            let answer = dst.transport.fetch(&post, MAX_ERROR_BODY).await?;
            match answer.status {
                StatusCode::CREATED => return Ok(()),
                StatusCode::ACCEPTED => {}
                _ => return Err(dst.unexpected(&post, &answer)),
            }
            let mut session = location(dst, &post, &answer.headers)?;
            session
                .query_pairs_mut()
                .append_pair("digest", digest.as_str());
            let put = Request {
                method: Method::PUT,
                url: session,
                headers: octets(),
                body: Some(body.clone()),
                scopes,
            };
            let answer = dst.transport.fetch(&put, MAX_ERROR_BODY).await?;
            if !answer.status.is_success() {
                return Err(dst.unexpected(&put, &answer));
            }
            Ok(())
        })
        .await
}

/// The upload session a `Location` names, relative to the request that got it.
fn location(client: &Client, req: &Request<'_>, headers: &HeaderMap) -> Result<Url, Error> {
    let text = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            client
                .transport
                .protocol(req, "upload session without a Location".into())
        })?;
    req.url.join(text).map_err(|e| {
        client
            .transport
            .protocol(req, format!("invalid upload Location: {e}"))
    })
}

/// Passes `inner` through while hashing it; holds each chunk back until the next arrives, and
/// ends with an error instead of the last chunk when size or digest is wrong, so the receiver
/// never sees a complete wrong blob. The error is also left in `failure` for the caller.
fn verified(
    inner: impl Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
    blob: Descriptor,
    registry: String,
    failure: Arc<Mutex<Option<Error>>>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let verifier = Verifier {
        inner: Box::pin(inner),
        blob,
        registry,
        hasher: Sha256::new(),
        held: None,
        seen: 0,
        done: false,
    };
    stream::unfold(verifier, move |mut v| {
        let failure = failure.clone();
        async move {
            let item = match v.next_chunk().await? {
                Ok(chunk) => Ok(chunk),
                Err(Stop::Read(e)) => Err(std::io::Error::other(e)),
                Err(Stop::WrongBytes(e)) => {
                    let message = e.to_string();
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    Err(std::io::Error::other(message))
                }
            };
            Some((item, v))
        }
    })
}

/// Why a verified stream ends early.
enum Stop {
    /// Reading the source failed: the upload fails like any broken transfer.
    Read(reqwest::Error),
    /// The bytes are not what the descriptor says: the caller gets this error.
    WrongBytes(Error),
}

/// The hashing and hold-back state of one streamed blob.
struct Verifier<S> {
    inner: std::pin::Pin<Box<S>>,
    blob: Descriptor,
    registry: String,
    hasher: Sha256,
    held: Option<Bytes>,
    seen: u64,
    done: bool,
}

impl<S: Stream<Item = Result<Bytes, reqwest::Error>>> Verifier<S> {
    /// The next chunk to pass on: the held-back one, once another has arrived or the whole blob
    /// checks out. `None` after the end or after the first failure.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, Stop>> {
        if self.done {
            return None;
        }
        loop {
            match self.inner.next().await {
                // An empty chunk must not become the held-back "last" one.
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) => {
                    self.seen += chunk.len() as u64;
                    if self.seen > self.blob.size {
                        self.done = true;
                        return Some(Err(Stop::WrongBytes(Error::SizeMismatch {
                            registry: self.registry.clone(),
                            what: format!("blob {} (longer)", self.blob.digest),
                            expected: self.blob.size,
                        })));
                    }
                    self.hasher.update(&chunk);
                    if let Some(previous) = self.held.replace(chunk) {
                        return Some(Ok(previous));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(Stop::Read(e)));
                }
                None => return self.finish(),
            }
        }
    }

    /// At the end of the source: the held-back last chunk when size and digest match, else the
    /// refusal.
    fn finish(&mut self) -> Option<Result<Bytes, Stop>> {
        self.done = true;
        let actual = Digest::from_hash(&self.hasher.clone().finalize());
        if self.seen != self.blob.size || actual != self.blob.digest {
            return Some(Err(Stop::WrongBytes(Error::DigestMismatch {
                registry: self.registry.clone(),
                what: format!("blob of {} bytes (expected {})", self.seen, self.blob.size),
                expected: self.blob.digest.clone(),
                actual,
            })));
        }
        self.held.take().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(chunks: Vec<&'static [u8]>, blob: Descriptor) -> (Vec<u8>, bool, Option<Error>) {
        let failure = Arc::new(Mutex::new(None));
        let inner = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))));
        let out: Vec<Result<Bytes, std::io::Error>> =
            verified(inner, blob, "r".into(), failure.clone())
                .collect()
                .await;
        let ended_in_error = out.last().is_some_and(|r| r.is_err());
        let bytes = out.into_iter().filter_map(Result::ok).flatten().collect();
        let failure = failure.lock().unwrap().take();
        (bytes, ended_in_error, failure)
    }

    fn descriptor(bytes: &[u8]) -> Descriptor {
        Descriptor {
            media_type: String::new(),
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[tokio::test]
    async fn a_good_blob_passes_whole() {
        let (bytes, error, failure) =
            run(vec![b"hello ", b"wor", b"ld"], descriptor(b"hello world")).await;
        assert_eq!(
            (bytes.as_slice(), error, failure.is_none()),
            (&b"hello world"[..], false, true)
        );
    }

    #[tokio::test]
    async fn an_altered_blob_never_delivers_its_last_chunk() {
        let (bytes, error, failure) =
            run(vec![b"hello ", b"wor", b"lD"], descriptor(b"hello world")).await;
        assert_eq!(bytes, b"hello wor");
        assert!(error);
        assert!(matches!(failure, Some(Error::DigestMismatch { .. })));
    }

    #[tokio::test]
    async fn an_empty_last_chunk_does_not_let_wrong_bytes_through() {
        let (bytes, error, failure) =
            run(vec![b"hello worlD", b""], descriptor(b"hello world")).await;
        assert!(bytes.is_empty() && error, "{bytes:?}");
        assert!(matches!(failure, Some(Error::DigestMismatch { .. })));
    }

    #[tokio::test]
    async fn short_and_long_blobs_are_refused() {
        let (_, error, failure) = run(vec![b"hello"], descriptor(b"hello world")).await;
        assert!(error && matches!(failure, Some(Error::DigestMismatch { .. })));
        let (bytes, error, failure) =
            run(vec![b"hello world", b"!"], descriptor(b"hello world")).await;
        assert!(bytes.is_empty() && error && matches!(failure, Some(Error::SizeMismatch { .. })));
    }
}
