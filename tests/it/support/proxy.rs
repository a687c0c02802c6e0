//! A counting, fault-injecting HTTP/1.1 reverse proxy in front of a plain-HTTP registry.
//!
//! Bodies stream both ways (a multi-MiB blob is never held whole). All end-to-end headers pass
//! through; absolute `Location`/`Link` URLs naming the upstream are rewritten to name the proxy,
//! so a client that follows them keeps going through the proxy. Every request is recorded
//! (method, path and query, status, whether it carried `Authorization`), and queued [`Fault`]s
//! are applied to the next matching requests.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::server::BackgroundServer;

/// What a fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this status, headers and body without forwarding the request.
    Respond {
        /// The status code.
        status: u16,
        /// Extra headers (e.g. `Retry-After`).
        headers: Vec<(String, String)>,
        /// The body (a registry-style JSON error by default).
        body: String,
    },
    /// Forward, send the response head and the first `after_bytes` bytes of the body, then drop
    /// the connection (the client sees a truncated body).
    AbortBody {
        /// How many body bytes get through.
        after_bytes: u64,
    },
    /// Forward, but flip every bit of one body byte (length unchanged).
    CorruptByte {
        /// Offset of the byte; `None` means the middle (by `Content-Length`).
        offset: Option<u64>,
    },
    /// Forward with `from` replaced by `to` in the path and query (e.g. a mount's `from=`
    /// pointing at a repository without the blob, so the registry really refuses the mount).
    Rewrite {
        /// Text to replace.
        from: String,
        /// Replacement.
        to: String,
    },
    /// Wait `millis` before forwarding (`after_upstream` false) or after the upstream answered
    /// and before answering the client (`after_upstream` true: the registry has done the work,
    /// the client does not know yet).
    Delay {
        /// How long.
        millis: u64,
        /// Where the wait happens.
        after_upstream: bool,
    },
    /// Answer `status` (a 3xx) with this `Location` without forwarding.
    Redirect {
        /// The status, 307 by default.
        status: u16,
        /// The target; with `keep_path`, the request's path and query are appended to it.
        location: String,
        /// Whether to append the request's path and query to `location`.
        keep_path: bool,
    },
}

/// A fault queued on a [`FaultProxy`]: applied to the next `times` requests that match `method`
/// and `path_contains` (unset matchers match everything). Faults are tried in queue order.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Only requests with this method (e.g. `"GET"`).
    pub method: Option<String>,
    /// Only requests whose path and query contain this.
    pub path_contains: Option<String>,
    /// How many requests it applies to.
    pub times: usize,
    /// The chance that a matching request gets it (1.0: every one); a request spared does not
    /// use up `times`.
    pub probability: f64,
    /// What it does.
    pub action: FaultAction,
}

impl Fault {
    /// A fault for any request, once.
    pub fn new(action: FaultAction) -> Fault {
        Fault {
            method: None,
            path_contains: None,
            times: 1,
            probability: 1.0,
            action,
        }
    }

    /// Answer `status` with a registry-style JSON error body.
    pub fn status(status: u16) -> Fault {
        let code = match status {
            429 => "TOOMANYREQUESTS",
            401 => "UNAUTHORIZED",
            403 => "DENIED",
            404 => "NAME_UNKNOWN",
            503 => "UNAVAILABLE",
            _ => "UNKNOWN",
        };
        Fault::new(FaultAction::Respond {
            status,
            headers: vec![("Content-Type".to_string(), "application/json".to_string())],
            body: serde_json::json!({
                "errors": [{"code": code, "message": "injected by FaultProxy", "detail": null}],
            })
            .to_string(),
        })
    }

    /// 429 with `Retry-After: <seconds>`.
    pub fn too_many_requests_after_seconds(seconds: u64) -> Fault {
        Fault::status(429).with_header("Retry-After", &seconds.to_string())
    }

    /// 429 with `Retry-After: <HTTP date>`.
    pub fn too_many_requests_until(at: SystemTime) -> Fault {
        Fault::status(429).with_header("Retry-After", &httpdate::fmt_http_date(at))
    }

    /// Truncate the forwarded response body after `bytes` bytes by dropping the connection.
    pub fn abort_body_after(bytes: u64) -> Fault {
        Fault::new(FaultAction::AbortBody { after_bytes: bytes })
    }

    /// Flip the middle byte of the forwarded response body.
    pub fn corrupt_byte() -> Fault {
        Fault::new(FaultAction::CorruptByte { offset: None })
    }

