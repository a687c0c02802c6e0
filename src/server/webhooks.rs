//! Registry push webhooks: the proof of the shared secret, then the tag pushes a payload carries.
//!
//! The server routes `POST /webhooks/{source}` to [`pre_authenticate`] before it reads the body,
//! then to [`receive`], and reconciles the pipelines that watch each [`Push`]'s repository; the webhook only says "look now", so a webhook and a poll
//! give the same plan. Everything taken from a payload passes the [`crate::reference`] grammar
//! before it leaves this module, so no path trick (`..`, `/` in a tag, `%2F`) reaches a URL.
//!
//! # Refused, skipped, ignored
//!
//! - A missing or wrong proof of the secret: [`Refusal::Unauthorized`] (401). A proof in a header
//!   or the query (distribution, Harbor, Docker Hub) is checked before the body is read, so a
//!   client without the secret cannot make the server buffer a body; GitHub's HMAC covers the
//!   body, so only its header's presence is checked first, the HMAC after the (bounded) read and
//!   before parsing.
//! - A body that is not this source's JSON shape, or more than [`MAX_ENTRIES`] entries:
//!   [`Refusal::BadRequest`] (400) naming the field and position.
//! - One entry whose repository, tag or host fails the grammar: skipped, counted in
//!   [`Received::invalid`] and logged; the other entries still count. Not a 400, because the
//!   distribution registry resends a refused envelope until it is accepted, so one odd name
//!   would block its queue and the good pushes with it.
//! - Entries that are not tag pushes: counted in [`Received::ignored`].
//!
//! # Where the fixtures' shapes come from (`tests/webhooks/`)
//!
//! - `distribution-push.json`: the envelope and event of
//!   <https://distribution.github.io/distribution/about/notifications/> and the `Event` struct of
//!   distribution's `notifications/event.go` (`target.tag`, `request.host`);
//!   the blobs, platform manifest and tagged index of one `docker push`.
//! - `harbor-push.json`: the `PUSH_ARTIFACT` example ("Payload Format", Default format) of
//!   <https://goharbor.io/docs/latest/working-with-projects/project-configuration/configure-webhooks/>.
//! - `github-package-published.json`: the `package` event, action `published`, of
//!   <https://docs.github.com/en/webhooks/webhook-events-and-payloads#package>, laid out like
//!   octokit/webhooks `payload-examples/api.github.com/package/published.docker.payload.json`
//!   with the values a real GHCR delivery carries (`namespace` = owner, `package_type`
//!   `CONTAINER`), trimmed of fields retagd does not read.
//! - `dockerhub-push.json`: the example of
//!   <https://docs.docker.com/docker-hub/repos/manage/webhooks/>, verbatim.

use axum::http::{header, HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use sha2::Sha256;

use super::same_secret;
use crate::reference::{is_valid_host, is_valid_repository, is_valid_tag, shorten, DOCKER_HUB};

/// Most events (distribution) or resources (Harbor) in one payload: bounds a request's work.
pub const MAX_ENTRIES: usize = 1000;
/// GitHub's container registry; its package events name no host.
const GHCR: &str = "ghcr.io";

/// Which product sent the webhook; the path segment after /webhooks/.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The CNCF distribution registry (`notifications.endpoints`).
    Distribution,
    /// Harbor's project webhook policies.
    Harbor,
    /// GitHub `package` / `registry_package` events of GHCR.
    GitHub,
    /// Docker Hub repository webhooks.
    DockerHub,
}

impl Source {
    /// From the path segment: "distribution", "harbor", "github", "dockerhub".
    pub fn from_path(segment: &str) -> Option<Source> {
        match segment {
            "distribution" => Some(Source::Distribution),
            "harbor" => Some(Source::Harbor),
            "github" => Some(Source::GitHub),
            "dockerhub" => Some(Source::DockerHub),
            _ => None,
        }
    }

    /// The path segment / metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Distribution => "distribution",
            Source::Harbor => "harbor",
            Source::GitHub => "github",
            Source::DockerHub => "dockerhub",
        }
    }
}

