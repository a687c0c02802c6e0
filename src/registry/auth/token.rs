//! Token scopes, the bearer tokens a token server hands out, and their cache.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::Secret;

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
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, mutations};

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