    /// Flip the byte at `offset` of the forwarded response body.
    pub fn corrupt_byte_at(offset: u64) -> Fault {
        Fault::new(FaultAction::CorruptByte {
            offset: Some(offset),
        })
    }

    /// Forward with `from` replaced by `to` in the path and query.
    pub fn rewrite(from: &str, to: &str) -> Fault {
        Fault::new(FaultAction::Rewrite {
            from: from.to_string(),
            to: to.to_string(),
        })
    }

    /// Delays the request before forwarding it.
    pub fn delay(millis: u64) -> Fault {
        Fault::new(FaultAction::Delay {
            millis,
            after_upstream: false,
        })
    }

    /// Forwards at once but delays the answer to the client.
    pub fn delay_answer(millis: u64) -> Fault {
        Fault::new(FaultAction::Delay {
            millis,
            after_upstream: true,
        })
    }

    /// 307 to exactly `location`.
    pub fn redirect(location: &str) -> Fault {
        Fault::new(FaultAction::Redirect {
            status: 307,
            location: location.to_string(),
            keep_path: false,
        })
    }

    /// 307 to `base` followed by the request's path and query, e.g. another proxy's URL.
    pub fn redirect_to_base(base: &str) -> Fault {
        Fault::new(FaultAction::Redirect {
            status: 307,
            location: base.trim_end_matches('/').to_string(),
            keep_path: true,
        })
    }

    /// Only requests with this method.
    pub fn on(mut self, method: &str) -> Fault {
        self.method = Some(method.to_ascii_uppercase());
        self
    }

    /// Only requests whose path and query contain `fragment`.
    pub fn path_contains(mut self, fragment: &str) -> Fault {
        self.path_contains = Some(fragment.to_string());
        self
    }

    /// Apply to the next `times` matching requests instead of one.
    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }

    /// Apply to each matching request with chance `p`, until cleared (`times` becomes
    /// unlimited).
    pub fn sometimes(mut self, p: f64) -> Fault {
        self.probability = p;
        self.times = usize::MAX;
        self
    }

    /// Add a header to a [`FaultAction::Respond`] answer (ignored for other actions).
    pub fn with_header(mut self, name: &str, value: &str) -> Fault {
        if let FaultAction::Respond { headers, .. } = &mut self.action {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.times > 0
            && self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|fragment| path.contains(fragment))
    }
}

/// One request seen by the proxy.
#[derive(Clone, Debug)]
pub struct ProxyRequest {
    /// When it arrived (monotonic).
    pub at: Instant,
    /// The method, upper-case.
    pub method: String,
    /// Path and query, as sent by the client.
    pub path: String,
    /// The status sent back (from the upstream, a fault, or 502 if the upstream failed).
    pub status: u16,
    /// Whether the request had an `Authorization` header.
    pub authorization: bool,
    /// The fault applied to it, if any.
    pub fault: Option<FaultAction>,
}

impl ProxyRequest {
    fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }

    /// A blob upload request: POST, PATCH or PUT under `/blobs/uploads/`.
    pub fn is_blob_upload(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PATCH" | "PUT")
            && self.path_only().contains("/blobs/uploads")
    }

    /// `GET /v2/<name>/blobs/<digest>`.
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.is_blob_path()
    }

    /// `HEAD /v2/<name>/blobs/<digest>`.
    pub fn is_blob_head(&self) -> bool {
        self.method == "HEAD" && self.is_blob_path()
    }

    /// `PUT /v2/<name>/manifests/<reference>`.
    pub fn is_manifest_put(&self) -> bool {
        self.method == "PUT" && self.path_only().contains("/manifests/")
    }

    /// `GET /v2/<name>/manifests/<reference>`.
    pub fn is_manifest_get(&self) -> bool {
        self.method == "GET" && self.path_only().contains("/manifests/")
    }

    /// `HEAD /v2/<name>/manifests/<reference>`.
    pub fn is_manifest_head(&self) -> bool {
        self.method == "HEAD" && self.path_only().contains("/manifests/")
    }

    fn is_blob_path(&self) -> bool {
        let path = self.path_only();
        path.contains("/blobs/") && !path.contains("/blobs/uploads")
    }
}

struct ProxyState {
    upstream: Mutex<SocketAddr>,
    addr: OnceLock<SocketAddr>,
    client: reqwest::Client,
    faults: Mutex<VecDeque<Fault>>,
    records: Mutex<Vec<ProxyRequest>>,
    arrivals: Mutex<Vec<String>>,
    paging: Mutex<Option<TagPaging>>,
}

