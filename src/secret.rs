//! Secret files and the [`Secret`] type: every credential retagd reads from disk (registry
//! `password_file`, `server.api_token_file`, `webhooks.secret_file`, a notification's `url_file`,
//! `retagd approve --token-file`) goes through [`read`], so they all follow one rule.
//!
//! This module sits at the bottom of the crate: it imports nothing of retagd's, and `registry`,
//! `notify`, `server`, `daemon` and `cli` call it.
//!
//! # The rule
//!
//! - At most [`MAX_SIZE`] bytes are read; a longer file is refused (it is not a credential, and
//!   `/dev/zero` must not eat memory).
//! - The content is UTF-8 (a password, a bearer token or a URL is text).
//! - One trailing line ending, `\n` or `\r\n`, is dropped: editors and `echo` add one, while
//!   Kubernetes Secret files (`kubectl create secret --from-literal`) usually have none, and both
//!   must give the same value. Nothing else is trimmed: a space may be part of a password.
//! - What is left must be non-empty (an empty token would let an empty `Bearer` through) and one
//!   line: no credential retagd sends can hold a line break, and a second line means the wrong
//!   file (taking only the first line, as earlier versions did, hid that).
//!
//! Errors name the file and the configuration key that points to it, never the content: neither
//! [`Error`] nor [`Secret`] can print it.
//!
//! # Foreign text
//!
//! Text from another host (a registry's or token server's error body) is never repeated before
//! [`redact`] has removed from it every credential retagd holds for that host, in every spelling
//! a server might echo (as is, base64 as in `Authorization: Basic`, URL-encoded, JSON-escaped),
//! and anything shaped like a credential whoever it belongs to: an `Authorization` value
//! (`Basic ...`, `Bearer ...`), a JWT, `password=...`/`"token": "..."` pairs.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;

/// Largest secret file: 64 KiB. Passwords, tokens and webhook URLs are well under 1 KiB (a
/// registry's JWT identity token can reach a few KiB); a bigger file is a mistake.
pub const MAX_SIZE: u64 = 64 << 10;

/// A credential. Its text is only reachable through [`Secret::expose`], so it cannot end up in
/// a log line or an error by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The credential itself, for the one place that puts it on the wire or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a secret file gave no secret; its `Display` names the key and the file, and never holds
/// any of the content.
#[derive(Debug, thiserror::Error)]
#[error("{key} {}: {problem}", path.display())]
pub struct Error {
    key: String,
    path: PathBuf,
    problem: Problem,
}

/// What was wrong with the file.
#[derive(Debug, thiserror::Error)]
enum Problem {
    // The cause is in the message, not in `source()`, so that chain printers show it once.
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("it is longer than {MAX_SIZE} bytes")]
    TooLong,
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("it is empty")]
    Empty,
    #[error("it holds more than one line")]
    MultiLine,
}

/// Reads the secret in `path` by the module's rule. `key` names where the path came from (a
/// configuration key such as `server.api_token_file`, or a flag), for the error.
pub fn read(key: &str, path: &Path) -> Result<Secret, Error> {
    let error = |problem| Error {
        key: key.to_string(),
        path: path.to_path_buf(),
        problem,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|e| error(Problem::Read(e)))?;
    parse(bytes).map_err(error)
}

/// [`read`] on a blocking thread, for async callers (a slow network file system must not stall
/// a runtime worker).
pub async fn read_async(key: &str, path: &Path) -> Result<Secret, Error> {
    let (owned_key, owned_path) = (key.to_string(), path.to_path_buf());
    tokio::task::spawn_blocking(move || read(&owned_key, &owned_path))
        .await
        .unwrap_or_else(|e| {
            Err(Error {
                key: key.to_string(),
                path: path.to_path_buf(),
                problem: Problem::Read(std::io::Error::other(e)),
            })
        })
}

/// The rule, on the file's bytes.
fn parse(mut bytes: Vec<u8>) -> Result<Secret, Problem> {
    if bytes.len() as u64 > MAX_SIZE {
        return Err(Problem::TooLong);
    }
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(Problem::Empty);
    }
    if bytes.iter().any(|b| matches!(b, b'\n' | b'\r')) {
        return Err(Problem::MultiLine);
    }
    String::from_utf8(bytes)
        .map(Secret)
        .map_err(|_| Problem::NotUtf8)
}

