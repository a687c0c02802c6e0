//! Promotion tag templates: how the tag a promotion writes is named.
//!
//! `promote.tag = "v{major}.{minor}.{patch}-rc.{n}"` names the target tag from the source stage's
//! selected tag. `{n}` counts: it is one more than the highest number already used by target-stage
//! tags that match the template with every other variable filled in (1 when none), so a second
//! build of 1.2.0 becomes `-rc.2`. The configuration validates templates; the promotion engine
//! renders them.

use std::fmt;

use semver::Version;

/// A variable of the template language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{tag}`: the source tag as listed.
    Tag,
    /// `{extract}`: the value the source stage's `extract` made of it.
    Extract,
    /// `{major}` of the source version.
    Major,
    /// `{minor}` of the source version.
    Minor,
    /// `{patch}` of the source version.
    Patch,
    /// `{prerelease}` of the source version (empty when it has none).
    Prerelease,
    /// `{n}`: the next free counter.
    N,
}

impl Var {
    const ALL: [(&'static str, Var); 7] = [
        ("tag", Var::Tag),
        ("extract", Var::Extract),
        ("major", Var::Major),
        ("minor", Var::Minor),
        ("patch", Var::Patch),
        ("prerelease", Var::Prerelease),
        ("n", Var::N),
    ];

    fn name(self) -> &'static str {
        Var::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }

    /// Whether the variable needs a version (a semver policy on the source stage).
    pub fn needs_version(self) -> bool {
        matches!(self, Var::Major | Var::Minor | Var::Patch | Var::Prerelease)
    }
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing to render.
    #[error("the tag template is empty")]
    Empty,
    /// `{name}` with an unknown name.
    #[error("unknown variable {{{0}}} (variables: {{tag}}, {{extract}}, {{major}}, {{minor}}, {{patch}}, {{prerelease}}, {{n}})")]
    UnknownVariable(String),
    /// A `{` without its `}`, or a `}` alone.
    #[error("unbalanced brace at byte {0} of the template")]
    Unbalanced(usize),
    /// A character no tag may contain.
    #[error("{0:?} cannot appear in a tag (tags are [A-Za-z0-9_.-], starting with [A-Za-z0-9_], at most 128 characters)")]
    BadCharacter(char),
    /// `{n}` twice: the counter could not be read back.
    #[error("{{n}} may appear at most once")]
    RepeatedCounter,
    /// The template starts with `.` or `-`, which no tag may.
    #[error("a tag cannot start with {0:?}")]
    BadStart(char),
    /// The literal text alone is longer than a tag may be, so no rendering is a valid tag.
    #[error("the template's fixed text is {0} characters; a tag has at most {max}", max = crate::reference::MAX_TAG_LEN)]
    TooLong(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed `promote.tag` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// The values a template is rendered with, taken from the source stage's selection.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    /// The source tag.
    pub tag: &'a str,
    /// The ranked value (the extract result, or the tag).
    pub extract: &'a str,
    /// The version, when the source stage has a semver policy.
    pub version: Option<&'a Version>,
}

impl Template {
    /// Parses a template and checks that its literal text can be part of a tag.
    pub fn parse(source: &str) -> Result<Template, Error> {
        if source.is_empty() {
            return Err(Error::Empty);
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source.char_indices();
        while let Some((i, c)) = rest.next() {
            match c {
                '{' => {
                    let name: String = rest
                        .by_ref()
                        .map(|(_, c)| c)
                        .take_while(|&c| c != '}')
                        .collect();
                    if !source[i..].contains('}') || name.contains('{') {
                        return Err(Error::Unbalanced(i));
                    }
                    let var = Var::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| *v)
                        .ok_or(Error::UnknownVariable(name))?;
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Var(var));
                }
                '}' => return Err(Error::Unbalanced(i)),
                c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => text.push(c),
                c => return Err(Error::BadCharacter(c)),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        if parts.iter().filter(|p| **p == Part::Var(Var::N)).count() > 1 {
            return Err(Error::RepeatedCounter);
        }
        if let Some(Part::Text(t)) = parts.first() {
            if let Some(c) = t.chars().next().filter(|c| matches!(c, '.' | '-')) {
                return Err(Error::BadStart(c));
            }
        }
        let literal: usize = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Var(_) => 0,
            })
            .sum();
        if literal > crate::reference::MAX_TAG_LEN {
            return Err(Error::TooLong(literal));
        }
        Ok(Template {
            source: source.to_string(),
            parts,
        })
    }

