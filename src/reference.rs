//! Image references (`host[:port]/repo[:tag][@sha256:...]`) and digests, by the OCI
//! distribution grammar.
//!
//! Everything that becomes part of a registry URL passes through here first: the configuration
//! (repositories), the command line (`retagd copy SRC DST`) and, later, webhooks. A name that does
//! not match the grammar is refused before any request, so no path trick (`..`, `?`, `%2F`) can
//! reach a URL.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use sha2::{Digest as _, Sha256};

/// The distribution spec's repository name grammar.
static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("constant pattern")
});

/// A registry host as Docker accepts it: DNS name, IPv4 or bracketed IPv6, optional port.
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$",
    )
    .expect("constant pattern")
});

/// Longest repository name the distribution spec allows.
pub const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag the distribution spec allows.
pub const MAX_TAG_LEN: usize = 128;
/// Where references without a host live, as Docker resolves them.
pub const DOCKER_HUB: &str = "docker.io";

/// Whether `name` is a valid repository name (`myorg/app`), without a host.
pub fn is_valid_repository(name: &str) -> bool {
    name.len() <= MAX_REPOSITORY_LEN && REPOSITORY.is_match(name)
}

/// Whether `tag` is a valid tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= MAX_TAG_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `host` is a valid registry host (`registry.example.com`, `127.0.0.1:5000`).
pub fn is_valid_host(host: &str) -> bool {
    HOST.is_match(host)
}

/// A content digest. Only `sha256` is accepted: it is what every registry computes, and a digest
/// we cannot verify ourselves is one we must not trust.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// `sha256:` followed by 64 lowercase hex digits.
    text: String,
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hash(&Sha256::digest(bytes))
    }

    /// The digest for a finished sha256 hash.
    pub fn from_hash(hash: &[u8]) -> Digest {
        let mut text = String::with_capacity(71);
        text.push_str("sha256:");
        for b in hash {
            let _ = fmt::Write::write_fmt(&mut text, format_args!("{b:02x}"));
        }
        Digest { text }
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.text[7..]
    }
}

/// Why a digest or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not `sha256:` + 64 lowercase hex digits.
    #[error("invalid digest {0:?}: expected sha256: followed by 64 lowercase hex digits")]
    Digest(String),
    /// The reference as a whole does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference {
        /// What was given.
        reference: String,
        /// Which part is wrong.
        reason: String,
    },
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest, Error> {
        let hex = s
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        match hex {
            Some(_) => Ok(Digest {
                text: s.to_string(),
            }),
            None => Err(Error::Digest(shorten(s, 100))),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Keeps hostile input from flooding an error message: at most `max` characters, then `...`.
pub fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// A parsed image reference. At least one of `tag` and `digest` is set; with both, the digest is
/// what is used and the tag is informative (as Docker does).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]`, e.g. `127.0.0.1:5000`; `docker.io` for Docker Hub.
    pub registry: String,
    /// The repository name, e.g. `myorg/app`.
    pub repository: String,
    /// The tag, if given.
    pub tag: Option<String>,
    /// The digest, if given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// What to put in a manifest URL: the digest when known, else the tag.
    pub fn manifest_ref(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            // Construction guarantees a tag or a digest; "latest" is Docker's own default.
            (None, None) => "latest",
        }
    }
}

impl FromStr for Reference {
    type Err = Error;

