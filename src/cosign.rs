//! Key-based cosign signatures, checked against a candidate's digest before it is promoted
//! (`promote.verify`). Pure: the registry module finds the signatures ([`Evidence`]), this module
//! says whether one of them is a valid signature of the digest by the configured key.
//!
//! Two formats, as cosign writes them with `--key`:
//!
//! - cosign 2: a simple-signing payload (`critical.image.docker-manifest-digest`) in a layer of
//!   the `.sig` tag or of an OCI 1.1 referrer, with the base64 ASN.1 ECDSA signature in the
//!   layer annotation `dev.cosignproject.cosign/signature`.
//! - cosign 3: a Sigstore bundle (v0.3) whose DSSE envelope holds an in-toto statement naming
//!   the digest; the signature is over the envelope's PAE.
//!
//! Keyless signatures (Fulcio certificates, Rekor entries) are not checked here: a bundle or
//! payload signed by another key simply does not verify.

use aws_lc_rs::signature::{ParsedPublicKey, ECDSA_P256_SHA256_ASN1};
use base64::Engine as _;
use serde::Deserialize;

use crate::reference::Digest;

/// A signed payload or payload bytes read from a registry are refused above this size.
pub const MAX_EVIDENCE_BYTES: u64 = 1 << 20;

/// An ECDSA P-256 public key, as `cosign.pub` holds it.
#[derive(Clone)]
pub struct PublicKey {
    key: ParsedPublicKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PublicKey(ECDSA P-256)")
    }
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) block; anything but a P-256 key is
    /// refused with the reason.
    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
        const END: &str = "-----END PUBLIC KEY-----";
        let start = text
            .find(BEGIN)
            .ok_or("no \"-----BEGIN PUBLIC KEY-----\" block (cosign.pub holds one)")?;
        let body = &text[start + BEGIN.len()..];
        let end = body.find(END).ok_or("the PUBLIC KEY block does not end")?;
        let b64: String = body[..end].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the PUBLIC KEY block is not base64: {e}"))?;
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der).map_err(|_| {
            "not an ECDSA P-256 public key (cosign's key-based signatures use P-256)"
        })?;
        Ok(PublicKey { key })
    }

    fn verifies(&self, message: &[u8], signature_b64: &str) -> Result<bool, Refusal> {
        let signature = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim())
            .map_err(|_| Refusal::Malformed("a signature is not base64".into()))?;
        Ok(self.key.verify_sig(message, &signature).is_ok())
    }
}

/// A signature as found in a registry, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// cosign 2: the simple-signing payload and its base64 signature.
    SimpleSigning {
        /// The payload bytes (the layer blob).
        payload: Vec<u8>,
        /// The `dev.cosignproject.cosign/signature` annotation.
        signature: String,
    },
    /// cosign 3: a Sigstore bundle's bytes.
    Bundle(Vec<u8>),
}

/// Why a candidate is not verified; the worst news of all signatures found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No cosign signature at all.
    #[error("no signature")]
    NoSignature,
    /// Signatures exist, but none verifies with the key.
    #[error("no signature verifies with the key (signed by another key, or altered)")]
    NotVerified,
    /// A signature by the key names another digest.
    #[error("the signed payload names {0}, not this digest")]
    OtherDigest(String),
    /// A signature or payload that cannot be read.
    #[error("{0}")]
    Malformed(String),
}

impl Refusal {
    /// The bounded `reason` label of the refusal metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoSignature => "no_signature",
            Refusal::NotVerified => "not_verified",
            Refusal::OtherDigest(_) => "other_digest",
            Refusal::Malformed(_) => "malformed",
        }
    }

    /// How telling a refusal is, when several signatures fail differently.
    fn rank(&self) -> u8 {
        match self {
            Refusal::NoSignature => 0,
            Refusal::Malformed(_) => 1,
            Refusal::NotVerified => 2,
            Refusal::OtherDigest(_) => 3,
        }
    }
}

