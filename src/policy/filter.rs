//! The `filter_tags` step: which tags take part, and what value the policy ranks for each.
//!
//! Same rules as Flux's `RegexFilter`: the pattern is searched anywhere in the tag (anchor it to
//! match whole tags); with `extract`, the first match is expanded with `$name`, `${name}` and `$1`
//! references and the policy ranks that value, while the result stays the original tag.

use std::sync::Arc;

use regex::Regex;

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The pattern does not compile.
    #[error("invalid pattern {}: {reason}", literal(.pattern))]
    Pattern {
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's explanation, on one line.
        reason: String,
    },
    /// `extract` names a capture group the pattern does not have.
    #[error("extract {extract:?} refers to ${group}, which pattern {} does not capture (its groups: {available}){hint}", literal(.pattern))]
    UnknownGroup {
        /// The extract template.
        extract: String,
        /// The missing group.
        group: String,
        /// The pattern.
        pattern: String,
        /// The groups the pattern has.
        available: String,
        /// How to write what was probably meant, or nothing.
        hint: String,
    },
    /// `extract` without a `pattern` to expand over.
    #[error("extract {0:?} needs a pattern whose match it expands")]
    ExtractWithoutPattern(String),
}

/// A compiled `filter_tags`. Clones share the compiled pattern and its search caches (cloning
/// a `Regex` itself would give each clone a cache pool of its own, about 16 KB once used), so
/// stages that share a filter cost one regex, however many pipelines there are.
#[derive(Debug, Clone)]
pub struct Filter {
    pattern: Option<Arc<Regex>>,
    extract: Option<String>,
}

impl Filter {
    /// Keeps every tag and ranks it as written (no `filter_tags`).
    pub fn all() -> Filter {
        Filter {
            pattern: None,
            extract: None,
        }
    }

    /// Compiles a filter. An empty pattern keeps every tag, as in Flux. An `extract` that names
    /// a group the pattern lacks is refused here, where Go would silently expand it to nothing.
    pub fn new(pattern: Option<&str>, extract: Option<&str>) -> Result<Filter, Error> {
        let regex = match pattern {
            None => None,
            Some(p) => Some(Regex::new(p).map_err(|e| Error::Pattern {
                pattern: p.to_string(),
                reason: regex_reason(&e.to_string()),
            })?),
        };
        let extract = extract.filter(|e| !e.is_empty()).map(str::to_string);
        if let Some(template) = &extract {
            let Some(regex) = &regex else {
                return Err(Error::ExtractWithoutPattern(template.clone()));
            };
            check_references(template, regex)?;
        }
        Ok(Filter {
            pattern: regex.map(Arc::new),
            extract,
        })
    }

    /// Whether an `extract` template is set.
    pub fn has_extract(&self) -> bool {
        self.extract.is_some()
    }

    /// The pattern as written, if any.
    pub fn pattern(&self) -> Option<&str> {
        self.pattern.as_deref().map(Regex::as_str)
    }

    /// The extract template, if any.
    pub fn extract(&self) -> Option<&str> {
        self.extract.as_deref()
    }

    /// The value the policy ranks for `tag`, or `None` when the tag is filtered out.
    pub fn apply<'t>(&self, tag: &'t str) -> Option<std::borrow::Cow<'t, str>> {
        let Some(regex) = &self.pattern else {
            return Some(tag.into());
        };
        match &self.extract {
            None => regex.is_match(tag).then_some(tag.into()),
            Some(template) => {
                let caps = regex.captures(tag)?;
                let mut out = String::new();
                caps.expand(template, &mut out);
                Some(out.into())
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A pattern as it is written in a TOML literal string (`'^v\d+$'`), so backslashes are not
/// doubled; with `"..."` escaping when it holds a quote or a control character.
pub fn literal(pattern: &str) -> String {
    if pattern.contains('\'') || pattern.chars().any(char::is_control) {
        format!("{pattern:?}")
    } else {
        format!("'{pattern}'")
    }
}

/// The regex compiler's multi-line report (the pattern, a caret line, `error: ...`) as one
/// phrase with the position: `unclosed group (at character 3)`.
fn regex_reason(report: &str) -> String {
    let lines: Vec<&str> = report.lines().collect();
    let Some(what) = lines.iter().find_map(|l| l.trim().strip_prefix("error: ")) else {
        return one_line(report);
    };
    // The caret line follows the pattern's line; both are indented alike.
    let at = lines.windows(2).find_map(|pair| {
        let caret = pair[1];
        let trimmed = caret.trim();
        (!trimmed.is_empty() && trimmed.chars().all(|c| c == '^')).then(|| {
            let indent = pair[0].len() - pair[0].trim_start().len();
            caret.find('^').map_or(0, |c| c.saturating_sub(indent)) + 1
        })
    });
    match at {
        Some(at) => format!("{what} (at character {at})"),
        None => what.to_string(),
    }
}

/// Finds every `$name` / `${name}` in `template` (with the same reading as
/// [`regex::Captures::expand`]) and refuses names and numbers the regex does not define.
fn check_references(template: &str, regex: &Regex) -> Result<(), Error> {
    let names: Vec<&str> = regex.capture_names().flatten().collect();
    let groups = regex.captures_len();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            rest = r;
            continue;
        }
        let (name, after) = if let Some(braced) = rest.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                // `${` without a closing brace is literal text for `expand`.
                None => continue,
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        rest = after;
        if name.is_empty() {
            continue;
        }
        let known = match name.parse::<usize>() {
            Ok(n) => n < groups,
            Err(_) => names.contains(&name),
        };
        if !known {
            let mut available: Vec<String> = (0..groups).map(|n| format!("${n}")).collect();
            available.extend(names.iter().map(|n| format!("${n}")));
            return Err(Error::UnknownGroup {
                extract: template.to_string(),
                group: name.to_string(),
                pattern: regex.as_str().to_string(),
                available: available.join(", "),
                hint: match name.find(|c: char| !c.is_ascii_digit()) {
                    Some(i) if i > 0 => format!(
                        "; write ${{{}}}{} to follow group {} with text",
                        &name[..i],
                        &name[i..],
                        &name[..i]
                    ),
                    _ => String::new(),
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extract_refuses_a_group_the_pattern_lacks() {
        let err = Filter::new(Some(r"^main-(?P<ts>\d+)$"), Some("$tss")).unwrap_err();
        assert!(err.to_string().contains("$tss"), "{err}");
        assert!(Filter::new(Some(r"^main-(?P<ts>\d+)$"), Some("${ts}-$$")).is_ok());
        assert!(Filter::new(Some(r"^(\d+)$"), Some("$2")).is_err());
    }

    #[test]
    fn unanchored_patterns_match_anywhere() {
        let f = Filter::new(Some("rc"), None).unwrap();
        assert_eq!(f.apply("v1.0.0-rc.1").as_deref(), Some("v1.0.0-rc.1"));
        assert_eq!(f.apply("v1.0.0"), None);
    }
}
