//! Which `Authorization` a registry request carries, and the token flow behind it.
//!
//! `transport` sends requests and asks [`Authenticator::header`] what to put in them; on a 401 it
//! hands the challenge to [`Authenticator::challenged`]. Everything between (credentials resolved
//! and re-resolved, the scheme the registry asked for, token requests, tokens per scope set with
//! their expiry) lives here; the one request auth makes itself, to the token server, goes through
//! the [`Wire`] the transport lends it, so retries and pacing stay in one place.
//!
//! # Guarantees
//!
//! - Credentials are never printed: [`Secret`] hides them from `Debug`.
//! - Credentials go to the token realm only over https, loopback, or the registry's own origin.
//! - One token fetch at a time per registry: concurrent requests wait and share the token.

mod challenge;
mod credentials;
mod token;

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use tokio::time::Instant;
use url::Url;

pub use challenge::{parse_challenges, Challenge, Scheme};
pub use credentials::{Credentials, Secret, Source};
pub use token::{
    merge, parse_token, pull, pull_push, scope_key, Scopes, Token, TokenCache, MAX_TOKEN_RESPONSE,
};

use super::Error;

/// How long resolved credentials are used before they are resolved again.
const CREDENTIALS_TTL: Duration = Duration::from_secs(300);

/// A request to the token server, as auth builds it. No `Debug`: its body holds a refresh token
/// or its header a password.
pub struct TokenRequest {
    /// GET with Basic credentials, or POST with the OAuth2 refresh form.
    pub method: Method,
    /// The realm, with `service` and `scope` in the query for a GET.
    pub url: Url,
    /// `Authorization: Basic` or `Content-Type`.
    pub headers: HeaderMap,
    /// The refresh form, if any.
    pub body: Option<Bytes>,
}

/// The token server's answer, as auth needs it.
pub enum TokenAnswer {
    /// A successful answer's body, at most [`MAX_TOKEN_RESPONSE`] bytes.
    Body(Bytes),
    /// 401 or 403: the credentials were refused; the error describes the answer.
    Denied(Error),
}

/// What auth needs from the transport: the token request sent like any other.
pub trait Wire: Sync {
    /// Sends `req` with the transport's pacing and retries, without a concurrency slot (the
    /// request waiting for the token holds one) and without any `Authorization` but its own.
    /// Statuses other than success, 401 and 403 are errors.
    fn send_token_request(
        &self,
        req: &TokenRequest,
    ) -> impl Future<Output = Result<TokenAnswer, Error>> + Send;
}

/// `(scheme, host, port)`: credentials never cross it.
pub fn origin(url: &Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_string(),
        url.host_str().map(str::to_ascii_lowercase),
        url.port_or_known_default(),
    )
}

/// Whether `url` names a loopback address (`localhost`, 127.0.0.0/8, ::1), where Docker also
/// allows plain http.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// A header value marked sensitive, so HTTP logging never shows it.
fn header(value: String) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Mutexes here guard plain data and are never held across an await or a panic-prone call, so a
/// poisoned one still holds consistent data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tokens remembered for redaction: the ones in use, plus a few recent ones an error may still
/// echo. Tokens are per scope set, so this is about the number of scope sets in use.
const KNOWN_TOKENS: usize = 32;

/// What this registry's answers must never repeat: the credentials (the current and the previous
/// resolution, so a rotation does not forget one still in a server's memory) and recent tokens.
#[derive(Default)]
struct Known {
    credentials: Vec<Secret>,
    previous: Vec<Secret>,
    tokens: std::collections::VecDeque<Secret>,
}

impl Known {
    fn credentials(&mut self, c: &Credentials) {
        let now: Vec<Secret> = match c {
            Credentials::None => Vec::new(),
            Credentials::Basic { username, password } => vec![
                password.clone(),
                Secret::new(format!("{username}:{}", password.expose())),
            ],
            Credentials::IdentityToken(t) => vec![t.clone()],
        };
        if now != self.credentials {
            self.previous = std::mem::replace(&mut self.credentials, now);
        }
    }

    fn token(&mut self, t: &Secret) {
        if !self.tokens.contains(t) {
            if self.tokens.len() == KNOWN_TOKENS {
                self.tokens.pop_front();
            }
            self.tokens.push_back(t.clone());
        }
    }
}

