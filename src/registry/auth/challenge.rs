//! `WWW-Authenticate` challenges, and the scheme a registry asked for.

use url::Url;

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
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, text_from};

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
}
