//! The tag-selection rules as a table: Masterminds range checks, Flux's lenient tag parsing,
//! and whole selections with filter, extract and each policy. Every row is a rule from
//! `shared/notes/tag-policies.md`; rows marked "cargo:" are where Cargo's rules would differ.

use retagd::policy::{
    self, version::parse_tag, Filter, NumericalPolicy, Order, Policy, Range, Selector,
};

/// (range, version, admitted)
#[rustfmt::skip]
const RANGES: &[(&str, &str, bool)] = &[
    // Exact: a bare version is `=`.  cargo: "1.2.3" means ^1.2.3 and would admit 1.3.0.
    ("1.2.3", "1.2.3", true),
    ("1.2.3", "1.3.0", false),
    ("1.2.3", "1.2.4", false),
    ("=1.2.3", "1.2.3", true),
    ("v1.2.3", "1.2.3", true),
    ("1.2.3", "1.2.3+build.7", true),
    ("1.2.3", "1.2.3-rc.1", false),
    ("=1.2.3-rc.1", "1.2.3-rc.1", true),
    ("=1.2.3-rc.1", "1.2.3-rc.2", false),
    ("=1.0.0-rc.1+a", "1.0.0-rc.1+b", true),
    // !=  cargo: no such operator.
    ("!=1.2.3", "1.2.4", true),
    ("!=1.2.3", "1.2.3", false),
    ("!=1.2", "1.2.5", false),
    ("!=1.2", "1.3.0", true),
    ("!=1.x", "1.9.9", false),
    ("!=1.x", "2.0.0", true),
    ("!=1.2.3", "1.2.4-rc.1", false),
    // >
    (">1.2.3", "1.2.4", true),
    (">1.2.3", "1.2.3", false),
    (">1.1", "1.1.9", false),
    (">1.1", "1.2.0", true),
    (">1", "1.9.0", false),
    (">1", "2.0.0", true),
    (">1.2.3", "1.2.4-rc.1", false),
    (">1.2.3-alpha", "1.2.3", true),
    // <
    ("<1.2.3", "1.2.2", true),
    ("<1.2.3", "1.2.3", false),
    ("<1.2", "1.1.9", true),
    ("<1.2", "1.2.0", false),
    ("<2", "1.99.0", true),
    ("<1.0.0", "1.0.0-rc.1", false),
    // >= and its spelling =>
    (">=1.2.3", "1.2.3", true),
    (">=1.2.3", "1.2.2", false),
    ("=>1.2.3", "1.3.0", true),
    (">=1.2", "1.2.0", true),
    (">= 1.2.3", "1.2.3", true),
    // <= and =<: a partial upper end covers its whole minor or major.
    ("<=1.2.3", "1.2.3", true),
    ("<=1.2.3", "1.2.4", false),
    ("<=1.1", "1.1.9", true),
    ("<=1.1", "1.2.0", false),
    ("=<1.1", "1.1.9", true),
    ("<=1", "1.9.9", true),
    ("<=1", "2.0.0", false),
    // ~ and ~>
    ("~1.2.3", "1.2.9", true),
    ("~1.2.3", "1.3.0", false),
    ("~1.2.3", "1.2.2", false),
    ("~1.2", "1.2.0", true),
    ("~1.2", "1.3.0", false),
    ("~1", "1.9.0", true),
    ("~1", "2.0.0", false),
    ("~>1.2.3", "1.2.5", true),
    ("~1.x", "1.5.0", true),
    ("~0.0.0", "5.0.0", true),
    ("~0", "0.9.0", true),
    ("~0", "1.0.0", false),
    ("~ 1.2.3", "1.2.4", true),
    // ^
    ("^1.2.3", "1.9.9", true),
    ("^1.2.3", "2.0.0", false),
    ("^1.2.3", "1.2.2", false),
    ("^1.2", "1.2.0", true),
    ("^1", "1.0.0", true),
    ("^1", "2.0.0", false),
    ("^0.2.3", "0.2.9", true),
    ("^0.2.3", "0.3.0", false),
    ("^0.2", "0.2.0", true),
    ("^0.2", "0.3.0", false),
    ("^0.0.3", "0.0.3", true),
    ("^0.0.3", "0.0.4", false),
    ("^0.0", "0.0.9", true),
    ("^0.0", "0.1.0", false),
    ("^0", "0.9.9", true),
    ("^0", "1.0.0", false),
    // A Masterminds quirk Flux shares: `^*` parses as ^0.0.0 without the "dirty minor" mark.
    ("^*", "0.0.0", true),
    ("^*", "1.0.0", false),
    // Wildcards: `*` is any release, never a prerelease.
    ("*", "1.2.3", true),
    ("*", "0.0.0", true),
    ("*", "1.2.3-rc.1", false),
    ("x", "0.0.1", true),
    ("1.2.x", "1.2.9", true),
    ("1.2.x", "1.3.0", false),
    ("1.x", "1.9.0", true),
    ("1.x", "2.0.0", false),
    ("1.X", "1.0.0", true),
    ("1.2.*", "1.2.3", true),
    ("1.2", "1.2.7", true),
    ("1", "1.7.0", true),
    ("1.x.x", "1.4.4", true),
    // Hyphen ranges (blanks required).  cargo: none.
    ("1.2 - 1.4.5", "1.2.0", true),
    ("1.2 - 1.4.5", "1.4.5", true),
    ("1.2 - 1.4.5", "1.4.6", false),
    ("1.2 - 1.4.5", "1.1.9", false),
    ("1.2 - 1.4", "1.4.9", true),
    ("1.2 - 1.4", "1.5.0", false),
    ("1.2.3 - 2.3.4", "2.0.0", true),
    ("1.2.3 - 2.3.4 || 5.x", "5.1.0", true),
    // Without blanks it is a version with a prerelease: 1.2.0-1.4.5 as ~1.2.
    ("1.2-1.4.5", "1.2.3", true),
    ("1.2-1.4.5", "1.4.5", false),
    // || and AND (comma or blank).  cargo: no ||.
    (">=1.0.0 <2.0.0 || >=3.0.0", "2.5.0", false),
    (">=1.0.0 <2.0.0 || >=3.0.0", "3.1.0", true),
    (">=1.0.0 <2.0.0 || >=3.0.0", "1.5.0", true),
    ("1.2.3 || 1.2.5", "1.2.5", true),
    ("1.2.3 || 1.2.5", "1.2.4", false),
    ("^1.0 || ^2.0", "2.3.0", true),
    (">=1.0.0,<2.0.0", "1.5.0", true),
    (">= 1.0.0, < 2.0.0", "2.0.0", false),
    (">=1.0.0 <2.0.0", "1.9.9", true),
    // Prerelease opt-in, per alternative, with no same-major.minor.patch restriction.
    // cargo: a prerelease matches only on the same major.minor.patch as a comparator naming one.
    (">=1.0.0-0", "1.2.0-rc.1", true),
    (">=1.0.0-rc.0", "5.0.0-alpha", true),
    (">=1.0.0-rc.0", "1.0.0-beta.9", false),
    (">=1.0.0-0 <2.0.0", "1.5.0-rc.1", true),
    (">=1.0.0-0 <2.0.0", "2.0.0-rc.1", true),
    (">=1.0.0-0 <2.0.0 || >=3.0.0", "3.1.0-rc.1", false),
    (">=3.0.0 || >=1.0.0-0", "3.1.0-rc.1", true),
    ("^1.2.3-beta.1", "1.2.3-beta.2", true),
    ("^1.2.3-beta.1", "1.3.0-alpha", true),
    ("~1.2.3-beta", "1.2.4-alpha", true),
    ("*", "1.0.0-0", false),
    (">=0.0.0-0", "0.0.0-alpha", true),
    // Prerelease precedence: numbers as numbers, below text; text by bytes; shorter first.
    (">1.0.0-rc.9", "1.0.0-rc.10", true),
    (">1.0.0-rc9", "1.0.0-rc10", false),
    (">1.0.0-alpha", "1.0.0-alpha.1", true),
    (">1.0.0-1", "1.0.0-alpha", true),
    (">1.0.0-alpha.beta", "1.0.0-beta", true),
    ("<1.0.0-rc.1", "1.0.0-beta.11", true),
    (">1.0.0-Alpha", "1.0.0-alpha", true),
    (">1.0.0-alpha.1", "1.0.0-alpha.beta", true),
];