/// Ok when one of `evidence` is a signature of `digest` by `key`; else the most telling
/// refusal.
pub fn verify(key: &PublicKey, evidence: &[Evidence], digest: &Digest) -> Result<(), Refusal> {
    let mut worst = Refusal::NoSignature;
    for e in evidence {
        let result = match e {
            Evidence::SimpleSigning { payload, signature } => {
                simple_signing(key, payload, signature, digest)
            }
            Evidence::Bundle(bytes) => bundle(key, bytes, digest),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(r) if r.rank() > worst.rank() => worst = r,
            Err(_) => {}
        }
    }
    Err(worst)
}

fn simple_signing(
    key: &PublicKey,
    payload: &[u8],
    signature: &str,
    digest: &Digest,
) -> Result<(), Refusal> {
    if !key.verifies(payload, signature)? {
        return Err(Refusal::NotVerified);
    }
    #[derive(Deserialize)]
    struct Payload {
        critical: Critical,
    }
    #[derive(Deserialize)]
    struct Critical {
        image: Image,
    }
    #[derive(Deserialize)]
    struct Image {
        #[serde(rename = "docker-manifest-digest")]
        digest: String,
    }
    let p: Payload = serde_json::from_slice(payload)
        .map_err(|_| Refusal::Malformed("a signed payload is not simple-signing JSON".into()))?;
    if p.critical.image.digest == digest.as_str() {
        Ok(())
    } else {
        Err(Refusal::OtherDigest(
            p.critical.image.digest.chars().take(80).collect(),
        ))
    }
}

