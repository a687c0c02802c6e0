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
use crate::engine::describe::{action_json, action_text, promotion_json, stage_json};
use crate::engine::{Action, ApproveError, Approved, Asked, TargetError};
use crate::reference;
use crate::status::PipelineStatus;

/// Longest approval reason kept (it goes into logs, notifications and the status).
const MAX_REASON: usize = 500;

fn time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_seconds(t).to_string())
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
        if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(format!(
                "reason: at most {MAX_REASON} characters on one line, without control characters"
            ));
        }
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
                Action::Waiting { promotion, until } => (
                    StatusCode::CONFLICT,
                    json!({
                        "result": "waiting",
                        "until": time(Some(until)),
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