/// Ranges Masterminds refuses.
const BAD_RANGES: &[&str] = &[
    "",
    "   ",
    ">= 1.0.0 ||",
    "abc",
    ">=1.0.0 &&",
    "1.2.3.4",
    "1x",
    ">=1.0.0-01",
    ">",
    "1|2",
    ">=1.0.0 || || <2",
    "~>",
    "1.2.3 -",
    "=1.2.3=",
];

/// (tag, the version Flux reads, or "-" when it is not a version)
const TAGS: &[(&str, &str)] = &[
    ("1.2.3", "1.2.3"),
    ("v1.2.3", "1.2.3"),
    ("2024.01.05", "2024.1.5"),
    ("v2025.02.03-rc.1", "2025.2.3-rc.1"),
    ("1.2-rc.1", "1.2.0-rc.1"),
    ("1.2+b.1", "1.2.0+b.1"),
    ("1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"),
    ("0.0.0", "0.0.0"),
    ("1.2", "-"),
    ("v1", "-"),
    ("V1.2.3", "-"),
    ("1.2.3.4", "-"),
    ("latest", "-"),
    ("1.2.3-", "-"),
    ("1.2.3-rc..1", "-"),
    ("1.2.3-01", "-"),
    ("1.2.3+", "-"),
    ("vv1.2.3", "-"),
    ("1.2.3_rc", "-"),
    ("18446744073709551616.0.0", "-"),
];