fn bundle(key: &PublicKey, bytes: &[u8], digest: &Digest) -> Result<(), Refusal> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Bundle {
        dsse_envelope: Option<Envelope>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        payload: String,
        payload_type: String,
        signatures: Vec<Signature>,
    }
    #[derive(Deserialize)]
    struct Signature {
        sig: String,
    }
    #[derive(Deserialize)]
    struct Statement {
        subject: Vec<Subject>,
    }
    #[derive(Deserialize)]
    struct Subject {
        digest: std::collections::BTreeMap<String, String>,
    }
    let b: Bundle = serde_json::from_slice(bytes)
        .map_err(|_| Refusal::Malformed("a Sigstore bundle is not JSON".into()))?;
    let envelope = b.dsse_envelope.ok_or_else(|| {
        Refusal::Malformed("a Sigstore bundle without a DSSE envelope (not checked)".into())
    })?;
    let statement = base64::engine::general_purpose::STANDARD
        .decode(envelope.payload.trim())
        .map_err(|_| Refusal::Malformed("a bundle's payload is not base64".into()))?;
    let pae = [
        format!(
            "DSSEv1 {} {} {} ",
            envelope.payload_type.len(),
            envelope.payload_type,
            statement.len()
        )
        .into_bytes(),
        statement.clone(),
    ]
    .concat();
    let mut verified = false;
    for s in &envelope.signatures {
        verified |= key.verifies(&pae, &s.sig)?;
    }
    if !verified {
        return Err(Refusal::NotVerified);
    }
    let st: Statement = serde_json::from_slice(&statement)
        .map_err(|_| Refusal::Malformed("a bundle's statement is not in-toto JSON".into()))?;
    let named: Vec<&String> = st
        .subject
        .iter()
        .filter_map(|s| s.digest.get("sha256"))
        .collect();
    if named.iter().any(|hex| hex.as_str() == digest.hex()) {
        Ok(())
    } else {
        Err(Refusal::OtherDigest(
            named
                .first()
                .map(|h| format!("sha256:{}", h.chars().take(64).collect::<String>()))
                .unwrap_or_else(|| "no digest".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
    };

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn pem(pair: &EcdsaKeyPair) -> String {
        let der = pair.public_key().as_der().unwrap();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            b64(der.as_ref())
        )
    }

    fn sign(pair: &EcdsaKeyPair, message: &[u8]) -> String {
        b64(pair.sign(&SystemRandom::new(), message).unwrap().as_ref())
    }

    fn payload(digest: &str) -> Vec<u8> {
        format!(r#"{{"critical":{{"identity":{{"docker-reference":"r/x"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#).into_bytes()
    }

    #[test]
    fn only_a_p256_public_key_is_accepted() {
        let p256 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        assert!(PublicKey::from_pem(&pem(&p256)).is_ok());
        let p384 = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        assert!(PublicKey::from_pem(&pem(&p384))
            .unwrap_err()
            .contains("P-256"));
        assert!(PublicKey::from_pem("hello").unwrap_err().contains("BEGIN"));
        assert!(
            PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----")
                .unwrap_err()
                .contains("base64")
        );
    }

    #[test]
    fn a_simple_signing_payload_verifies_only_with_its_key_and_digest() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let other = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let key = PublicKey::from_pem(&pem(&pair)).unwrap();
        let d: Digest = D.parse().unwrap();
        let good = Evidence::SimpleSigning {
            payload: payload(D),
            signature: sign(&pair, &payload(D)),
        };
        assert_eq!(verify(&key, std::slice::from_ref(&good), &d), Ok(()));
        let by_other = Evidence::SimpleSigning {
            payload: payload(D),
            signature: sign(&other, &payload(D)),
        };
        assert_eq!(
            verify(&key, std::slice::from_ref(&by_other), &d),
            Err(Refusal::NotVerified)
        );
        let e = "sha256:ffff";
        let elsewhere = Evidence::SimpleSigning {
            payload: payload(e),
            signature: sign(&pair, &payload(e)),
        };
        assert!(matches!(
            verify(&key, &[by_other.clone(), elsewhere], &d),
            Err(Refusal::OtherDigest(_))
        ));
        assert_eq!(verify(&key, &[], &d), Err(Refusal::NoSignature));
        let not_b64 = Evidence::SimpleSigning {
            payload: payload(D),
            signature: "%%%".into(),
        };
        assert!(matches!(
            verify(&key, &[not_b64], &d),
            Err(Refusal::Malformed(_))
        ));
        let not_json = Evidence::SimpleSigning {
            payload: b"<html>".to_vec(),
            signature: sign(&pair, b"<html>"),
        };
        assert!(matches!(
            verify(&key, &[not_json], &d),
            Err(Refusal::Malformed(_))
        ));
        // One good signature among bad ones is enough.
        assert_eq!(verify(&key, &[by_other, good], &d), Ok(()));
    }

    #[test]
    fn a_dsse_bundle_verifies_over_its_pae() {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
        let key = PublicKey::from_pem(&pem(&pair)).unwrap();
        let d: Digest = D.parse().unwrap();
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{}"}}}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{{}}}}"#,
            d.hex()
        );
        let t = "application/vnd.in-toto+json";
        let pae = format!("DSSEv1 {} {t} {} {statement}", t.len(), statement.len());
        let bundle = |sig: String| {
            Evidence::Bundle(
                format!(
                    r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":{{"payload":"{}","payloadType":"{t}","signatures":[{{"sig":"{sig}"}}]}}}}"#,
                    b64(statement.as_bytes())
                )
                .into_bytes(),
            )
        };
        assert_eq!(
            verify(&key, &[bundle(sign(&pair, pae.as_bytes()))], &d),
            Ok(())
        );
        assert_eq!(
            verify(&key, &[bundle(sign(&pair, statement.as_bytes()))], &d),
            Err(Refusal::NotVerified)
        );
        let other: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert!(matches!(
            verify(&key, &[bundle(sign(&pair, pae.as_bytes()))], &other),
            Err(Refusal::OtherDigest(_))
        ));
        assert!(matches!(
            verify(&key, &[Evidence::Bundle(b"{}".to_vec())], &d),
            Err(Refusal::Malformed(_))
        ));
    }
}
