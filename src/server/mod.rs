//! The HTTP side of `retagd run`: the dashboard, metrics, health, the status, approval and
//! freeze API, and registry webhooks, on one listener (`server.listen`).
//!
//! Handlers only translate HTTP: what happens is up to the running daemon, reached through the
//! small [`Handle`] that `retagd run` plugs in, so the API promotes exactly as a reconcile does
//! and this module knows nothing of the daemon's internals. Every answer but `/metrics`
//! and the dashboard's three files is JSON; errors are `{"error": "..."}` naming what was wrong.
//!
//! # Security
//!
//! Reads are open (like `/metrics`, they show tags and digests, never credentials) unless
//! `server.read_token_file` is set; then the `/api/v1` reads need that token or an approver's.
//! The scheme `Bearer` is case-insensitive (RFC 9110), the token is compared exactly (no
//! padding trimmed). Writes need `Authorization: Bearer <token>` with an approver's token (`server.approvers`,
//! `server.api_token_file`), which says who approves; webhooks need the secret in
//! `webhooks.secret_file`, proven the way each registry can. The files are read at each request
//! so a rotated Kubernetes Secret takes effect without a restart, and every comparison is
//! constant-time. Bodies are bounded before they are parsed, and a webhook whose proof is in
//! a header or the query is refused before its body is read.

// The helpers return the refusal as a ready `Response`, which is what a handler answers either
// way; boxing it for the lint would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

mod api;
mod dashboard;
pub mod webhooks;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest as _, Path as UrlPath, RawQuery, Request, State,
};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::{watch, Semaphore};

use crate::calendar::Freeze;
use crate::config::{Config, Limits};
use crate::engine::{ApproveError, Approved, Asked, FreezeError};
use crate::metrics::Metrics;
use crate::secret::{self, Secret};
use crate::status::Status;

/// What the HTTP side needs of the running daemon.
pub trait Handle: Send + Sync + 'static {
    /// What each pipeline last showed.
    fn status(&self) -> &Status;
    /// The metrics served on `/metrics`, counting webhooks too.
    fn metrics(&self) -> &Metrics;
    /// The configuration in force (token and secret files, read at each request).
    fn config(&self) -> Arc<Config>;
    /// Approves the promotion into `stage` as `asked` and carries it out to its end even if
    /// the client goes away.
    fn approve(
        self: Arc<Self>,
        pipeline: String,
        stage: String,
        asked: Asked,
    ) -> futures_util::future::BoxFuture<'static, Result<Approved, ApproveError>>;
    /// A registry reported a push of `repository` (on `host`, when it said): wakes the
    /// pipelines with a stage there and returns their names.
    fn pushed(&self, host: Option<&str>, repository: &str) -> Vec<String>;
    /// The pipeline's promotions (into `stage` only, when given), newest first, at most
    /// `limit`, from its registries' records; `None` for a pipeline not configured.
    fn history(
        self: Arc<Self>,
        pipeline: String,
        stage: Option<String>,
        limit: usize,
    ) -> futures_util::future::BoxFuture<'static, Option<Arc<serde_json::Value>>>;
    /// Every freeze not over yet.
    fn freezes(&self) -> Vec<Freeze>;
    /// Sets a freeze, already checked against the configuration.
    fn freeze(&self, freeze: Freeze) -> Result<(), FreezeError>;
    /// Lifts freeze `id`, or all set through the API; `by` is the approver.
    fn unfreeze(&self, id: Option<&str>, by: &str) -> Result<Vec<Freeze>, FreezeError>;
}

/// The daemon as the handlers see it.
type Shared = dyn Handle;

