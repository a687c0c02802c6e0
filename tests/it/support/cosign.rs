//! Signatures, attestations and SBOMs in the formats cosign and OCI 1.1 tools write them, made
//! by the test itself: a cosign `.sig` manifest holding a simple-signing payload with its
//! base64 ECDSA P-256 signature in the layer annotation, a Sigstore bundle (v0.3, DSSE) as an
//! OCI referrer, an SBOM as an OCI referrer, and the `sha256-<hex>` referrers index that tools
//! write on registries without the referrers API.

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};

use super::images::{Blob, Pusher, OCI_INDEX, OCI_MANIFEST};

/// cosign's simple-signing layer media type.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// A Sigstore bundle's media type and artifactType.
pub const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The SBOM artifactType the tests use.
pub const SPDX: &str = "application/spdx+json";

/// An ECDSA P-256 key pair, as `cosign generate-key-pair` makes.
pub struct Signer {
    key: EcdsaKeyPair,
}

impl Signer {
    /// A fresh key.
    pub fn generate() -> Signer {
        Signer {
            key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("P-256 key"),
        }
    }

    /// The public key as `cosign.pub` holds it (PEM `PUBLIC KEY`, SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> String {
        let der = self.key.public_key().as_der().expect("public key DER");
        pem("PUBLIC KEY", der.as_ref())
    }

    /// The base64 ASN.1 DER signature of `message` (SHA-256), as cosign writes it.
    pub fn sign(&self, message: &[u8]) -> String {
        let sig = self
            .key
            .sign(&SystemRandom::new(), message)
            .expect("signature");
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }
}

/// `-----BEGIN LABEL-----` PEM of `der`.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// cosign's simple-signing payload naming `digest`.
pub fn payload(reference: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature"
        },
        "optional": null
    }))
    .expect("payload JSON")
}

/// An artifact manifest with its blobs, ready to push.
pub struct Artifact {
    /// Config and layers.
    pub blobs: Vec<Blob>,
    /// The manifest bytes.
    pub manifest: Bytes,
    /// Their digest.
    pub digest: String,
}

impl Artifact {
    /// Pushes the blobs, then the manifest as `reference` (a tag, or the digest).
    pub async fn push(&self, pusher: &Pusher, repo: &str, reference: Option<&str>) {
        for b in &self.blobs {
            pusher.push_blob(repo, b).await;
        }
        let digest = pusher
            .push_manifest(
                repo,
                reference.unwrap_or(&self.digest),
                &self.manifest,
                OCI_MANIFEST,
            )
            .await;
        assert_eq!(digest, self.digest);
    }

    /// Its descriptor in a referrers index.
    pub fn descriptor(&self, artifact_type: &str) -> Value {
        json!({
            "mediaType": OCI_MANIFEST,
            "digest": self.digest,
            "size": self.manifest.len(),
            "artifactType": artifact_type,
        })
    }
}

fn manifest(value: Value, blobs: Vec<Blob>) -> Artifact {
    let manifest = Bytes::from(serde_json::to_vec(&value).expect("manifest JSON"));
    Artifact {
        digest: super::sha256_digest(&manifest),
        manifest,
        blobs,
    }
}

/// cosign 2's `.sig` manifest: one simple-signing layer per `(payload, signature)`.
pub fn signature_manifest(signatures: &[(Vec<u8>, String)]) -> Artifact {
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        Bytes::from_static(
            br#"{"architecture":"","config":{},"os":"","rootfs":{"type":"layers","diff_ids":[]}}"#,
        ),
    );
    let layers: Vec<Blob> = signatures
        .iter()
        .map(|(p, _)| Blob::new(SIMPLE_SIGNING, Bytes::from(p.clone())))
        .collect();
    let descriptors: Vec<Value> = layers
        .iter()
        .zip(signatures)
        .map(|(l, (_, sig))| {
            let mut d = l.descriptor();
            d["annotations"] = json!({ SIGNATURE_ANNOTATION: sig });
            d
        })
        .collect();
    let value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": descriptors,
    });
    let mut blobs = vec![config];
    blobs.extend(layers);
    manifest(value, blobs)
}

/// An OCI 1.1 referrer of `subject` (an image manifest of `subject_size` bytes) holding `data`
/// as its one layer of `artifact_type`.
pub fn referrer(subject: &str, subject_size: usize, artifact_type: &str, data: &[u8]) -> Artifact {
    let empty = Blob::new(
        "application/vnd.oci.empty.v1+json",
        Bytes::from_static(b"{}"),
    );
    let layer = Blob::new(artifact_type, Bytes::from(data.to_vec()));
    let value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty.descriptor(),
        "layers": [layer.descriptor()],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
    });
    manifest(value, vec![empty, layer])
}

/// A cosign 3 Sigstore bundle (v0.3) with a DSSE envelope over an in-toto statement naming
/// `digest`, signed by `signer`.
pub fn bundle(signer: &Signer, digest: &str) -> Vec<u8> {
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "image", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {}
    }))
    .expect("statement JSON");
    let payload_type = "application/vnd.in-toto+json";
    let pae = [
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            statement.len()
        )
        .into_bytes(),
        statement.clone(),
    ]
    .concat();
    serde_json::to_vec(&json!({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": "test"}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64::engine::general_purpose::STANDARD.encode(&statement),
            "payloadType": payload_type,
            "signatures": [{"sig": signer.sign(&pae), "keyid": ""}]
        }
    }))
    .expect("bundle JSON")
}

/// The `sha256-<hex>` referrers index listing `descriptors`.
pub fn referrers_index(descriptors: &[Value]) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": descriptors,
        }))
        .expect("index JSON"),
    )
}

/// `sha256-<hex>` of `digest`.
pub fn fallback_tag(digest: &str) -> String {
    format!("sha256-{}", digest.trim_start_matches("sha256:"))
}