/// (policy, pattern, extract, tags, expected tag | "!none" | "!nan" | "!invalid")
/// policy is "semver:RANGE", "alphabetical:ORDER" or "numerical:ORDER".
#[rustfmt::skip]
const SELECTIONS: &[(&str, &str, &str, &str, &str)] = &[
    ("semver:>=1.0.0", "", "", "1.0.0 1.2.0 1.1.0", "1.2.0"),
    ("semver:*", "", "", "v1.0.0 1.0.0", "v1.0.0"),
    ("semver:*", "", "", "1.0.0+b 1.0.0+a", "1.0.0+b"),
    ("semver:>=1.0.0-0", "", "", "1.0.0 1.1.0-rc.1", "1.1.0-rc.1"),
    ("semver:*", "", "", "latest main 1.2.3 v2.0", "1.2.3"),
    ("semver:*", "", "", "2024.01.05 2024.1.6", "2024.1.6"),
    ("semver:*", "", "", "1.2-rc.1 1.1.0", "1.1.0"),
    ("semver:>=1.0.0-0", "", "", "1.2-rc.1 1.1.0", "1.2-rc.1"),
    ("semver:*", "", "", "V1.2.3 1.0.0", "1.0.0"),
    ("semver:*", "", "", "1.2.3.4 1.0.0", "1.0.0"),
    ("semver:*", "", "", "latest main", "!none"),
    ("semver:>=5.0.0", "", "", "1.0.0 2.0.0", "!none"),
    ("semver:>=1.0.0-0", r"^v\d+\.\d+\.\d+-dev\.\d+$", "", "v1.2.0-dev.1 v1.2.0-dev.2 v1.2.0-rc.1 v1.1.0 v1.2.0-dev.10", "v1.2.0-dev.10"),
    ("semver:>=0.0.0-0", "rc", "", "v1.0.0-rc.1 v1.0.0 v1.1.0-rc.2", "v1.1.0-rc.2"),
    ("semver:*", r"^main-(?P<ver>\d+\.\d+\.\d+)-\w+$", "$ver", "main-1.0.0-abc main-1.2.0-def main-1.1.0-xyz 1.9.0", "main-1.2.0-def"),
    ("semver:*", r"^(\d+\.\d+\.\d+)-\w+$", "$1", "1.0.0-zzz 1.0.0-aaa", "1.0.0-aaa"),
    ("semver:^1.2", "", "", "1.2.0 1.9.0 2.0.0", "1.9.0"),
    ("semver:~1.2", "", "", "1.2.0 1.2.9 1.3.0", "1.2.9"),
    ("semver:1.2.x", "", "", "1.2.1 1.3.0 1.2.10", "1.2.10"),
    ("semver:<1.0.0", "", "", "0.9.0 1.0.0-rc.1 0.9.1-rc", "0.9.0"),
    ("semver:>=1.0.0 <2.0.0 || >=3.0.0", "", "", "1.5.0 2.5.0 3.0.0-rc.1", "1.5.0"),
    ("semver:1.2 - 1.4", "", "", "1.4.9 1.5.0", "1.4.9"),
    ("semver:!=2.0.0", "", "", "1.0.0 2.0.0", "1.0.0"),
    ("semver:>=1.0.0-0", "", "", "1.0.0-rc9 1.0.0-rc10", "1.0.0-rc9"),
    ("semver:>=1.0.0-0", "", "", "1.0.0-rc.9 1.0.0-rc.10", "1.0.0-rc.10"),
    ("semver:>=1.0.0-0", "", "", "1.0.0-rc.1 1.0.0", "1.0.0"),
    ("semver:>=1.0.0-0", "", "", "1.0.0-alpha 1.0.0-alpha.1", "1.0.0-alpha.1"),
    ("semver:*", r"^v(\d+)\.(\d+)\.(\d+)$", "$1.$2.$3", "v1.2.3 v1.10.0 v1.9.9", "v1.10.0"),
    ("semver:*", r"^(\d+)_(\d+)_(\d+)$", "${1}.${2}.${3}", "1_2_3 1_2_4", "1_2_4"),
    ("semver:*", r"^(\d+)_(\d+)_(\d+)$", "$1_x", "1_2_3", "!invalid"),
    ("alphabetical:asc", "", "", "a b c", "c"),
    ("alphabetical:desc", "", "", "a b c", "a"),
    ("alphabetical:asc", "", "", "B a", "a"),
    ("alphabetical:asc", "", "", "9 10", "9"),
    ("alphabetical:desc", "", "", "9 10", "10"),
    ("alphabetical:asc", r"^RELEASE\.", "", "RELEASE.2024-01-05 RELEASE.2024-02-01 latest", "RELEASE.2024-02-01"),
    ("alphabetical:asc", r"^(?P<ts>\d+)-(?P<sha>[a-f0-9]+)$", "$ts", "100-aaa 200-bbb 150-ccc", "200-bbb"),
    ("alphabetical:asc", r"^x-(\d)-\w$", "$1", "x-1-b x-1-a x-2-c", "x-2-c"),
    ("alphabetical:desc", r"^x-(\d)-\w$", "$1", "x-1-b x-1-a x-2-c", "x-1-a"),
    ("alphabetical:asc", "^nomatch$", "", "a b", "!none"),
    ("numerical:asc", "", "", "1 2 10", "10"),
    ("numerical:desc", "", "", "1 2 10", "1"),
    ("numerical:asc", "", "", "1.5 1.25", "1.5"),
    ("numerical:asc", "", "", "1 1.0", "1"),
    ("numerical:desc", "", "", "1 1.0", "1"),
    ("numerical:asc", "", "", "-1 -2", "-1"),
    ("numerical:asc", "", "", "1e3 999", "1e3"),
    ("numerical:asc", "", "", "1 latest", "!nan"),
    ("numerical:asc", r"^build-(\d+)$", "$1", "build-9 build-10 main", "build-10"),
    ("numerical:desc", r"^build-(\d+)$", "$1", "build-9 build-10 main", "build-9"),
    ("numerical:asc", "", "", "0x1p4 15", "0x1p4"),
    ("numerical:asc", "", "", "inf 5", "inf"),
    ("numerical:asc", "", "", "1e400 1", "!nan"),
    ("numerical:desc", "", "", "007 7.0 8", "007"),
    ("numerical:asc", "", "", "NaN 5", "5"),
    ("numerical:asc", "", "", "5 nan", "5"),
    ("numerical:asc", r"^build(\d*)$", "$1", "build build5", "!nan"),
    ("numerical:asc", r"^(\d+)$", "", "20240101 20231231", "20240101"),
    ("semver:", "", "", "1.0.0", "!invalid"),
    ("semver:>=1.0.0 ||", "", "", "1.0.0", "!invalid"),
    ("alphabetical:up", "", "", "a", "!invalid"),
    ("numerical:ASC", "", "", "1", "!invalid"),
    ("semver:*", "(", "", "1.0.0", "!invalid"),
    ("semver:*", "(a)", "$2", "a", "!invalid"),
    ("semver:*", "", "", "", "!none"),
];

