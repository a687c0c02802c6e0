//! Unknown keys, missing keys and wrong types: every one in the file, not just the first.
//!
//! serde stops at the first error, so the tree is deserialized again after each one with that
//! error repaired: an unknown key is removed; a missing key or a value of the wrong type is
//! replaced by an empty value of the right type (a placeholder). The semantic checks then run on
//! the repaired file, and their problems at or under a placeholder are dropped (an empty
//! placeholder name is not a second mistake of the user's).
//!
//! Messages describe types in the file's words ("a table", "a whole number") and never quote the
//! value found, which may be a secret typed in the wrong place.

use figment::error::{Actual, Kind};
use figment::value::{Dict, Value};
use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_path_to_error::Segment;

use super::locate::Seg;
use super::{raw, Problem};

/// Each repair deserializes the whole file again, so a file wrong everywhere would cost time
/// quadratic in its size; after this many (as compilers stop after so many errors) the rest is
/// left for the next run.
const MAX_REPAIRS: usize = 50;

/// What deserializing with repairs found.
pub(super) struct Shaped {
    /// The file, when every error could be repaired.
    pub file: Option<raw::File>,
    /// One problem per unknown key, missing key and wrong type.
    pub problems: Vec<Problem>,
    /// Paths holding a placeholder now.
    pub placeholders: Vec<String>,
}

impl Shaped {
    /// Records `problem` unless it is about a placeholder.
    fn report(&mut self, problem: Problem) {
        if !self.is_repaired(&problem.path) {
            self.problems.push(problem);
        }
    }

    /// Whether `path` is at or under a placeholder.
    pub fn is_repaired(&self, path: &str) -> bool {
        self.placeholders.iter().any(|p| {
            path == p
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
                || p == "."
        })
    }
}

/// Deserializes `tree` into the raw file, collecting every shape problem. The tree is copied
/// only when it needs a repair.
pub(super) fn deserialize(tree: &Value) -> Shaped {
    let mut shaped = Shaped {
        file: None,
        problems: Vec::new(),
        placeholders: Vec::new(),
    };
    if let Ok(file) = raw::File::deserialize(tree) {
        shaped.file = Some(file);
        return shaped;
    }
    let mut tree = tree.clone();
    for _ in 0..MAX_REPAIRS {
        let e = match serde_path_to_error::deserialize::<_, raw::File>(&tree) {
            Ok(file) => {
                shaped.file = Some(file);
                return shaped;
            }
            Err(e) => e,
        };
        let path = e.path().to_string();
        let segs: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Enum { .. } | Segment::Unknown => None,
            })
            .collect();
        let repaired = match &e.inner().kind {
            Kind::UnknownField(key, expected) => {
                shaped.report(Problem::new(&path, unknown_key(&path, key, expected)));
                remove(&mut tree, &segs)
            }
            Kind::MissingField(key) => {
                let mut at = segs.clone();
                at.push(Seg::Key(key.to_string()));
                let path = join(&path, key);
                shaped.report(Problem::new(&path, "missing (this key is required)"));
                shaped.placeholders.push(path);
                // A string first; a wrong guess comes back as a wrong type at a placeholder.
                set(&mut tree, &at, Value::from(String::new()))
            }
            Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
                let is_placeholder = shaped.placeholders.contains(&path);
                if !is_placeholder {
                    shaped.report(Problem::new(&path, wrong_type(&path, actual, expected)));
                    shaped.placeholders.push(path.clone());
                }
                match placeholder(expected) {
                    Some(value) => set(&mut tree, &segs, value),
                    None => false,
                }
            }
            other => {
                shaped.report(Problem::new(&path, other.to_string()));
                false
            }
        };
        if !repaired {
            return shaped;
        }
    }
    shaped.problems.push(Problem::new(
        ".",
        format!(
            "stopped after {MAX_REPAIRS} unknown keys and wrong types; fix these and check again"
        ),
    ));
    shaped
}

