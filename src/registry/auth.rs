//! Credentials, `WWW-Authenticate` challenges and the token cache.
//!
//! The request path lives in `transport`; this module holds what it needs to decide which
//! `Authorization` to send: the credentials (never printed: [`Secret`] hides them from `Debug`
//! and `Display`), the scheme the registry asked for, and tokens per scope set with their expiry.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

pub use crate::secret::Secret;

/// What a registry (or its token server) is given to prove who we are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Nothing: anonymous pulls, or tokens without a login.
    None,
    /// User name and password: Basic auth, and Basic on token requests.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// A Docker identity token: an OAuth2 refresh token for the token server.
    IdentityToken(Secret),
}

impl Credentials {
    /// The `Authorization: Basic` value, when there is a user name and password.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            _ => None,
        }
    }
}

/// Where credentials come from; resolved lazily, at the first challenge, since a credential
/// helper is a process to run and anonymous registries never need one.
#[derive(Debug, Clone)]
pub enum Source {
    /// Known up front (anonymous).
    Known(Credentials),
    /// `username` + `password_file`, re-read when credentials are resolved again (so a rotated
    /// password is picked up without a restart).
    PasswordFile {
        /// The user name.
        username: String,
        /// The file holding the password.
        path: PathBuf,
    },
    /// A Docker `config.json`; `server` is the key to look up (`host[:port]`, or
    /// `https://index.docker.io/v1/` for Docker Hub). `required` is false for the implicit
    /// `~/.docker/config.json` of registries missing from the configuration.
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// The lookup key.
        server: String,
        /// Whether a missing file or entry is an error.
        required: bool,
    },
}

/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

impl Source {
    /// Reads the credentials; runs `docker-credential-<name> get` when the config says so.
    pub async fn resolve(&self) -> Result<Credentials, String> {
        let (path, server, required) = match self {
            Source::Known(c) => return Ok(c.clone()),
            Source::PasswordFile { username, path } => {
                return crate::secret::read_async("password_file", path)
                    .await
                    .map(|password| Credentials::Basic {
                        username: username.clone(),
                        password,
                    })
                    .map_err(|e| e.to_string())
            }
            Source::DockerConfig {
                path,
                server,
                required,
            } => (path.clone(), server.clone(), *required),
        };
        let text = match tokio::fs::read(&path).await {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Credentials::None)
            }
            Err(e) => return Err(format!("cannot read Docker config {}: {e}", path.display())),
        };
        // The crate hides JSON errors; check the syntax here to say where the file is wrong.
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&text) {
            return Err(format!(
                "Docker config {} is not valid JSON: {e}",
                path.display()
            ));
        }
        let lookup = server.clone();
        let task = tokio::task::spawn_blocking(move || {
            docker_credential::get_credential_from_reader(&text[..], &lookup)
        });
        let result = match tokio::time::timeout(HELPER_TIMEOUT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => return Err(format!("credential lookup for {server} failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "credential helper for {server} did not answer within {}s",
                    HELPER_TIMEOUT.as_secs()
                ))
            }
        };
        use docker_credential::{CredentialRetrievalError as E, DockerCredential as C};
        match result {
            Ok(C::UsernamePassword(username, password)) => Ok(Credentials::Basic {
                username,
                password: Secret::new(password),
            }),
            Ok(C::IdentityToken(token)) => Ok(Credentials::IdentityToken(Secret::new(token))),
            Err(E::NoCredentialConfigured) if !required => Ok(Credentials::None),
            Err(E::NoCredentialConfigured) => Err(format!(
                "Docker config {} has no credentials for {server}",
                path.display()
            )),
            // The crate's message would include the helper's stdout; keep only stderr's first
            // line, which is where helpers explain themselves.
            Err(E::HelperFailure { helper, stderr, .. }) => Err(format!(
                "credential helper {helper} failed for {server}: {}",
                stderr
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>()
            )),
            Err(e) => Err(format!(
                "cannot get credentials for {server} from {}: {e}",
                path.display()
            )),
        }
    }
}

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lowercased.
    pub scheme: String,
    /// Parameters, names lowercased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// A parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses RFC 7235 challenges: `Bearer realm="...",service="...",scope="a b"`, possibly several
