//! Semver ranges in the language of Masterminds/semver v3, which Flux's `policy.semver.range` uses.
//!
//! Cargo's rules (the `semver` crate's `VersionReq`) read the same strings differently: a bare
//! `1.2.3` is `^1.2.3` there and exactly 1.2.3 here; Cargo has no `||`, no hyphen ranges, no `!=`,
//! and admits a prerelease only on the same major.minor.patch as a comparator that names one. So
//! this module parses with the grammar Masterminds uses (the same regular expressions, with
//! leftmost-first alternation, which Rust's `regex` shares with Go's) and checks with its
//! comparator functions, on top of [`semver::Version`].
//!
//! Prereleases: an alternative (the text between `||`) admits prerelease versions only when one of
//! its comparators names a prerelease (`>=1.0.0-0`); then all its comparators compare them by
//! ordinary precedence (Masterminds v3.4+, the version current Flux builds with).

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use semver::Version;

use super::version::{compare, compare_prerelease, parse_loose};
use std::cmp::Ordering;

/// Masterminds refuses longer ranges (`MaxConstraintLen`).
pub const MAX_RANGE_LEN: usize = 512;
/// Masterminds refuses more `||` alternatives (`MaxConstraintGroups`).
pub const MAX_ALTERNATIVES: usize = 32;

/// The operator alternation, in Masterminds' order: the order decides which reading wins.
const OPS: &str = r"=||!=|>|<|>=|=>|<=|=<|~|~>|\^";
/// One version inside a range; the segment class really does admit `|` (as in Masterminds).
const CV: &str = r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";
/// Go's `\s` is ASCII whitespace only.
const WS: &str = r"[\t\n\x0C\r ]";

static COMPARATOR: LazyLock<Regex> =
    LazyLock::new(|| compile(&format!(r"^{WS}*({OPS}){WS}*({CV}){WS}*$")));
static HYPHEN: LazyLock<Regex> =
    LazyLock::new(|| compile(&format!(r"{WS}*({CV}){WS}+-{WS}+({CV}){WS}*")));
static FIND: LazyLock<Regex> = LazyLock::new(|| compile(&format!(r"({OPS}){WS}*({CV})")));
static VALID_GROUP: LazyLock<Regex> = LazyLock::new(|| {
    compile(&format!(
        r"^({WS}*({OPS}){WS}*({CV}){WS}*)((?:{WS}+|,{WS}*)({OPS}){WS}*({CV}){WS}*)*$"
    ))
});

fn compile(pattern: &str) -> Regex {
    // The patterns are constants of this module; a failure is a bug caught by every test.
    Regex::new(pattern).expect("built-in range grammar compiles")
}

/// Why a range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Nothing to parse.
    #[error("the range is empty (write e.g. \">=1.0.0\" or \"*\")")]
    Empty,
    /// Longer than [`MAX_RANGE_LEN`].
    #[error("the range is longer than {MAX_RANGE_LEN} bytes")]
    TooLong,
    /// More than [`MAX_ALTERNATIVES`] `||` alternatives.
    #[error("the range has more than {MAX_ALTERNATIVES} \"||\" alternatives")]
    TooManyAlternatives,
    /// `||` with nothing on one side.
    #[error("an alternative is empty (nothing between \"||\" and the end or another \"||\")")]
    EmptyAlternative,
    /// One alternative does not follow the grammar.
    #[error("improper constraint {0:?} (comparators are an operator =, !=, >, <, >=, <=, ~, ^ followed by a version such as 1.2.3, 1.2, 1.x or *)")]
    Improper(String),
}

/// The operators of the range language; `=` and none mean the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "" | "=" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" | "=>" => Op::Ge,
            "<=" | "=<" => Op::Le,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            _ => return None,
        })
    }
}

/// One comparator: an operator and a version that may have wildcard (`dirty`) parts.
#[derive(Debug, Clone)]
struct Comparator {
    op: Op,
    version: Version,
    /// Some part was a wildcard or missing (`1.2`, `1.x`, `*`).
    dirty: bool,
    /// The minor part (and so the patch) was a wildcard or missing.
    minor_dirty: bool,
    /// Only the patch part was a wildcard or missing.
    patch_dirty: bool,
}

