//! The registry client: tag lists, manifests as exact bytes, and copies that take the cheapest
//! path a source/destination pair allows.
//!
//! # Layout
//!
//! - [`Registries`]: one [`Client`] per configured registry, plus implicit ones for hosts that
//!   only appear on the command line (anonymous or `~/.docker/config.json`).
//! - `transport`: per registry, the connection pool, limits, redirects and retries.
//! - `auth`: which `Authorization` to send: credentials, challenges, the token flow and cache.
//! - [`Error`] (`error`): what failed, as named variants, and its bounded [`Reason`].
//! - `manifest`: media types and descriptor walking.
//! - [`copy`](copy()): the three copy paths (same repository, mount, transfer).
//! - [`Observer`]: how requests, retries and rate limits reach the metrics.
//!
//! We use `reqwest` directly rather than `oci-client`: its copy path lacks `Link` pagination,
//! retries, 429 handling and the 202 mount fallback, and its digest push depends on `Location`.

mod auth;
mod copy;
mod error;
pub mod manifest;
mod observe;
pub mod referrers;
mod tls;
mod transport;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LINK};
use reqwest::{Method, StatusCode};
use url::Url;

pub use auth::is_loopback;
pub use auth::Secret;
pub use copy::{copy, copy_knowing, Known, Path, Report};
pub use error::{Error, HttpStatus, Reason};
pub use manifest::{Manifest, ManifestHead};
pub use observe::{NoObserver, Observer, RetryReason};

use crate::config;
use crate::reference::{self, Digest};
use auth::{Credentials, Scopes, Source};
use transport::{Request, Settings, Transport};

/// Tag-list pages are read up to this size (1,000 tags of 128 bytes are 130 KiB).
const MAX_PAGE_BYTES: u64 = 16 << 20;
/// A repository with more tags than this is refused rather than held in memory.
pub const MAX_TAGS: usize = 1_000_000;
/// Pages followed per listing (a registry that ignores `n` and sends 50 a page still reaches
/// [`MAX_TAGS`]).
const MAX_PAGES: usize = 20_000;
/// Longest `Link` target followed.
const MAX_LINK_LEN: usize = 8 << 10;
/// Docker Hub's API host, for references written `docker.io/...` or without a host.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// All tags of a repository, as the registry listed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagList {
    /// Valid tags, in the registry's order.
    pub tags: Vec<String>,
    /// Entries that are not valid tags, dropped (they could not be used in a URL anyway).
    pub invalid: usize,
    /// Pages read.
    pub pages: usize,
}

/// One registry: its transport plus the read and write operations on repositories.
#[derive(Debug)]
pub struct Client {
    transport: Transport,
    host: String,
    page_size: u32,
}

impl Client {
    /// The registry's name (configuration key, or host for implicit registries).
    pub fn name(&self) -> &str {
        &self.transport.name
    }

