//! Promotion windows: the weekly hours, in a named IANA time zone, when promotions into a stage
//! may happen (`promote.windows`), and RFC 3339 times for freezes.
//!
//! Time zones come from `jiff` with its bundled copy of the tz database, so a window means the
//! same in a distroless container without `/usr/share/zoneinfo` as on a laptop, and daylight
//! saving moves the window with the wall clock: "09:00-16:00 Europe/Berlin" is 09:00 Berlin time
//! in winter and in summer. A window whose opening falls into a daylight-saving gap opens at the
//! first wall-clock time after the gap (jiff's "compatible" disambiguation, as most calendars do).

use std::fmt;
use std::time::SystemTime;

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};

/// Minutes in a day; a window's end may be `24:00`.
const DAY: u16 = 24 * 60;

/// One weekly window: on `days`, from `start` to `end` wall-clock time in `zone`. An `end` at or
/// before `start` runs over midnight into the next day (`22:00-02:00` on Friday ends Saturday
/// at 02:00).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Which weekdays the window opens on, Monday first.
    days: [bool; 7],
    /// Minutes after midnight.
    start: u16,
    /// Minutes after midnight, up to 24:00.
    end: u16,
    zone: TimeZone,
    /// What the user wrote, for plans and errors.
    text: String,
}

/// Why a window could not be read; the message names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl Window {
    /// A window from its three settings: `days` like `mon-fri`, `sat,sun` or `mon-wed,fri`
    /// (every day when `None`), `hours` like `09:00-16:00` (the whole day when `None`), and an
    /// IANA `zone` like `Europe/Berlin` (UTC when `None`).
    pub fn parse(
        days: Option<&str>,
        hours: Option<&str>,
        zone: Option<&str>,
    ) -> Result<Window, Error> {
        let day_set = match days {
            Some(text) => parse_days(text)?,
            None => [true; 7],
        };
        let (start, end) = match hours {
            Some(text) => parse_hours(text)?,
            None => (0, DAY),
        };
        let zone_name = zone.unwrap_or("UTC");
        let tz = TimeZone::get(zone_name).map_err(|_| {
            Error(format!(
                "unknown time zone {zone_name:?} (use an IANA name like \"Europe/Berlin\", \"America/New_York\" or \"UTC\")"
            ))
        })?;
        Ok(Window {
            days: day_set,
            start,
            end,
            zone: tz,
            text: format!(
                "{} {} {zone_name}",
                days.unwrap_or("every day"),
                hours.unwrap_or("00:00-24:00")
            ),
        })
    }

    /// Whether a promotion may happen at `at`.
    pub fn contains(&self, at: SystemTime) -> bool {
        let Ok(ts) = Timestamp::try_from(at) else {
            return false;
        };
        let z = ts.to_zoned(self.zone.clone());
        let day = weekday_index(z.weekday());
        let minute = u16::from(z.hour().unsigned_abs()) * 60 + u16::from(z.minute().unsigned_abs());
        if self.start < self.end {
            self.days[day] && self.start <= minute && minute < self.end
        } else {
            (self.days[day] && minute >= self.start)
                || (self.days[(day + 6) % 7] && minute < self.end)
        }
    }

    /// The first time at or after `at` when the window is open.
    pub fn next_open(&self, at: SystemTime) -> Option<SystemTime> {
        if self.contains(at) {
            return Some(at);
        }
        let ts = Timestamp::try_from(at).ok()?;
        let today = ts.to_zoned(self.zone.clone()).date();
        // Within eight days every weekday has come around once.
        (0..=8i64)
            .filter_map(|d| today.checked_add(d.days()).ok())
            .filter(|date| self.days[weekday_index(date.weekday())])
            .filter_map(|date| self.opening(date))
            .find(|open| *open > ts)
            .map(SystemTime::from)
    }

    /// When the window opens on `date`.
    fn opening(&self, date: Date) -> Option<Timestamp> {
        let (h, m) = (self.start / 60, self.start % 60);
        let time = date.at(i8::try_from(h).ok()?, i8::try_from(m).ok()?, 0, 0);
        Some(time.to_zoned(self.zone.clone()).ok()?.timestamp())
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first time at or after `at` when any of `windows` is open; `at` itself when there are
/// none (no window means always open).
pub fn next_open(windows: &[Window], at: SystemTime) -> Option<SystemTime> {
    if windows.is_empty() {
        return Some(at);
    }
    windows.iter().filter_map(|w| w.next_open(at)).min()
}

/// A period when nothing is promoted into the stages it covers: declared in the configuration
/// (`[[freezes]]`, a release calendar) or through the API during an incident.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// `config-N` for the configuration's, a random id for the API's.
    pub id: String,
    /// Why, as the person wrote it.
    pub reason: String,
    /// The approver who set it, or `config`.
    pub by: String,
    /// Pipelines covered; every pipeline when empty.
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// Stages covered (by name, in every covered pipeline); every stage when empty.
    #[serde(default)]
    pub stages: Vec<String>,
    /// When it starts.
    #[serde(with = "rfc3339")]
    pub from: SystemTime,
    /// When it ends by itself; lifted by hand only when `None`.
    #[serde(with = "rfc3339::option", default)]
    pub until: Option<SystemTime>,
}

