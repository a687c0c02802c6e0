//! Test PKI made with the `openssl` CLI: a CA, a server certificate for `127.0.0.1`/`localhost`
//! signed by it (the registry's TLS), and a token-signing key with a self-signed certificate
//! (the registry's `auth.token.rootcertbundle`).
//!
//! All keys are EC P-256: fast to generate, and ES256 is what both libtrust (the registry's
//! verifier) and `jsonwebtoken` support.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Generated keys and certificates, in a temporary directory removed on drop.
pub struct Pki {
    dir: TempDir,
    /// PEM certificate of the test CA (trust anchor for the registry's TLS certificate).
    pub ca_cert: PathBuf,
    /// PEM (PKCS#8) key of the test CA.
    pub ca_key: PathBuf,
    /// A directory holding only `ca.crt`, the layout `skopeo --cert-dir` expects.
    pub ca_dir: PathBuf,
    /// PEM certificate for IP `127.0.0.1` and DNS `localhost`, signed by the CA.
    pub server_cert: PathBuf,
    /// PEM (PKCS#8) key of the server certificate.
    pub server_key: PathBuf,
    /// Self-signed PEM certificate of the token-signing key: the registry's `rootcertbundle`.
    pub token_cert: PathBuf,
    /// PEM (PKCS#8) EC P-256 key that signs tokens (ES256).
    pub token_key: PathBuf,
    /// The libtrust key ID of the token-signing key: the JWT `kid` the registry looks up.
    pub token_kid: String,
}

impl Pki {
    /// Generates everything in a fresh temporary directory. Certificates are valid for two
    /// days from now.
    pub fn generate() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("retagd-pki-")
            .tempdir()
            .expect("create the PKI temp dir");
        let p = |name: &str| dir.path().join(name);

        // Commands run inside the directory, on fixed file names without spaces.
        let run = |command: &str| openssl(dir.path(), command);

        // CA.
        write(
            &p("ca.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\n\
             [dn]\nCN = retagd test CA\n\
             [ext]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
        );
        run("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key");
        run(
            "req -x509 -new -sha256 -days 2 -config ca.cnf -extensions ext -key ca.key -out ca.crt",
        );

        // Server certificate signed by the CA. rustls (webpki) insists on a subjectAltName,
        // an end-entity (CA:FALSE) certificate and the serverAuth usage.
        write(
            &p("server.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\n\
             [dn]\nCN = 127.0.0.1\n\
             [ext]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1,DNS:localhost\n\
             subjectKeyIdentifier = hash\n\
             authorityKeyIdentifier = keyid\n",
        );
        run("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key");
        run("req -new -config server.cnf -key server.key -out server.csr");
        run(
            "x509 -req -sha256 -days 2 -in server.csr -CA ca.crt -CAkey ca.key \
             -CAcreateserial -CAserial ca.srl -extfile server.cnf -extensions ext -out server.crt",
        );

        // Token-signing key and its self-signed certificate. The registry trusts the keys of
        // the certificates in its rootcertbundle (by libtrust key ID for a `kid` header, or as
        // roots of an `x5c` chain), so a self-signed certificate is all it needs.
        write(
            &p("token.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\n\
             [dn]\nCN = retagd test token signer\n\
             [ext]\nbasicConstraints = critical,CA:TRUE\n\
             keyUsage = critical,digitalSignature,keyCertSign\n\
             subjectKeyIdentifier = hash\n",
        );
        run("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out token.key");
        run(
            "req -x509 -new -sha256 -days 2 -config token.cnf -extensions ext -key token.key \
             -out token.crt",
        );
        let spki = run("pkey -in token.key -pubout -outform DER");
        let token_kid = libtrust_key_id(&spki);

        let ca_dir = p("ca-dir");
        std::fs::create_dir(&ca_dir).expect("create the CA cert dir");
        std::fs::copy(p("ca.crt"), ca_dir.join("ca.crt")).expect("copy ca.crt into the cert dir");

        Pki {
            ca_cert: p("ca.crt"),
            ca_key: p("ca.key"),
            ca_dir,
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            token_cert: p("token.crt"),
            token_key: p("token.key"),
            token_kid,
            dir,
        }
    }

    /// The directory holding every generated file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate as PEM bytes (for [`crate::support::https_client`]).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca_cert).expect("read the CA certificate")
    }

    /// The token certificate as base64 DER, one element of a JWT `x5c` header.
    pub fn token_cert_x5c(&self) -> String {
        let pem = std::fs::read_to_string(&self.token_cert).expect("read the token certificate");
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        // Round-trip to make sure this is valid base64 of one DER certificate.
        base64::engine::general_purpose::STANDARD
            .decode(&body)
            .expect("token certificate PEM body is base64");
        body
    }
}

/// The libtrust key ID of a public key given as DER SubjectPublicKeyInfo: the first 240 bits of
/// its SHA-256, base32 without padding, in twelve colon-separated groups of four characters.
/// This is what distribution 2.8 indexes the rootcertbundle's keys by, and so what a JWT `kid`
/// header must be.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let hash = Sha256::digest(spki_der);
    let encoded = base32(&hash[..30]);
    let groups: Vec<&str> = (0..encoded.len() / 4)
        .map(|i| &encoded[i * 4..i * 4 + 4])
        .collect();
    groups.join(":")
}

/// RFC 4648 base32 (upper-case alphabet) without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let mut buffer: u64 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u64::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Runs `openssl` with the whitespace-separated `command` inside `dir`, panicking with its stderr
/// on failure; returns its stdout.
fn openssl(dir: &Path, command: &str) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(command.split_whitespace())
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {command} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