    /// `host[:port]` as references write it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The last `ratelimit-remaining` this registry reported.
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        self.transport.rate_limit_remaining()
    }

    fn url(&self, path: &str) -> Result<Url, Error> {
        self.transport.base.join(path).map_err(|e| Error::Protocol {
            registry: self.name().to_string(),
            what: format!("cannot build URL for {path:?}: {e}"),
        })
    }

    fn manifest_url(&self, repository: &str, reference: &str) -> Result<Url, Error> {
        check_repository(repository)?;
        if !reference::is_valid_tag(reference) && reference.parse::<Digest>().is_err() {
            return Err(Error::InvalidReference(
                reference.chars().take(150).collect::<String>(),
            ));
        }
        self.url(&format!("/v2/{repository}/manifests/{reference}"))
    }

    /// A manifest GET or HEAD, with all four manifest types in `Accept`.
    fn manifest_request<'a>(
        &self,
        method: Method,
        repository: &str,
        reference: &str,
        scopes: &'a Scopes,
    ) -> Result<Request<'a>, Error> {
        let mut req = Request::new(method, self.manifest_url(repository, reference)?, scopes);
        req.headers
            .insert(ACCEPT, HeaderValue::from_static(manifest::ACCEPT));
        Ok(req)
    }

    /// Lists every tag, following `Link` pages (`page_size` per page). A `Link` to another
    /// origin, a page loop, or more than [`MAX_TAGS`] tags is an error.
    pub async fn list_tags(&self, repository: &str) -> Result<TagList, Error> {
        check_repository(repository)?;
        let scopes = Scopes::from([auth::pull(repository)]);
        let mut url = self.url(&format!("/v2/{repository}/tags/list"))?;
        url.query_pairs_mut()
            .append_pair("n", &self.page_size.to_string());
        let mut list = TagList::default();
        let mut seen = HashSet::new();
        loop {
            let req = Request::new(Method::GET, url.clone(), &scopes);
            let page = self.transport.fetch(&req, MAX_PAGE_BYTES).await?;
            if !page.status.is_success() {
                return Err(self.unexpected(&req, &page));
            }
            list.pages += 1;
            let added = self.add_tags(&req, &page.body, &mut list)?;
            let Some(next) = self.next_page(&req, &page.headers, added)? else {
                return Ok(list);
            };
            if !seen.insert(hash_of(next.as_str())) || list.pages >= MAX_PAGES {
                return Err(self
                    .transport
                    .protocol(&req, format!("tag list pages loop or exceed {MAX_PAGES}")));
            }
            url = next;
        }
    }

    /// Adds one tag list page to `list` (tags the grammar refuses are only counted); returns
    /// how many tags the page held.
    fn add_tags(&self, req: &Request<'_>, body: &[u8], list: &mut TagList) -> Result<usize, Error> {
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        let body: Page = serde_json::from_slice(body).map_err(|e| {
            self.transport
                .protocol(req, format!("tag list is not valid JSON: {e}"))
        })?;
        let before = list.tags.len() + list.invalid;
        for tag in body.tags.unwrap_or_default() {
            if list.tags.len() >= MAX_TAGS {
                return Err(self.transport.protocol(
                    req,
                    format!("more than {MAX_TAGS} tags; refusing to hold them all"),
                ));
            }
            if reference::is_valid_tag(&tag) {
                list.tags.push(tag);
            } else {
                list.invalid += 1;
            }
        }
        Ok(list.tags.len() + list.invalid - before)
    }

    /// The next page from the `Link` header of a page that held `added` tags; `None` on the
    /// last page. A page without tags that points on, an oversized or invalid `Link`, or one to
    /// another origin is an error.
    fn next_page(
        &self,
        req: &Request<'_>,
        headers: &HeaderMap,
        added: usize,
    ) -> Result<Option<Url>, Error> {
        let Some(next) = headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link)
        else {
            return Ok(None);
        };
        if added == 0 || next.len() > MAX_LINK_LEN {
            return Err(self.transport.protocol(
                req,
                "a tag list page without tags, or with an oversized Link, points to another page"
                    .into(),
            ));
        }
        let next = req.url.join(next).map_err(|e| {
            self.transport
                .protocol(req, format!("invalid Link {next:?}: {e}"))
        })?;
        if (next.scheme(), next.host_str(), next.port_or_known_default())
            != (
                self.transport.base.scheme(),
                self.transport.base.host_str(),
                self.transport.base.port_or_known_default(),
            )
        {
            return Err(self.transport.protocol(
                req,
                format!(
                    "Link to another origin ({}) refused",
                    next.host_str().unwrap_or("?")
                ),
            ));
        }
        Ok(Some(next))
    }

    /// HEADs a manifest by tag or digest: `None` when absent. Falls back to a GET when the
    /// registry sends no valid `Docker-Content-Digest`, so the digest is always known.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, Error> {
        self.head_manifest_with(
            repository,
            reference,
            &Scopes::from([auth::pull(repository)]),
        )
        .await
    }

    async fn head_manifest_with(
        &self,
        repository: &str,
        reference: &str,
        scopes: &Scopes,
    ) -> Result<Option<ManifestHead>, Error> {
        let req = self.manifest_request(Method::HEAD, repository, reference, scopes)?;
        let answer = self
            .transport
            .fetch(&req, transport::MAX_ERROR_BODY)
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(self.unexpected(&req, &answer));
        }
        let digest = answer
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        let media_type = answer
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let size = answer
            .headers
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        match digest {
            Some(digest) => Ok(Some(ManifestHead {
                digest,
                media_type,
                size,
            })),
            None => {
                let expected = reference.parse::<Digest>().ok();
                let m = self
                    .get_manifest_with(repository, reference, expected.as_ref(), scopes)
                    .await?;
                Ok(Some(ManifestHead {
                    digest: m.digest,
                    media_type: m.media_type,
                    size: Some(m.bytes.len() as u64),
                }))
            }
        }
    }

    /// GETs a manifest's exact bytes and verifies them: against the digest when `reference` is
    /// one, against `Docker-Content-Digest` when sent. Refuses schema 1, unknown media types and
    /// bodies over 4 MiB (before reading them whole).
    pub async fn get_manifest(&self, repository: &str, reference: &str) -> Result<Manifest, Error> {
        let expected = reference.parse::<Digest>().ok();
        self.get_manifest_with(
            repository,
            reference,
            expected.as_ref(),
            &Scopes::from([auth::pull(repository)]),
        )
        .await
    }

    async fn get_manifest_with(
        &self,
        repository: &str,
        reference: &str,
        expected: Option<&Digest>,
        scopes: &Scopes,
    ) -> Result<Manifest, Error> {
        let req = self.manifest_request(Method::GET, repository, reference, scopes)?;
        let answer = self
            .transport
            .fetch(&req, manifest::MAX_MANIFEST_BYTES)
            .await?;
        if !answer.status.is_success() {
            return Err(self.unexpected(&req, &answer));
        }
        let what = format!("{repository}:{reference}");
        let digest = Digest::of(&answer.body);
        let announced = answer
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        for expected in expected.into_iter().chain(announced.as_ref()) {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    registry: self.name().to_string(),
                    what: format!("manifest {what}"),
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let content_type = answer
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let media_type =
            manifest::media_type(&answer.body, content_type).map_err(|source| Error::Manifest {
                registry: self.name().to_string(),
                what: what.clone(),
                source,
            })?;
        Ok(Manifest {
            bytes: answer.body,
            digest,
            media_type,
        })
    }

    /// PUTs a manifest's bytes unchanged under `reference` (tag or digest) with its media type;
    /// a `Docker-Content-Digest` in the answer must match. Returns the answer's headers (a
    /// referrer's PUT is judged by its `OCI-Subject`).
    async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        manifest: &Manifest,
        scopes: &Scopes,
    ) -> Result<HeaderMap, Error> {
        let mut headers = HeaderMap::new();
        let content_type =
            HeaderValue::from_str(&manifest.media_type).map_err(|_| Error::Protocol {
                registry: self.name().to_string(),
                what: format!("media type {:?} cannot be sent", manifest.media_type),
            })?;
        headers.insert(CONTENT_TYPE, content_type);
        let req = Request {
            method: Method::PUT,
            url: self.manifest_url(repository, reference)?,
            headers,
            body: Some(manifest.bytes.clone()),
            scopes,
        };
        let answer = self
            .transport
            .fetch(&req, transport::MAX_ERROR_BODY)
            .await?;
        if !answer.status.is_success() {
            return Err(self.unexpected(&req, &answer));
        }
        let stored = answer
            .headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok());
        // Verify what the registry stored: its answer, or a HEAD when it gave none.
        let stored = match stored {
            Some(d) => Some(d),
            None => self
                .head_manifest_with(repository, reference, scopes)
                .await?
                .map(|h| h.digest),
        };
        match stored {
            Some(stored) if stored == manifest.digest => Ok(answer.headers),
            Some(stored) => Err(Error::DigestMismatch {
                registry: self.name().to_string(),
                what: format!("stored manifest {repository}:{reference}"),
                expected: manifest.digest.clone(),
                actual: stored,
            }),
            None => Err(Error::Protocol {
                registry: self.name().to_string(),
                what: format!("manifest {repository}:{reference} is missing right after its PUT"),
            }),
        }
    }

    /// An error for a non-retried status the caller did not expect.
    fn unexpected(&self, req: &Request<'_>, answer: &transport::Fetched) -> Error {
        self.transport
            .error_for(req, answer.status, &answer.headers, &answer.body)
    }
}

