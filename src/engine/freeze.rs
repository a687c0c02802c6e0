//! The freezes in force: the configuration's calendar (`[[freezes]]`) and those set through
//! the API, which live in `state_dir/freezes.json` and survive a restart.
//!
//! Unlike the first-seen times, a lost freeze would let promotions resume during an incident, so
//! a damaged file stops the start with an error instead of being moved aside, and a freeze that
//! cannot be written is refused rather than kept in memory only. Only the daemon writes the file;
//! `retagd promote` and `retagd reconcile` read it, so they honour the daemon's freezes.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::state::{self, Error};
use crate::calendar::Freeze;

/// Freezes set through the API at once; more is a runaway script.
pub const MAX_FREEZES: usize = 100;
/// A freezes file larger than this is not ours.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// The calendar and the freezes set through the API.
#[derive(Debug, Default)]
pub struct Freezes {
    path: Option<PathBuf>,
    calendar: Vec<Freeze>,
    set: Vec<Freeze>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    freezes: Vec<Freeze>,
}

/// Why a freeze could not be set or lifted.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// No freeze has this id.
    #[error("no freeze {0:?}")]
    Unknown(String),
    /// The freeze comes from the configuration.
    #[error("freeze {0:?} is in the configuration's [[freezes]]; remove it there and reload")]
    Configured(String),
    /// Too many freezes are set.
    #[error("{MAX_FREEZES} freezes are set already; lift some first")]
    TooMany,
    /// The file could not be read or written; nothing changed.
    #[error(transparent)]
    Store(#[from] Error),
    /// The file is not ours or is damaged.
    #[error("freezes file {path} is unreadable ({message}); fix it, or remove it to lift every freeze set through the API")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Freezes {
    /// In memory only (no `state_dir`).
    pub fn in_memory() -> Freezes {
        Freezes::default()
    }

    /// Loads `dir/freezes.json`; a missing file holds none.
    pub fn load(dir: &Path) -> Result<Freezes, FreezeError> {
        let path = dir.join("freezes.json");
        let corrupt = |message: String| FreezeError::Damaged {
            path: path.clone(),
            message,
        };
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let set = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e).into()),
            Ok(m) if m.len() > MAX_FILE_BYTES => return Err(corrupt(format!("{} bytes", m.len()))),
            Ok(_) => {
                let bytes = std::fs::read(&path).map_err(io)?;
                let file: File =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                file.freezes
            }
        };
        Ok(Freezes {
            path: Some(path),
            calendar: Vec::new(),
            set,
        })
    }

    /// Replaces the configuration's freezes (at start and on reload).
    pub fn set_calendar(&mut self, calendar: Vec<Freeze>) {
        self.calendar = calendar;
    }

    /// Every freeze not over at `now`, the configuration's first, each in order of start.
    pub fn current(&self, now: SystemTime) -> Vec<Freeze> {
        self.calendar
            .iter()
            .chain(&self.set)
            .filter(|f| !f.ended(now))
            .cloned()
            .collect()
    }

    /// Adds `freeze` and writes the file; on a write error nothing is added.
    pub fn add(&mut self, freeze: Freeze, now: SystemTime) -> Result<(), FreezeError> {
        let mut set: Vec<Freeze> = self.set.iter().filter(|f| !f.ended(now)).cloned().collect();
        if set.len() >= MAX_FREEZES {
            return Err(FreezeError::TooMany);
        }
        set.push(freeze);
        self.replace(set)
    }

    /// Lifts the freeze `id`, or every freeze set through the API when `None`, and returns
    /// what was lifted. The configuration's freezes stay (they are lifted by editing it).
    pub fn lift(&mut self, id: Option<&str>, now: SystemTime) -> Result<Vec<Freeze>, FreezeError> {
        let (lifted, kept): (Vec<Freeze>, Vec<Freeze>) = self
            .set
            .iter()
            .filter(|f| !f.ended(now))
            .cloned()
            .partition(|f| id.is_none_or(|id| f.id == id));
        if let (Some(id), true) = (id, lifted.is_empty()) {
            return Err(if self.calendar.iter().any(|f| f.id == id) {
                FreezeError::Configured(id.to_string())
            } else {
                FreezeError::Unknown(id.to_string())
            });
        }
        self.replace(kept)?;
        Ok(lifted)
    }

    /// Writes `set` to the file (if any), then keeps it.
    fn replace(&mut self, set: Vec<Freeze>) -> Result<(), FreezeError> {
        if let Some(path) = &self.path {
            let file = File { freezes: set };
            let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::Corrupt {
                path: path.clone(),
                message: e.to_string(),
            })?;
            state::write_atomically(path, &bytes).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            self.set = file.freezes;
        } else {
            self.set = set;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    fn freeze(id: &str, from: SystemTime, until: Option<SystemTime>) -> Freeze {
        Freeze {
            id: id.into(),
            reason: "incident 42".into(),
            by: "alice".into(),
            pipelines: vec!["app".into()],
            stages: vec![],
            from,
            until,
        }
    }

    #[test]
    fn freezes_survive_a_restart_and_lifting_one_keeps_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut store = Freezes::load(dir.path()).unwrap();
        store.add(freeze("a", now, None), now).unwrap();
        store
            .add(freeze("b", now, Some(now + Duration::from_secs(60))), now)
            .unwrap();
        let mut store = Freezes::load(dir.path()).unwrap();
        assert_eq!(store.current(now).len(), 2);
        assert_eq!(store.lift(Some("a"), now).unwrap()[0].id, "a");
        let store = Freezes::load(dir.path()).unwrap();
        let left: Vec<String> = store.current(now).into_iter().map(|f| f.id).collect();
        assert_eq!(left, ["b"]);
        // An ended freeze is no longer listed.
        assert!(store.current(now + Duration::from_secs(61)).is_empty());
    }

    #[test]
    fn configured_freezes_are_not_lifted_through_the_api() {
        let now = SystemTime::now();
        let mut store = Freezes::in_memory();
        store.set_calendar(vec![freeze(
            "config-1",
            now,
            Some(now + Duration::from_secs(9)),
        )]);
        store.add(freeze("x", now, None), now).unwrap();
        assert!(matches!(
            store.lift(Some("config-1"), now),
            Err(FreezeError::Configured(_))
        ));
        assert!(matches!(
            store.lift(Some("nope"), now),
            Err(FreezeError::Unknown(_))
        ));
        assert_eq!(store.lift(None, now).unwrap().len(), 1);
        assert_eq!(store.current(now).len(), 1, "the calendar's stays");
    }

    #[test]
    fn a_damaged_file_stops_the_start_instead_of_dropping_freezes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("freezes.json"), "{\"freezes\": [").unwrap();
        let e = Freezes::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("freezes.json"), "{e}");
    }

    #[test]
    fn an_unwritable_file_refuses_the_freeze() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Freezes::load(&dir.path().join("gone")).unwrap();
        let now = SystemTime::now();
        assert!(store.add(freeze("a", now, None), now).is_err());
        assert!(store.current(now).is_empty());
    }
}