/// A parsed range: alternatives (`||`) of comparators that must all hold.
#[derive(Debug, Clone)]
pub struct Range {
    source: String,
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone)]
struct Alternative {
    comparators: Vec<Comparator>,
    /// One comparator names a prerelease, so the whole alternative admits prereleases.
    admits_prerelease: bool,
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Range {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Range::parse(s)
    }
}

impl Range {
    /// Parses a range with Masterminds' `NewConstraint` rules (an empty range is refused, as
    /// Flux's ImagePolicy requires one).
    pub fn parse(input: &str) -> Result<Range, Error> {
        if input.trim().is_empty() {
            return Err(Error::Empty);
        }
        if input.len() > MAX_RANGE_LEN {
            return Err(Error::TooLong);
        }
        let rewritten = rewrite_hyphen_ranges(input);
        let groups: Vec<&str> = rewritten.split("||").collect();
        if groups.len() > MAX_ALTERNATIVES {
            return Err(Error::TooManyAlternatives);
        }
        let mut alternatives = Vec::with_capacity(groups.len());
        for group in groups {
            if group
                .trim_matches([' ', '\t', '\n', '\x0C', '\r'])
                .is_empty()
            {
                return Err(Error::EmptyAlternative);
            }
            if !VALID_GROUP.is_match(group) {
                return Err(Error::Improper(group.trim().to_string()));
            }
            let comparators = FIND
                .find_iter(group)
                .map(|m| parse_comparator(m.as_str()))
                .collect::<Result<Vec<_>, _>>()?;
            let admits_prerelease = comparators.iter().any(|c| !c.version.pre.is_empty());
            alternatives.push(Alternative {
                comparators,
                admits_prerelease,
            });
        }
        Ok(Range {
            source: input.to_string(),
            alternatives,
        })
    }

    /// Whether `v` satisfies the range (Masterminds' `Constraints.Check`).
    pub fn matches(&self, v: &Version) -> bool {
        self.alternatives.iter().any(|alt| {
            (v.pre.is_empty() || alt.admits_prerelease)
                && alt.comparators.iter().all(|c| c.matches(v))
        })
    }
}

/// `1.2 - 1.4.5` becomes `>= 1.2, <= 1.4.5 ` (Masterminds `rewriteRange`).
fn rewrite_hyphen_ranges(input: &str) -> String {
    if !input.contains('-') {
        return input.to_string();
    }
    let mut out = input.to_string();
    for caps in HYPHEN.captures_iter(input) {
        let (Some(whole), Some(low), Some(high)) = (caps.get(0), caps.get(1), caps.get(11)) else {
            continue;
        };
        let replacement = format!(">= {}, <= {} ", low.as_str(), high.as_str());
        out = out.replacen(whole.as_str(), &replacement, 1);
    }
    out
}

fn is_wildcard(s: &str) -> bool {
    matches!(s, "x" | "X" | "*")
}

fn parse_comparator(text: &str) -> Result<Comparator, Error> {
    let improper = || Error::Improper(text.trim().to_string());
    let caps = COMPARATOR.captures(text).ok_or_else(improper)?;
    let group = |i: usize| caps.get(i).map_or("", |m| m.as_str());
    let op = Op::parse(group(1)).ok_or_else(improper)?;
    let (major, minor, patch, pre) = (group(3), group(4), group(5), group(6));
    let minor = minor.strip_prefix('.').unwrap_or(minor);
    let patch = patch.strip_prefix('.').unwrap_or(patch);

    let (spelled, dirty, minor_dirty, patch_dirty) = if is_wildcard(major) || major.is_empty() {
        (format!("0.0.0{pre}"), true, false, false)
    } else if is_wildcard(minor) || minor.is_empty() {
        (format!("{major}.0.0{pre}"), true, true, false)
    } else if is_wildcard(patch) || patch.is_empty() {
        (format!("{major}.{minor}.0{pre}"), true, false, true)
    } else {
        (group(2).to_string(), false, false, false)
    };
    // Masterminds reports "constraint Parser Error" here, e.g. for `1x.2` or `1|2`.
    let version = parse_loose(&spelled).ok_or_else(improper)?;
    Ok(Comparator {
        op,
        version,
        dirty,
        minor_dirty,
        patch_dirty,
    })
}