/// Names are re-checked at the URL boundary, whatever the caller validated.
fn check_repository(repository: &str) -> Result<(), Error> {
    if reference::is_valid_repository(repository) {
        Ok(())
    } else {
        Err(Error::InvalidRepository(
            repository.chars().take(300).collect::<String>(),
        ))
    }
}

/// Remembers visited page URLs in 8 bytes each.
fn hash_of(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// The `rel="next"` target of a `Link` header value, if any.
fn next_link(header: &str) -> Option<&str> {
    let mut rest = header;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let params_end = rest[end..].find('<').map_or(rest.len(), |i| end + i);
        let params = &rest[end + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.strip_prefix("rel=")
                .map(|v| {
                    v.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .unwrap_or(false)
        });
        if is_next {
            return Some(target);
        }
        rest = &rest[params_end..];
    }
    None
}

/// The clients for every registry retagd talks to.
pub struct Registries {
    configured: BTreeMap<String, Arc<Client>>,
    implicit: Mutex<HashMap<String, Arc<Client>>>,
    observer: Arc<dyn Observer>,
    docker_config: Option<PathBuf>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("configured", &self.configured.keys())
            .finish_non_exhaustive()
    }
}

/// `host[:port]` of a URL, lowercased, as references write it.
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

impl Registries {
    /// Builds a client for every configured registry: reads password files and CA files now, so
    /// a missing one is reported at start, naming the registry. `docker_config` is the
    /// `config.json` used for registries that are not configured (normally
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub fn new(
        registries: &BTreeMap<String, config::Registry>,
        docker_config: Option<PathBuf>,
        observer: Arc<dyn Observer>,
    ) -> Result<Registries, Error> {
        let mut configured = BTreeMap::new();
        for (name, r) in registries {
            let fail = |message: String| Error::Credentials {
                registry: name.clone(),
                message,
            };
            let host = authority(&r.url);
            let source = match &r.auth {
                config::Auth::Anonymous => Source::Known(Credentials::None),
                config::Auth::Password {
                    username,
                    password_file,
                } => {
                    // Read now to fail at start; read again whenever credentials are refreshed.
                    let text = std::fs::read_to_string(password_file).map_err(|e| {
                        fail(format!(
                            "cannot read password_file {}: {e}",
                            password_file.display()
                        ))
                    })?;
                    if text.lines().next().unwrap_or("").is_empty() {
                        return Err(fail(format!(
                            "password_file {} is empty",
                            password_file.display()
                        )));
                    }
                    Source::PasswordFile {
                        username: username.clone(),
                        path: password_file.clone(),
                    }
                }
                config::Auth::DockerConfig(path) => Source::DockerConfig {
                    path: path.clone(),
                    server: docker_server(&host),
                    required: true,
                },
            };
            let ca_pem = match &r.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|e| Error::Setup {
                    registry: name.clone(),
                    message: format!("cannot read ca_file {}: {e}", path.display()),
                })?),
                None => None,
            };
            let settings = Settings {
                max_concurrency: r.max_concurrency,
                requests_per_second: r.requests_per_second,
                ca_pem,
                request_timeout: r.request_timeout,
            };
            let base = r.url.clone();
            let transport =
                Transport::new(name.clone(), base, &settings, source, observer.clone())?;
            configured.insert(
                name.clone(),
                Arc::new(Client {
                    transport,
                    host,
                    page_size: r.page_size,
                }),
            );
        }
        Ok(Registries {
            configured,
            implicit: Mutex::new(HashMap::new()),
            observer,
            docker_config,
        })
    }

    /// The default Docker config: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn default_docker_config() -> Option<PathBuf> {
        std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|d| d.join("config.json"))
    }

    /// The client of the configured registry `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Client>> {
        self.configured.get(name).cloned()
    }

    /// The client for a reference's host: the configured registry with that host, else an
    /// implicit one (https, or http on loopback as Docker allows; credentials from the default
    /// Docker config when it has them).
    pub fn for_host(&self, host: &str) -> Result<Arc<Client>, Error> {
        let host = host.to_ascii_lowercase();
        let api_host = if matches!(host.as_str(), reference::DOCKER_HUB | "index.docker.io") {
            DOCKER_HUB_API.to_string()
        } else {
            host
        };
        if let Some(c) = self.configured.values().find(|c| c.host == api_host) {
            return Ok(c.clone());
        }
        let mut implicit = self.implicit.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = implicit.get(&api_host) {
            return Ok(c.clone());
        }
        let setup = |message: String| Error::Setup {
            registry: api_host.clone(),
            message,
        };
        let probe = Url::parse(&format!("http://{api_host}/"))
            .map_err(|e| setup(format!("invalid registry host: {e}")))?;
        let scheme = if is_loopback(&probe) { "http" } else { "https" };
        let base = Url::parse(&format!("{scheme}://{api_host}/"))
            .map_err(|e| setup(format!("invalid registry host: {e}")))?;
        let source = match &self.docker_config {
            Some(path) => Source::DockerConfig {
                path: path.clone(),
                server: docker_server(&api_host),
                required: false,
            },
            None => Source::Known(Credentials::None),
        };
        let settings = Settings {
            max_concurrency: config::DEFAULT_MAX_CONCURRENCY,
            requests_per_second: None,
            ca_pem: None,
            request_timeout: config::DEFAULT_REQUEST_TIMEOUT,
        };
        let transport = Transport::new(
            api_host.clone(),
            base,
            &settings,
            source,
            self.observer.clone(),
        )?;
        let client = Arc::new(Client {
            transport,
            host: api_host.clone(),
            page_size: config::DEFAULT_PAGE_SIZE,
        });
        implicit.insert(api_host, client.clone());
        Ok(client)
    }
}