/// `parent.key`, or `key` at the top.
fn join(parent: &str, key: &str) -> String {
    if parent == "." {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// An empty value of the type serde expected.
fn placeholder(expected: &str) -> Option<Value> {
    Some(match expected {
        "a string" => Value::from(String::new()),
        "a sequence" => Value::from(Vec::<Value>::new()),
        "a boolean" => Value::from(false),
        "f64" | "f32" => Value::from(0.0f64),
        "u8" | "u16" | "u32" | "u64" | "usize" => Value::from(0u64),
        _ if expected.starts_with("struct ") || expected == "a map" => Value::from(Dict::new()),
        _ => return None,
    })
}

/// The value at `segs`.
fn get_mut<'a>(tree: &'a mut Value, segs: &[Seg]) -> Option<&'a mut Value> {
    segs.iter().try_fold(tree, |node, seg| match (node, seg) {
        (Value::Dict(_, dict), Seg::Key(key)) => dict.get_mut(key),
        (Value::Array(_, items), Seg::Index(i)) => items.get_mut(*i),
        _ => None,
    })
}

/// Removes the key at `segs`; false when there is none.
fn remove(tree: &mut Value, segs: &[Seg]) -> bool {
    let Some((Seg::Key(key), parent)) = segs.split_last() else {
        return false;
    };
    match get_mut(tree, parent) {
        Some(Value::Dict(_, dict)) => dict.remove(key).is_some(),
        _ => false,
    }
}

/// Puts `value` at `segs`; false when its parent is not there.
fn set(tree: &mut Value, segs: &[Seg], value: Value) -> bool {
    let Some((last, parent)) = segs.split_last() else {
        return false;
    };
    match (get_mut(tree, parent), last) {
        (Some(Value::Dict(_, dict)), Seg::Key(key)) => {
            dict.insert(key.clone(), value);
            true
        }
        (Some(Value::Array(_, items)), Seg::Index(i)) if *i < items.len() => {
            items[*i] = value;
            true
        }
        _ => false,
    }
}

/// Keys that take a duration string.
const DURATION_KEYS: [&str; 3] = ["interval", "min_age", "window"];

/// "expected a string, found a number", in the file's words, and never the value itself.
fn wrong_type(path: &str, actual: &Actual, expected: &str) -> String {
    let key = path.rsplit('.').next().unwrap_or(path);
    let found = match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Seq => "a list",
        Actual::Map => "a table",
        Actual::Unit | Actual::Option => "nothing",
        _ => "another kind of value",
    };
    let expected = match expected {
        "a string" => "a string".to_string(),
        "a sequence" => "a list".to_string(),
        "a boolean" => "true or false".to_string(),
        "f64" | "f32" => "a number".to_string(),
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number, 0 or more".to_string(),
        other => match other.strip_prefix("struct ") {
            Some(name) => match struct_fields(name) {
                Some(keys) => format!("a table with the keys {}", keys.join(", ")),
                None => "a table of keys".to_string(),
            },
            None if other == "a map" => "a table of keys".to_string(),
            None => other.to_string(),
        },
    };
    let mut message = if expected.starts_with("a whole number") {
        match actual {
            Actual::Signed(v) if *v < 0 => format!("expected {expected}, found a negative number"),
            Actual::Signed(_) | Actual::Unsigned(_) => {
                format!("expected {expected}, found one too large")
            }
            Actual::Float(_) => format!("expected {expected}, found a fraction"),
            _ => format!("expected {expected}, found {found}"),
        }
    } else {
        format!("expected {expected}, found {found}")
    };
    if DURATION_KEYS.contains(&key) && found != "a string" {
        message.push_str(" (durations are strings with a unit, e.g. \"90s\", \"24h\")");
    } else if key == "range" && found != "a string" {
        message.push_str(" (a semver range is a string, e.g. \">=1.0.0\")");
    }
    message
}

