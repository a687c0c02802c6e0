//! `/api/v1`: the pipelines' status, and approvals.
//!
//! The status JSON extends the plan JSON of `retagd plan --json` (same stage and action
//! objects) with what the daemon remembers: the last reconcile, the last error, the pending
//! promotion and the last promotion of each stage. README.md documents both.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{authorize, body_or_answer, error, Shared, API_BODY_LIMIT};
use crate::calendar::{self, Freeze};
use crate::engine::describe::{action_json, action_text, freeze_json, promotion_json, stage_json};
use crate::engine::{Action, ApproveError, Approved, Asked, FreezeError, TargetError};
use crate::reference;
use crate::status::PipelineStatus;

/// Longest approval reason kept (it goes into logs, notifications and the status).
const MAX_REASON: usize = 500;

fn time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(crate::calendar::format_time(t))
    })
}

fn pipeline_json(name: &str, status: &PipelineStatus) -> Value {
    let stages: Vec<Value> = status
        .stages
        .iter()
        .map(|s| {
            let mut stage = match &s.plan {
                Some(plan) => stage_json(plan),
                None => json!({
                    "stage": s.name,
                    "registry": s.registry,
                    "repository": s.repository,
                    "current": null,
                    "no_current": "not reconciled yet",
                    "action": null,
                }),
            };
            if let Value::Object(fields) = &mut stage {
                fields.insert(
                    "pending".into(),
                    s.pending().map_or(Value::Null, promotion_json),
                );
                fields.insert(
                    "last_promotion".into(),
                    s.last_promotion.as_ref().map_or(Value::Null, |last| {
                        let mut v = promotion_json(&last.promotion);
                        if let Value::Object(f) = &mut v {
                            f.insert("time".into(), time(Some(last.at)));
                            f.insert("approved_by".into(), json!(last.approved_by));
                            f.insert("reason".into(), json!(last.reason));
                            f.insert("forced".into(), json!(last.forced));
                        }
                        v
                    }),
                );
                fields.insert("last_error".into(), json!(s.last_error));
                fields.insert(
                    "drift".into(),
                    Value::Array(
                        s.drift
                            .iter()
                            .map(|d| {
                                json!({
                                    "tag": d.tag,
                                    "expected": d.expected.to_string(),
                                    "found": d.found.to_string(),
                                    "healed": match &d.healed {
                                        None => Value::Null,
                                        Some(Ok(())) => json!(true),
                                        Some(Err(_)) => json!(false),
                                    },
                                    "heal_error": d.healed.as_ref().and_then(|h| h.as_ref().err()),
                                })
                            })
                            .collect(),
                    ),
                );
                fields.insert(
                    "last_record".into(),
                    json!(s.last_record.as_ref().map(ToString::to_string)),
                );
                fields.insert("record_error".into(), json!(s.record_error));
                fields.insert(
                    "referrers".into(),
                    s.referrers.as_ref().map_or(Value::Null, |r| {
                        json!({"summary": r.summary, "failures": r.failures, "skipped": r.skipped})
                    }),
                );
            }
            stage
        })
        .collect();
    json!({
        "pipeline": name,
        "last_reconcile": time(status.last_reconcile),
        "last_success": time(status.last_success),
        "last_error": status.last_error,
        "unrecorded": status.unrecorded,
        "stages": stages,
    })
}

pub(super) async fn list(State(shared): State<Arc<Shared>>) -> Response {
    let pipelines: Vec<Value> = shared
        .status()
        .all()
        .iter()
        .map(|(name, status)| pipeline_json(name, status))
        .collect();
    Json(json!({ "pipelines": pipelines })).into_response()
}

pub(super) async fn one(
    State(shared): State<Arc<Shared>>,
    Path(pipeline): Path<String>,
) -> Response {
    match shared.status().get(&pipeline) {
        Some(status) => Json(pipeline_json(&pipeline, &status)).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no pipeline {pipeline:?}")),
    }
}

/// Most promotions one history answer lists.
const MAX_HISTORY: usize = 500;