/// One push of a tag that may start a reconcile. Every name passed the reference grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// The registry host (`host[:port]`) as the payload names it; `None` when it names none.
    pub host: Option<String>,
    /// The repository without host (`myorg/app`).
    pub repository: String,
    /// The tag that was pushed.
    pub tag: String,
}

impl Push {
    fn new(host: Option<&str>, repository: String, tag: String) -> Push {
        let host = host.map(str::to_owned);
        Push {
            host,
            repository,
            tag,
        }
    }
}

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Missing or wrong proof of the secret (HTTP 401). The message never contains the secret or
    /// what was sent.
    #[error("webhook not authenticated: {0}")]
    Unauthorized(&'static str),
    /// The body is not this source's payload (HTTP 400), with what is wrong and where.
    #[error("webhook payload refused: {0}")]
    BadRequest(String),
}

impl Refusal {
    /// The status the server answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// What a webhook carried.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Tag pushes, in payload order.
    pub pushes: Vec<Push>,
    /// Events not about a tag push (pulls, deletes, blob pushes, pushes by digest, pushes by
    /// retagd itself, other event types, ping).
    pub ignored: usize,
    /// Tag pushes skipped because a repository, tag or host failed the reference grammar.
    pub invalid: usize,
}

impl Received {
    /// Keeps a push whose names pass the grammar; counts and logs one that does not.
    fn accept(&mut self, source: Source, at: &str, push: Push) {
        let problem = if !is_valid_repository(&push.repository) {
            Some(("repository", push.repository.as_str()))
        } else if !is_valid_tag(&push.tag) {
            Some(("tag", push.tag.as_str()))
        } else {
            push.host
                .as_deref()
                .filter(|h| !is_valid_host(h))
                .map(|h| ("host", h))
        };
        match problem {
            None => self.pushes.push(push),
            Some((what, value)) => {
                self.invalid += 1;
                let (source, value) = (source.as_str(), shorten(value, 100));
                tracing::warn!(source, at, "skipped a push: invalid {what} {value:?}");
            }
        }
    }
}

/// Checks the proof of `secret`, then parses the body. `query` is the raw query string.
///
/// The proof per source: distribution `Authorization: Bearer <secret>` (set in
/// `notifications.endpoints[].headers`); Harbor the policy's "Auth Header", sent verbatim as
/// `Authorization`, either `Bearer <secret>` or `<secret>`; GitHub `X-Hub-Signature-256:
/// sha256=<hex HMAC-SHA256 of the body>`; Docker Hub the query parameter `token=<secret>`
/// (form-encoded), because its webhooks can carry neither a header nor a signature. The server
/// must therefore never log the query string. The server calls [`pre_authenticate`] first, before
/// reading the body; `receive` checks the whole proof again, so it never parses an unproven body
/// whoever calls it.
pub fn receive(
    source: Source,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    secret: &[u8],
) -> Result<Received, Refusal> {
    authenticate(source, headers, query, body, secret)?;
    let mut received = Received::default();
    match source {
        Source::Distribution => distribution(body, &mut received)?,
        Source::Harbor => harbor(body, &mut received)?,
        Source::GitHub => github(headers, body, &mut received)?,
        Source::DockerHub => dockerhub(body, &mut received)?,
    }
    Ok(received)
}

/// Checks the part of the proof of `secret` that is not in the body; the server calls it before
/// reading the body, so a client that cannot prove the secret is refused without sending one.
///
/// `Ok(true)`: the proof is complete (distribution, Harbor, Docker Hub). `Ok(false)`: the proof
/// is an HMAC of the body (GitHub); its header is there and well-formed, and [`receive`] checks it
/// against the body. A missing or wrong proof, or an empty `secret`, is an `Err`.
pub fn pre_authenticate(
    source: Source,
    headers: &HeaderMap,
    query: Option<&str>,
    secret: &[u8],
) -> Result<bool, Refusal> {
    use Refusal::Unauthorized;
    if secret.is_empty() {
        // An empty secret is proved by an empty header: fail closed instead.
        return Err(Unauthorized("no webhook secret is configured"));
    }
    let authorization = || {
        headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .ok_or(Unauthorized("missing Authorization header"))
    };
    let proved = match source {
        Source::Distribution => {
            strip_bearer(authorization()?).is_some_and(|t| same_secret(t, secret))
        }
        Source::Harbor => {
            let value = authorization()?;
            same_secret(value, secret) | strip_bearer(value).is_some_and(|t| same_secret(t, secret))
        }
        Source::GitHub => {
            github_signature(headers)?;
            return Ok(false);
        }
        Source::DockerHub => {
            let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .find_map(|(k, v)| (k == "token").then_some(v))
                .ok_or(Unauthorized("missing token query parameter"))?;
            same_secret(token.as_bytes(), secret)
        }
    };
    if !proved {
        return Err(mismatch());
    }
    Ok(true)
}

