//! What retagd remembers between reconciles: when each digest was first seen as a stage's
//! current tag, for `min_age`; and which digest it wrote under each tag it promoted, to notice
//! drift (a tag moved by someone else). Kept in memory, and in `state_dir/state.json` when
//! configured.
//!
//! Losing the file only restarts the clocks, which delays promotions and never hastens one, and
//! forgets what drift is measured against (the registry's promotion records still say it). So a
//! damaged file is moved aside with a warning rather than stopping the daemon. Saving takes an
//! exclusive lock on `state.lock`, merges with what is on disk (the earliest sighting wins, so a
//! `retagd promote` next to the daemon loses nothing), writes a temporary file of its own,
//! fsyncs it, renames it over `state.json` and fsyncs the directory: a crash leaves the old file
//! or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// Digests remembered per stage; older ones are forgotten first.
const KEEP_PER_STAGE: usize = 32;
/// Tags written remembered per stage, for drift; older ones are forgotten first.
const KEEP_WRITTEN_PER_STAGE: usize = 64;
/// A state file larger than this is not ours.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// The remembered first-seen times.
#[derive(Debug, Default)]
pub struct State {
    path: Option<PathBuf>,
    file: File,
    dirty: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// `pipeline/stage` -> digest -> first seen, seconds since the Unix epoch.
    first_seen: BTreeMap<String, BTreeMap<String, u64>>,
    /// `pipeline/stage` -> tag -> what retagd last wrote under it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    written: BTreeMap<String, BTreeMap<String, Written>>,
}

/// A tag retagd wrote: the digest and when (seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    digest: String,
    at: u64,
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

    /// Loads `dir/state.json` (creating `dir`); a missing file is an empty state, a damaged one
    /// is moved to `state.json.damaged` and replaced by an empty state.
    pub fn load(dir: &Path) -> Result<State, Error> {
        let path = dir.join("state.json");
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let file = match read(&path) {
            Ok(file) => file,
            Err(Error::Corrupt { path, message }) => {
                let aside = path.with_extension("json.damaged");
                tracing::warn!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    problem = %message,
                    "state file is damaged; starting with fresh min_age clocks"
                );
                std::fs::rename(&path, &aside).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                File::default()
            }
            Err(e) => return Err(e),
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
        prune(seen);
        self.dirty = true;
    }

    /// Records that retagd wrote `digest` under `stage`'s `tag` at `now`.
    pub fn wrote(
        &mut self,
        pipeline: &str,
        stage: &str,
        tag: &str,
        digest: &Digest,
        now: SystemTime,
    ) {
        let at = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let tags = self.file.written.entry(key(pipeline, stage)).or_default();
        tags.insert(
            tag.to_string(),
            Written {
                digest: digest.to_string(),
                at,
            },
        );
        prune_written(tags);
        self.dirty = true;
    }

    /// The digest retagd last wrote under `stage`'s `tag`, if it wrote one (and remembers it).
    pub fn written(&self, pipeline: &str, stage: &str, tag: &str) -> Option<Digest> {
        self.file
            .written
            .get(&key(pipeline, stage))?
            .get(tag)?
            .digest
            .parse()
            .ok()
    }

    /// Every tag of `stage` retagd wrote and remembers, with its digest, the most recently
    /// written first.
    pub fn written_tags(&self, pipeline: &str, stage: &str) -> Vec<(String, Digest)> {
        let mut tags: Vec<(&String, &Written)> = self
            .file
            .written
            .get(&key(pipeline, stage))
            .into_iter()
            .flatten()
            .collect();
        tags.sort_by(|a, b| b.1.at.cmp(&a.1.at).then_with(|| a.0.cmp(b.0)));
        tags.into_iter()
            .filter_map(|(tag, w)| Some((tag.clone(), w.digest.parse().ok()?)))
            .collect()
    }

    /// Writes the file if anything changed and a `state_dir` is configured; see the module docs.
    pub fn save(&mut self) -> Result<(), Error> {
        match self.snapshot() {
            Some(snapshot) => snapshot.write(),
            None => Ok(()),
        }
    }

    /// What [`State::save`] would write, taken now and written later by [`Snapshot::write`], so
    /// the file I/O happens outside whatever lock guards the state; `None` when nothing changed
    /// or there is no file.
    pub fn snapshot(&mut self) -> Option<Snapshot> {
        let path = self.path.clone().filter(|_| self.dirty)?;
        self.dirty = false;
        Some(Snapshot {
            path,
            file: self.file.clone(),
        })
    }

    /// After a [`Snapshot::write`] failed: the next save tries again.
    pub fn mark_unsaved(&mut self) {
        self.dirty = self.path.is_some();
    }
}

/// The state as it was when a save was asked for.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    file: File,
}