impl Freeze {
    /// Whether it holds promotions into `pipeline`'s `stage` at `at`.
    pub fn covers(&self, pipeline: &str, stage: &str, at: SystemTime) -> bool {
        (self.pipelines.is_empty() || self.pipelines.iter().any(|p| p == pipeline))
            && (self.stages.is_empty() || self.stages.iter().any(|s| s == stage))
            && self.from <= at
            && self.until.is_none_or(|u| at < u)
    }

    /// Whether it has ended by `at`.
    pub fn ended(&self, at: SystemTime) -> bool {
        self.until.is_some_and(|u| u <= at)
    }
}

/// Formats a time as RFC 3339 in UTC, to the second; times outside 1970..=9999 are clamped
/// (humantime panics before 1970 and fails after 9999; a wrong clock must not stop anything).
pub fn format_time(t: SystemTime) -> String {
    let last = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    humantime::format_rfc3339_seconds(t.clamp(SystemTime::UNIX_EPOCH, last)).to_string()
}

/// Serde for times as RFC 3339 text, so stored freezes read like the API's.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&super::format_time(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_time(&text).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use std::time::SystemTime;

        use serde::{Deserialize as _, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| super::super::parse_time(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Parses an RFC 3339 time with any offset (`2026-12-24T00:00:00Z`, `...+01:00`).
pub fn parse_time(text: &str) -> Result<SystemTime, Error> {
    text.trim()
        .parse::<Timestamp>()
        .map(SystemTime::from)
        .map_err(|_| {
            Error(format!(
                "invalid time {text:?} (use RFC 3339, like \"2026-12-24T09:00:00Z\" or \"2026-12-24T10:00:00+01:00\")"
            ))
        })
}

fn weekday_index(day: Weekday) -> usize {
    usize::try_from(day.to_monday_zero_offset()).unwrap_or(0)
}

/// Day names, short and long, Monday first.
const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

fn day(text: &str) -> Result<usize, Error> {
    let lower = text.trim().to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|(short, long)| lower == *short || lower == *long)
        .ok_or_else(|| {
            Error(format!(
                "unknown day {:?} (use mon, tue, wed, thu, fri, sat, sun)",
                text.trim()
            ))
        })
}

fn parse_days(text: &str) -> Result<[bool; 7], Error> {
    let mut days = [false; 7];
    if text.trim().is_empty() {
        return Err(Error("days is empty (use e.g. \"mon-fri\")".into()));
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                // `fri-mon` wraps over the weekend.
                let mut d = a;
                loop {
                    days[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days[day(part)?] = true,
        }
    }
    Ok(days)
}

fn parse_hours(text: &str) -> Result<(u16, u16), Error> {
    let bad = || {
        Error(format!(
            "invalid hours {text:?} (use HH:MM-HH:MM in 24-hour time, like \"09:00-16:00\"; an end before the start runs past midnight)"
        ))
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let minutes = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
    if start == end || start == DAY {
        return Err(Error(format!(
            "hours {text:?} is an empty window (start and end are the same time)"
        )));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> SystemTime {
        parse_time(text).unwrap()
    }

    fn window(days: &str, hours: &str, zone: &str) -> Window {
        Window::parse(Some(days), Some(hours), Some(zone)).unwrap()
    }

    #[test]
    fn weekday_office_hours_in_a_zone() {
        let w = window("mon-fri", "09:00-16:00", "Europe/Berlin");
        // 2026-12-04 is a Friday; Berlin is UTC+1 in winter.
        assert!(w.contains(at("2026-12-04T08:00:00Z")));
        assert!(!w.contains(at("2026-12-04T07:59:59Z")));
        assert!(!w.contains(at("2026-12-04T15:00:00Z")));
        assert!(!w.contains(at("2026-12-05T10:00:00Z")), "Saturday");
        // Friday after hours: next Monday 09:00 Berlin.
        assert_eq!(
            w.next_open(at("2026-12-04T15:30:00Z")),
            Some(at("2026-12-07T08:00:00Z"))
        );
        // Summer time: 09:00 Berlin is 07:00 UTC.
        assert!(w.contains(at("2026-07-01T07:00:00Z")));
        assert!(!w.contains(at("2026-07-01T06:59:00Z")));
    }

    #[test]
    fn overnight_and_wrapping_days() {
        let w = window("fri", "22:00-02:00", "UTC");
        assert!(w.contains(at("2026-12-04T23:00:00Z")));
        assert!(
            w.contains(at("2026-12-05T01:59:00Z")),
            "Saturday morning belongs to Friday"
        );
        assert!(
            !w.contains(at("2026-12-05T22:30:00Z")),
            "Saturday night does not"
        );
        assert_eq!(
            w.next_open(at("2026-12-05T03:00:00Z")),
            Some(at("2026-12-11T22:00:00Z"))
        );
        let weekend = window("fri-mon", "00:00-24:00", "UTC");
        assert!(weekend.contains(at("2026-12-06T12:00:00Z")), "Sunday");
        assert!(!weekend.contains(at("2026-12-08T12:00:00Z")), "Tuesday");
    }

    #[test]
    fn a_window_opening_in_a_dst_gap_opens_after_it() {
        // Europe/Berlin skips 02:00-03:00 on 2026-03-29 (a Sunday).
        let w = window("sun", "02:30-04:00", "Europe/Berlin");
        let open = w.next_open(at("2026-03-28T12:00:00Z")).unwrap();
        assert_eq!(open, at("2026-03-29T01:30:00Z"), "03:30 CEST");
    }

    #[test]
    fn no_window_is_always_open() {
        let now = SystemTime::now();
        assert_eq!(next_open(&[], now), Some(now));
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        let e = |d: Option<&str>, h: Option<&str>, z: Option<&str>| {
            Window::parse(d, h, z).unwrap_err().to_string()
        };
        assert!(e(None, None, Some("Mars/Olympus")).contains("unknown time zone \"Mars/Olympus\""));
        assert!(e(Some("mon-fry"), None, None).contains("unknown day \"fry\""));
        assert!(e(None, Some("9-17"), None).contains("invalid hours \"9-17\""));
        assert!(e(None, Some("25:00-26:00"), None).contains("invalid hours"));
        assert!(e(None, Some("10:00-10:00"), None).contains("empty window"));
        assert!(e(Some(""), None, None).contains("days is empty"));
        assert!(Window::parse(Some("Monday,wed"), None, None).is_ok());
        assert!(parse_time("tomorrow")
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
        assert_eq!(
            parse_time("2026-12-04T10:00:00+01:00").unwrap(),
            at("2026-12-04T09:00:00Z")
        );
    }
}