/// One registry's authentication state; see the module docs.
pub struct Authenticator {
    /// The registry's name, for errors.
    registry: String,
    /// The registry's own origin, where credentials may always go.
    base: Url,
    source: Source,
    credentials: tokio::sync::Mutex<Option<(Credentials, Instant)>>,
    state: Mutex<(Scheme, TokenCache)>,
    token_fetch: tokio::sync::Mutex<()>,
    known: Mutex<Known>,
}

impl Authenticator {
    /// Nothing is resolved yet: credentials are read at the first challenge.
    pub fn new(registry: String, base: Url, source: Source) -> Authenticator {
        Authenticator {
            registry,
            base,
            source,
            credentials: tokio::sync::Mutex::new(None),
            state: Mutex::new((Scheme::Unknown, TokenCache::default())),
            token_fetch: tokio::sync::Mutex::new(()),
            known: Mutex::new(Known::default()),
        }
    }

    /// `text` from this registry or its token server, without any credential or token we hold
    /// for it nor anything shaped like one ([`crate::secret::redact`]).
    pub fn redact(&self, text: &str) -> String {
        let known = lock(&self.known);
        let secrets: Vec<&str> = known
            .credentials
            .iter()
            .chain(&known.previous)
            .chain(&known.tokens)
            .map(Secret::expose)
            .collect();
        crate::secret::redact(text, &secrets)
    }

    fn error(&self, message: String) -> Error {
        Error::Auth {
            registry: self.registry.clone(),
            message,
        }
    }

    /// The credentials, resolved again after [`CREDENTIALS_TTL`] or a refusal: helpers hand out
    /// short-lived ones (ECR's last 12 h) and password files get rotated.
    async fn credentials(&self) -> Result<Credentials, Error> {
        let mut cached = self.credentials.lock().await;
        if let Some((c, at)) = cached.as_ref() {
            if at.elapsed() < CREDENTIALS_TTL {
                return Ok(c.clone());
            }
        }
        let fresh = self
            .source
            .resolve()
            .await
            .map_err(|message| Error::Credentials {
                registry: self.registry.clone(),
                message,
            })?;
        lock(&self.known).credentials(&fresh);
        *cached = Some((fresh.clone(), Instant::now()));
        Ok(fresh)
    }

    /// Makes the next request resolve the credentials again.
    pub async fn forget_credentials(&self) {
        *self.credentials.lock().await = None;
    }

    /// The `Authorization` for a request needing `scopes`, by what the registry asked before.
    pub async fn header(
        &self,
        scopes: &Scopes,
        wire: &impl Wire,
    ) -> Result<Option<HeaderValue>, Error> {
        let scheme = lock(&self.state).0.clone();
        match scheme {
            Scheme::Unknown => Ok(None),
            Scheme::Basic => Ok(self.credentials().await?.basic_header().and_then(header)),
            Scheme::Bearer { realm, service } => {
                let key = scope_key(scopes);
                if let Some(t) = lock(&self.state).1.get(&key, Instant::now()) {
                    return Ok(header(format!("Bearer {}", t.expose())));
                }
                // One fetch at a time: concurrent requests wait for it and share the token.
                let _one = self.token_fetch.lock().await;
                if let Some(t) = lock(&self.state).1.get(&key, Instant::now()) {
                    return Ok(header(format!("Bearer {}", t.expose())));
                }
                let asked = lock(&self.state)
                    .1
                    .asked(&key)
                    .unwrap_or_else(|| scopes.clone());
                let token = self
                    .fetch_token(&realm, service.as_deref(), &asked, wire)
                    .await?;
                let value = header(format!("Bearer {}", token.value.expose()));
                lock(&self.state).1.put(key, token, asked);
                Ok(value)
            }
        }
    }