/// schemes in one header. Quoted values may hold commas (`pull,push`) and escapes.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let end = rest.find([' ', ',', '=']).unwrap_or(rest.len());
        let word = &rest[..end];
        if word.is_empty() {
            break;
        }
        let after = rest[end..].trim_start_matches([' ', '\t']);
        if let Some(value_part) = after.strip_prefix('=').filter(|_| !out.is_empty()) {
            let value_part = value_part.trim_start();
            let (value, remainder) = if let Some(quoted) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut close = quoted.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            close = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[close.min(quoted.len())..])
            } else {
                let e = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..e].trim().to_string(), &value_part[e..])
            };
            if let Some(last) = out.last_mut() {
                last.params.push((word.to_ascii_lowercase(), value));
            }
            rest = remainder;
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: Vec::new(),
            });
            rest = after;
        }
    }
    out
}

/// The auth scheme a registry uses, learnt from its first challenge so later requests carry
/// credentials up front instead of paying a 401 each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// Not asked yet: send nothing.
    Unknown,
    /// `Basic`.
    Basic,
    /// `Bearer`: tokens from `realm`.
    Bearer {
        /// The token endpoint.
        realm: Url,
        /// The `service` parameter to pass back.
        service: Option<String>,
    },
}

/// A set of token scopes (`repository:myorg/app:pull,push`), ordered so equal sets share one
/// cached token.
pub type Scopes = BTreeSet<String>;

/// The scope to read `repository`.
pub fn pull(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// The scope to read and write `repository`.
pub fn pull_push(repository: &str) -> String {
    format!("repository:{repository}:pull,push")
}

/// Merges scopes on the same resource (`repository:a:pull` and `repository:a:pull,push` become
/// `repository:a:pull,push`), as a challenge often repeats part of what we ask.
pub fn merge(scopes: &Scopes) -> Scopes {
    let mut by_resource: std::collections::BTreeMap<&str, BTreeSet<&str>> = Default::default();
    let mut out = Scopes::new();
    for scope in scopes {
        match scope.rsplit_once(':') {
            Some((resource, actions)) if resource.contains(':') => {
                by_resource
                    .entry(resource)
                    .or_default()
                    .extend(actions.split(',').filter(|a| !a.is_empty()));
            }
            _ => {
                out.insert(scope.clone());
            }
        }
    }
    for (resource, actions) in by_resource {
        let actions: Vec<&str> = actions.into_iter().collect();
        out.insert(format!("{resource}:{}", actions.join(",")));
    }
    out
}

/// A bearer token and when to stop using it.
#[derive(Debug, Clone)]
pub struct Token {
    /// The token.
    pub value: Secret,
    /// Refresh after this instant (a margin before the real expiry).
    pub refresh_at: Instant,
}

/// Tokens by the scope set a request needs, with the (possibly wider) set each was asked for,
/// so a refresh asks again for everything the registry's challenge wanted.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: HashMap<String, (Token, Scopes)>,
}