impl Comparator {
    /// The prerelease gate is applied per alternative by [`Range::matches`]; these are
    /// Masterminds' comparator functions after that gate.
    fn matches(&self, v: &Version) -> bool {
        let c = &self.version;
        match self.op {
            Op::Eq => {
                if self.dirty {
                    self.tilde(v)
                } else {
                    compare(v, c) == Ordering::Equal
                }
            }
            Op::Ne => self.not_equal(v),
            Op::Gt => self.greater(v),
            Op::Lt => compare(v, c) == Ordering::Less,
            Op::Ge => compare(v, c) != Ordering::Less,
            Op::Le => self.less_or_equal(v),
            Op::Tilde => self.tilde(v),
            Op::Caret => self.caret(v),
        }
    }

    fn not_equal(&self, v: &Version) -> bool {
        let c = &self.version;
        if self.dirty {
            if c.major != v.major {
                return true;
            }
            if c.minor != v.minor && !self.minor_dirty {
                return true;
            } else if self.minor_dirty {
                return false;
            } else if c.patch != v.patch && !self.patch_dirty {
                return true;
            } else if self.patch_dirty {
                if !v.pre.is_empty() || !c.pre.is_empty() {
                    return compare_prerelease(v.pre.as_str(), c.pre.as_str()) != Ordering::Equal;
                }
                return false;
            }
        }
        compare(v, c) != Ordering::Equal
    }

    fn greater(&self, v: &Version) -> bool {
        let c = &self.version;
        if !self.dirty {
            return compare(v, c) == Ordering::Greater;
        }
        if v.major != c.major {
            return v.major > c.major;
        }
        if self.minor_dirty {
            return false;
        }
        if self.patch_dirty {
            return v.minor > c.minor;
        }
        compare(v, c) == Ordering::Greater
    }

    fn less_or_equal(&self, v: &Version) -> bool {
        let c = &self.version;
        if !self.dirty {
            return compare(v, c) != Ordering::Greater;
        }
        if v.major > c.major {
            return false;
        }
        !(v.major == c.major && v.minor > c.minor && !self.minor_dirty)
    }

    fn tilde(&self, v: &Version) -> bool {
        let c = &self.version;
        if compare(v, c) == Ordering::Less {
            return false;
        }
        // `~0.0.0` admits everything.
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        if v.major != c.major {
            return false;
        }
        v.minor == c.minor || self.minor_dirty
    }

    fn caret(&self, v: &Version) -> bool {
        let c = &self.version;
        if compare(v, c) == Ordering::Less {
            return false;
        }
        if c.major > 0 || self.minor_dirty {
            return v.major == c.major;
        }
        if v.major > 0 {
            return false;
        }
        if c.minor > 0 || self.patch_dirty {
            return v.minor == c.minor;
        }
        if v.minor > 0 {
            return false;
        }
        c.patch == v.patch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammar_compiles_and_reads_operators_in_masterminds_order() {
        let r = Range::parse(">=1.2.3, <2 || =>3 =<4 || ~>5.1").expect("valid");
        assert_eq!(r.alternatives.len(), 3);
        assert_eq!(r.alternatives[0].comparators[0].op, Op::Ge);
        assert_eq!(r.alternatives[1].comparators[1].op, Op::Le);
        assert_eq!(r.alternatives[2].comparators[0].op, Op::Tilde);
    }

    #[test]
    fn hyphen_ranges_are_rewritten_before_splitting() {
        assert_eq!(rewrite_hyphen_ranges("1.2 - 1.4.5"), ">= 1.2, <= 1.4.5 ");
        assert_eq!(rewrite_hyphen_ranges("1 - 2 3"), ">= 1, <= 2 3");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, text_from};

    #[test]
    fn fuzz_ranges_parse_or_refuse_and_check_without_panicking() {
        let versions: Vec<Version> = ["0.0.0", "1.2.3", "1.2.3-rc.1", "10.0.0-0+b"]
            .iter()
            .map(|v| Version::parse(v).expect("constant version"))
            .collect();
        fuzz(
            "semver ranges",
            text_from("0123456789.xX*^~<>=!|, -+vabcrz", 40),
            |text| {
                if let Ok(range) = Range::parse(&text) {
                    for v in &versions {
                        let _ = range.matches(v);
                    }
                }
                Ok(())
            },
        );
    }
}
