//! Records the commit retagd is built from, and its date (`retagd version`, `--version`,
//! `retagd_build_info`):
//! `git rev-parse` when the source is a git checkout, else `RETAGD_REVISION` from the
//! environment (a source tarball, a container build without `.git`), else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=RETAGD_REVISION");
    let revision = std::env::var("RETAGD_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=RETAGD_REVISION={revision}");
    // The commit's date, not the build's: the same source builds the same binary.
    let date = std::env::var("RETAGD_REVISION_DATE")
        .ok()
        .filter(|d| !d.is_empty())
        .or_else(|| git(&["log", "-1", "--format=%cs"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rerun-if-env-changed=RETAGD_REVISION_DATE");
    println!("cargo:rustc-env=RETAGD_REVISION_DATE={date}");
    // Look again when HEAD moves (a commit, a checkout, a branch update); only paths that exist,
    // or Cargo would run this at every build.
    let dirs = [
        git(&["rev-parse", "--git-dir"]).map(|d| format!("{d}/HEAD")),
        git(&["rev-parse", "--git-common-dir"]).map(|d| format!("{d}/refs/heads")),
        git(&["rev-parse", "--git-common-dir"]).map(|d| format!("{d}/packed-refs")),
    ];
    for path in dirs.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