/// What [`redact`] puts where a credential was.
pub const REDACTED: &str = "[redacted]";

/// Credentials shorter than this are not searched for as such (a one-letter password would
/// blank every such letter); the credential-shaped patterns still apply.
const MIN_REDACTED_LEN: usize = 4;

/// `Authorization` values: the scheme stays, the rest goes, always after the header's name, and
/// without it when the rest looks like a credential ([`credential_like`]), so "token server"
/// stays.
static AUTHORIZATION_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(\bauthorization["']?\s*[:=]\s*["']?)?\b(basic|bearer|digest|negotiate|token)(\s+)([A-Za-z0-9._~+/=-]{6,})"#,
    )
    .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
});

/// Whether a word after an `Authorization` scheme is a credential rather than prose: it holds a
/// digit, a base64 or token symbol, or a capital letter after its first character.
fn credential_like(word: &str) -> bool {
    word.chars().enumerate().any(|(i, c)| {
        c.is_ascii_digit() || "+/=._~-".contains(c) || (i > 0 && c.is_ascii_uppercase())
    })
}

/// JSON Web Tokens (header.payload.signature, the header starting `{"` in base64url).
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
        .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
});

/// `password=...`, `"token": "..."` and friends: the name stays, the value goes.
static SECRET_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b((?:access_|refresh_|id_|identity)?token|password|passwd|secret|client_secret|api_key|apikey)(["']?\s*[=:]\s*["']?)[^\s"'&,;]+"#,
    )
    .unwrap_or_else(|e| unreachable!("constant regex: {e}"))
});