/// Largest API request body: `{"tag": "..."}` needs a few hundred bytes.
pub const API_BODY_LIMIT: usize = 16 * 1024;
/// Largest webhook body: a registry batches events, each well under 2 KiB.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// Serves until `stop` turns true, then finishes the requests in flight.
///
/// The connection loop is ours rather than `axum::serve`'s, for the limits of
/// `server.header_read_timeout_secs` and `server.max_connections` (read at start; a reload
/// does not change them): a client that never finishes its headers, or idles between
/// requests, is dropped after the timeout, and at most `max_connections` connections are
/// served, the next ones waiting in the kernel's backlog until one closes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<dyn Handle>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = shared.config().server.limits;
    let router = router_with(shared, limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let (closing, close) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => break,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, mostly: wait for connections to close instead of
                // spinning on the same error.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let mut close = close.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { close.wait_for(|c| *c).await.is_ok() } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Every route, with the default [`Limits`].
pub fn router(shared: Arc<dyn Handle>) -> Router {
    router_with(shared, Limits::default())
}

/// Every route; webhooks take one of `limits.max_webhook_requests` slots or get 503 at once, so
/// a flood of them leaves the connections and workers for `/healthz`, `/metrics` and the API.
pub fn router_with(shared: Arc<dyn Handle>, limits: Limits) -> Router {
    let webhook_slots = Arc::new(Semaphore::new(limits.max_webhook_requests as usize));
    let one_webhook_at_a_slot = axum::middleware::from_fn(move |request: Request, next: Next| {
        let slots = webhook_slots.clone();
        async move {
            match slots.try_acquire_owned() {
                Ok(_slot) => next.run(request).await,
                Err(_) => {
                    let mut answer = error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "too many webhooks at once (server.max_webhook_requests); retry later"
                            .to_string(),
                    );
                    answer
                        .headers_mut()
                        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                    answer
                }
            }
        }
    });
    let read_gate = axum::middleware::from_fn_with_state(shared.clone(), read_access);
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::script))
        .route("/assets/app.css", get(dashboard::style))
        .route("/assets/icon.svg", get(dashboard::icon))
        .route("/favicon.ico", get(dashboard::icon))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/pipelines",
            get(api::list).route_layer(read_gate.clone()),
        )
        .route(
            "/api/v1/pipelines/{pipeline}",
            get(api::one).route_layer(read_gate.clone()),
        )
        .route(
            "/api/v1/pipelines/{pipeline}/history",
            get(api::history).route_layer(read_gate.clone()),
        )
        .route(
            "/api/v1/pipelines/{pipeline}/stages/{stage}/promote",
            post(api::promote).layer(DefaultBodyLimit::max(API_BODY_LIMIT)),
        )
        .route(
            "/api/v1/freeze",
            // The read gate covers the GET only: it is added before the writes, which check an
            // approver's token themselves.
            get(api::freezes)
                .route_layer(read_gate)
                .post(api::freeze)
                .delete(api::unfreeze_all)
                .layer(DefaultBodyLimit::max(API_BODY_LIMIT)),
        )
        .route("/api/v1/freeze/{id}", delete(api::unfreeze))
        .route(
            "/webhooks/{source}",
            post(webhook)
                .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
                .layer(one_webhook_at_a_slot),
        )
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint".to_string()) })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here (reads are GET; approvals, freezes and webhooks POST; lifting a freeze DELETE)".to_string(),
            )
        })
        .with_state(shared)
}

/// The body, or the JSON answer to a body that could not be read (over the limit: 413).
fn body_or_answer(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, Response> {
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("the request body is over {limit} bytes")
        } else {
            format!("cannot read the request body: {rejection}")
        };
        error(status, message)
    })
}

/// `{"error": message}` with `status`.
fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Compares in time independent of where the inputs differ and of their lengths (both are
/// hashed first).
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    Sha256::digest(given)
        .ct_eq(&Sha256::digest(expected))
        .into()
}

/// The secret of `file` (`key` names the setting), or the answer to give when it is unusable.
fn secret_of(key: &str, file: &Path) -> Result<Secret, Response> {
    secret::read(key, file).map_err(|e| {
        tracing::error!(error = %e, "cannot use {key}");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{key} cannot be read; see the daemon's log"),
        )
    })
}

async fn healthz() -> Response {
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "revision": env!("BUILT_REVISION"),
    }))
    .into_response()
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let waiting = shared.status().not_ready();
    if waiting.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "not_reconciled_yet": waiting})),
        )
            .into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        shared.metrics().encode(),
    )
        .into_response()
}

