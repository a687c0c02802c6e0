//! Tag versions as Flux reads them, and their precedence.
//!
//! Flux's image-reflector-controller parses a tag with `fluxcd/pkg/version.ParseVersion`: the tag
//! must split into three parts at its first two dots, then Masterminds' coercing `NewVersion` reads
//! it. So a leading lowercase `v`, leading zeros (`2024.01.05`) and a short core with a prerelease
//! (`1.2-rc.1` is 1.2.0-rc.1) are versions, while `1.2`, `v1`, `V1.2.3` and `1.2.3.4` are not.
//! [`semver::Version`] holds the result; [`compare`] orders two of them exactly as Masterminds'
//! `Version.Compare` does, which differs from the `semver` crate's own `Ord` for prerelease
//! identifiers too long to be a `u64` and in ignoring build metadata.

use std::cmp::Ordering;

use semver::{BuildMetadata, Prerelease, Version};

/// Masterminds refuses longer version strings (`MaxVersionLen`); so do we.
pub const MAX_VERSION_LEN: usize = 256;

/// Parses a tag the way Flux does; `None` when the tag is not a version (not an error: Flux skips
/// such tags).
pub fn parse_tag(tag: &str) -> Option<Version> {
    // `strings.SplitN(v, ".", 3)` must give three parts: at least two dots anywhere in the tag.
    if tag.bytes().filter(|&b| b == b'.').count() < 2 {
        return None;
    }
    parse_loose(tag)
}

/// Masterminds' coercing `NewVersion`: an optional `v`, one to three numeric segments (missing
/// ones are 0, leading zeros allowed), then an optional prerelease and build metadata.
pub fn parse_loose(input: &str) -> Option<Version> {
    if input.len() > MAX_VERSION_LEN {
        return None;
    }
    let mut rest = input.strip_prefix('v').unwrap_or(input);

    let mut build = BuildMetadata::EMPTY;
    if let Some(i) = rest.find('+') {
        let meta = &rest[i + 1..];
        if !valid_identifiers(meta) {
            return None;
        }
        build = BuildMetadata::new(meta).ok()?;
        rest = &rest[..i];
    }

    let mut pre = Prerelease::EMPTY;
    if let Some(i) = rest.find('-') {
        let p = &rest[i + 1..];
        if !valid_identifiers(p) || !valid_prerelease(p) {
            return None;
        }
        pre = Prerelease::new(p).ok()?;
        rest = &rest[..i];
    }

    // Missing minor and patch stay 0.
    let mut nums = [0u64; 3];
    for (i, seg) in rest.split('.').enumerate() {
        if i == 3 || seg.is_empty() || !seg.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        nums[i] = seg.parse().ok()?;
    }
    Some(Version {
        major: nums[0],
        minor: nums[1],
        patch: nums[2],
        pre,
        build,
    })
}

/// Dot-separated, non-empty identifiers of `[0-9A-Za-z-]`.
fn valid_identifiers(s: &str) -> bool {
    s.split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Numeric prerelease identifiers must not have leading zeros (Masterminds `validatePrerelease`).
fn valid_prerelease(s: &str) -> bool {
    s.split('.')
        .all(|p| !(p.len() > 1 && p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit())))
}

/// Masterminds' `Version.Compare`: the core numbers, then a version without prerelease above one
/// with, then the prerelease identifiers; build metadata never counts.
pub fn compare(a: &Version, b: &Version) -> Ordering {
    a.major
        .cmp(&b.major)
        .then(a.minor.cmp(&b.minor))
        .then(a.patch.cmp(&b.patch))
        .then_with(|| match (a.pre.is_empty(), b.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => compare_prerelease(a.pre.as_str(), b.pre.as_str()),
        })
}

/// Masterminds' `comparePrerelease`, identifier by identifier; a missing identifier ranks lowest.
pub fn compare_prerelease(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let ord = compare_identifier(x, y);
                if ord != Ordering::Equal {
                    return ord;
                }
            }
        }
    }
}

/// Numbers (that fit a `u64`, as Go's `ParseUint` demands) compare as numbers and below any
/// alphanumeric identifier; alphanumeric identifiers compare by bytes.
fn compare_identifier(x: &str, y: &str) -> Ordering {
    if x == y {
        return Ordering::Equal;
    }
    match (as_number(x), as_number(y)) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => x.as_bytes().cmp(y.as_bytes()),
    }
}

fn as_number(s: &str) -> Option<u64> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        parse_tag(s).unwrap_or_else(|| panic!("{s} should parse"))
    }

    #[test]
    fn lenient_tags_parse_like_flux() {
        assert_eq!(v("v1.2.3"), Version::new(1, 2, 3));
        assert_eq!(v("2024.01.05"), Version::new(2024, 1, 5));
        assert_eq!(v("1.2-rc.1").to_string(), "1.2.0-rc.1");
        assert_eq!(v("1.2.3+build.5").build.as_str(), "build.5");
        for bad in [
            "1.2",
            "v1",
            "V1.2.3",
            "1.2.3.4",
            "1.2.3-",
            "1.2.3-rc..1",
            "1.2.3-01",
            "x.y.z",
        ] {
            assert!(parse_tag(bad).is_none(), "{bad} must not be a version");
        }
    }

    #[test]
    fn huge_numeric_prerelease_identifiers_rank_as_text_like_go() {
        let big = "99999999999999999999999";
        assert_eq!(compare_identifier(big, "alpha"), Ordering::Less);
        assert_eq!(compare_identifier(big, "5"), Ordering::Greater);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, text_from};
    use proptest::prelude::*;

    #[test]
    fn fuzz_tags_parse_as_versions_or_not_and_compare_consistently() {
        let tags = prop_oneof![text_from("0123456789.v-+abcrz", 30), any::<String>(),];
        fuzz("version tags", (tags.clone(), tags), |(a, b)| {
            if let (Some(x), Some(y)) = (parse_tag(&a), parse_tag(&b)) {
                prop_assert_eq!(compare(&x, &y), compare(&y, &x).reverse());
            }
            Ok(())
        });
    }
}