fn selector(policy: &str, pattern: &str, extract: &str) -> Result<Selector, policy::Error> {
    let (kind, arg) = policy.split_once(':').expect("table policy is KIND:ARG");
    let filter = Filter::new(
        (!pattern.is_empty()).then_some(pattern),
        (!extract.is_empty()).then_some(extract),
    )?;
    let policy = match kind {
        "semver" => Policy::semver(arg)?,
        "alphabetical" => {
            Policy::Alphabetical(policy::AlphabeticalPolicy::new(arg.parse::<Order>()?))
        }
        "numerical" => Policy::Numerical(NumericalPolicy::new(arg.parse::<Order>()?)),
        other => panic!("unknown policy kind {other}"),
    };
    Ok(Selector::new(filter, policy))
}

fn outcome(policy: &str, pattern: &str, extract: &str, tags: &[&str]) -> String {
    match selector(policy, pattern, extract) {
        Err(_) => "!invalid".to_string(),
        Ok(s) => match s.select(tags.iter().copied()) {
            Ok(sel) => sel.tag.to_string(),
            Err(policy::Error::NotANumber { .. }) => "!nan".to_string(),
            Err(e) if e.is_invalid_selector() => "!invalid".to_string(),
            Err(_) => "!none".to_string(),
        },
    }
}

