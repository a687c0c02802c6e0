//! Properties of tag selection that a table cannot cover: the result never depends on the order
//! the registry lists tags in, and version precedence is a total order that agrees with the
//! Masterminds rules (checked against the `semver` crate's independent `cmp_precedence`, which
//! implements the same SemVer 2.0 precedence for identifiers that fit a u64).

use std::cmp::Ordering;

use proptest::prelude::*;
use retagd::policy::{self, version, Filter, NumericalPolicy, Order, Policy, Selector};

fn identifier() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..20).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "rc", "alpha", "beta", "RC", "dev", "rc9", "rc10", "a-b"
        ])
        .prop_map(String::from),
    ]
}

fn version_tag() -> impl Strategy<Value = String> {
    (
        prop::bool::ANY,
        0u64..4,
        0u64..4,
        0u64..4,
        prop::collection::vec(identifier(), 0..3),
        prop::option::of(prop::sample::select(vec!["b1", "build.7", "x"])),
    )
        .prop_map(|(v, a, b, c, pre, build)| {
            let mut s = format!("{}{a}.{b}.{c}", if v { "v" } else { "" });
            if !pre.is_empty() {
                s.push('-');
                s.push_str(&pre.join("."));
            }
            if let Some(b) = build {
                s.push('+');
                s.push_str(b);
            }
            s
        })
}

fn any_tag() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => version_tag(),
        1 => prop::sample::select(vec!["latest", "main", "1.2", "v1", "V1.0.0", "1.0.0.0", "7", "10", "1.5"]).prop_map(String::from),
    ]
}

fn selectors() -> Vec<Selector> {
    let all = || Filter::new(None, None).expect("no filter is valid");
    let mut out = vec![
        Selector::new(all(), Policy::semver("*").expect("valid")),
        Selector::new(all(), Policy::semver(">=0.0.0-0").expect("valid")),
        Selector::new(
            all(),
            Policy::semver(">=1.0.0-rc.0 <3.0.0 || 0.x").expect("valid"),
        ),
        Selector::new(
            all(),
            Policy::Alphabetical(policy::AlphabeticalPolicy::new(Order::Asc)),
        ),
        Selector::new(
            all(),
            Policy::Alphabetical(policy::AlphabeticalPolicy::new(Order::Desc)),
        ),
    ];
    let numbers = || Filter::new(Some(r"^v?(\d+)"), Some("$1")).expect("valid filter");
    out.push(Selector::new(
        numbers(),
        Policy::Numerical(NumericalPolicy::new(Order::Asc)),
    ));
    out.push(Selector::new(
        numbers(),
        Policy::Numerical(NumericalPolicy::new(Order::Desc)),
    ));
    out
}

/// The selected tag, or which kind of "nothing" (messages carry counts, which duplicates change).
fn outcome(s: &Selector, tags: &[String]) -> Result<String, &'static str> {
    s.select(tags.iter().map(String::as_str))
        .map(|sel| sel.tag.to_string())
        .map_err(|e| match e {
            policy::Error::NoTags => "no tags",
            policy::Error::NoMatch { .. } => "no match",
            policy::Error::NotANumber { .. } => "not a number",
            _ => "invalid",
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn selection_does_not_depend_on_listing_order(
        (tags, shuffled) in prop::collection::vec(any_tag(), 0..24)
            .prop_flat_map(|tags| (Just(tags.clone()), Just(tags).prop_shuffle()))
    ) {
        for s in selectors() {
            prop_assert_eq!(outcome(&s, &tags), outcome(&s, &shuffled), "{:?}", s.policy().to_string());
        }
    }

    #[test]
    fn duplicated_tags_change_nothing(tags in prop::collection::vec(any_tag(), 1..16)) {
        let doubled: Vec<String> = tags.iter().chain(tags.iter()).cloned().collect();
        for s in selectors() {
            prop_assert_eq!(outcome(&s, &tags), outcome(&s, &doubled));
        }
    }

    #[test]
    fn precedence_is_a_total_order(a in version_tag(), b in version_tag(), c in version_tag()) {
        let (a, b, c) = (
            version::parse_tag(&a).expect("generated versions parse"),
            version::parse_tag(&b).expect("generated versions parse"),
            version::parse_tag(&c).expect("generated versions parse"),
        );
        prop_assert_eq!(version::compare(&a, &a), Ordering::Equal);
        prop_assert_eq!(version::compare(&a, &b), version::compare(&b, &a).reverse());
        if version::compare(&a, &b).is_le() && version::compare(&b, &c).is_le() {
            prop_assert!(version::compare(&a, &c).is_le());
        }
    }

    #[test]
    fn precedence_agrees_with_semver_2_rules(a in version_tag(), b in version_tag()) {
        let (a, b) = (
            version::parse_tag(&a).expect("generated versions parse"),
            version::parse_tag(&b).expect("generated versions parse"),
        );
        prop_assert_eq!(version::compare(&a, &b), a.cmp_precedence(&b));
    }

    #[test]
    fn a_release_outranks_its_prereleases_and_build_metadata_is_ignored(
        core in (0u64..50, 0u64..50, 0u64..50), pre in prop::collection::vec(identifier(), 1..3)
    ) {
        let release = version::parse_tag(&format!("{}.{}.{}", core.0, core.1, core.2)).expect("parses");
        let pre = version::parse_tag(&format!("{}.{}.{}-{}", core.0, core.1, core.2, pre.join("."))).expect("parses");
        let built = version::parse_tag(&format!("{}.{}.{}+sha.1", core.0, core.1, core.2)).expect("parses");
        prop_assert_eq!(version::compare(&release, &pre), Ordering::Greater);
        prop_assert_eq!(version::compare(&release, &built), Ordering::Equal);
    }
}
