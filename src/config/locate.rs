//! Where a key path is in the file: line and column for each problem.
//!
//! figment's merged tree keeps no positions, so the file is read a second time, by the format's
//! own deserializer, with a visitor that walks down the key path and stops with a marker error at
//! the target; both parsers stamp an error with the position of the key or value being read
//! (`toml` as a byte span, `serde_yaml` as line and column). Only problems are located, so the
//! extra parse is paid only when a file is wrong. A key set by an environment variable alone has
//! no position.

use std::fmt;

use figment::value::Value;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Format;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// A key of a table.
    Key(String),
    /// An element of an array.
    Index(usize),
}

/// A line and column, both counted from 1 (the column in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1.
    pub column: usize,
}

/// The marker error the walk stops with; no real parser message contains it.
const HERE: &str = "\u{1}retagd-located\u{1}";

/// Splits a printed key path (`pipelines[0].stages[2].promote.from`) into steps, using `tree` to
/// tell a key with dots in it (a registry named `registry.example`) from a nested key.
pub(super) fn segments(tree: &Value, path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut node = Some(tree);
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { break };
            let Ok(index) = after[..end].parse::<usize>() else {
                break;
            };
            out.push(Seg::Index(index));
            node = match node {
                Some(Value::Array(_, items)) => items.get(index),
                _ => None,
            };
            rest = after[end + 1..].trim_start_matches('.');
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        // The longest run of dotted parts that is a key of this table.
        let key = match node {
            Some(Value::Dict(_, dict)) => rest
                .char_indices()
                .filter(|&(i, c)| i > 0 && (c == '.' || c == '['))
                .map(|(i, _)| i)
                .chain([rest.len()])
                .rev()
                .find(|&i| dict.contains_key(&rest[..i]))
                .unwrap_or(end),
            _ => end,
        };
        let name = &rest[..key];
        node = match node {
            Some(Value::Dict(_, dict)) => dict.get(name),
            _ => None,
        };
        out.push(Seg::Key(name.to_string()));
        rest = rest[key..].trim_start_matches('.');
    }
    out
}

/// Where `path` is in `text`: the key's position for a key, the element's for an array element,
/// or the nearest enclosing one the file has (a missing key is reported at its table); `None`
/// when the file has none of it (an environment variable set it) or cannot be read.
pub(super) fn position(text: &str, format: Format, path: &[Seg]) -> Option<Position> {
    (1..=path.len())
        .rev()
        .find_map(|len| exact_position(text, format, &path[..len]))
}

/// Where exactly `path` is, if the file has it.
fn exact_position(text: &str, format: Format, path: &[Seg]) -> Option<Position> {
    let walk = Walk { path };
    match format {
        Format::Toml => {
            let e = walk.deserialize(toml::Deserializer::new(text)).err()?;
            if !e.message().contains(HERE) {
                return None;
            }
            let start = e.span()?.start;
            Some(position_of(text, start))
        }
        Format::Yaml => {
            let e = walk
                .deserialize(serde_yaml::Deserializer::from_str(text))
                .err()?;
            if !e.to_string().contains(HERE) {
                return None;
            }
            let at = e.location()?;
            Some(Position {
                line: at.line(),
                column: at.column(),
            })
        }
    }
}

/// The line and column of a byte offset.
fn position_of(text: &str, offset: usize) -> Position {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

/// Walks down `path`; fails with [`HERE`] at its end.
struct Walk<'a> {
    path: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    // Every visit this walk does not override fails with `invalid_type`, whose message quotes
    // this: so a leaf at the end of the path reports [`HERE`] at its own position.
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(HERE)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        while let Some(found) = map.next_key_seed(KeyIs {
            want,
            here: rest.is_empty(),
        })? {
            if found {
                return map.next_value_seed(Walk { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.path.split_first() else {
            return Err(de::Error::custom(HERE));
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Walk { path: rest })?;
        Ok(())
    }
}

/// Reads a key: whether it is `want`, failing at it when it is the end of the path.
struct KeyIs<'a> {
    want: &'a str,
    here: bool,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if key == self.want && self.here {
            return Err(E::custom(HERE));
        }
        Ok(key == self.want)
    }

    // Numbers and booleans as YAML keys are compared as written.
    fn visit_u64<E: de::Error>(self, key: u64) -> Result<bool, E> {
        self.visit_str(&key.to_string())
    }

    fn visit_i64<E: de::Error>(self, key: i64) -> Result<bool, E> {
        self.visit_str(&key.to_string())
    }

    fn visit_bool<E: de::Error>(self, key: bool) -> Result<bool, E> {
        self.visit_str(&key.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = "[server]\nlisten = \"x\"\n\n[[pipelines]]\nname = \"a\"\n\n[[pipelines.stages]]\nname = \"dev\"\n\n[[pipelines.stages]]\nname = \"rc\"\n  min_age = \"1h\"\npromote = { from = \"dev\", tag = \"t\" }\n";
    const YAML: &str = "server:\n  listen: x\npipelines:\n  - name: a\n    stages:\n      - name: dev\n      - name: rc\n        min_age: 1h\n        promote: { from: dev, tag: t }\n";

    fn seg(path: &str) -> Vec<Seg> {
        let tree = figment::Figment::from(figment::providers::Serialized::defaults(
            serde_json::json!({"registries": {"reg.example": {"url": "x"}}}),
        ))
        .extract::<Value>()
        .expect("value");
        segments(&tree, path)
    }

    #[test]
    fn paths_split_into_keys_and_indices_and_dotted_names_stay_whole() {
        assert_eq!(
            seg("pipelines[0].stages[1].promote.from"),
            [
                Seg::Key("pipelines".into()),
                Seg::Index(0),
                Seg::Key("stages".into()),
                Seg::Index(1),
                Seg::Key("promote".into()),
                Seg::Key("from".into()),
            ]
        );
        assert_eq!(
            seg("registries.reg.example.url"),
            [
                Seg::Key("registries".into()),
                Seg::Key("reg.example".into()),
                Seg::Key("url".into()),
            ]
        );
    }

    #[test]
    fn keys_values_and_elements_are_found_in_both_formats() {
        let at =
            |format, text, path| position(text, format, &seg(path)).map(|p| (p.line, p.column));
        assert_eq!(at(Format::Toml, TOML, "server.listen"), Some((2, 1)));
        assert_eq!(
            at(Format::Toml, TOML, "pipelines[0].stages[1].min_age"),
            Some((12, 3))
        );
        assert_eq!(
            at(Format::Toml, TOML, "pipelines[0].stages[1].promote.tag"),
            Some((13, 27))
        );
        assert_eq!(at(Format::Yaml, YAML, "server.listen"), Some((2, 3)));
        assert_eq!(
            at(Format::Yaml, YAML, "pipelines[0].stages[1].min_age"),
            Some((8, 9))
        );
        assert_eq!(
            at(Format::Yaml, YAML, "pipelines[0].stages[1].promote.tag"),
            Some((9, 31))
        );
        assert_eq!(
            at(Format::Yaml, YAML, "pipelines[0].stages[1]").map(|p| p.0),
            Some(7)
        );
        // What the file lacks is shown at its nearest enclosing key.
        assert_eq!(
            at(Format::Toml, TOML, "server.api_token_file"),
            Some((1, 2))
        );
        assert_eq!(at(Format::Yaml, YAML, "pipelines[3]"), Some((3, 1)));
        assert_eq!(at(Format::Yaml, YAML, "webhooks.secret_file"), None);
        assert_eq!(at(Format::Yaml, "{[", "server"), None);
    }
}
