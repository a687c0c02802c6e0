//! The two bodies a notification can have: retagd's JSON (version [`JSON_VERSION`]) and a
//! Slack incoming-webhook message. Both are described in the [module docs](super).

use serde::Serialize;
use serde_json::json;

use super::Event;
use crate::config::{EventKind, NotifyFormat};
use crate::reference::short_digest;

/// The `version` of the JSON format this module writes.
pub const JSON_VERSION: u32 = 1;
/// Slack's limits: 3000 characters of section text, 2000 per field.
const SLACK_TEXT_MAX: usize = 3000;
const SLACK_FIELD_MAX: usize = 2000;

/// The body of `event` in `format`.
pub(super) fn body(format: NotifyFormat, event: &Event) -> serde_json::Result<Vec<u8>> {
    match format {
        NotifyFormat::Json => json_body(event),
        NotifyFormat::Slack => slack_body(event),
    }
}

/// The `format = "json"` body: the event, its version and summary.
fn json_body(event: &Event) -> serde_json::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Body<'a> {
        version: u32,
        #[serde(flatten)]
        event: &'a Event,
        summary: String,
    }
    serde_json::to_vec(&Body {
        version: JSON_VERSION,
        event,
        summary: event.summary(),
    })
}

/// The `format = "slack"` body: see the module docs.
fn slack_body(event: &Event) -> serde_json::Result<Vec<u8>> {
    let summary = mrkdwn(&event.summary(), SLACK_TEXT_MAX);
    let field =
        |name: &str, value: String| json!({"type": "mrkdwn", "text": format!("*{name}*\n{value}")});
    if matches!(event.kind, EventKind::Freeze | EventKind::Unfreeze) {
        let fields = vec![
            field("Pipelines", mrkdwn(&event.pipeline, 500)),
            field("Stages", mrkdwn(&event.stage, 500)),
            field(
                "By",
                mrkdwn(event.approved_by.as_deref().unwrap_or_default(), 200),
            ),
            field(
                "Until",
                mrkdwn(event.until.as_deref().unwrap_or("lifted by hand"), 100),
            ),
            field(
                "Reason",
                mrkdwn(
                    event.reason.as_deref().unwrap_or_default(),
                    SLACK_FIELD_MAX - 20,
                ),
            ),
        ];
        return slack_message(&summary, fields);
    }
    // Names and tags are short; only the error is cut to fit a field with its heading.
    let mut fields = vec![
        field("Pipeline", mrkdwn(&event.pipeline, 200)),
        field("Stage", mrkdwn(&event.stage, 200)),
        field(
            "Image",
            mrkdwn(&format!("{}/{}", event.registry, event.repository), 500),
        ),
        field(
            "Promotion",
            format!(
                "`{}` -&gt; `{}`",
                mrkdwn(&event.from_tag, 300),
                mrkdwn(&event.to_tag, 300)
            ),
        ),
        field(
            "Digest",
            format!("`{}`", mrkdwn(&short_digest(&event.digest), 100)),
        ),
    ];
    if let Some(existing) = &event.existing_digest {
        fields.push(field(
            "Target holds",
            format!("`{}`", mrkdwn(&short_digest(existing), 100)),
        ));
    }
    if let Some(error) = &event.error {
        fields.push(field("Error", mrkdwn(error, SLACK_FIELD_MAX - 20)));
    }
    if let Some(by) = &event.approved_by {
        let forced = if event.forced {
            " (forced past min_age)"
        } else {
            ""
        };
        fields.push(field("Approved by", format!("{}{forced}", mrkdwn(by, 200))));
    }
    if let Some(reason) = &event.reason {
        fields.push(field("Reason", mrkdwn(reason, SLACK_FIELD_MAX - 20)));
    }
    slack_message(&summary, fields)
}

/// Slack's message: the summary as its text and one section with `fields`.
fn slack_message(summary: &str, fields: Vec<serde_json::Value>) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&json!({
        "text": summary,
        "blocks": [{
            "type": "section",
            "text": {"type": "mrkdwn", "text": summary},
            "fields": fields,
        }],
    }))
}

