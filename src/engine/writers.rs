//! One lock file per target repository in `state_dir/locks/`, so retagd's writers on one machine
//! (the daemon, `retagd promote`, `retagd reconcile`) never write a repository at the same time.
//! Among them a listing is then authoritative: a tag it does not show was not written by
//! another retagd meanwhile, which lets a copy skip the destination HEAD. Without `state_dir`
//! there is no lock, and copies HEAD the destination as before.
//!
//! The locks are `flock`s, released by the kernel when the process dies; they are taken in the
//! order of the repositories, after the in-process locks of the same repositories, so two
//! reconciles never wait on each other in a cycle.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::plan::RepoKey;

/// Takes the lock of every repository in `targets`, waiting for other processes; `None` (with
/// a warning) when a lock file cannot be opened or locked, and the copies then check the
/// destination themselves.
pub async fn lock(dir: &Path, targets: &BTreeSet<RepoKey>) -> Option<Vec<File>> {
    let paths: Vec<PathBuf> = targets
        .iter()
        .map(|key| dir.join("locks").join(file_name(key)))
        .collect();
    let locked = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<File>> {
        let mut held = Vec::with_capacity(paths.len());
        for path in &paths {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)?;
            file.lock()?;
            held.push(file);
        }
        Ok(held)
    })
    .await;
    match locked {
        Ok(Ok(files)) => Some(files),
        Ok(Err(e)) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot take the writers' lock; copies check their destination instead");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "the writers' lock task failed");
            None
        }
    }
}

/// A file name per repository: the registry name and a hash of the path (repository paths have
/// slashes and may be long).
fn file_name(key: &RepoKey) -> String {
    let hash = Sha256::digest(format!("{}/{}", key.registry, key.repository).as_bytes());
    let hex: String = hash.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}.lock", key.registry)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_second_writer_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let targets = BTreeSet::from([RepoKey {
            registry: "r".into(),
            repository: "org/app".into(),
        }]);
        let first = lock(dir.path(), &targets).await.unwrap();
        let path = dir.path().to_path_buf();
        let wanted = targets.clone();
        let second = tokio::spawn(async move { lock(&path, &wanted).await.map(|f| f.len()) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "the second writer did not wait");
        drop(first);
        let got = tokio::time::timeout(Duration::from_secs(5), second).await;
        assert!(matches!(got, Ok(Ok(Some(1)))), "{got:?}");
    }
}