/// The key Docker stores a registry's credentials under.
fn docker_server(host: &str) -> String {
    if host == DOCKER_HUB_API {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_links_are_found_among_other_relations() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=100>; rel="next""#),
            Some("/v2/a/tags/list?last=b&n=100")
        );
        assert_eq!(
            next_link(r#"<https://x/prev>; rel="prev", <https://x/next?a=1,2>; rel=next"#),
            Some("https://x/next?a=1,2")
        );
        assert_eq!(next_link(r#"<https://x/first>; rel="first""#), None);
        for junk in ["", "<", ">", "<a", "rel=next", "<a>;", "<<>>; rel=next"] {
            let _ = next_link(junk);
        }
    }

    #[tokio::test]
    async fn names_are_checked_again_at_the_url() {
        let r = settings_for_test();
        let client = Registries::new(&r, None, Arc::new(NoObserver))
            .unwrap()
            .get("x")
            .unwrap();
        assert!(client.manifest_url("a/b", "v1").is_ok());
        for (repo, reference) in [
            ("a/../b", "v1"),
            ("a", "../../x"),
            ("a", "sha256:abc"),
            ("a", "v1?x"),
        ] {
            assert!(
                matches!(
                    client.manifest_url(repo, reference),
                    Err(Error::InvalidReference(_) | Error::InvalidRepository(_))
                ),
                "{repo} {reference}"
            );
        }
        assert!(client.list_tags("../x").await.is_err());
    }

    fn settings_for_test() -> BTreeMap<String, config::Registry> {
        let r = config::Registry {
            name: "x".into(),
            url: Url::parse("http://127.0.0.1:9").unwrap(),
            auth: config::Auth::Anonymous,
            ca_file: None,
            max_concurrency: 1,
            requests_per_second: None,
            page_size: 10,
            request_timeout: config::DEFAULT_REQUEST_TIMEOUT,
        };
        BTreeMap::from([("x".to_string(), r)])
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, text_from};

    #[test]
    fn fuzz_link_headers_give_a_target_inside_the_header_or_none() {
        fuzz(
            "Link headers",
            text_from("<>;,= rel\"nextprev/v2?n=1&last=a", 80),
            |header| {
                if let Some(target) = next_link(&header) {
                    proptest::prop_assert!(header.contains(target));
                    proptest::prop_assert!(!target.contains('>'));
                }
                Ok(())
            },
        );
    }
}