/// How the proxy pages tag lists. The CNCF registry 2.8 ignores `n` and `last` and never sends
/// `Link`; distribution 3, Harbor, GHCR and Docker Hub do page. The proxy pages the way
/// distribution 3 does: tags sorted, `last` exclusive, `Link` relative to the registry.
#[derive(Clone, Debug, Default)]
pub struct TagPaging {
    /// When set, `Link` points at this origin (e.g. `http://evil.example`) instead.
    pub link_origin: Option<String>,
}

/// A running proxy; dropping it stops it and drops its open connections.
pub struct FaultProxy {
    /// The proxy's own address.
    pub addr: SocketAddr,
    /// The registry it forwards to.
    pub upstream: SocketAddr,
    state: Arc<ProxyState>,
    _server: BackgroundServer,
}

impl FaultProxy {
    /// Forwards to another upstream from now on (a registry restarted on a new port).
    pub fn set_upstream(&mut self, upstream: SocketAddr) {
        *self.state.upstream.lock().expect("upstream lock") = upstream;
        self.upstream = upstream;
    }

    /// Starts a proxy on `127.0.0.1:0` forwarding to `http://<upstream>`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .http1_only()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build the proxy's upstream client");
        let state = Arc::new(ProxyState {
            upstream: Mutex::new(upstream),
            addr: OnceLock::new(),
            client,
            faults: Mutex::new(VecDeque::new()),
            records: Mutex::new(Vec::new()),
            arrivals: Mutex::new(Vec::new()),
            paging: Mutex::new(None),
        });
        let router_state = state.clone();
        let server = BackgroundServer::spawn("fault-proxy", move |addr| {
            let _ = router_state.addr.set(addr);
            axum::Router::new()
                .fallback(handle)
                .with_state(router_state)
        });
        FaultProxy {
            addr: server.addr,
            upstream,
            state,
            _server: server,
        }
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference through the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Pages `GET /v2/<name>/tags/list` answers by `n` and `last`, with `Link` headers, as a
    /// paginating registry does (see [`TagPaging`]); `None` passes tag lists through.
    pub fn page_tags(&self, paging: Option<TagPaging>) {
        *self.state.paging.lock().expect("paging lock") = paging;
    }

    /// Queues a fault behind those already queued.
    pub fn inject(&self, fault: Fault) {
        self.state
            .faults
            .lock()
            .expect("fault queue lock")
            .push_back(fault);
    }

    /// How many fault applications are still queued (sum of the remaining `times`).
    pub fn pending_faults(&self) -> usize {
        let faults = self.state.faults.lock().expect("fault queue lock");
        faults.iter().map(|f| f.times).sum()
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.state.faults.lock().expect("fault queue lock").clear();
    }

    /// A snapshot of the requests seen so far, in the order their responses started.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        self.state
            .records
            .lock()
            .expect("proxy records lock")
            .clone()
    }

    /// `METHOD path?query` of every recorded request, in the order they were answered.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// `METHOD path?query` of every request as it arrived (before any delay or answer), so a
    /// test can act while a request is in flight.
    pub fn arrivals(&self) -> Vec<String> {
        self.state.arrivals.lock().expect("arrivals lock").clone()
    }

    /// Forgets the recorded requests (queued faults stay).
    pub fn clear(&self) {
        self.state
            .records
            .lock()
            .expect("proxy records lock")
            .clear();
    }

    /// Number of recorded requests satisfying `predicate`.
    pub fn count_where(&self, predicate: impl Fn(&ProxyRequest) -> bool) -> usize {
        let records = self.state.records.lock().expect("proxy records lock");
        records.iter().filter(|r| predicate(r)).count()
    }

    /// Number of recorded requests with this method.
    pub fn count(&self, method: &str) -> usize {
        self.count_where(|r| r.method.eq_ignore_ascii_case(method))
    }

    /// Recorded requests per method.
    pub fn counts_by_method(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for record in self.requests() {
            *counts.entry(record.method).or_insert(0) += 1;
        }
        counts
    }

    /// `GET` of blobs (layer and config downloads).
    pub fn blob_gets(&self) -> usize {
        self.count_where(ProxyRequest::is_blob_get)
    }

    /// `HEAD` of blobs (existence checks).
    pub fn blob_heads(&self) -> usize {
        self.count_where(ProxyRequest::is_blob_head)
    }

    /// Upload requests (POST, PATCH, PUT under `/blobs/uploads/`), mounts included.
    pub fn blob_uploads(&self) -> usize {
        self.count_where(ProxyRequest::is_blob_upload)
    }

    /// `PUT` of manifests.
    pub fn manifest_puts(&self) -> usize {
        self.count_where(ProxyRequest::is_manifest_put)
    }

    /// `GET` of manifests.
    pub fn manifest_gets(&self) -> usize {
        self.count_where(ProxyRequest::is_manifest_get)
    }

    /// `HEAD` of manifests.
    pub fn manifest_heads(&self) -> usize {
        self.count_where(ProxyRequest::is_manifest_head)
    }
}