    /// Parses `[host[:port]/]repo[:tag][@sha256:hex]` as Docker does: the first component is a
    /// host when it contains `.` or `:` or is `localhost`; without a host, Docker Hub, where a
    /// one-component name gets `library/`. A reference with neither tag nor digest is refused
    /// rather than defaulted to `latest`: promoting `latest` by accident is how wrong bytes ship.
    fn from_str(s: &str) -> Result<Reference, Error> {
        let fail = |reason: String| Error::Reference {
            reference: shorten(s, 100),
            reason,
        };
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(d.parse::<Digest>().map_err(|e| fail(e.to_string()))?),
            ),
            None => (s, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path)
            }
            _ => (DOCKER_HUB.to_string(), rest),
        };
        if !is_valid_host(&host) {
            return Err(fail(format!("invalid registry host {host:?}")));
        }
        // A ':' after the last '/' starts the tag.
        let last_slash = path.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match path[last_slash..].find(':') {
            Some(i) => (
                &path[..last_slash + i],
                Some(path[last_slash + i + 1..].to_string()),
            ),
            None => (path, None),
        };
        let repository = if host == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        if !is_valid_repository(&repository) {
            return Err(fail(format!(
                "invalid repository {name:?} (lowercase [a-z0-9] components joined by '.', '_', '__' or '-', separated by '/')"
            )));
        }
        if let Some(tag) = &tag {
            if !is_valid_tag(tag) {
                return Err(fail(format!(
                    "invalid tag {tag:?} (at most {MAX_TAG_LEN} of [A-Za-z0-9_.-], not starting with '.' or '-')"
                )));
            }
        }
        if tag.is_none() && digest.is_none() {
            return Err(fail(
                "no tag or digest (write :TAG or @sha256:...)".to_string(),
            ));
        }
        Ok(Reference {
            registry: host,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `algorithm:` and the first 12 characters of the hex, as people quote digests; any text is
/// accepted (it may come from a registry or an API answer), and cut on a character boundary.
pub fn short_digest(digest: &str) -> String {
    let prefix = |s: &str, n: usize| {
        s.char_indices()
            .nth(n)
            .map_or(s, |(i, _)| &s[..i])
            .to_string()
    };
    match digest.split_once(':') {
        Some((algorithm, hex)) => format!("{algorithm}:{}", prefix(hex, 12)),
        None => prefix(digest, 12),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_every_spelling_a_user_writes() {
        let r: Reference = "127.0.0.1:5000/myorg/app:v1.2.0-dev.3".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "myorg/app", Some("v1.2.0-dev.3"))
        );
        let r: Reference = format!("localhost/app@sha256:{HEX}").parse().unwrap();
        assert_eq!((r.registry.as_str(), r.tag.as_deref()), ("localhost", None));
        assert_eq!(r.manifest_ref(), format!("sha256:{HEX}"));
        let r: Reference = "alpine:3".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/alpine")
        );
        let r: Reference = format!("ghcr.io/o/a:1@sha256:{HEX}").parse().unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.manifest_ref()),
            (Some("1"), &*format!("sha256:{HEX}"))
        );
        assert_eq!(r.to_string(), format!("ghcr.io/o/a:1@sha256:{HEX}"));
        let r: Reference = "[::1]:5000/a:b".parse().unwrap();
        assert_eq!(r.registry, "[::1]:5000");
    }

    #[test]
    fn references_that_could_escape_a_url_are_refused() {
        for bad in [
            "h.io/../x:1",
            "h.io/a/../../v2:1",
            "h.io/A:1",
            "h.io/a%2Fb:1",
            "h.io/a?x=1:1",
            "h.io/a:t/../x",
            "h.io/a:-t",
            "h.io/a",
            "h.io/a:",
            "h.io/a@sha256:XYZ",
            "h.io/a@md5:0123",
            "ev il.io/a:1",
            "h.io//a:1",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn digests_are_sha256_of_the_bytes() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(format!("sha256:{}", HEX.to_uppercase())
            .parse::<Digest>()
            .is_err());
        let long = "x".repeat(10_000);
        assert!(long.parse::<Digest>().unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        assert!(
            is_valid_tag("v1.2.3-rc.1") && is_valid_tag("_x") && is_valid_tag(&"a".repeat(128))
        );
        assert!(!is_valid_tag(".x") && !is_valid_tag("") && !is_valid_tag(&"a".repeat(129)));
    }

    #[test]
    fn short_digests_survive_odd_input() {
        assert_eq!(short_digest(""), "");
        assert_eq!(short_digest("sha256:ab"), "sha256:ab");
        assert_eq!(short_digest("nocolon0123456789"), "nocolon01234");
        assert_eq!(short_digest("x:ééééééééééééééé"), "x:éééééééééééé");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, text_from};
    use proptest::prelude::*;

    #[test]
    fn fuzz_references_round_trip_and_never_carry_path_tricks() {
        let text = prop_oneof![
            text_from("abc019.-_/:@%?#sha256ABCDEF", 80),
            any::<String>(),
        ];
        fuzz("image references", text, |text| {
            if let Ok(r) = text.parse::<Reference>() {
                prop_assert!(is_valid_repository(&r.repository), "{r:?}");
                prop_assert!(!r.repository.split('/').any(|c| c == ".." || c == "."));
                if let Some(tag) = &r.tag {
                    prop_assert!(is_valid_tag(tag));
                }
                let again: Reference = r
                    .to_string()
                    .parse()
                    .map_err(|e| TestCaseError::fail(format!("{r} does not parse again: {e}")))?;
                prop_assert_eq!(again, r);
            }
            let _ = text.parse::<Digest>();
            Ok(())
        });
    }
}
