//! The `semver` policy: the greatest version that satisfies the range.

use std::cmp::Ordering;

use semver::Version;

use super::range::Range;
use super::version::{compare, parse_tag};
use super::Candidate;

/// `policy = { semver = { range = "..." } }`.
#[derive(Debug, Clone)]
pub struct SemverPolicy {
    range: Range,
}

impl SemverPolicy {
    /// A policy over a parsed range.
    pub fn new(range: Range) -> SemverPolicy {
        SemverPolicy { range }
    }

    /// The range as written.
    pub fn range(&self) -> &Range {
        &self.range
    }

    /// Picks the candidate with the greatest version in range. Tags that are not versions are
    /// skipped, as in Flux. Among equal versions the byte-greatest value wins, and among equal
    /// values the byte-least tag: what Flux picks from its byte-descending tag list, whatever
    /// order the registry listed them in.
    pub fn select(&self, candidates: &[Candidate<'_>]) -> Option<(usize, Version)> {
        let mut best: Option<(usize, Version)> = None;
        for (i, c) in candidates.iter().enumerate() {
            let Some(v) = parse_tag(&c.value) else {
                continue;
            };
            if !self.range.matches(&v) {
                continue;
            }
            let better = match &best {
                None => true,
                Some((j, bv)) => {
                    let b = &candidates[*j];
                    compare(&v, bv)
                        .then_with(|| c.value.as_bytes().cmp(b.value.as_bytes()))
                        .then_with(|| b.tag.as_bytes().cmp(c.tag.as_bytes()))
                        == Ordering::Greater
                }
            };
            if better {
                best = Some((i, v));
            }
        }
        best
    }
}