#[test]
fn ranges_follow_masterminds() {
    let mut failures = Vec::new();
    for &(range, version, want) in RANGES {
        let r = Range::parse(range).unwrap_or_else(|e| panic!("{range:?} should parse: {e}"));
        let v = parse_tag(version).unwrap_or_else(|| panic!("{version:?} should be a version"));
        if r.matches(&v) != want {
            failures.push(format!("{range:?} admits {version:?}: want {want}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} range rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn improper_ranges_are_refused() {
    for bad in BAD_RANGES {
        assert!(Range::parse(bad).is_err(), "{bad:?} should be refused");
    }
    let many = vec![">=1.0.0"; 33].join(" || ");
    assert!(
        Range::parse(&many).is_err(),
        "33 alternatives should be refused"
    );
    assert!(Range::parse(&vec![">=1.0.0"; 32].join(" || ")).is_ok());
}

#[test]
fn tags_parse_like_flux() {
    for &(tag, want) in TAGS {
        let got = parse_tag(tag).map_or("-".to_string(), |v| v.to_string());
        assert_eq!(got, want, "tag {tag:?}");
    }
}

#[test]
fn selections_match_flux_in_any_input_order() {
    let mut failures = Vec::new();
    for &(policy, pattern, extract, tags, want) in SELECTIONS {
        let mut list: Vec<&str> = tags.split_whitespace().collect();
        let forward = outcome(policy, pattern, extract, &list);
        list.reverse();
        let backward = outcome(policy, pattern, extract, &list);
        if forward != want || backward != want {
            failures.push(format!(
                "{policy} /{pattern}/ {extract:?} over [{tags}]: want {want}, got {forward} (reversed: {backward})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} selection rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
