//! The `numerical` policy: values read as floating-point numbers.
//!
//! Flux parses each value with Go's `strconv.ParseFloat` and fails the whole policy on the first
//! value that is not a number. [`parse_go_float`] accepts what Go accepts: decimal and hexadecimal
//! (`0x1p-2`) forms, `inf`/`infinity`/`nan` in any case, `_` between digits (`1_000`, as in Go's
//! float literals, checked by Go's own `underscoreOK` rule), and refuses a finite spelling too
//! large for an `f64` (Go's `ErrRange`).

use super::{Candidate, Error, Order};

/// `policy = { numerical = { order = "asc" | "desc" } }`.
#[derive(Debug, Clone, Copy)]
pub struct NumericalPolicy {
    order: Order,
}

impl NumericalPolicy {
    /// A policy with the given order.
    pub fn new(order: Order) -> NumericalPolicy {
        NumericalPolicy { order }
    }

    /// The configured order.
    pub fn order(&self) -> Order {
        self.order
    }

    /// `asc` picks the greatest number, `desc` the least. Runs Flux's loop over the distinct
    /// values in byte-descending order, so ties (`1` and `1.0`) go to the byte-least value and
    /// NaN behaves as it does in Flux; among equal values the byte-least tag wins.
    pub fn select(&self, candidates: &[Candidate<'_>]) -> Result<Option<usize>, Error> {
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_unstable_by(|&a, &b| {
            let (ca, cb) = (&candidates[a], &candidates[b]);
            cb.value
                .as_bytes()
                .cmp(ca.value.as_bytes())
                .then_with(|| ca.tag.as_bytes().cmp(cb.tag.as_bytes()))
        });
        order.dedup_by(|later, first| candidates[*later].value == candidates[*first].value);

        let mut latest: Option<(usize, f64)> = None;
        for i in order {
            let c = &candidates[i];
            let Some(cv) = parse_go_float(&c.value) else {
                return Err(Error::NotANumber {
                    tag: c.tag.to_string(),
                    value: c.value.to_string(),
                });
            };
            if let Some((_, pv)) = latest {
                let skip = match self.order {
                    Order::Asc => cv < pv,
                    Order::Desc => cv > pv,
                };
                if skip {
                    continue;
                }
            }
            latest = Some((i, cv));
        }
        Ok(latest.map(|(i, _)| i))
    }
}

/// Go's `strconv.ParseFloat(s, 64)`, as far as tags can spell it.
pub fn parse_go_float(s: &str) -> Option<f64> {
    if s.contains('_') {
        return underscores_ok(s)
            .then(|| s.replace('_', ""))
            .and_then(|plain| parse_go_float(&plain));
    }
    let (negative, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let value = match lower.as_str() {
        "inf" | "infinity" => f64::INFINITY,
        // Go takes no sign before NaN.
        "nan" if body.len() == s.len() => return Some(f64::NAN),
        _ if lower.starts_with("0x") => parse_hex(&lower[2..])?,
        _ => {
            if !body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                return None;
            }
            let v: f64 = body.parse().ok()?;
            if v.is_infinite() {
                return None; // Go: ErrRange.
            }
            v
        }
    };
    Some(if negative { -value } else { value })
}

/// Go's `underscoreOK`: an underscore only between two digits, or between a base prefix
/// (`0x`, `0b`, `0o`) and a digit.
fn underscores_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    // What came last: the start, a digit (or a base prefix), an underscore, or anything else.
    #[derive(PartialEq)]
    enum Saw {
        Start,
        Digit,
        Underscore,
        Other,
    }
    let mut saw = Saw::Start;
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = Saw::Digit;
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    for &b in &s[i..] {
        if b.is_ascii_digit() || (hex && b.is_ascii_hexdigit()) {
            saw = Saw::Digit;
        } else if b == b'_' {
            if saw != Saw::Digit {
                return false;
            }
            saw = Saw::Underscore;
        } else if saw == Saw::Underscore {
            return false;
        } else {
            saw = Saw::Other;
        }
    }
    saw != Saw::Underscore
}

/// A hexadecimal mantissa (`1.8`) and its mandatory binary exponent (`p1`).
fn parse_hex(s: &str) -> Option<f64> {
    let (mantissa, exponent) = s.split_once('p')?;
    let exponent: i32 = exponent.parse().ok()?;
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut value = 0f64;
    for c in int.chars().chain(frac.chars()) {
        value = value * 16.0 + f64::from(c.to_digit(16)?);
    }
    let scale = exponent.checked_sub(i32::try_from(frac.len()).ok()?.checked_mul(4)?)?;
    let v = value * 2f64.powi(scale);
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::parse_go_float;

    #[test]
    fn go_float_syntax() {
        assert_eq!(parse_go_float("1.5"), Some(1.5));
        assert_eq!(parse_go_float("-2e3"), Some(-2000.0));
        assert_eq!(parse_go_float("0x1p-2"), Some(0.25));
        assert_eq!(parse_go_float("0x1.8p1"), Some(3.0));
        assert_eq!(parse_go_float("+Inf"), Some(f64::INFINITY));
        assert!(parse_go_float("NaN").is_some_and(f64::is_nan));
        for bad in ["", "+nan", "1e400", "0x10", "1.2.3", "v1", " 1", "1 "] {
            assert_eq!(parse_go_float(bad), None, "{bad:?}");
        }
    }

    /// What Go 1.19's `strconv.ParseFloat` answered for each (run by hand; the Flux oracle
    /// test compares selections with Go on the same machine).
    #[test]
    fn underscores_between_digits_as_go_takes_them() {
        for (text, value) in [
            ("1_000", 1000.0),
            ("1_000.5", 1000.5),
            ("1.0_5", 1.05),
            ("1e1_0", 1e10),
            ("0x1_0p0", 16.0),
            ("0x_1p0", 1.0),
            ("+1_0", 10.0),
            ("1_000_000", 1e6),
        ] {
            assert_eq!(parse_go_float(text), Some(value), "{text:?}");
        }
        for bad in ["1__0", "_1", "1_", "1_e5", "1_.5", "-_1", "inf_"] {
            assert_eq!(parse_go_float(bad), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::{fuzz, text_from};

    #[test]
    fn fuzz_go_floats_parse_or_refuse_without_panicking() {
        fuzz(
            "numerical tags",
            text_from("0123456789.eExXpP+-_abcfinINFaN", 30),
            |text| {
                let _ = parse_go_float(&text);
                Ok(())
            },
        );
    }
}
