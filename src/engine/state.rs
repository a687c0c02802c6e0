//! What retagd remembers between reconciles: when each digest was first seen as a stage's
//! current tag, for `min_age`. Kept in memory, and in `state_dir/state.json` when configured.
//!
//! Losing the file only restarts the clocks, which delays promotions and never hastens one. The
//! file is replaced atomically (write, fsync, rename), so a crash leaves the old or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// Digests remembered per stage; older ones are forgotten first.
const KEEP_PER_STAGE: usize = 32;
/// A state file larger than this is not ours.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// The remembered first-seen times.
#[derive(Debug, Default)]
pub struct State {
    path: Option<PathBuf>,
    file: File,
    dirty: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// `pipeline/stage` -> digest -> first seen, seconds since the Unix epoch.
    first_seen: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the file failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not ours or is damaged.
    #[error("state file {path} is unreadable ({message}); move it away to start with fresh min_age clocks")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn key(pipeline: &str, stage: &str) -> String {
    format!("{pipeline}/{stage}")
}

impl State {
    /// In memory only.
    pub fn in_memory() -> State {
        State::default()
    }

    /// Loads `dir/state.json` (creating `dir`); a missing file is an empty state.
    pub fn load(dir: &Path) -> Result<State, Error> {
        let path = dir.join("state.json");
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(io(e)),
            Ok(m) if m.len() > MAX_STATE_BYTES => {
                return Err(Error::Corrupt {
                    path,
                    message: format!("{} bytes", m.len()),
                })
            }
            Ok(_) => {
                let text = std::fs::read(&path).map_err(io)?;
                serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
        };
        Ok(State {
            path: Some(path),
            file,
            dirty: false,
        })
    }

    /// When `digest` was first seen as `stage`'s current tag.
    pub fn first_seen(&self, pipeline: &str, stage: &str, digest: &Digest) -> Option<SystemTime> {
        self.file
            .first_seen
            .get(&key(pipeline, stage))?
            .get(digest.as_str())
            .map(|s| UNIX_EPOCH + Duration::from_secs(*s))
    }

    /// Records that `digest` is `stage`'s current tag at `now`, if not seen before.
    pub fn observe(&mut self, pipeline: &str, stage: &str, digest: &Digest, now: SystemTime) {
        let seen = self
            .file
            .first_seen
            .entry(key(pipeline, stage))
            .or_default();
        if seen.contains_key(digest.as_str()) {
            return;
        }
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        seen.insert(digest.to_string(), secs);
        while seen.len() > KEEP_PER_STAGE {
            let oldest = seen
                .iter()
                .min_by_key(|(d, s)| (**s, (*d).clone()))
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => seen.remove(&d),
                None => break,
            };
        }
        self.dirty = true;
    }

    /// Writes the file if anything changed and a `state_dir` is configured.
    pub fn save(&mut self) -> Result<(), Error> {
        let Some(path) = self.path.clone().filter(|_| self.dirty) else {
            return Ok(());
        };
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&self.file).map_err(|e| Error::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&text).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn first_seen_survives_a_restart_and_is_never_moved_later() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut state = State::load(dir.path()).unwrap();
        state.observe("p", "dev", &digest(1), t0);
        state.observe("p", "dev", &digest(1), t0 + Duration::from_secs(60));
        state.save().unwrap();
        let state = State::load(dir.path()).unwrap();
        assert_eq!(state.first_seen("p", "dev", &digest(1)), Some(t0));
        assert_eq!(state.first_seen("p", "rc", &digest(1)), None);
    }

    #[test]
    fn old_digests_are_forgotten_and_damaged_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::load(dir.path()).unwrap();
        for n in 0..40u8 {
            state.observe(
                "p",
                "dev",
                &digest(n),
                UNIX_EPOCH + Duration::from_secs(u64::from(n)),
            );
        }
        assert_eq!(state.first_seen("p", "dev", &digest(0)), None);
        assert!(state.first_seen("p", "dev", &digest(39)).is_some());
        std::fs::write(dir.path().join("state.json"), "{\"first_seen\": [").unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("state.json is unreadable"), "{e}");
    }
}