/// `text` from another host with every form of each of `secrets` and everything
/// credential-shaped replaced by [`REDACTED`] (see the module docs). Call it before cutting the
/// text short, so that no half of a credential survives the cut.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut forms: Vec<String> = Vec::new();
    for secret in secrets.iter().filter(|s| s.len() >= MIN_REDACTED_LEN) {
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        forms.push(secret.to_string());
        forms.extend(engines.iter().map(|e| e.encode(secret)));
        forms.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
        forms.push(
            url::form_urlencoded::byte_serialize(secret.as_bytes())
                .collect::<String>()
                .replace('+', "%20"),
        );
        if let Ok(json) = serde_json::to_string(secret) {
            let json = json.trim_matches('"');
            // Some servers also escape `/` as `\/`.
            forms.push(json.replace('/', "\\/"));
            forms.push(json.to_string());
        }
    }
    // Longest first, so a form containing another is removed whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut out = text.to_string();
    for form in &forms {
        if out.contains(form.as_str()) {
            out = out.replace(form.as_str(), REDACTED);
        }
    }
    let out = JWT.replace_all(&out, REDACTED);
    let out = AUTHORIZATION_VALUE.replace_all(&out, |c: &regex::Captures<'_>| {
        if c.get(1).is_some() || credential_like(&c[4]) {
            let header = c.get(1).map_or("", |m| m.as_str());
            format!("{header}{}{}{REDACTED}", &c[2], &c[3])
        } else {
            c[0].to_string()
        }
    });
    SECRET_PAIR
        .replace_all(&out, format!("${{1}}${{2}}{REDACTED}"))
        .into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn file(content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    fn read_bytes(content: &[u8]) -> Result<Secret, Error> {
        let (_dir, path) = file(content);
        read("test.secret_file", &path)
    }

    #[test]
    fn one_trailing_lf_or_crlf_is_dropped_and_nothing_else() {
        for (content, expected) in [
            (&b"s3cret"[..], "s3cret"),
            (b"s3cret\n", "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b" s3 cret \n", " s3 cret "),
        ] {
            assert_eq!(read_bytes(content).unwrap().expose(), expected);
        }
    }

    #[test]
    fn empty_files_and_lone_line_endings_are_refused() {
        for content in [&b""[..], b"\n", b"\r\n"] {
            let e = read_bytes(content).unwrap_err().to_string();
            assert!(e.ends_with(": it is empty"), "{e}");
        }
    }

    #[test]
    fn a_second_line_or_a_stray_carriage_return_is_refused() {
        for content in [
            &b"SECRET\nSECRET2\n"[..],
            b"SECRET\n\n",
            b"SECRET\r",
            b"SE\rCRET",
        ] {
            let e = read_bytes(content).unwrap_err().to_string();
            assert!(e.ends_with(": it holds more than one line"), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn files_over_the_cap_are_refused_and_at_the_cap_accepted() {
        let at_cap = vec![b'a'; MAX_SIZE as usize];
        assert_eq!(read_bytes(&at_cap).unwrap().expose().len(), at_cap.len());
        let over = vec![b'a'; MAX_SIZE as usize + 1];
        let e = read_bytes(&over).unwrap_err().to_string();
        assert!(e.ends_with("it is longer than 65536 bytes"), "{e}");
    }

    #[test]
    fn non_utf8_is_refused_without_echoing_it() {
        let e = read_bytes(b"SECRET\xff").unwrap_err();
        assert!(e.to_string().ends_with(": it is not UTF-8 text"), "{e}");
        assert!(!format!("{e} {e:?}").contains("SECRET"), "{e:?}");
    }

    #[test]
    fn a_missing_file_names_the_key_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let text = read("server.api_token_file", &path)
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with(&format!(
                "server.api_token_file {}: cannot read it: ",
                path.display()
            )),
            "{text}"
        );
    }

    #[test]
    fn errors_name_the_file_and_never_the_content() {
        let (_dir, path) = file(b"hunter2\nhunter3");
        let e = read("registries.ghcr.password_file", &path).unwrap_err();
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(text.contains("registries.ghcr.password_file"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(!text.contains("hunter"), "{text}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = read_bytes(b"hunter2\n").unwrap();
        assert_eq!(format!("{secret:?}"), "Secret(***)");
    }

    #[tokio::test]
    async fn the_async_read_follows_the_same_rule() {
        let (_dir, path) = file(b"s3cret\r\n");
        assert_eq!(read_async("k", &path).await.unwrap().expose(), "s3cret");
        let (_dir, path) = file(b"\n");
        let e = read_async("k", &path).await.unwrap_err().to_string();
        assert!(e.ends_with(": it is empty"), "{e}");
    }

    #[test]
    fn every_spelling_of_a_known_credential_is_redacted() {
        let password = "p@ss w/rd+1";
        let basic = "user:p@ss w/rd+1";
        let b64 = base64::engine::general_purpose::STANDARD.encode(basic);
        for echoed in [
            password.to_string(),
            b64.clone(),
            format!("Authorization: Basic {b64}"),
            url::form_urlencoded::byte_serialize(password.as_bytes()).collect(),
            "p%40ss%20w%2Frd%2B1".to_string(),
            r"p@ss w\/rd+1".to_string(),
        ] {
            let text = format!("bad credentials: {echoed} (try again)");
            let out = redact(&text, &[password, basic]);
            assert!(!out.contains("w/rd") && !out.contains(&b64), "{out}");
            assert!(
                out.contains(REDACTED) && out.ends_with("(try again)"),
                "{out}"
            );
        }
    }

    #[test]
    fn credential_shaped_text_is_redacted_even_when_unknown() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl";
        for (text, gone) in [
            (format!("token {jwt} expired"), jwt),
            (
                "Authorization: Bearer abcdefghijkl".to_string(),
                "abcdefghijkl",
            ),
            (
                "authorization: basic dTpodW50ZXIy".to_string(),
                "dTpodW50ZXIy",
            ),
            (
                "login failed password=hunter2&user=u".to_string(),
                "hunter2",
            ),
            (
                r#"{"access_token": "s3cr3tvalue"}"#.to_string(),
                "s3cr3tvalue",
            ),
        ] {
            let out = redact(&text, &[]);
            assert!(!out.contains(gone), "{out}");
            assert!(out.contains(REDACTED), "{out}");
        }
        for plain in [
            "manifest unknown: tag v1.2.3 not found in app/dev",
            "token server unavailable; basic authentication required",
        ] {
            assert_eq!(redact(plain, &["abc"]), plain);
        }
    }
}