impl Snapshot {
    /// Writes it; see the module docs.
    pub fn write(mut self) -> Result<(), Error> {
        let path = self.path.clone();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("state.lock"))
            .map_err(io)?;
        lock.lock().map_err(io)?;
        // What another process saved since we loaded: keep the earliest sighting of each.
        if let Ok(on_disk) = read(&path) {
            for (stage, seen) in on_disk.first_seen {
                let ours = self.file.first_seen.entry(stage).or_default();
                for (digest, at) in seen {
                    let entry = ours.entry(digest).or_insert(at);
                    *entry = (*entry).min(at);
                }
                prune(ours);
            }
            // The later write of each tag wins.
            for (stage, tags) in on_disk.written {
                let ours = self.file.written.entry(stage).or_default();
                for (tag, theirs) in tags {
                    match ours.get(&tag) {
                        Some(mine) if mine.at >= theirs.at => {}
                        _ => {
                            ours.insert(tag, theirs);
                        }
                    }
                }
                prune_written(ours);
            }
        }
        let text = serde_json::to_vec_pretty(&self.file).map_err(|e| Error::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        write_atomically(&path, &text).map_err(io)?;
        Ok(())
    }
}

/// Writes `path` so that a crash leaves the old file or the new one: a temporary file beside it,
/// fsynced, renamed over it, and the directory fsynced.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        use std::io::Write as _;
        let mut f = tmp.as_file();
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// Reads and parses the state file; a missing one is empty.
fn read(path: &Path) -> Result<File, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(io(e)),
        Ok(m) if m.len() > MAX_STATE_BYTES => Err(Error::Corrupt {
            path: path.to_path_buf(),
            message: format!("{} bytes", m.len()),
        }),
        Ok(_) => {
            let text = std::fs::read(path).map_err(io)?;
            serde_json::from_slice(&text).map_err(|e| Error::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        }
    }
}

/// Keeps the newest [`KEEP_PER_STAGE`] sightings of a stage.
fn prune(seen: &mut BTreeMap<String, u64>) {
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
}

/// Keeps the [`KEEP_WRITTEN_PER_STAGE`] most recently written tags of a stage.
fn prune_written(tags: &mut BTreeMap<String, Written>) {
    while tags.len() > KEEP_WRITTEN_PER_STAGE {
        let oldest = tags
            .iter()
            .min_by_key(|(t, w)| (w.at, (*t).clone()))
            .map(|(t, _)| t.clone());
        match oldest {
            Some(t) => tags.remove(&t),
            None => break,
        };
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
        let state = State::load(dir.path()).unwrap();
        assert_eq!(state.first_seen("p", "dev", &digest(39)), None);
        assert!(dir.path().join("state.json.damaged").exists());
    }

    #[test]
    fn two_writers_merge_keeping_the_earliest_sighting() {
        let dir = tempfile::tempdir().unwrap();
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let mut daemon = State::load(dir.path()).unwrap();
        let mut cli = State::load(dir.path()).unwrap();
        daemon.observe("p", "dev", &digest(1), t(100));
        cli.observe("p", "dev", &digest(1), t(50));
        cli.observe("p", "rc", &digest(2), t(60));
        daemon.save().unwrap();
        cli.save().unwrap();
        let merged = State::load(dir.path()).unwrap();
        assert_eq!(merged.first_seen("p", "dev", &digest(1)), Some(t(50)));
        assert_eq!(merged.first_seen("p", "rc", &digest(2)), Some(t(60)));
    }

    #[test]
    fn written_tags_survive_a_restart_and_the_later_write_wins_a_merge() {
        let dir = tempfile::tempdir().unwrap();
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let mut daemon = State::load(dir.path()).unwrap();
        let mut cli = State::load(dir.path()).unwrap();
        daemon.wrote("p", "release", "v1", &digest(1), t(100));
        cli.wrote("p", "release", "v1", &digest(2), t(200));
        cli.wrote("p", "release", "v2", &digest(3), t(50));
        cli.save().unwrap();
        daemon.save().unwrap();
        let merged = State::load(dir.path()).unwrap();
        assert_eq!(merged.written("p", "release", "v1"), Some(digest(2)));
        assert_eq!(merged.written("p", "release", "v2"), Some(digest(3)));
        assert_eq!(merged.written("p", "rc", "v1"), None);
        let mut many = State::load(dir.path()).unwrap();
        for n in 0..70u8 {
            many.wrote(
                "p",
                "rc",
                &format!("t{n}"),
                &digest(n),
                t(1000 + u64::from(n)),
            );
        }
        let tags = many.written_tags("p", "rc");
        assert_eq!(tags.len(), 64);
        assert!(!tags.iter().any(|(t, _)| t == "t0"));
    }
}
