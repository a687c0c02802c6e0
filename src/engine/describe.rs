//! How plans read: one phrase per action for people, and the stable JSON shape that
//! `retagd plan --json` prints and the HTTP API serves (documented in README.md).

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use super::{plan, Action, PipelinePlan, Promotion, StagePlan, Wait};
use crate::calendar::{self, Freeze};
use crate::reference::Digest;

/// `sha256:` and the first 12 hex digits, as people quote digests.
pub fn short(digest: &Digest) -> String {
    crate::reference::short_digest(digest.as_str())
}

/// The action as a phrase.
pub fn action_text(action: &Action, now: SystemTime) -> String {
    match action {
        Action::Source => "source stage".to_string(),
        Action::UpToDate { tag } => format!("up to date ({tag})"),
        Action::Promote(p) => format!(
            "promote {} -> {}{}",
            p.from_tag,
            p.to_tag,
            if p.overwrite { " (overwrite)" } else { "" }
        ),
        Action::Pending(p) => format!(
            "pending approval: {} -> {} (retagd promote --digest {})",
            p.from_tag, p.to_tag, p.digest
        ),
        Action::Waiting {
            promotion,
            until,
            why,
        } => format!(
            "waiting for {} until {} ({} left): {} -> {}",
            match why {
                Wait::Soak => "min_age",
                Wait::Window => "the promotion window",
            },
            calendar::format_time(*until),
            humantime::format_duration(Duration::from_secs(plan::remaining(*until, now).as_secs())),
            promotion.from_tag,
            promotion.to_tag
        ),
        Action::Frozen { promotion, freeze } => format!(
            "frozen {}: {} -> {} held",
            freeze_text(freeze),
            promotion.from_tag,
            promotion.to_tag
        ),
        Action::Conflict {
            promotion,
            existing,
        } => format!(
            "conflict: {} exists with {} (not {}); not overwriting",
            promotion.to_tag,
            short(existing),
            short(&promotion.digest)
        ),
        Action::Moved {
            promotion,
            expected,
        } => format!(
            "moved: the approval names {}, but {} is now {} ({})",
            short(expected),
            promotion.from_stage,
            promotion.from_tag,
            short(&promotion.digest)
        ),
        Action::NoCandidate { reason } => format!("nothing to promote: {reason}"),
        Action::Invalid { reason } => format!("invalid: {reason}"),
        Action::Unverified {
            promotion, reason, ..
        } => format!(
            "unverified: {reason}: {} -> {} ({})",
            promotion.from_tag,
            promotion.to_tag,
            short(&promotion.digest)
        ),
    }
}

/// A promotion as JSON.
pub fn promotion_json(p: &Promotion) -> Value {
    json!({
        "from_stage": p.from_stage,
        "from_tag": p.from_tag,
        "to_tag": p.to_tag,
        "digest": p.digest.as_str(),
        "overwrite": p.overwrite,
    })
}

/// The `--json` form of a plan; documented in README.md.
pub fn plan_json(plan: &PipelinePlan) -> Value {
    let stages: Vec<Value> = plan.stages.iter().map(stage_json).collect();
    json!({"pipeline": plan.pipeline, "error": null, "stages": stages})
}

/// One stage of [`plan_json`].
pub fn stage_json(st: &StagePlan) -> Value {
    json!({
        "stage": st.stage,
        "registry": st.registry,
        "repository": st.repository,
        "current": st.current.as_ref().map(|c| json!({
            "tag": c.tag,
            "digest": c.digest.as_str(),
            "since": calendar::format_time(c.since),
        })),
        "no_current": st.no_current,
        "frozen": st.frozen.as_deref().map(freeze_json),
        "action": action_json(&st.action),
    })
}

/// A freeze as the plan JSON and the freeze API show it.
pub fn freeze_json(f: &Freeze) -> Value {
    json!({
        "id": f.id,
        "reason": f.reason,
        "by": f.by,
        "pipelines": f.pipelines,
        "stages": f.stages,
        "from": calendar::format_time(f.from),
        "until": f.until.map(calendar::format_time),
    })
}

/// `(by alice until 2026-12-05T09:00:00Z: incident 42)`: who, until when, why.
pub fn freeze_text(f: &Freeze) -> String {
    format!(
        "(by {}{}: {})",
        f.by,
        f.until
            .map(|u| format!(" until {}", calendar::format_time(u)))
            .unwrap_or_else(|| " until lifted".to_string()),
        f.reason
    )
}

/// The `action` object of [`stage_json`].
pub fn action_json(action: &Action) -> Value {
    match action {
        Action::Source => json!({"kind": "source"}),
        Action::UpToDate { tag } => json!({"kind": "up_to_date", "tag": tag}),
        Action::Promote(p) => json!({"kind": "promote", "promotion": promotion_json(p)}),
        Action::Pending(p) => json!({"kind": "pending", "promotion": promotion_json(p)}),
        Action::Waiting {
            promotion,
            until,
            why,
        } => json!({
            "kind": "waiting",
            "promotion": promotion_json(promotion),
            "until": calendar::format_time(*until),
            "why": why.as_str(),
        }),
        Action::Frozen { promotion, freeze } => json!({
            "kind": "frozen",
            "promotion": promotion_json(promotion),
            "freeze": freeze_json(freeze),
        }),
        Action::Conflict {
            promotion,
            existing,
        } => json!({
            "kind": "conflict",
            "promotion": promotion_json(promotion),
            "existing_digest": existing.as_str(),
        }),
        Action::Moved {
            promotion,
            expected,
        } => json!({
            "kind": "moved",
            "promotion": promotion_json(promotion),
            "expected_digest": expected.as_str(),
        }),
        Action::NoCandidate { reason } => json!({"kind": "no_candidate", "reason": reason}),
        Action::Invalid { reason } => json!({"kind": "invalid", "reason": reason}),
        Action::Unverified {
            promotion,
            reason,
            code,
        } => json!({
            "kind": "unverified",
            "promotion": promotion_json(promotion),
            "reason": reason,
            "code": code,
        }),
    }
}