/// [`pre_authenticate`], then the HMAC of `body` where the proof is one (GitHub).
fn authenticate(
    source: Source,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    secret: &[u8],
) -> Result<(), Refusal> {
    if pre_authenticate(source, headers, query, secret)? {
        return Ok(());
    }
    let signature = github_signature(headers)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| Refusal::Unauthorized("the webhook secret cannot key an HMAC"))?;
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| mismatch())
}

/// The bytes of `X-Hub-Signature-256: sha256=<hex>`.
fn github_signature(headers: &HeaderMap) -> Result<Vec<u8>, Refusal> {
    let signature = headers
        .get("x-hub-signature-256")
        .ok_or(Refusal::Unauthorized("missing X-Hub-Signature-256 header"))?;
    (signature.as_bytes().strip_prefix(b"sha256="))
        .and_then(decode_hex)
        .ok_or(Refusal::Unauthorized(
            "X-Hub-Signature-256 is not sha256=<hex>",
        ))
}

fn mismatch() -> Refusal {
    Refusal::Unauthorized("the proof of the webhook secret does not match")
}

/// The credentials of `Bearer <credentials>`; the scheme is case-insensitive (RFC 9110 11.1).
pub(super) fn strip_bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    let pairs = text.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let digit = |b: &u8| (*b as char).to_digit(16);
    let byte = |p: &[u8]| u8::try_from((digit(p.first()?)? << 4) | digit(p.get(1)?)?).ok();
    pairs.map(byte).collect()
}

/// Parses `body` as `T`, naming the failing field and position in the refusal.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => bad(e.into_inner().to_string()),
            _ => bad(format!("{path}: {}", e.into_inner())),
        }
    })?;
    de.end().map_err(|e| bad(e.to_string()))?;
    Ok(value)
}

/// A 400 whose message, which may quote the payload, cannot flood a log.
fn bad(message: String) -> Refusal {
    Refusal::BadRequest(shorten(&message, 300))
}