impl ProxyState {
    fn upstream(&self) -> SocketAddr {
        *self.upstream.lock().expect("upstream lock")
    }

    fn take_fault(&self, method: &str, path: &str) -> Option<FaultAction> {
        let mut faults = self.faults.lock().expect("fault queue lock");
        let index = faults
            .iter()
            .position(|f| f.matches(method, path) && fastrand::f64() < f.probability)?;
        let fault = &mut faults[index];
        fault.times -= 1;
        let action = fault.action.clone();
        if fault.times == 0 {
            faults.remove(index);
        }
        Some(action)
    }

    fn record(&self, record: ProxyRequest) {
        self.records
            .lock()
            .expect("proxy records lock")
            .push(record);
    }

    /// Rewrites `http://<upstream>` to `http://<proxy>` inside a `Location` or `Link` value.
    fn rewrite(&self, value: &HeaderValue) -> HeaderValue {
        let (Ok(text), Some(addr)) = (value.to_str(), self.addr.get()) else {
            return value.clone();
        };
        let from = format!("http://{}", self.upstream());
        if !text.contains(&from) {
            return value.clone();
        }
        let to = format!("http://{addr}");
        HeaderValue::from_str(&text.replace(&from, &to)).unwrap_or_else(|_| value.clone())
    }
}

/// Headers that belong to one connection, not to the message (RFC 9110 section 7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
    )
}

