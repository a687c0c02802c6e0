//! Tag selection over 100,000 mixed tags, about half of them passing the filter, with each
//! policy. The goal (issue "Foundation"): under 25 ms for the semver policy with a filter.
//! `cargo bench --bench policy`; `scripts/bench-policy` adds the Flux (Go) comparison.

#![allow(missing_docs)] // criterion_group! generates undocumented items.

use criterion::{criterion_group, criterion_main, Criterion};
use retagd::policy::{AlphabeticalPolicy, Filter, NumericalPolicy, Order, Policy, Selector};

/// Deterministic mixed tags: half dev builds that match the dev filter, the rest release
/// candidates, releases, branch builds and junk.
pub fn mixed_tags(n: usize) -> Vec<String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let r = next();
            let (a, b, c) = (r % 5, (r >> 8) % 40, (r >> 16) % 60);
            match i % 10 {
                0..=4 => format!("v{a}.{b}.{c}-dev.{}", (r >> 24) % 500),
                5 => format!("v{a}.{b}.{c}-rc.{}", (r >> 24) % 9),
                6 => format!("v{a}.{b}.{c}"),
                7 => format!("main-{:08x}", r >> 32),
                8 => format!("build-{}", (r >> 20) % 1_000_000),
                _ => format!(
                    "RELEASE.2024-{:02}-{:02}T{:02}-{:x}",
                    b % 12 + 1,
                    c % 28 + 1,
                    a,
                    r >> 40
                ),
            }
        })
        .collect()
}

fn selection(c: &mut Criterion) {
    let tags = mixed_tags(100_000);
    let cases = [
        (
            "semver with filter",
            Selector::new(
                Filter::new(Some(r"^v\d+\.\d+\.\d+-dev\.\d+$"), None).expect("valid"),
                Policy::semver(">=1.0.0-0").expect("valid"),
            ),
        ),
        (
            "semver without filter",
            Selector::new(
                Filter::all(),
                Policy::semver(">=1.0.0-0 <4.0.0").expect("valid"),
            ),
        ),
        (
            "alphabetical with filter",
            Selector::new(
                Filter::new(Some(r"^(RELEASE\.|v)"), None).expect("valid"),
                Policy::Alphabetical(AlphabeticalPolicy::new(Order::Asc)),
            ),
        ),
        (
            "numerical with extract",
            Selector::new(
                Filter::new(Some(r"^(?:build|main)-(?P<n>\d+)$"), Some("$n")).expect("valid"),
                Policy::Numerical(NumericalPolicy::new(Order::Asc)),
            ),
        ),
    ];
    let mut group = c.benchmark_group("select 100k tags");
    group.sample_size(30);
    for (name, selector) in &cases {
        group.bench_function(*name, |b| {
            b.iter(|| {
                selector
                    .select(tags.iter().map(String::as_str))
                    .expect("a tag is selected")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, selection);
criterion_main!(benches);
