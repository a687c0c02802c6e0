//! Promotion records: what retagd writes next to every image it promotes, so who promoted what,
//! when, from where and on whose approval lives where the image lives, and follows it to the
//! next stage with its other referrers. Pure: this module builds and reads the artifact; the
//! registry module writes and lists it, the engine decides when.
//!
//! # Format (version 1)
//!
//! An OCI 1.1 artifact manifest (`application/vnd.oci.image.manifest.v1+json`) in the target
//! repository:
//!
//! - `artifactType`: [`ARTIFACT_TYPE`];
//! - `config`: the empty descriptor (`application/vnd.oci.empty.v1+json`, `{}`);
//! - `subject`: the promoted manifest (media type, digest, size);
//! - one layer of media type [`ARTIFACT_TYPE`], holding the [`Record`] as JSON;
//! - annotation `org.opencontainers.image.created`: the record's `time`.
//!
//! It is listed by the registry's referrers API, or else in the referrers tag schema's index
//! (tag `sha256-<hex>` of the subject). A reader must not trust a record beyond what it checks:
//! anyone who can push to the repository can write one. [`Record::read`] refuses a layer that
//! is not valid JSON of this shape, or whose `digest` is not the artifact's subject.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::calendar;
use crate::reference::Digest;

/// The artifactType of a promotion record, and the media type of its one layer.
pub const ARTIFACT_TYPE: &str = "application/vnd.retagd.promotion.v1+json";
/// The OCI empty descriptor's media type, used for the config.
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The bytes of the empty config.
pub const EMPTY_BYTES: &[u8] = b"{}";
/// A record layer larger than this is not ours (a record is a few hundred bytes).
pub const MAX_RECORD_BYTES: u64 = 64 << 10;
/// The OCI image manifest media type the artifact is written as.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// One promotion, as written into the target repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The pipeline's name.
    pub pipeline: String,
    /// The stage promoted into.
    pub stage: String,
    /// Where the image came from.
    pub from: From,
    /// Where it went.
    pub to: To,
    /// The promoted manifest's digest (the artifact's subject).
    pub digest: String,
    /// When the tag was written, RFC 3339 in UTC (with milliseconds).
    pub time: String,
    /// `auto` or `manual`.
    pub approval: String,
    /// Who approved a manual promotion (an approver's name, or the local user).
    pub approved_by: Option<String>,
    /// The approver's reason, or why retagd wrote it (a heal).
    pub reason: Option<String>,
    /// The stage's `min_age` soak was skipped.
    pub forced: bool,
    /// The stage's `min_age` in seconds, when it has one.
    pub min_age: Option<u64>,
    /// The retagd version that wrote it.
    pub retagd_version: String,
}

/// The source of a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    /// The source stage.
    pub stage: String,
    /// Its registry's host.
    pub registry: String,
    /// Its repository.
    pub repository: String,
    /// The tag promoted.
    pub tag: String,
}

/// The target of a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct To {
    /// The target registry's host.
    pub registry: String,
    /// The target repository.
    pub repository: String,
    /// The tag written.
    pub tag: String,
}

/// The manifest a record is about, as its `subject` descriptor names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Its digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A record as written: the layer's bytes and the artifact manifest that refers to them.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The record's JSON, the one layer.
    pub layer: Vec<u8>,
    /// The manifest's JSON.
    pub manifest: Vec<u8>,
}

impl Artifact {
    /// The manifest's descriptor as a referrers index lists it.
    pub fn descriptor(&self, time: &str) -> serde_json::Value {
        serde_json::json!({
            "mediaType": OCI_MANIFEST,
            "digest": Digest::of(&self.manifest).to_string(),
            "size": self.manifest.len(),
            "artifactType": ARTIFACT_TYPE,
            "annotations": {"org.opencontainers.image.created": time},
        })
    }
}

impl Record {
    /// `time` as a record writes it: RFC 3339 in UTC with milliseconds, so two promotions in
    /// one second still sort.
    pub fn time_of(t: SystemTime) -> String {
        humantime::format_rfc3339_millis(t.max(SystemTime::UNIX_EPOCH)).to_string()
    }

    /// `min_age` as a record writes it.
    pub fn seconds(d: Option<Duration>) -> Option<u64> {
        d.map(|d| d.as_secs())
    }