/// Everything that can refuse a webhook without its body (unknown source, webhooks off, a missing
/// or wrong header or query proof) runs before the body is read: taking the `Request` instead of
/// `Bytes` keeps axum from buffering up to [`WEBHOOK_BODY_LIMIT`] for a client without the secret.
async fn webhook(
    State(shared): State<Arc<Shared>>,
    UrlPath(source): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let Some(source) = webhooks::Source::from_path(&source) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no webhook source {source:?} (distribution, harbor, github, dockerhub)"),
        );
    };
    let config = shared.config();
    let Some(file) = &config.webhooks.secret_file else {
        return error(
            StatusCode::NOT_FOUND,
            "webhooks are off (set webhooks.secret_file)".to_string(),
        );
    };
    let secret = match secret_of("webhooks.secret_file", file) {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let label = source.as_str();
    if let Err(refusal) = webhooks::pre_authenticate(
        source,
        &headers,
        query.as_deref(),
        secret.expose().as_bytes(),
    ) {
        return refused(&*shared, label, refusal);
    }
    // The route's `DefaultBodyLimit` travels in the request's extensions, so this read is bounded;
    // in time too, so a client dripping its body cannot hold a webhook slot.
    let within = config.server.limits.header_read_timeout;
    let Ok(body) = tokio::time::timeout(within, Bytes::from_request(request, &shared)).await else {
        return error(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s (server.header_read_timeout_secs)",
                within.as_secs()
            ),
        );
    };
    let body = match body_or_answer(body, WEBHOOK_BODY_LIMIT) {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    match webhooks::receive(
        source,
        &headers,
        query.as_deref(),
        &body,
        secret.expose().as_bytes(),
    ) {
        Ok(received) => {
            shared.metrics().webhook(label, "accepted");
            let mut woken: Vec<String> = Vec::new();
            for push in &received.pushes {
                for name in shared.pushed(push.host.as_deref(), &push.repository) {
                    if !woken.contains(&name) {
                        woken.push(name);
                    }
                }
            }
            tracing::debug!(
                source = label,
                pushes = received.pushes.len(),
                ignored = received.ignored,
                woken = %woken.join(","),
                "webhook"
            );
            (
                StatusCode::ACCEPTED,
                Json(json!({
                    "pushes": received.pushes.len(),
                    "ignored": received.ignored,
                    "invalid": received.invalid,
                    "reconciling": woken,
                })),
            )
                .into_response()
        }
        Err(refusal) => refused(&*shared, label, refusal),
    }
}

/// Counts, logs and answers a refused webhook.
fn refused(shared: &Shared, label: &str, refusal: webhooks::Refusal) -> Response {
    let result = match refusal {
        webhooks::Refusal::Unauthorized(_) => "unauthorized",
        webhooks::Refusal::BadRequest(_) => "invalid",
    };
    shared.metrics().webhook(label, result);
    tracing::warn!(source = label, "webhook refused: {refusal}");
    error(refusal.status(), refusal.to_string())
}

/// The gate of the read API: open, unless `server.read_token_file` is set; then it wants
/// `Authorization: Bearer` with that token or an approver's (who may approve may read).
/// `/healthz`, `/readyz` and `/metrics` never pass here: probes and scrapers carry no token.
async fn read_access(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let config = shared.config();
    let Some(file) = &config.server.read_token_file else {
        return next.run(request).await;
    };
    let token = match secret_of("server.read_token_file", file) {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| webhooks::strip_bearer(v.as_bytes()));
    let reader = given.is_some_and(|g| same_secret(g, token.expose().as_bytes()));
    if reader || authorize(&*shared, request.headers()).is_ok() {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"retagd\"")],
        Json(json!({"error": "missing or wrong bearer token (Authorization: Bearer <server.read_token_file's token or an approver's>)"})),
    )
        .into_response()
}

/// Checks `Authorization: Bearer <token>` against every approver's token (`server.approvers`,
/// `server.api_token_file`) and returns the name of the one it belongs to. Every token is
/// compared, so the time taken does not tell which one (or how many) came close.
fn authorize(shared: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    let config = shared.config();
    let approvers = config.server.all_approvers();
    if approvers.is_empty() {
        return Err(error(
            StatusCode::FORBIDDEN,
            "the write API is off (set server.approvers or server.api_token_file)".to_string(),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| webhooks::strip_bearer(v.as_bytes()));
    let mut found = None;
    for approver in &approvers {
        let token = secret_of(&approver.key, &approver.token_file)?;
        if given.is_some_and(|g| same_secret(g, token.expose().as_bytes())) && found.is_none() {
            found = Some(approver.name.clone());
        }
    }
    found.ok_or_else(|| {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"retagd\"")],
            Json(json!({"error": "missing or wrong bearer token (Authorization: Bearer <an approver's token: server.approvers or server.api_token_file>)"})),
        )
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