    /// The variables the template uses, in order.
    pub fn variables(&self) -> impl Iterator<Item = Var> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(*v),
            Part::Text(_) => None,
        })
    }

    /// Whether the template counts with `{n}`.
    pub fn has_counter(&self) -> bool {
        self.variables().any(|v| v == Var::N)
    }

    /// Renders the template with counter `n`; the caller checks the result with
    /// [`is_valid_tag`](crate::reference::is_valid_tag) since values come from the registry.
    pub fn render(&self, values: &Values<'_>, n: u64) -> String {
        render_parts(&self.parts, values, n)
    }

    /// The counter the next promotion gets: one more than the highest `{n}` among `existing`
    /// tags that match the template with the other variables filled in; 1 when none (and always
    /// 1 for a template without `{n}`).
    pub fn next_counter<'a, I>(&self, values: &Values<'_>, existing: I) -> u64
    where
        I: IntoIterator<Item = &'a str>,
    {
        let Some(at) = self.parts.iter().position(|p| *p == Part::Var(Var::N)) else {
            return 1;
        };
        // {n} appears once, so neither side of it depends on the counter.
        let prefix = render_parts(&self.parts[..at], values, 0);
        let suffix = render_parts(&self.parts[at + 1..], values, 0);
        existing
            .into_iter()
            .filter_map(|tag| {
                let middle = tag
                    .strip_prefix(prefix.as_str())?
                    .strip_suffix(suffix.as_str())?;
                if middle.is_empty() || !middle.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                middle.parse::<u64>().ok()
            })
            .max()
            .map_or(1, |n| n.saturating_add(1))
    }
}

fn render_parts(parts: &[Part], values: &Values<'_>, n: u64) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Var(v) => render_var(*v, values, n, &mut out),
        }
    }
    out
}

fn render_var(var: Var, values: &Values<'_>, n: u64, out: &mut String) {
    use std::fmt::Write as _;
    let v = values.version;
    // Writing to a String cannot fail.
    let _ = match var {
        Var::Tag => write!(out, "{}", values.tag),
        Var::Extract => write!(out, "{}", values.extract),
        Var::Major => write!(out, "{}", v.map_or(0, |v| v.major)),
        Var::Minor => write!(out, "{}", v.map_or(0, |v| v.minor)),
        Var::Patch => write!(out, "{}", v.map_or(0, |v| v.patch)),
        Var::Prerelease => write!(out, "{}", v.map_or("", |v| v.pre.as_str())),
        Var::N => write!(out, "{n}"),
    };
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(tag: &'a str, version: &'a Version) -> Values<'a> {
        Values {
            tag,
            extract: tag,
            version: Some(version),
        }
    }

    #[test]
    fn counter_continues_after_the_highest_existing_number_with_gaps() {
        let t = Template::parse("v{major}.{minor}.{patch}-rc.{n}").unwrap();
        let v = Version::parse("1.2.0-dev.7").unwrap();
        let vals = values("v1.2.0-dev.7", &v);
        assert_eq!(t.next_counter(&vals, []), 1);
        let existing = [
            "v1.2.0-rc.1",
            "v1.2.0-rc.4",
            "v1.2.1-rc.9",
            "v1.2.0-rc.x",
            "1.2.0-rc.7",
        ];
        let n = t.next_counter(&vals, existing);
        assert_eq!(n, 5);
        assert_eq!(t.render(&vals, n), "v1.2.0-rc.5");
    }

    #[test]
    fn templates_refuse_what_no_tag_can_hold() {
        assert_eq!(
            Template::parse("{majr}"),
            Err(Error::UnknownVariable("majr".into()))
        );
        assert_eq!(Template::parse("v{major"), Err(Error::Unbalanced(1)));
        assert_eq!(Template::parse("v}"), Err(Error::Unbalanced(1)));
        assert_eq!(Template::parse("v/1"), Err(Error::BadCharacter('/')));
        assert_eq!(Template::parse("{n}-{n}"), Err(Error::RepeatedCounter));
        assert_eq!(Template::parse("-{tag}"), Err(Error::BadStart('-')));
        let long = format!("{}{{tag}}{}", "a".repeat(100), "b".repeat(29));
        assert_eq!(Template::parse(&long), Err(Error::TooLong(129)));
        assert!(Template::parse(&"a".repeat(128)).is_ok());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, text_from};

    #[test]
    fn fuzz_templates_parse_or_refuse_without_panicking() {
        fuzz(
            "promotion templates",
            text_from("v{}majorintpchsexacgt.-_0123456789$", 40),
            |text| {
                let _ = Template::parse(&text);
                Ok(())
            },
        );
    }
}