    /// The artifact for this record about `subject` (see the module docs).
    pub fn artifact(&self, subject: &Subject) -> Artifact {
        // A struct of strings, numbers and options: serializing cannot fail.
        let layer = serde_json::to_vec(self).unwrap_or_default();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "config": {
                "mediaType": EMPTY,
                "digest": Digest::of(EMPTY_BYTES).to_string(),
                "size": EMPTY_BYTES.len(),
            },
            "layers": [{
                "mediaType": ARTIFACT_TYPE,
                "digest": Digest::of(&layer).to_string(),
                "size": layer.len(),
            }],
            "subject": {
                "mediaType": subject.media_type,
                "digest": subject.digest.to_string(),
                "size": subject.size,
            },
            "annotations": {"org.opencontainers.image.created": self.time},
        });
        Artifact {
            manifest: serde_json::to_vec(&manifest).unwrap_or_default(),
            layer,
        }
    }

    /// The layer's digest and size from an artifact manifest someone wrote, after checking it
    /// is a record's: the artifactType, and exactly one layer of the record's media type no
    /// larger than [`MAX_RECORD_BYTES`]. Also returns the manifest's subject digest.
    pub fn layer_of(manifest: &[u8]) -> Result<(Digest, u64, Digest), String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Manifest {
            artifact_type: Option<String>,
            layers: Option<Vec<Layer>>,
            subject: Option<Layer>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Layer {
            media_type: Option<String>,
            digest: String,
            size: Option<u64>,
        }
        let m: Manifest = serde_json::from_slice(manifest)
            .map_err(|e| format!("the manifest is not an OCI artifact manifest: {e}"))?;
        if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
            return Err(format!(
                "artifactType is {:?}, not {ARTIFACT_TYPE}",
                m.artifact_type.unwrap_or_default()
            ));
        }
        let subject = m
            .subject
            .ok_or("the manifest has no subject")?
            .digest
            .parse::<Digest>()
            .map_err(|e| format!("the subject's digest: {e}"))?;
        let layers = m.layers.unwrap_or_default();
        let [layer] = &layers[..] else {
            return Err(format!("{} layers, not one", layers.len()));
        };
        if layer.media_type.as_deref() != Some(ARTIFACT_TYPE) {
            return Err(format!(
                "the layer's media type is {:?}, not {ARTIFACT_TYPE}",
                layer.media_type.as_deref().unwrap_or_default()
            ));
        }
        let size = layer.size.unwrap_or(u64::MAX);
        if size > MAX_RECORD_BYTES {
            return Err(format!(
                "the layer is {size} bytes (a record is at most {MAX_RECORD_BYTES})"
            ));
        }
        let digest = layer
            .digest
            .parse::<Digest>()
            .map_err(|e| format!("the layer's digest: {e}"))?;
        Ok((digest, size, subject))
    }

    /// Reads a record's layer, refusing anything that is not one about `subject`.
    pub fn read(layer: &[u8], subject: &Digest) -> Result<Record, String> {
        let r: Record =
            serde_json::from_slice(layer).map_err(|e| format!("not a promotion record: {e}"))?;
        if r.digest != subject.as_str() {
            return Err(format!(
                "the record names {} but is attached to {subject}",
                crate::reference::shorten(&r.digest, 80)
            ));
        }
        calendar::parse_time(&r.time).map_err(|e| format!("time: {e}"))?;
        if r.approval != "auto" && r.approval != "manual" {
            return Err(format!(
                "approval is {:?}, not auto or manual",
                crate::reference::shorten(&r.approval, 40)
            ));
        }
        Ok(r)
    }

    /// When it happened (checked by [`Record::read`]; the epoch for one built badly).
    pub fn at(&self) -> SystemTime {
        calendar::parse_time(&self.time).unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(digest: &Digest) -> Record {
        Record {
            pipeline: "api".into(),
            stage: "release".into(),
            from: From {
                stage: "rc".into(),
                registry: "registry.example".into(),
                repository: "staging/api".into(),
                tag: "v1.2.0-rc.1".into(),
            },
            to: To {
                registry: "registry.example".into(),
                repository: "release/api".into(),
                tag: "v1.2.0".into(),
            },
            digest: digest.to_string(),
            time: "2026-12-05T10:00:00Z".into(),
            approval: "manual".into(),
            approved_by: Some("alice".into()),
            reason: Some("CAB-42".into()),
            forced: false,
            min_age: Some(3600),
            retagd_version: "0.1.0".into(),
        }
    }

    #[test]
    fn a_record_reads_back_from_its_artifact() {
        let d = Digest::of(b"image");
        let r = record(&d);
        let subject = Subject {
            digest: d.clone(),
            media_type: OCI_MANIFEST.into(),
            size: 5,
        };
        let a = r.artifact(&subject);
        let (layer, size, about) = Record::layer_of(&a.manifest).unwrap();
        assert_eq!(
            (layer, size, about),
            (Digest::of(&a.layer), a.layer.len() as u64, d.clone())
        );
        assert_eq!(Record::read(&a.layer, &d).unwrap(), r);
        let m: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["config"]["digest"], Digest::of(b"{}").to_string());
        assert_eq!(m["subject"]["size"], 5);
        assert_eq!(a.descriptor(&r.time)["artifactType"], ARTIFACT_TYPE);
    }

    #[test]
    fn what_is_not_a_record_about_the_subject_is_refused_with_the_reason() {
        let d = Digest::of(b"image");
        let other = Digest::of(b"other");
        let layer = serde_json::to_vec(&record(&other)).unwrap();
        assert!(Record::read(&layer, &d)
            .unwrap_err()
            .contains("attached to"));
        assert!(Record::read(b"{\"pipeline\": 1", &d)
            .unwrap_err()
            .contains("not a promotion record"));
        let mut bad = record(&d);
        bad.approval = "by-fax".into();
        let layer = serde_json::to_vec(&bad).unwrap();
        assert!(Record::read(&layer, &d).unwrap_err().contains("by-fax"));
        bad.approval = "auto".into();
        bad.time = "yesterday".into();
        let layer = serde_json::to_vec(&bad).unwrap();
        assert!(Record::read(&layer, &d).unwrap_err().contains("time"));

        let subject = Subject {
            digest: d.clone(),
            media_type: OCI_MANIFEST.into(),
            size: 5,
        };
        let m: serde_json::Value =
            serde_json::from_slice(&record(&d).artifact(&subject).manifest).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut m = m.clone();
            f(&mut m);
            Record::layer_of(&serde_json::to_vec(&m).unwrap()).unwrap_err()
        };
        assert!(with(&|m| m["artifactType"] = "application/spdx+json".into()).contains("spdx"));
        assert!(with(&|m| m["layers"][0]["size"] = (1u64 << 30).into()).contains("at most"));
        assert!(with(&|m| m["layers"] = serde_json::json!([])).contains("0 layers"));
        assert!(with(&|m| m["subject"] = serde_json::Value::Null).contains("no subject"));
        assert!(Record::layer_of(b"<html>").is_err());
    }
}