/// The cache key of a scope set.
pub fn scope_key(scopes: &Scopes) -> String {
    scopes
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

impl TokenCache {
    /// A token still fresh for `key`.
    pub fn get(&self, key: &str, now: Instant) -> Option<Secret> {
        self.tokens
            .get(key)
            .filter(|(t, _)| t.refresh_at > now)
            .map(|(t, _)| t.value.clone())
    }

    /// The scopes the token for `key` was asked with last time.
    pub fn asked(&self, key: &str) -> Option<Scopes> {
        self.tokens.get(key).map(|(_, s)| s.clone())
    }

    /// Stores a token asked for with `asked`.
    pub fn put(&mut self, key: String, token: Token, asked: Scopes) {
        // Bounded by the scope sets in use; drop stale ones so a long-lived daemon does not grow
        // (a stale entry is only needed for its scopes, which the challenge gives again).
        let now = Instant::now();
        self.tokens.retain(|_, (t, _)| t.refresh_at > now);
        self.tokens.insert(key, (token, asked));
    }
}

/// Tokens larger than this are refused; real ones are a few KiB.
pub const MAX_TOKEN_RESPONSE: u64 = 1 << 20;
/// The spec's default lifetime when `expires_in` is absent.
const DEFAULT_EXPIRES_IN: u64 = 60;

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Reads a token server's answer; the token is refreshed at 90% of its lifetime.
pub fn parse_token(body: &[u8], now: Instant) -> Result<Token, String> {
    let r: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| format!("token server sent an unreadable answer: {e}"))?;
    let value = r
        .token
        .or(r.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("token server answer has neither token nor access_token")?;
    let lifetime = r
        .expires_in
        .unwrap_or(DEFAULT_EXPIRES_IN)
        .clamp(1, 86_400 * 366);
    Ok(Token {
        value: Secret::new(value),
        refresh_at: now + Duration::from_millis(lifetime * 900),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_quoted_commas_and_several_schemes() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:a/b:pull,push repository:c:pull")
        );
        let c = parse_challenges(r#"Basic realm="x\"y", Bearer realm=https://t,service=s"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("x\"y"));
        assert_eq!(
            (c[1].param("realm"), c[1].param("service")),
            (Some("https://t"), Some("s"))
        );
        for junk in ["", "=", "\"", ",,,", "a=b", "realm=x, scope=y"] {
            assert!(
                parse_challenges(junk).iter().all(|c| c.scheme != "bearer"),
                "{junk}"
            );
        }
        let c = parse_challenges("Bearer realm=\"unterminated");
        assert_eq!(c[0].param("realm"), Some("unterminated"));
    }

    #[test]
    fn scopes_on_one_resource_merge() {
        let asked = Scopes::from([
            pull("prod/app"),
            pull_push("prod/app"),
            pull("team/app"),
            "registry:catalog:*".to_string(),
            "odd".to_string(),
        ]);
        let merged: Vec<String> = merge(&asked).into_iter().collect();
        assert_eq!(
            merged,
            [
                "odd",
                "registry:catalog:*",
                "repository:prod/app:pull,push",
                "repository:team/app:pull"
            ]
        );
    }

    #[test]
    fn tokens_come_from_either_field_and_expire_early() {
        let now = Instant::now();
        let t = parse_token(br#"{"access_token":"abc","expires_in":300}"#, now).unwrap();
        assert_eq!(t.value.expose(), "abc");
        assert_eq!(t.refresh_at - now, Duration::from_secs(270));
        let t = parse_token(br#"{"token":"x"}"#, now).unwrap();
        assert_eq!(t.refresh_at - now, Duration::from_secs(54));
        assert!(parse_token(br#"{"expires_in":3}"#, now).is_err());
        assert!(parse_token(b"<html>", now).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.basic_header().unwrap(), "Basic dTpodW50ZXIy");
    }

    #[tokio::test]
    async fn password_files_are_read_again_at_each_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let source = Source::PasswordFile {
            username: "u".into(),
            path: path.clone(),
        };
        std::fs::write(&path, "one\n").unwrap();
        let first = source.resolve().await.unwrap();
        std::fs::write(&path, "two").unwrap();
        let second = source.resolve().await.unwrap();
        assert_eq!(first.basic_header().unwrap(), "Basic dTpvbmU=");
        assert_eq!(second.basic_header().unwrap(), "Basic dTp0d28=");
        std::fs::write(&path, "\n").unwrap();
        assert!(source.resolve().await.unwrap_err().contains("is empty"));
    }

    #[tokio::test]
    async fn docker_config_auths_and_missing_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dTpodW50ZXIy"},"tok.example":{"identitytoken":"rt"}}}"#,
        )
        .unwrap();
        let source = |server: &str, required| Source::DockerConfig {
            path: path.clone(),
            server: server.into(),
            required,
        };
        let c = source("reg.example:5000", true).resolve().await.unwrap();
        assert_eq!(c.basic_header().unwrap(), "Basic dTpodW50ZXIy");
        let c = source("tok.example", true).resolve().await.unwrap();
        assert_eq!(c, Credentials::IdentityToken(Secret::new("rt")));
        assert_eq!(
            source("other.example", false).resolve().await.unwrap(),
            Credentials::None
        );
        let e = source("other.example", true).resolve().await.unwrap_err();
        assert!(e.contains("no credentials for other.example"), "{e}");
        std::fs::write(&path, "{\"auths\": {").unwrap();
        let e = source("x", true).resolve().await.unwrap_err();
        assert!(e.contains("not valid JSON") && e.contains("line 1"), "{e}");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, mutations, text_from};

    #[test]
    fn fuzz_www_authenticate_challenges_parse_without_panicking() {
        fuzz(
            "WWW-Authenticate",
            text_from("BearerBasic realm=\"\\,service scope:/ ahttps", 80),
            |header| {
                for c in parse_challenges(&header) {
                    proptest::prop_assert_eq!(c.scheme.clone(), c.scheme.to_ascii_lowercase());
                }
                Ok(())
            },
        );
    }

    static TOKENS: &[&[u8]] = &[
        br#"{"token":"abc.def.ghi","expires_in":300,"issued_at":"2026-11-26T00:00:00Z"}"#,
        br#"{"access_token":"abc","refresh_token":"r","expires_in":60}"#,
    ];

    #[test]
    fn fuzz_token_answers_are_read_or_refused() {
        fuzz("token answers", mutations(TOKENS), |body| {
            let _ = parse_token(&body, Instant::now());
            Ok(())
        });
    }
}
