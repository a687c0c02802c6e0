//! The event model: what the notifier is told about one promotion, and its one-line summary.
//! Who builds events is up to the caller (the daemon's status); the formats read them.

use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::calendar::{format_time, Freeze};
use crate::config::EventKind;
use crate::reference::short_digest;

/// One promotion event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// What happened; serialized as `event` (`success`, ...).
    #[serde(rename = "event", serialize_with = "kind_str")]
    pub kind: EventKind,
    /// The pipeline's name.
    pub pipeline: String,
    /// The target stage's name.
    pub stage: String,
    /// The target stage's registry, by its name in the configuration (not a URL).
    pub registry: String,
    /// The target stage's repository.
    pub repository: String,
    /// The source stage's tag.
    pub from_tag: String,
    /// The target tag.
    pub to_tag: String,
    /// The manifest digest promoted, or that would be.
    pub digest: String,
    /// For a conflict: what the target tag holds.
    pub existing_digest: Option<String>,
    /// For a failure: why.
    pub error: Option<String>,
    /// For a promotion someone approved: who (the approver's name, never a token).
    pub approved_by: Option<String>,
    /// For an approved promotion: the reason the approver gave.
    pub reason: Option<String>,
    /// For an approved promotion: it skipped the stage's `min_age`.
    pub forced: bool,
    /// For a freeze or unfreeze: the freeze's id.
    pub freeze_id: Option<String>,
    /// For a freeze: when it ends by itself (RFC 3339); `null` until lifted.
    pub until: Option<String>,
    /// When it happened; serialized as RFC 3339 UTC.
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
}

fn kind_str<S: Serializer>(kind: &EventKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

fn rfc3339<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_time(*time))
}

impl Event {
    /// A freeze set or lifted (`kind` is [`EventKind::Freeze`] or [`EventKind::Unfreeze`]) by
    /// `by`. `pipeline` and `stage` list what it covers (`*` for all); `approved_by` is who
    /// acted and `reason` the freeze's; the promotion fields are empty.
    pub fn freeze(kind: EventKind, freeze: &Freeze, by: &str) -> Event {
        let names = |n: &[String]| {
            if n.is_empty() {
                "*".to_string()
            } else {
                n.join(",")
            }
        };
        Event {
            kind,
            pipeline: names(&freeze.pipelines),
            stage: names(&freeze.stages),
            registry: String::new(),
            repository: String::new(),
            from_tag: String::new(),
            to_tag: String::new(),
            digest: String::new(),
            existing_digest: None,
            error: None,
            approved_by: Some(by.to_string()),
            reason: Some(freeze.reason.clone()),
            forced: false,
            freeze_id: Some(freeze.id.clone()),
            until: freeze.until.map(format_time),
            time: SystemTime::now(),
        }
    }

    /// One line for people, as in the JSON `summary` and the Slack text.
    pub fn summary(&self) -> String {
        let Event {
            pipeline,
            stage,
            from_tag,
            to_tag,
            ..
        } = self;
        let digest = short_digest(&self.digest);
        match self.kind {
            EventKind::Success => format!(
                "{pipeline}/{stage}: promoted {from_tag} -> {to_tag} ({digest}){}{}",
                self.approved_by
                    .as_deref()
                    .map(|by| format!(", approved by {by}"))
                    .unwrap_or_default(),
                if self.forced {
                    ", forced past min_age"
                } else {
                    ""
                }
            ),
            EventKind::Failure => format!(
                "{pipeline}/{stage}: promoting {from_tag} -> {to_tag} ({digest}) failed: {}",
                self.error.as_deref().unwrap_or("unknown error")
            ),
            EventKind::Conflict => format!(
                "{pipeline}/{stage}: cannot promote {from_tag} -> {to_tag} ({digest}): \
                 {to_tag} already holds {}",
                self.existing_digest
                    .as_deref()
                    .map_or_else(|| "another digest".to_string(), short_digest)
            ),
            EventKind::Pending => format!(
                "{pipeline}/{stage}: {from_tag} -> {to_tag} ({digest}) is waiting for approval"
            ),
            EventKind::Freeze => format!(
                "promotions into {pipeline}/{stage} frozen by {}{}: {}",
                self.approved_by.as_deref().unwrap_or("?"),
                self.until
                    .as_deref()
                    .map_or_else(|| " until lifted".to_string(), |u| format!(" until {u}")),
                self.reason.as_deref().unwrap_or_default()
            ),
            EventKind::Unfreeze => format!(
                "promotions into {pipeline}/{stage} unfrozen by {} (freeze was: {})",
                self.approved_by.as_deref().unwrap_or("?"),
                self.reason.as_deref().unwrap_or_default()
            ),
            EventKind::Drift => format!(
                "{pipeline}/{stage}: {to_tag} was moved outside retagd: it names {}, retagd wrote \
                 {digest}{}",
                self.existing_digest
                    .as_deref()
                    .map_or_else(|| "another digest".to_string(), short_digest),
                match (&self.error, &self.reason) {
                    (Some(e), _) => format!("; putting it back failed: {e}"),
                    (None, Some(r)) => format!("; {r}"),
                    (None, None) => String::new(),
                }
            ),
        }
    }
}

/// An event as the tests of every notify module use it.
#[cfg(test)]
pub(super) fn example(kind: EventKind) -> Event {
    Event {
        kind,
        pipeline: "api-gateway".into(),
        stage: "staging".into(),
        registry: "ghcr".into(),
        repository: "myorg/api-gateway".into(),
        from_tag: "v1.2.0-dev.3".into(),
        to_tag: "v1.2.0-rc.1".into(),
        digest: "sha256:abcd1234ef567890abcd1234ef567890abcd1234ef567890abcd1234ef567890".into(),
        existing_digest: None,
        error: None,
        approved_by: None,
        reason: None,
        forced: false,
        freeze_id: None,
        until: None,
        time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_777_887_000),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::example as event;
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn summaries_name_the_stage_the_tags_and_the_short_digest() {
        assert_eq!(
            event(EventKind::Success).summary(),
            "api-gateway/staging: promoted v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56)"
        );
        let mut failure = event(EventKind::Failure);
        failure.error = Some("registry ghcr: HTTP 500".into());
        assert_eq!(
            failure.summary(),
            "api-gateway/staging: promoting v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56) \
             failed: registry ghcr: HTTP 500"
        );
        let mut conflict = event(EventKind::Conflict);
        conflict.existing_digest = Some("sha256:0123456789abcdef".into());
        assert_eq!(
            conflict.summary(),
            "api-gateway/staging: cannot promote v1.2.0-dev.3 -> v1.2.0-rc.1 \
             (sha256:abcd1234ef56): v1.2.0-rc.1 already holds sha256:0123456789ab"
        );
        let mut drift = event(EventKind::Drift);
        drift.from_tag = drift.to_tag.clone();
        drift.existing_digest = Some("sha256:0123456789abcdef".into());
        assert_eq!(
            drift.summary(),
            "api-gateway/staging: v1.2.0-rc.1 was moved outside retagd: it names \
             sha256:0123456789ab, retagd wrote sha256:abcd1234ef56"
        );
        assert_eq!(
            event(EventKind::Pending).summary(),
            "api-gateway/staging: v1.2.0-dev.3 -> v1.2.0-rc.1 (sha256:abcd1234ef56) is waiting \
             for approval"
        );
    }

    #[test]
    fn times_outside_rfc3339_are_clamped_not_panicked_on() {
        let mut e = event(EventKind::Success);
        e.time = UNIX_EPOCH - Duration::from_secs(10);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        e.time = UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["time"], "9999-12-31T23:59:59Z");
    }
}