/// `?stage=&limit=` of a history request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HistoryQuery {
    stage: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/pipelines/{pipeline}/history`: the same JSON as `retagd history -o json`.
pub(super) async fn history(
    State(shared): State<Arc<Shared>>,
    Path(pipeline): Path<String>,
    query: Result<axum::extract::Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match query {
        Ok(q) => q.0,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("query: {} (it takes stage and limit)", e.body_text()),
            )
        }
    };
    let limit = query.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_HISTORY {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit: 1 to {MAX_HISTORY}"),
        );
    }
    let config = shared.config();
    let Some(p) = config.pipelines.iter().find(|p| p.name == pipeline) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no pipeline {:?}", reference::shorten(&pipeline, 100)),
        );
    };
    if let Some(stage) = &query.stage {
        if !p.stages.iter().any(|s| &s.name == stage) {
            return error(
                StatusCode::NOT_FOUND,
                format!(
                    "pipeline {pipeline} has no stage {:?}",
                    reference::shorten(stage, 100)
                ),
            );
        }
    }
    match shared.history(pipeline, query.stage, limit).await {
        Some(v) => Json(v.as_ref().clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such pipeline".to_string()),
    }
}

/// Checks a person's free text (an approval's or a freeze's reason): it goes into logs,
/// notifications and the status.
fn check_reason(reason: &str) -> Result<(), String> {
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(format!(
            "reason: at most {MAX_REASON} characters on one line, without control characters"
        ));
    }
    Ok(())
}

/// The optional body of an approval.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// A tag of the source stage to promote instead of its current one.
    tag: Option<String>,
    /// Promote before the stage's `min_age` has passed.
    #[serde(default)]
    force: bool,
    /// The digest the approver saw.
    digest: Option<String>,
    /// Why, in the approver's words.
    reason: Option<String>,
}

/// The body as what the approval asks for, every field checked.
fn parse_body(body: &Bytes) -> Result<Asked, String> {
    if body.trim_ascii().is_empty() {
        return Ok(Asked::default());
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: ApproveBody = serde_path_to_error::deserialize(de).map_err(|e| {
        format!("invalid body (expected {{\"digest\": \"sha256:...\", \"tag\": \"...\", \"force\": true}}, any of the keys, or nothing): {e}")
    })?;
    if let Some(tag) = &parsed.tag {
        if !reference::is_valid_tag(tag) {
            return Err(format!(
                "tag: {:?} is not a valid tag (letters, digits, '_', '.', '-'; at most {} characters, not starting with '.' or '-')",
                tag.chars().take(200).collect::<String>(),
                reference::MAX_TAG_LEN
            ));
        }
    }
    let digest = match parsed.digest {
        Some(d) => Some(d.parse().map_err(|e| format!("digest: {e}"))?),
        None => None,
    };
    if let Some(reason) = &parsed.reason {
        check_reason(reason)?;
    }
    Ok(Asked {
        tag: parsed.tag,
        force: parsed.force,
        digest,
        by: String::new(),
        reason: parsed.reason,
    })
}

pub(super) async fn promote(
    State(shared): State<Arc<Shared>>,
    Path((pipeline, stage)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let approver = match authorize(&*shared, &headers) {
        Ok(name) => name,
        Err(answer) => return answer,
    };
    let body = match body_or_answer(body, API_BODY_LIMIT).map(|b| parse_body(&b)) {
        Err(answer) => return answer,
        Ok(parsed) => parsed,
    };
    let asked = match body {
        Ok(asked) => Asked {
            by: approver,
            ..asked
        },
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let approved = match shared
        .clone()
        .approve(pipeline.clone(), stage.clone(), asked)
        .await
    {
        Ok(a) => a,
        Err(ApproveError::Target(e @ TargetError::NotPromoted(_))) => {
            return error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(ApproveError::Target(e)) => return error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ ApproveError::Plan(_)) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
        Err(e @ ApproveError::Stopping) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e @ ApproveError::Internal) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    };
    tracing::info!(pipeline = %pipeline, stage = %stage, "approval through the API answered");
    let (status, answer) = match approved {
        Approved::Promoted {
            promotion,
            up_to_date,
            forced,
        } => (
            StatusCode::OK,
            json!({"result": "promoted", "promotion": promotion_json(&promotion), "up_to_date": up_to_date, "forced": forced}),
        ),
        Approved::UpToDate { tag } => (StatusCode::OK, json!({"result": "up_to_date", "tag": tag})),
        Approved::Conflict {
            promotion,
            existing,
        } => (
            StatusCode::CONFLICT,
            json!({
                "result": "conflict",
                "promotion": promotion_json(&promotion),
                "existing_digest": existing.as_str(),
                "error": format!("{} exists with another digest ({}); the stage does not allow overwrite", promotion.to_tag, existing),
            }),
        ),
        Approved::Failed { promotion, error } => (
            StatusCode::BAD_GATEWAY,
            json!({"result": "failure", "promotion": promotion_json(&promotion), "reason": error.reason(), "error": error.chain()}),
        ),
        // Nothing written; the stage's action says why, in the words `retagd plan` uses. A digest
        // that moved and a soak not over are 409s with the fields to act on.
        Approved::NotPromoted(action) => {
            let error = action_text(&action, SystemTime::now());
            match action {
                Action::Moved {
                    promotion,
                    expected,
                } => (
                    StatusCode::CONFLICT,
                    json!({
                        "result": "moved",
                        "expected": expected.as_str(),
                        "found": promotion.digest.as_str(),
                        "promotion": promotion_json(&promotion),
                        "error": error,
                    }),
                ),
                Action::Waiting {
                    promotion,
                    until,
                    why,
                } => (
                    StatusCode::CONFLICT,
                    json!({
                        "result": "waiting",
                        "until": time(Some(until)),
                        "why": why.as_str(),
                        "promotion": promotion_json(&promotion),
                        "error": error,
                    }),
                ),
                Action::Frozen { promotion, freeze } => (
                    StatusCode::CONFLICT,
                    json!({
                        "result": "frozen",
                        "freeze": freeze_json(&freeze),
                        "promotion": promotion_json(&promotion),
                        "error": error,
                    }),
                ),
                other => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "result": "not_promoted",
                        "action": action_json(&other),
                        "error": error,
                    }),
                ),
            }
        }
    };
    (status, Json(answer)).into_response()
}

/// `GET /api/v1/freeze`: every freeze not over yet.
pub(super) async fn freezes(State(shared): State<Arc<Shared>>) -> Response {
    let freezes: Vec<Value> = shared.freezes().iter().map(freeze_json).collect();
    Json(json!({ "freezes": freezes })).into_response()
}

/// The body of `POST /api/v1/freeze`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FreezeBody {
    reason: String,
    #[serde(default)]
    pipelines: Vec<String>,
    #[serde(default)]
    stages: Vec<String>,
    until: Option<String>,
}

/// What is wrong with a freeze request: a bad body (400) or a name the configuration does not
/// have (404, with the known names).
#[derive(Debug, PartialEq, Eq)]
enum FreezeRefusal {
    Bad(String),
    Unknown(String),
}

/// The freeze a body asks for, checked against the configuration, at `now`, set by `by`.
fn parse_freeze(
    body: &Bytes,
    config: &crate::config::Config,
    by: &str,
    now: SystemTime,
) -> Result<Freeze, FreezeRefusal> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let parsed: FreezeBody = serde_path_to_error::deserialize(de).map_err(|e| {
        FreezeRefusal::Bad(format!("invalid body (expected {{\"reason\": \"...\", \"pipelines\": [...], \"stages\": [...], \"until\": \"<RFC 3339>\"}}; only reason is required): {e}"))
    })?;
    if parsed.reason.trim().is_empty() {
        return Err(FreezeRefusal::Bad("reason: say why promotions stop".into()));
    }
    check_reason(&parsed.reason).map_err(FreezeRefusal::Bad)?;
    let pipelines = &config.pipelines;
    if let Some(unknown) = parsed
        .pipelines
        .iter()
        .find(|name| !pipelines.iter().any(|p| p.name == **name))
    {
        let known: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
        return Err(FreezeRefusal::Unknown(format!(
            "no pipeline {:?} (pipelines: {})",
            unknown.chars().take(100).collect::<String>(),
            known.join(", ")
        )));
    }
    let covered = || {
        pipelines
            .iter()
            .filter(|p| parsed.pipelines.is_empty() || parsed.pipelines.contains(&p.name))
    };
    if let Some(unknown) = parsed
        .stages
        .iter()
        .find(|name| !covered().any(|p| p.stages.iter().any(|s| s.name == **name)))
    {
        let mut known: Vec<&str> = covered()
            .flat_map(|p| p.stages.iter().map(|s| s.name.as_str()))
            .collect();
        known.sort_unstable();
        known.dedup();
        return Err(FreezeRefusal::Unknown(format!(
            "no stage {:?} in the pipelines the freeze covers (stages: {})",
            unknown.chars().take(100).collect::<String>(),
            known.join(", ")
        )));
    }
    let until = match &parsed.until {
        None => None,
        Some(text) => {
            let until = calendar::parse_time(text)
                .map_err(|e| FreezeRefusal::Bad(format!("until: {e}")))?;
            if until <= now {
                return Err(FreezeRefusal::Bad(format!(
                    "until: {} is not in the future (now is {})",
                    calendar::format_time(until),
                    calendar::format_time(now)
                )));
            }
            Some(until)
        }
    };
    Ok(Freeze {
        id: format!("f-{:08x}", fastrand::u32(..)),
        reason: parsed.reason,
        by: by.to_string(),
        pipelines: parsed.pipelines,
        stages: parsed.stages,
        from: now,
        until,
    })
}

/// The answer to a freeze the store refused.
fn freeze_error(e: &FreezeError) -> Response {
    let status = match e {
        FreezeError::Unknown(_) => StatusCode::NOT_FOUND,
        FreezeError::Configured(_) | FreezeError::TooMany => StatusCode::CONFLICT,
        FreezeError::Store(_) | FreezeError::Damaged { .. } => {
            tracing::error!(error = %e, "cannot write the freezes");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, e.to_string())
}

/// `POST /api/v1/freeze`: stops promotions into the stages it covers until `until` or until
/// lifted; 201 with the freeze.
pub(super) async fn freeze(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let by = match authorize(&*shared, &headers) {
        Ok(name) => name,
        Err(answer) => return answer,
    };
    let body = match body_or_answer(body, API_BODY_LIMIT) {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let freeze = match parse_freeze(&body, &shared.config(), &by, SystemTime::now()) {
        Ok(f) => f,
        Err(FreezeRefusal::Bad(m)) => return error(StatusCode::BAD_REQUEST, m),
        Err(FreezeRefusal::Unknown(m)) => return error(StatusCode::NOT_FOUND, m),
    };
    match shared.freeze(freeze.clone()) {
        Ok(()) => (StatusCode::CREATED, Json(freeze_json(&freeze))).into_response(),
        Err(e) => freeze_error(&e),
    }
}

/// `DELETE /api/v1/freeze`: lifts every freeze set through the API.
pub(super) async fn unfreeze_all(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Response {
    lift(&*shared, &headers, None)
}

/// `DELETE /api/v1/freeze/{id}`: lifts one.
pub(super) async fn unfreeze(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    // Ids are `f-` and 8 hex digits, or `config-N`: anything longer is not one, and is not
    // echoed back whole.
    let id: String = id.chars().take(64).collect();
    lift(&*shared, &headers, Some(&id))
}

fn lift(shared: &Shared, headers: &HeaderMap, id: Option<&str>) -> Response {
    let by = match authorize(shared, headers) {
        Ok(name) => name,
        Err(answer) => return answer,
    };
    match shared.unfreeze(id, &by) {
        Ok(lifted) => {
            let lifted: Vec<Value> = lifted.iter().map(freeze_json).collect();
            Json(json!({ "lifted": lifted })).into_response()
        }
        Err(e) => freeze_error(&e),
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, mutations};

    static BODIES: &[&[u8]] = &[br#"{"tag": "v1.2.0-rc.2"}"#, b"", br#"{}"#];

    #[test]
    fn fuzz_approval_bodies_give_a_valid_tag_or_a_message() {
        fuzz("API bodies", mutations(BODIES), |bytes| {
            match parse_body(&Bytes::from(bytes)) {
                Ok(body) => {
                    if let Some(tag) = body.tag {
                        proptest::prop_assert!(reference::is_valid_tag(&tag));
                    }
                }
                Err(message) => proptest::prop_assert!(!message.is_empty()),
            }
            Ok(())
        });
    }
}