/// `s` escaped for Slack (`&`, `<`, `>` are its control characters) and cut, with `...`, to at
/// most `max` characters of escaped text.
fn mrkdwn(s: &str, max: usize) -> String {
    let escaped = |c: char| match c {
        '&' => "&amp;".to_string(),
        '<' => "&lt;".to_string(),
        '>' => "&gt;".to_string(),
        c => c.to_string(),
    };
    let total: usize = s.chars().map(|c| escaped(c).chars().count()).sum();
    if total <= max {
        return s.chars().map(escaped).collect();
    }
    let mut out = String::new();
    let mut len = 0;
    for piece in s.chars().map(escaped) {
        let n = piece.chars().count();
        if len + n > max.saturating_sub(3) {
            break;
        }
        out.push_str(&piece);
        len += n;
    }
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::config::EventKind;
    use crate::notify::event::example as event;

    #[test]
    fn json_body_is_the_event_with_version_and_summary() {
        let v: serde_json::Value =
            serde_json::from_slice(&json_body(&event(EventKind::Success)).unwrap()).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["event"], "success");
        assert_eq!(v["registry"], "ghcr");
        assert_eq!(v["existing_digest"], serde_json::Value::Null);
        assert_eq!(v["error"], serde_json::Value::Null);
        assert_eq!(v["time"], "2026-05-04T09:30:00Z");
        assert!(v.get("kind").is_none());
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut expected = vec![
            "version",
            "event",
            "pipeline",
            "stage",
            "registry",
            "repository",
            "from_tag",
            "to_tag",
            "digest",
            "existing_digest",
            "error",
            "approved_by",
            "reason",
            "forced",
            "freeze_id",
            "until",
            "time",
            "summary",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
    }

    #[test]
    fn an_approved_promotion_names_who_why_and_whether_forced() {
        let mut e = event(EventKind::Success);
        e.approved_by = Some("alice".into());
        e.reason = Some("CAB <1234>".into());
        e.forced = true;
        let v: serde_json::Value = serde_json::from_slice(&json_body(&e).unwrap()).unwrap();
        assert_eq!(
            (&v["approved_by"], &v["reason"], &v["forced"]),
            (&json!("alice"), &json!("CAB <1234>"), &json!(true))
        );
        assert!(v["summary"]
            .as_str()
            .unwrap()
            .ends_with(", approved by alice, forced past min_age"));
        let v: serde_json::Value = serde_json::from_slice(&slack_body(&e).unwrap()).unwrap();
        let fields: Vec<&str> = v["blocks"][0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&"*Approved by*\nalice (forced past min_age)"),
            "{fields:?}"
        );
        assert!(fields.contains(&"*Reason*\nCAB &lt;1234&gt;"), "{fields:?}");
    }

    #[test]
    fn slack_body_has_text_and_one_section_with_fields() {
        let mut e = event(EventKind::Failure);
        e.error = Some("a <b> & c".into());
        let v: serde_json::Value = serde_json::from_slice(&slack_body(&e).unwrap()).unwrap();
        let text = v["text"].as_str().unwrap();
        assert!(text.contains("v1.2.0-dev.3 -&gt; v1.2.0-rc.1"), "{text}");
        assert!(text.ends_with("failed: a &lt;b&gt; &amp; c"), "{text}");
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        let fields: Vec<&str> = blocks[0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["type"], "mrkdwn");
                f["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            fields,
            [
                "*Pipeline*\napi-gateway",
                "*Stage*\nstaging",
                "*Image*\nghcr/myorg/api-gateway",
                "*Promotion*\n`v1.2.0-dev.3` -&gt; `v1.2.0-rc.1`",
                "*Digest*\n`sha256:abcd1234ef56`",
                "*Error*\na &lt;b&gt; &amp; c",
            ]
        );
    }

    #[test]
    fn slack_text_is_cut_to_its_limits_without_splitting_an_entity() {
        let mut e = event(EventKind::Failure);
        e.error = Some("<".repeat(5000));
        let v: serde_json::Value = serde_json::from_slice(&slack_body(&e).unwrap()).unwrap();
        assert!(v["text"].as_str().unwrap().chars().count() <= SLACK_TEXT_MAX);
        let error = v["blocks"][0]["fields"][5]["text"].as_str().unwrap();
        assert!(error.chars().count() <= SLACK_FIELD_MAX);
        assert!(error.ends_with("&lt;..."), "{}", &error[error.len() - 20..]);
        assert_eq!(mrkdwn("abcdef", 5), "ab...");
        assert_eq!(mrkdwn("abcde", 5), "abcde");
        assert_eq!(mrkdwn("a&b", 5), "a...");
    }
}
