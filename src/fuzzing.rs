//! Property-based fuzzing of every parser that takes outside input (tests only).
//!
//! `cargo fuzz` needs a nightly toolchain this project's machines do not have, so each parser
//! gets a proptest target instead: generated text from the parser's own alphabet, and mutations
//! (bit flips, insertions, deletions, truncations, splices) of real inputs such as recorded
//! webhook payloads and manifests. A target passes when the parser answers (`Ok` or `Err`)
//! without panicking, and holds the property its test states.
//!
//! In the test command each target runs [`DEFAULT_CASES`] cases. For a long run set
//! `RETAGD_FUZZ_SECONDS`: each target then runs batches of fresh random cases until that many
//! seconds have passed (`RETAGD_FUZZ_SECONDS=600 cargo test --release --lib fuzz_`). A failure
//! prints the shrunk input; keep it as a regression test beside the target.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per target in the test command.
pub const DEFAULT_CASES: u32 = 512;

/// Runs `test` on values of `strategy`: [`DEFAULT_CASES`] of them, or batches until
/// `RETAGD_FUZZ_SECONDS` have passed. Panics with the shrunk failing input.
pub fn fuzz<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let seconds: u64 = std::env::var("RETAGD_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let mut cases = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: DEFAULT_CASES,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("fuzz target {name} failed after {cases} cases: {e}");
        }
        cases += u64::from(DEFAULT_CASES);
        if std::time::Instant::now() >= deadline {
            break;
        }
    }
    if seconds > 0 {
        eprintln!("fuzz target {name}: {cases} cases in {seconds} s, no failure");
    }
}

/// Text made of `alphabet`'s characters, up to `max` long: most of what a parser of that
/// grammar sees, with the odd case that breaks it.
pub fn text_from(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    proptest::collection::vec(proptest::sample::select(chars), 0..=max)
        .prop_map(|cs| cs.into_iter().collect())
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Flip bits of the byte at a position (taken modulo the length).
    Flip(usize, u8),
    /// Insert a byte.
    Insert(usize, u8),
    /// Remove a byte.
    Remove(usize),
    /// Cut the input at a position.
    Truncate(usize),
    /// Copy a slice of the input to another position (duplicated fields, nesting).
    Splice(usize, usize, usize),
}

/// Mutations of one of `seeds`: up to 8 edits, so most results stay close to valid input and
/// reach deep into the parser.
pub fn mutations(seeds: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let edit = prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(p, b)| Edit::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        any::<usize>().prop_map(Edit::Remove),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 0..64usize, any::<usize>()).prop_map(|(a, l, b)| Edit::Splice(a, l, b)),
    ];
    (0..seeds.len(), proptest::collection::vec(edit, 0..8)).prop_map(move |(i, edits)| {
        let mut bytes = seeds[i].to_vec();
        for e in edits {
            apply(&mut bytes, e);
        }
        bytes
    })
}

fn apply(bytes: &mut Vec<u8>, edit: Edit) {
    let len = bytes.len();
    match edit {
        Edit::Flip(p, b) if len > 0 => bytes[p % len] ^= b,
        Edit::Insert(p, b) => bytes.insert(p % (len + 1), b),
        Edit::Remove(p) if len > 0 => {
            bytes.remove(p % len);
        }
        Edit::Truncate(p) => bytes.truncate(p % (len + 1)),
        Edit::Splice(from, n, to) if len > 0 => {
            let from = from % len;
            let piece: Vec<u8> = bytes[from..(from + n).min(len)].to_vec();
            let at = to % (len + 1);
            bytes.splice(at..at, piece);
        }
        _ => {}
    }
}