async fn handle(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let authorization = parts.headers.contains_key(header::AUTHORIZATION);
    state
        .arrivals
        .lock()
        .expect("arrivals lock")
        .push(format!("{method} {path}"));
    let fault = state.take_fault(&method, &path);
    if let Some(FaultAction::Delay {
        millis,
        after_upstream: false,
    }) = &fault
    {
        tokio::time::sleep(Duration::from_millis(*millis)).await;
    }
    let record = |status: u16| ProxyRequest {
        at: Instant::now(),
        method: method.clone(),
        path: path.clone(),
        status,
        authorization,
        fault: fault.clone(),
    };

    match &fault {
        Some(FaultAction::Respond {
            status,
            headers,
            body,
        }) => {
            state.record(record(*status));
            let mut response = Response::new(Body::from(body.clone()));
            *response.status_mut() =
                StatusCode::from_u16(*status).expect("fault status is a valid HTTP status");
            for (name, value) in headers {
                response.headers_mut().append(
                    HeaderName::from_bytes(name.as_bytes()).expect("fault header name is valid"),
                    HeaderValue::from_str(value).expect("fault header value is valid"),
                );
            }
            return response;
        }
        Some(FaultAction::Redirect {
            status,
            location,
            keep_path,
        }) => {
            state.record(record(*status));
            let target = if *keep_path {
                format!("{location}{path}")
            } else {
                location.clone()
            };
            let status =
                StatusCode::from_u16(*status).expect("redirect status is a valid HTTP status");
            return (status, [(header::LOCATION, target)]).into_response();
        }
        _ => {}
    }

    let paging = state.paging.lock().expect("paging lock").clone();
    if let Some(paging) = paging.filter(|_| {
        method == "GET"
            && path
                .split('?')
                .next()
                .is_some_and(|p| p.ends_with("/tags/list"))
    }) {
        let (status, response) = page_tags(&state, &parts.headers, &path, &paging).await;
        state.record(record(status));
        return response;
    }

    // Forward.
    let forwarded = match &fault {
        Some(FaultAction::Rewrite { from, to }) => path.replace(from.as_str(), to),
        _ => path.clone(),
    };
    let url = format!("http://{}{}", state.upstream(), forwarded);
    let mut upstream_request = state.client.request(parts.method.clone(), url);
    for (name, value) in &parts.headers {
        // The proxy answers `Expect: 100-continue` itself when it reads the body.
        if is_hop_by_hop(name) || name == header::HOST || name == header::EXPECT {
            continue;
        }
        upstream_request = upstream_request.header(name, value);
    }
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len > 0);
    if has_body {
        // With the client's Content-Length copied above, hyper sends a fixed-length body.
        upstream_request =
            upstream_request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let upstream_response = match upstream_request.send().await {
        Ok(response) => response,
        Err(e) => {
            state.record(record(502));
            return (
                StatusCode::BAD_GATEWAY,
                format!("FaultProxy: upstream request failed: {e}"),
            )
                .into_response();
        }
    };

    if let Some(FaultAction::Delay {
        millis,
        after_upstream: true,
    }) = &fault
    {
        tokio::time::sleep(Duration::from_millis(*millis)).await;
    }
    let status = upstream_response.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream_response.headers() {
        if is_hop_by_hop(name) {
            continue;
        }
        if name == header::LOCATION || name == header::LINK {
            headers.append(name.clone(), state.rewrite(value));
        } else {
            headers.append(name.clone(), value.clone());
        }
    }
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    state.record(record(status.as_u16()));

    let stream = upstream_response.bytes_stream().map_err(io::Error::other);
    let body = match fault {
        Some(FaultAction::AbortBody { after_bytes }) => {
            Body::from_stream(abort_after(stream, after_bytes))
        }
        Some(FaultAction::CorruptByte { offset }) => {
            let offset = offset.unwrap_or(content_length.unwrap_or(0) / 2);
            Body::from_stream(corrupt_at(stream, offset))
        }
        _ => Body::from_stream(stream),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Passes `after` bytes, then fails the body so that the server drops the connection.
fn abort_after(
    inner: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    after: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    enum Phase {
        Passing(u64),
        Aborting,
        Done,
    }
    futures_util::stream::unfold(
        (Box::pin(inner), Phase::Passing(0)),
        move |(mut inner, phase)| async move {
            match phase {
                Phase::Done => None,
                Phase::Aborting => {
                    // Stay pending for a moment so that hyper flushes the head and the bytes
                    // already passed before the connection dies (the client must see a body
                    // that starts and then breaks, not a connection that never answers).
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let error = io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "FaultProxy: connection aborted mid-body",
                    );
                    Some((Err(error), (inner, Phase::Done)))
                }
                Phase::Passing(sent) => match inner.next().await {
                    None => None,
                    Some(Err(e)) => Some((Err(e), (inner, Phase::Done))),
                    Some(Ok(chunk)) => {
                        let remaining = after - sent;
                        if (chunk.len() as u64) < remaining {
                            let sent = sent + chunk.len() as u64;
                            Some((Ok(chunk), (inner, Phase::Passing(sent))))
                        } else {
                            let head = chunk.slice(..remaining as usize);
                            Some((Ok(head), (inner, Phase::Aborting)))
                        }
                    }
                },
            }
        },
    )
}

/// Flips every bit of the byte at `offset`, keeping the length.
fn corrupt_at(
    inner: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    offset: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let mut position = 0u64;
    inner.map_ok(move |chunk| {
        let start = position;
        position += chunk.len() as u64;
        if (start..position).contains(&offset) {
            let mut changed = BytesMut::from(&chunk[..]);
            changed[(offset - start) as usize] ^= 0xff;
            changed.freeze()
        } else {
            chunk
        }
    })
}

/// Answers a tag-list request with one page of the upstream's full list; see [`TagPaging`].
async fn page_tags(
    state: &ProxyState,
    headers: &HeaderMap,
    path: &str,
    paging: &TagPaging,
) -> (u16, Response) {
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    let mut n = usize::MAX;
    let mut last = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "n" => n = v.parse().unwrap_or(usize::MAX),
            "last" => last = Some(v.into_owned()),
            _ => {}
        }
    }
    let mut request = state
        .client
        .get(format!("http://{}{route}", state.upstream()));
    if let Some(a) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, a);
    }
    let upstream = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return (
                502,
                (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            )
        }
    };
    let status = upstream.status();
    let body = upstream.bytes().await.unwrap_or_default();
    if !status.is_success() {
        return (status.as_u16(), (status, body).into_response());
    }
    let list: serde_json::Value = serde_json::from_slice(&body).expect("registry tag list is JSON");
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    let start = last.map_or(0, |l| tags.partition_point(|t| *t <= l));
    let page: Vec<String> = tags.iter().skip(start).take(n).cloned().collect();
    let more = start + page.len() < tags.len();
    let mut response =
        axum::Json(serde_json::json!({"name": list["name"], "tags": page})).into_response();
    if more {
        if let Some(last) = page.last() {
            let origin = paging.link_origin.clone().unwrap_or_default();
            let link = format!("<{origin}{route}?last={last}&n={n}>; rel=\"next\"");
            response.headers_mut().insert(
                header::LINK,
                HeaderValue::from_str(&link).expect("link header"),
            );
        }
    }
    (200, response)
}
