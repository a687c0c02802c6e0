//! TLS for the registry clients: the platform's verifier (the system's roots plus a registry's
//! `ca_file`), as reqwest would build it, except that the system's roots are read at the first
//! TLS handshake instead of when a client is built.
//!
//! Reading and parsing the roots (about 150 files on Debian) took 30 ms of the 37 ms a
//! `retagd reconcile` of ten up-to-date pipelines on a plain-HTTP registry needed, and every
//! client (one per registry) paid it again. Now a process that never speaks TLS never pays
//! it, and one that does pays it once per client, at its first handshake. A registry's own
//! `ca_file` is still parsed when the client is built, so a bad file fails at start.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// The TLS configuration of one registry client; `ca_pem` is its `ca_file`, trusted in
/// addition to the system's roots. The error says what is wrong with `ca_pem`.
pub(super) fn client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let extra = match ca_pem {
        Some(pem) => certificates(pem)?,
        None => Vec::new(),
    };
    // The provider reqwest itself would choose.
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = LazyVerifier {
        extra,
        provider: provider.clone(),
        verifier: OnceLock::new(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration: HTTP/2 where the registry can.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM bundle, each checked to be usable as a trust anchor.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("ca_file is not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("ca_file holds no certificate".into());
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store
            .add(cert.clone())
            .map_err(|e| format!("ca_file holds a certificate that cannot be a root: {e}"))?;
    }
    Ok(certs)
}

/// The platform verifier, made at the first certificate it is asked to verify.
#[derive(Debug)]
struct LazyVerifier {
    extra: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
    verifier: OnceLock<Result<Verifier, rustls::Error>>,
}

impl LazyVerifier {
    fn get(&self) -> Result<&Verifier, rustls::Error> {
        self.verifier
            .get_or_init(|| {
                Verifier::new_with_extra_roots(self.extra.iter().cloned(), self.provider.clone())
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.get()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The signature checks need no roots: the provider's algorithms, as the platform
    // verifier's own WebPKI verifier does it.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_refused_when_the_client_is_built() {
        let refused = |pem: &str| {
            client_config(Some(pem.as_bytes()))
                .err()
                .unwrap_or_default()
        };
        assert_eq!(refused(""), "ca_file holds no certificate");
        assert_eq!(
            refused("not a certificate\n"),
            "ca_file holds no certificate"
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(
            refused(garbage).starts_with("ca_file holds a certificate that cannot be a root"),
            "{}",
            refused(garbage)
        );
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(
            refused(broken).starts_with("ca_file is not a PEM certificate"),
            "{}",
            refused(broken)
        );
    }

    #[test]
    fn building_a_client_reads_no_root_until_a_handshake_needs_one() {
        let config = client_config(None).expect("a configuration without ca_file");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let verifier = LazyVerifier {
            extra: Vec::new(),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            verifier: OnceLock::new(),
        };
        assert!(verifier.verifier.get().is_none());
        assert!(!verifier.supported_verify_schemes().is_empty());
        assert!(verifier.verifier.get().is_none(), "schemes need no roots");
    }
}
