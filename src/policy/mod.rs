//! Tag selection: which tag is "the current version" of a stage.
//!
//! A [`Selector`] is a stage's `filter_tags` plus its `policy`, with exactly the semantics of
//! Flux's ImagePolicy, so the version retagd promotes is the version Flux deploys. Each policy
//! kind has its own file with the same `select` shape; [`Policy`] dispatches. This module knows
//! nothing of registries or configuration files: it takes tag strings and returns one of them.
//!
//! Determinism: the result never depends on the order tags are given in. Ties go where Flux puts
//! them given its byte-descending tag list (see each policy).

mod alphabetical;
mod filter;
mod numerical;
pub mod range;
mod semver;
pub mod version;

use std::borrow::Cow;
use std::fmt;

pub use self::alphabetical::AlphabeticalPolicy;
pub use self::filter::{Error as FilterError, Filter};
pub use self::numerical::{parse_go_float, NumericalPolicy};
pub use self::range::{Error as RangeError, Range};
pub use self::semver::SemverPolicy;

/// Why no tag could be selected, or a selector could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The filter is invalid.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The semver range is invalid.
    #[error("invalid semver range {range:?}: {reason}")]
    Range {
        /// The range as written.
        range: String,
        /// What is wrong with it; part of this error's text, not a separate cause, so a chain
        /// of causes does not print it twice.
        reason: RangeError,
    },
    /// An order other than `asc` or `desc`.
    #[error("invalid order {0:?} (use \"asc\" or \"desc\")")]
    Order(String),
    /// There were no tags at all.
    #[error("no tag matched: the repository has no tags")]
    NoTags,
    /// Tags exist but the filter kept none, or the policy accepted none of those it kept.
    #[error("no tag matched: {reason}")]
    NoMatch {
        /// Which step dropped the last candidate, with counts.
        reason: String,
    },
    /// The numerical policy met a value that is not a number (Flux fails too).
    #[error("numerical policy: tag {tag:?} gives value {value:?}, which is not a number")]
    NotANumber {
        /// The tag.
        tag: String,
        /// The value that was ranked (the tag itself, or what `extract` made of it).
        value: String,
    },
}

impl Error {
    /// True for errors in the selector itself (configuration), false for "nothing qualifies".
    pub fn is_invalid_selector(&self) -> bool {
        matches!(
            self,
            Error::Filter(_) | Error::Range { .. } | Error::Order(_)
        )
    }
}

/// `asc` or `desc`, in the words of Flux's ImagePolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Pick the greatest (the default, as in Flux).
    #[default]
    Asc,
    /// Pick the least.
    Desc,
}

impl std::str::FromStr for Order {
    type Err = Error;

    fn from_str(s: &str) -> Result<Order, Error> {
        match s {
            "asc" => Ok(Order::Asc),
            "desc" => Ok(Order::Desc),
            other => Err(Error::Order(other.to_string())),
        }
    }
}

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        })
    }
}

/// The ranking rule of a stage.
#[derive(Debug, Clone)]
pub enum Policy {
    /// Greatest version within a Masterminds range.
    Semver(SemverPolicy),
    /// Byte order.
    Alphabetical(AlphabeticalPolicy),
    /// Floating-point order.
    Numerical(NumericalPolicy),
}

impl Policy {
    /// A semver policy; the range is parsed with Masterminds' rules.
    pub fn semver(range: &str) -> Result<Policy, Error> {
        let parsed = Range::parse(range).map_err(|reason| Error::Range {
            range: range.to_string(),
            reason,
        })?;
        Ok(Policy::Semver(SemverPolicy::new(parsed)))
    }

    /// The policy's name as written in the configuration.
    pub fn kind(&self) -> &'static str {
        match self {
            Policy::Semver(_) => "semver",
            Policy::Alphabetical(_) => "alphabetical",
            Policy::Numerical(_) => "numerical",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Semver(p) => write!(f, "semver {}", p.range()),
            Policy::Alphabetical(p) => write!(f, "alphabetical {}", p.order()),
            Policy::Numerical(p) => write!(f, "numerical {}", p.order()),
        }
    }
}

/// One tag that passed the filter, and the value the policy ranks for it.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The tag as listed by the registry.
    pub tag: &'a str,
    /// The tag itself, or what `extract` made of it.
    pub value: Cow<'a, str>,
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected<'a> {
    /// The original tag.
    pub tag: &'a str,
    /// The value that was ranked (equal to `tag` without `extract`).
    pub value: String,
    /// The version of `value`, for the semver policy; promotion templates use its parts.
    pub version: Option<::semver::Version>,
}

/// A stage's tag filter and policy.
#[derive(Debug, Clone)]
pub struct Selector {
    filter: Filter,
    policy: Policy,
}

impl Selector {
    /// Combines a filter and a policy.
    pub fn new(filter: Filter, policy: Policy) -> Selector {
        Selector { filter, policy }
    }

    /// The filter.
    pub fn filter(&self) -> &Filter {
        &self.filter
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Selects the current tag among `tags` (any order; duplicates are harmless).
    pub fn select<'a, I>(&self, tags: I) -> Result<Selected<'a>, Error>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut total = 0usize;
        let candidates: Vec<Candidate<'a>> = tags
            .into_iter()
            .inspect(|_| total += 1)
            .filter_map(|tag| self.filter.apply(tag).map(|value| Candidate { tag, value }))
            .collect();
        if total == 0 {
            return Err(Error::NoTags);
        }
        if candidates.is_empty() {
            return Err(Error::NoMatch {
                reason: format!(
                    "none of {total} tag(s) matched pattern {}",
                    filter::literal(self.filter.pattern().unwrap_or(""))
                ),
            });
        }
        let chosen = match &self.policy {
            Policy::Semver(p) => p.select(&candidates).map(|(i, v)| (i, Some(v))),
            Policy::Alphabetical(p) => p.select(&candidates).map(|i| (i, None)),
            Policy::Numerical(p) => p.select(&candidates)?.map(|i| (i, None)),
        };
        let Some((i, version)) = chosen else {
            let reason = match &self.policy {
                Policy::Semver(p) => format!(
                    "{} of {total} tag(s) passed the filter, but none is a version in range {:?}",
                    candidates.len(),
                    p.range().to_string()
                ),
                _ => format!("{} tag(s) passed the filter", candidates.len()),
            };
            return Err(Error::NoMatch { reason });
        };
        let c = &candidates[i];
        Ok(Selected {
            tag: c.tag,
            value: c.value.to_string(),
            version,
        })
    }
}