    /// Learns from a 401's headers: a new token with the challenge's scopes added, or Basic
    /// credentials.
    pub async fn challenged(
        &self,
        headers: &HeaderMap,
        scopes: &Scopes,
        wire: &impl Wire,
    ) -> Result<(), Error> {
        let challenges: Vec<Challenge> = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = bearer
                .param("realm")
                .and_then(|r| Url::parse(r).ok())
                .filter(|r| matches!(r.scheme(), "http" | "https"))
                .ok_or_else(|| self.error("Bearer challenge without a valid realm URL".into()))?;
            let service = bearer.param("service").map(str::to_string);
            let mut wanted = scopes.clone();
            wanted.extend(
                bearer
                    .param("scope")
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string),
            );
            let wanted = merge(&wanted);
            let _one = self.token_fetch.lock().await;
            let token = self
                .fetch_token(&realm, service.as_deref(), &wanted, wire)
                .await?;
            let mut state = lock(&self.state);
            state.0 = Scheme::Bearer { realm, service };
            state.1.put(scope_key(scopes), token, wanted);
            Ok(())
        } else if challenges.iter().any(|c| c.scheme == "basic") {
            let was_basic = lock(&self.state).0 == Scheme::Basic;
            if self.credentials().await?.basic_header().is_none() {
                return Err(self.error(
                    "the registry asks for a user name and password (Basic auth) and none is configured".into(),
                ));
            }
            if was_basic {
                // Refused: resolve again (a rotated password file, a helper's new token) and
                // try once more only if that gave something new.
                let sent = self.credentials().await?;
                self.forget_credentials().await;
                if self.credentials().await? == sent {
                    return Err(
                        self.error("the registry refused the user name and password".into())
                    );
                }
            }
            lock(&self.state).0 = Scheme::Basic;
            Ok(())
        } else {
            Err(self.error("401 without a Bearer or Basic challenge".into()))
        }
    }

    /// What a 401 that survived our one re-authentication means, by the scheme in use.
    pub fn refusal(&self, scopes: &Scopes) -> String {
        match lock(&self.state).0 {
            Scheme::Basic => "the registry refused the user name and password".to_string(),
            Scheme::Bearer { .. } => format!(
                "the registry refused the token for {} (wrong credentials, or they lack these rights)",
                scope_key(scopes)
            ),
            Scheme::Unknown => "the registry asks for credentials".to_string(),
        }
    }

    /// Asks the token server for `scopes`: GET with Basic credentials, or the OAuth2 refresh
    /// form when we hold a Docker identity token.
    async fn fetch_token(
        &self,
        realm: &Url,
        service: Option<&str>,
        scopes: &Scopes,
        wire: &impl Wire,
    ) -> Result<Token, Error> {
        let credentials = self.credentials().await?;
        let realm_host = realm.host_str().unwrap_or("?").to_string();
        let secure =
            realm.scheme() == "https" || is_loopback(realm) || origin(realm) == origin(&self.base);
        if credentials != Credentials::None && !secure {
            return Err(self.error(format!(
                "token realm {realm_host} is plain http; credentials are only sent over https"
            )));
        }
        let mut url = realm.clone();
        let mut headers = HeaderMap::new();
        let (method, body) = match &credentials {
            Credentials::IdentityToken(refresh) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh.expose())
                    .append_pair("client_id", "retagd")
                    .append_pair("scope", &scope_key(scopes));
                if let Some(s) = service {
                    form.append_pair("service", s);
                }
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                );
                (Method::POST, Some(Bytes::from(form.finish())))
            }
            other => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(s) = service {
                        query.append_pair("service", s);
                    }
                    for scope in scopes {
                        query.append_pair("scope", scope);
                    }
                }
                if let Some(basic) = other.basic_header().and_then(header) {
                    headers.insert(AUTHORIZATION, basic);
                }
                (Method::GET, None)
            }
        };
        let req = TokenRequest {
            method,
            url,
            headers,
            body,
        };
        match wire.send_token_request(&req).await? {
            TokenAnswer::Body(body) => {
                let token = parse_token(&body, Instant::now())
                    .map_err(|m| self.error(format!("{realm_host}: {}", self.redact(&m))))?;
                lock(&self.known).token(&token.value);
                Ok(token)
            }
            TokenAnswer::Denied(error) => {
                self.forget_credentials().await;
                Err(self.error(format!(
                    "token server {realm_host} refused the credentials ({error})"
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_count_as_loopback() {
        for (url, expected) in [
            ("http://127.0.0.1:5000", true),
            ("http://127.8.9.1", true),
            ("http://localhost:1", true),
            ("http://[::1]:5000", true),
            ("http://10.0.0.1", false),
            ("http://localhost.evil.example", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(url).unwrap()), expected, "{url}");
        }
    }
}