/// "unknown key", with the likely fix: a near-miss of a key that exists here, or the same key
/// one level down (`min_age` on a stage is `promote.min_age`).
fn unknown_key(path: &str, key: &str, expected: &[&str]) -> String {
    if key == "password" {
        return "unknown key (secrets never go in the config file: use password_file or docker_config)"
            .to_string();
    }
    let mut hint = None;
    if let Some(near) = nearest(key, expected.iter().copied()) {
        hint = Some(near.to_string());
    }
    if hint.is_none() {
        let nested: &[(&str, Vec<&'static str>)] = &[
            ("promote", fields::<raw::Promote>()),
            ("filter_tags", fields::<raw::FilterTags>()),
            ("policy", fields::<raw::Policy>()),
            ("policy.semver", fields::<raw::Semver>()),
            ("server", fields::<raw::Server>()),
            ("defaults", fields::<raw::Defaults>()),
            ("webhooks", fields::<raw::Webhooks>()),
        ];
        for (parent, children) in nested {
            // Only a child of a table that belongs here (`promote.` on a stage).
            let root = parent.split('.').next().unwrap_or(parent);
            if !expected.contains(&root) {
                continue;
            }
            if let Some(near) = nearest(key, children.iter().copied()) {
                hint = Some(format!("{parent}.{near}"));
                break;
            }
        }
    }
    let parent = path.rsplit_once('.').map_or("", |(p, _)| p);
    match hint {
        Some(fix) => {
            let at = if parent.is_empty() {
                fix
            } else {
                format!("{parent}.{fix}")
            };
            format!("unknown key (did you mean {at}?)")
        }
        None => format!("unknown key (expected one of: {})", expected.join(", ")),
    }
}

/// The candidate `key` is most likely a misspelling of: the same apart from case and `-`/`_`,
/// or within an edit distance of about a third of its length.
fn nearest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let fold = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], "");
    let folded = fold(key);
    let limit = (key.chars().count() / 3).max(1);
    candidates
        .map(|c| (strsim::damerau_levenshtein(&folded, &fold(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// The keys of a raw struct serde names in "expected struct Semver".
fn struct_fields(name: &str) -> Option<Vec<&'static str>> {
    Some(match name {
        "Semver" => fields::<raw::Semver>(),
        "Ordered" => fields::<raw::Ordered>(),
        "Policy" => fields::<raw::Policy>(),
        "FilterTags" => fields::<raw::FilterTags>(),
        "Promote" => fields::<raw::Promote>(),
        "Referrers" => fields::<raw::Referrers>(),
        "Verify" => fields::<raw::Verify>(),
        "Window" => fields::<raw::Window>(),
        _ => return None,
    })
}

/// The keys a raw struct accepts, as serde's own unknown-key error lists them.
fn fields<T: DeserializeOwned>() -> Vec<&'static str> {
    let mut probe = Dict::new();
    probe.insert("\u{0}".to_string(), Value::from(0u64));
    match Value::from(probe).deserialize::<T>() {
        Err(e) => match e.kind {
            Kind::UnknownField(_, expected) => expected.to_vec(),
            _ => Vec::new(),
        },
        Ok(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_wrong_everywhere_is_reported_up_to_a_limit() {
        let mut text = String::from("[registries.r]\nurl = \"http://127.0.0.1:5000\"\n");
        for i in 0..80 {
            text.push_str(&format!(
                "[[pipelines]]\nname = \"p{i}\"\nregistry = \"r\"\nrepository = \"x/p{i}\"\nbogus = 1\n[[pipelines.stages]]\nname = \"dev\"\npolicy = {{ semver = {{ range = \"*\" }} }}\n"
            ));
        }
        let started = std::time::Instant::now();
        let Err(super::super::Error::Invalid { problems, .. }) =
            super::super::parse(&text, super::super::Format::Toml, "f.toml")
        else {
            panic!("invalid");
        };
        assert_eq!(problems.len(), MAX_REPAIRS + 1);
        assert!(problems[MAX_REPAIRS]
            .message
            .starts_with("stopped after 50"));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn raw_structs_list_their_keys() {
        assert!(fields::<raw::Promote>().contains(&"min_age"));
        assert!(fields::<raw::Server>().contains(&"listen"));
    }

    #[test]
    fn near_misses_and_keys_one_level_down_are_suggested() {
        let stage = fields::<raw::Stage>();
        assert_eq!(
            unknown_key("pipelines[0].stages[1].min_age", "min_age", &stage),
            "unknown key (did you mean pipelines[0].stages[1].promote.min_age?)"
        );
        assert_eq!(
            unknown_key("pipelines[0].stages[1].filtertags", "filtertags", &stage),
            "unknown key (did you mean pipelines[0].stages[1].filter_tags?)"
        );
        assert_eq!(
            unknown_key(
                "pipelines[0].stages[1].promote.minAge",
                "minAge",
                &fields::<raw::Promote>()
            ),
            "unknown key (did you mean pipelines[0].stages[1].promote.min_age?)"
        );
        assert_eq!(
            unknown_key("listen", "listen", &fields::<raw::File>()),
            "unknown key (did you mean server.listen?)"
        );
        assert!(
            unknown_key("x.zzz", "zzz", &stage).starts_with("unknown key (expected one of: name,")
        );
    }
}