fn limit(what: &str, n: usize) -> Result<(), Refusal> {
    if n > MAX_ENTRIES {
        return Err(bad(format!("{what}: {n} entries, at most {MAX_ENTRIES}")));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(expecting = "a distribution notification envelope {\"events\": [...]}")]
struct Envelope {
    events: Vec<Event>,
}

// Go's encoder writes absent strings as "" or leaves them out, never null.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Event {
    action: String,
    target: Target,
    request: Request,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Target {
    repository: String,
    tag: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Request {
    host: String,
}

/// A tag push is a `push` with a tag: blob pushes and pushes by digest have none. Pushes by
/// retagd itself count too: its user agent is the same for the daemon and for `retagd copy` in
/// a CI job, and an echo of the daemon's own promotion costs one reconcile that finds nothing.
fn distribution(body: &[u8], out: &mut Received) -> Result<(), Refusal> {
    let envelope: Envelope = parse(body)?;
    limit("events", envelope.events.len())?;
    for (i, event) in envelope.events.into_iter().enumerate() {
        let (target, request) = (event.target, event.request);
        if event.action != "push" || target.tag.is_empty() {
            out.ignored += 1;
            continue;
        }
        let host = Some(request.host.as_str()).filter(|h| !h.is_empty());
        let push = Push::new(host, target.repository, target.tag);
        out.accept(Source::Distribution, &format!("events[{i}]"), push);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(expecting = "a Harbor webhook payload (Default format)")]
struct HarborPayload {
    #[serde(rename = "type")]
    kind: String,
    specversion: Option<IgnoredAny>,
    event_data: Option<HarborData>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HarborData {
    resources: Vec<HarborResource>,
    repository: HarborRepository,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HarborResource {
    tag: String,
    resource_url: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct HarborRepository {
    repo_full_name: String,
}

/// Every `PUSH_ARTIFACT` resource with a tag is a push.
fn harbor(body: &[u8], out: &mut Received) -> Result<(), Refusal> {
    let payload: HarborPayload = parse(body)?;
    if payload.specversion.is_some() {
        let fix = "set the webhook policy's payload format to Default";
        return Err(bad(format!("a CloudEvents payload: {fix}")));
    }
    if payload.kind != "PUSH_ARTIFACT" {
        out.ignored += 1;
        return Ok(());
    }
    let missing = || bad("event_data: missing".into());
    let data = payload.event_data.ok_or_else(missing)?;
    limit("event_data.resources", data.resources.len())?;
    for (i, resource) in data.resources.into_iter().enumerate() {
        if resource.tag.is_empty() {
            out.ignored += 1;
            continue;
        }
        let host = registry_host(&resource.resource_url);
        let push = Push::new(host, data.repository.repo_full_name.clone(), resource.tag);
        out.accept(Source::Harbor, &format!("event_data.resources[{i}]"), push);
    }
    Ok(())
}

/// The host of `host/repo:tag`, by Docker's rule: a first component with `.` or `:`, or
/// `localhost`. A scheme, which Harbor does not send, is tolerated.
fn registry_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (host, _) = rest.split_once('/')?;
    (host.contains(['.', ':']) || host == "localhost").then_some(host)
}

// GitHub writes null for absent values (`container_metadata` of other package types): `Option`.
#[derive(Deserialize)]
#[serde(expecting = "a GitHub package webhook payload")]
struct GitHubPayload {
    action: Option<String>,
    package: Option<GitHubPackage>,
    registry_package: Option<GitHubPackage>,
}

#[derive(Deserialize)]
struct GitHubPackage {
    name: Option<String>,
    namespace: Option<String>,
    package_type: Option<String>,
    package_version: Option<GitHubVersion>,
}

#[derive(Deserialize)]
struct GitHubVersion {
    container_metadata: Option<GitHubContainer>,
}

#[derive(Deserialize)]
struct GitHubContainer {
    tag: Option<GitHubTag>,
}

#[derive(Deserialize)]
struct GitHubTag {
    name: Option<String>,
}

/// `package` (repository and organization webhooks) and `registry_package` (GitHub Apps) differ
/// only in the top key. GHCR lowercases names, so `Octo-Org/App` is `octo-org/app`. A
/// multi-platform push also publishes its untagged platform manifests: ignored.
fn github(headers: &HeaderMap, body: &[u8], out: &mut Received) -> Result<(), Refusal> {
    let event = headers.get("x-github-event").map(|v| v.as_bytes());
    if event.is_some_and(|e| e != b"package" && e != b"registry_package") {
        out.ignored += 1; // ping, or an event type subscribed by mistake
        return Ok(());
    }
    let payload: GitHubPayload = parse(body)?;
    let package = (payload.package.or(payload.registry_package))
        .ok_or_else(|| bad("package: missing (neither `package` nor `registry_package`)".into()))?;
    let tag = (package.package_version.and_then(|v| v.container_metadata))
        .and_then(|c| c.tag?.name)
        .unwrap_or_default();
    let kind = package.package_type.unwrap_or_default();
    let container = kind.eq_ignore_ascii_case("container");
    if payload.action.as_deref() != Some("published") || !container || tag.is_empty() {
        out.ignored += 1;
        return Ok(());
    }
    let name = [package.namespace, package.name]
        .map(Option::unwrap_or_default)
        .join("/");
    let repository = name.to_lowercase();
    out.accept(
        Source::GitHub,
        "package",
        Push::new(Some(GHCR), repository, tag),
    );
    Ok(())
}

#[derive(Deserialize)]
#[serde(expecting = "a Docker Hub webhook payload")]
struct HubPayload {
    push_data: HubPushData,
    repository: HubRepository,
}

#[derive(Deserialize)]
struct HubPushData {
    tag: Option<String>,
}

#[derive(Deserialize)]
struct HubRepository {
    repo_name: Option<String>,
}

/// Docker Hub sends only pushes. An official image's `repo_name` may lack its `library/`.
fn dockerhub(body: &[u8], out: &mut Received) -> Result<(), Refusal> {
    let payload: HubPayload = parse(body)?;
    let tag = payload.push_data.tag.unwrap_or_default();
    let mut repository = payload.repository.repo_name.unwrap_or_default();
    if tag.is_empty() {
        out.ignored += 1;
        return Ok(());
    }
    if !repository.contains('/') {
        repository.insert_str(0, "library/");
    }
    let push = Push::new(Some(DOCKER_HUB), repository, tag);
    out.accept(Source::DockerHub, "repository", push);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use Source::{Distribution, DockerHub, GitHub, Harbor};

    /// Has characters a query string must percent-encode.
    const SECRET: &str = "s3cret+Token/=";
    const SECRET_QUERY: &str = "token=s3cret%2BToken%2F%3D";
    const DISTRIBUTION: &str = include_str!("../../tests/webhooks/distribution-push.json");
    const HARBOR: &str = include_str!("../../tests/webhooks/harbor-push.json");
    const GITHUB: &str = include_str!("../../tests/webhooks/github-package-published.json");
    const DOCKERHUB: &str = include_str!("../../tests/webhooks/dockerhub-push.json");

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    /// `host/repo:tag` as a push; a first component without `.` or `:` is no host.
    fn image(reference: &str) -> Push {
        let (name, tag) = reference.rsplit_once(':').unwrap();
        let host = registry_host(name);
        let repository = host.map_or(name, |h| &name[h.len() + 1..]);
        Push::new(host, repository.into(), tag.into())
    }

    fn got(images: &[&str], ignored: usize, invalid: usize) -> Received {
        let pushes = images.iter().map(|i| image(i)).collect();
        Received {
            pushes,
            ignored,
            invalid,
        }
    }

    fn unauthorized(result: &Result<Received, Refusal>) -> bool {
        matches!(result, Err(Refusal::Unauthorized(_)))
    }

    fn sign(key: &str, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let hex: Vec<String> = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={}", hex.concat())
    }

    /// A request with the right proof for `source`.
    fn send(source: Source, body: &str) -> Result<Received, Refusal> {
        let (bearer, signature) = (format!("Bearer {SECRET}"), sign(SECRET, body));
        let (h, query) = match source {
            Distribution | Harbor => (headers(&[("authorization", &bearer)]), None),
            GitHub => (headers(&[("x-hub-signature-256", &signature)]), None),
            DockerHub => (HeaderMap::new(), Some(SECRET_QUERY)),
        };
        receive(source, &h, query, body.as_bytes(), SECRET.as_bytes())
    }

    fn bad_request(result: Result<Received, Refusal>) -> String {
        match result {
            Err(e @ Refusal::BadRequest(_)) => e.to_string(),
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn each_fixture_yields_exactly_its_tag_push() {
        let cases = [
            (
                Distribution,
                DISTRIBUTION,
                "registry.example.com:5000/myorg/app:v1.2.0-dev.3",
                2,
            ),
            (
                Harbor,
                HARBOR,
                "hub.harbor.com/test-webhook/debian:latest",
                0,
            ),
            (GitHub, GITHUB, "ghcr.io/octo-org/app:v1.2.0-dev.3", 0),
            (
                DockerHub,
                DOCKERHUB,
                "docker.io/svendowideit/testhook:latest",
                0,
            ),
        ];
        for (source, body, pushed, ignored) in cases {
            assert_eq!(send(source, body).unwrap(), got(&[pushed], ignored, 0));
        }
    }

    #[test]
    fn a_payload_recorded_from_the_real_registry_is_one_push() {
        // Sent by docker-registry 2.8.2 in tests/it/harness.rs (which re-checks its shape live).
        let recorded = include_str!("../../tests/webhooks/distribution-registry-2.8.json");
        let received = send(Distribution, recorded).unwrap();
        assert_eq!(received.pushes.len(), 1, "{received:?}");
        assert_eq!(received.pushes[0].repository, "smoke/notify");
        assert_eq!(received.pushes[0].tag, "v1");
        assert!(received.pushes[0].host.is_some());
    }

    #[test]
    fn each_source_accepts_its_proof_and_refuses_a_wrong_or_missing_one() {
        let body = DOCKERHUB; // the body only matters to GitHub's signature
        let auth = |value: &str| Some(("authorization", value.to_owned()));
        let (bearer, wrong) = (format!("bearer {SECRET}"), "Bearer s3cret+Token/!");
        let hub = |signature| Some(("x-hub-signature-256", signature));
        let cases = [
            (Distribution, auth(&bearer), None, true),
            (Distribution, auth(wrong), None, false),
            (Distribution, auth(SECRET), None, false),
            (Distribution, None, None, false),
            (Harbor, auth(SECRET), None, true),
            (Harbor, auth(&bearer), None, true),
            (Harbor, auth(wrong), None, false),
            (Harbor, None, None, false),
            (GitHub, hub(sign(SECRET, body)), None, true),
            (GitHub, hub(sign("other", body)), None, false),
            (GitHub, hub("sha256=zz".into()), None, false),
            (GitHub, auth(&bearer), None, false),
            (DockerHub, None, Some(SECRET_QUERY), true),
            (DockerHub, None, Some("token=s3cret+Token/="), false),
            (DockerHub, None, Some("other=1"), false),
            (DockerHub, None, None, false),
        ];
        for (i, (source, header, query, right)) in cases.into_iter().enumerate() {
            let h = header
                .map(|(name, v)| headers(&[(name, &v)]))
                .unwrap_or_default();
            let result = receive(source, &h, query, body.as_bytes(), SECRET.as_bytes());
            if right {
                assert!(!unauthorized(&result), "{i}: {result:?}");
                continue;
            }
            let refusal = result.unwrap_err();
            assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED, "case {i}");
            for text in [refusal.to_string(), format!("{refusal:?}")] {
                assert!(
                    !text.contains("s3cret") && !text.contains("Token"),
                    "{i}: {text}"
                );
            }
        }
    }

    #[test]
    fn pre_authentication_settles_header_and_query_proofs_and_leaves_github_to_the_body() {
        let bearer = format!("Bearer {SECRET}");
        let right = [
            (Distribution, headers(&[("authorization", &bearer)]), None),
            (Harbor, headers(&[("authorization", SECRET)]), None),
            (DockerHub, HeaderMap::new(), Some(SECRET_QUERY)),
        ];
        for (source, h, query) in right {
            let complete = pre_authenticate(source, &h, query, SECRET.as_bytes());
            assert!(matches!(complete, Ok(true)), "{source:?}: {complete:?}");
        }
        // Any well-formed signature passes for now: only the body can tell.
        let signature = headers(&[("x-hub-signature-256", &sign("other", GITHUB))]);
        let pending = pre_authenticate(GitHub, &signature, None, SECRET.as_bytes());
        assert!(matches!(pending, Ok(false)), "{pending:?}");
        let refused = receive(
            GitHub,
            &signature,
            None,
            GITHUB.as_bytes(),
            SECRET.as_bytes(),
        );
        assert!(unauthorized(&refused), "{refused:?}");

        let wrong = [
            (
                Distribution,
                headers(&[("authorization", "Bearer nope")]),
                None,
            ),
            (Distribution, HeaderMap::new(), None),
            (Harbor, headers(&[("authorization", "nope")]), None),
            (DockerHub, HeaderMap::new(), Some("token=nope")),
            (GitHub, HeaderMap::new(), None),
            (GitHub, headers(&[("x-hub-signature-256", "sha1=00")]), None),
        ];
        for (source, h, query) in wrong {
            let result = pre_authenticate(source, &h, query, SECRET.as_bytes());
            assert!(
                matches!(result, Err(Refusal::Unauthorized(_))),
                "{source:?}: {result:?}"
            );
        }
        let result = pre_authenticate(GitHub, &signature, None, b"");
        assert!(
            matches!(result, Err(Refusal::Unauthorized(_))),
            "{result:?}"
        );
    }

    #[test]
    fn an_empty_secret_refuses_everything() {
        let h = headers(&[("authorization", "Bearer ")]);
        let result = receive(Distribution, &h, None, DISTRIBUTION.as_bytes(), b"");
        assert!(unauthorized(&result), "{result:?}");
    }

    #[test]
    fn a_github_signature_does_not_cover_an_altered_body() {
        let altered = GITHUB.replacen("v1.2.0-dev.3", "v1.2.0-dev.4", 1);
        let h = headers(&[("x-hub-signature-256", &sign(SECRET, GITHUB))]);
        let result = receive(GitHub, &h, None, altered.as_bytes(), SECRET.as_bytes());
        assert!(unauthorized(&result), "{result:?}");
    }

    #[test]
    fn distribution_ignores_pulls_deletes_and_blobs() {
        let body = r#"{"events": [
            {"action": "push", "target": {"repository": "a/b", "tag": "v1"},
             "request": {"useragent": "retagd/0.1.0"}},
            {"action": "pull", "target": {"repository": "a/b", "tag": "v1"}},
            {"action": "delete", "target": {"repository": "a/b", "digest": "sha256:00"}},
            {"action": "push", "target": {"repository": "a/b", "mediaType": "x"}},
            {"action": "mount", "target": {"repository": "a/b"}},
            {"action": "push", "target": {"repository": "a/b", "tag": "v2"},
             "request": {"host": ""}}
        ]}"#;
        assert_eq!(
            send(Distribution, body).unwrap(),
            got(&["a/b:v1", "a/b:v2"], 4, 0)
        );
    }

    #[test]
    fn names_outside_the_reference_grammar_are_skipped_and_counted() {
        let body = r#"{"events": [
            {"action": "push", "target": {"repository": "../x", "tag": "v1"}},
            {"action": "push", "target": {"repository": "a/b", "tag": "v1/../../x"}},
            {"action": "push", "target": {"repository": "a/b%2F..", "tag": "v1"}},
            {"action": "push", "target": {"repository": "a/b", "tag": "v1"},
             "request": {"host": "evil host/x"}},
            {"action": "push", "target": {"repository": "a/b", "tag": "v1"},
             "request": {"host": "r.io"}}
        ]}"#;
        assert_eq!(
            send(Distribution, body).unwrap(),
            got(&["r.io/a/b:v1"], 0, 4)
        );
        let harbor = HARBOR.replace("\"test-webhook/debian\"", "\"../../v2/x\"");
        assert_eq!(send(Harbor, &harbor).unwrap(), got(&[], 0, 1));
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_a_bad_request_naming_where() {
        let many = format!(r#"{{"events": [{}{{}}]}}"#, "{},".repeat(MAX_ENTRIES));
        let cases = [
            (
                Distribution,
                "{\"events\": [\n  {\"action\": }]}",
                "line 2 column 14",
            ),
            (
                Distribution,
                r#"{"events": [{}, {"target": {"tag": 5}}]}"#,
                "events[1].target.tag:",
            ),
            (Distribution, "{}", "missing field `events`"),
            (
                Distribution,
                "[]",
                "expected a distribution notification envelope",
            ),
            (Distribution, &many, "events: 1001 entries"),
            (
                DockerHub,
                r#"{"push_data": {}}"#,
                "missing field `repository`",
            ),
            (
                Harbor,
                r#"{"type": "PUSH_ARTIFACT"}"#,
                "event_data: missing",
            ),
            (Harbor, r#"{"type": "x"} {}"#, "trailing characters"),
            (
                Harbor,
                r#"{"specversion": "1.0", "type": "x"}"#,
                "payload format to Default",
            ),
            (GitHub, r#"{"action": "published"}"#, "package: missing"),
        ];
        for (source, body, expected) in cases {
            let message = bad_request(send(source, body));
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn github_ping_other_actions_and_untagged_versions_carry_no_push() {
        let event = ("x-github-event", "ping");
        let h = headers(&[("x-hub-signature-256", &sign(SECRET, "{}")), event]);
        let received = receive(GitHub, &h, None, b"{}", SECRET.as_bytes()).unwrap();
        assert_eq!(received, got(&[], 1, 0));
        for (from, to) in [
            (r#""name": "v1.2.0-dev.3""#, r#""name": """#),
            (r#""action": "published""#, r#""action": "updated""#),
            (r#""package_type": "CONTAINER""#, r#""package_type": "npm""#),
            (
                r#""container_metadata": {"#,
                r#""container_metadata": null, "x": {"#,
            ),
        ] {
            assert_eq!(
                send(GitHub, &GITHUB.replacen(from, to, 1)).unwrap(),
                got(&[], 1, 0)
            );
        }
        let app = GITHUB.replacen(r#""package":"#, r#""registry_package":"#, 1);
        let pushed = "ghcr.io/octo-org/app:v1.2.0-dev.3";
        assert_eq!(send(GitHub, &app).unwrap(), got(&[pushed], 0, 0));
    }

    #[test]
    fn harbor_ignores_other_events_and_may_name_no_host() {
        let pull = HARBOR.replacen("PUSH_ARTIFACT", "PULL_ARTIFACT", 1);
        assert_eq!(send(Harbor, &pull).unwrap(), got(&[], 1, 0));
        let no_host = HARBOR.replacen("hub.harbor.com/test-webhook", "test-webhook", 1);
        let pushed = "test-webhook/debian:latest";
        assert_eq!(send(Harbor, &no_host).unwrap(), got(&[pushed], 0, 0));
    }

    #[test]
    fn a_docker_hub_official_image_lives_in_library() {
        let body = DOCKERHUB.replacen(r#""svendowideit/testhook""#, r#""nginx""#, 1);
        let pushed = "docker.io/library/nginx:latest";
        assert_eq!(send(DockerHub, &body).unwrap(), got(&[pushed], 0, 0));
    }

    #[test]
    fn sources_round_trip_through_their_path_segment() {
        for source in [Distribution, Harbor, GitHub, DockerHub] {
            assert_eq!(Source::from_path(source.as_str()), Some(source));
        }
        assert_eq!(Source::from_path("GitHub"), None);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, mutations};

    static PAYLOADS: &[&[u8]] = &[
        include_bytes!("../../tests/webhooks/distribution-push.json"),
        include_bytes!("../../tests/webhooks/distribution-registry-2.8.json"),
        include_bytes!("../../tests/webhooks/harbor-push.json"),
        include_bytes!("../../tests/webhooks/github-package-published.json"),
        include_bytes!("../../tests/webhooks/dockerhub-push.json"),
    ];

    #[test]
    fn fuzz_webhook_payloads_yield_only_valid_names() {
        let secret = b"fuzz-secret";
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            "Bearer fuzz-secret".parse().expect("header"),
        );
        headers.insert("x-github-event", "package".parse().expect("header"));
        for source in [
            Source::Distribution,
            Source::Harbor,
            Source::GitHub,
            Source::DockerHub,
        ] {
            fuzz("webhook payloads", mutations(PAYLOADS), |body| {
                let mut headers = headers.clone();
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
                mac.update(&body);
                let hex: String = mac
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let signature = format!("sha256={hex}").parse().expect("header");
                headers.insert("x-hub-signature-256", signature);
                let received = receive(source, &headers, Some("token=fuzz-secret"), &body, secret);
                if let Ok(received) = received {
                    for push in received.pushes {
                        proptest::prop_assert!(is_valid_repository(&push.repository));
                        proptest::prop_assert!(is_valid_tag(&push.tag));
                    }
                }
                Ok(())
            });
        }
    }
}
