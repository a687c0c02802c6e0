//! Records the commit retagd is built from, and its date (`retagd version`, `--version`,
//! `retagd_build_info`), as `BUILT_REVISION` and `BUILT_REVISION_DATE` (not `RETAGD_*`: Cargo
//! also sets them when it runs tests, where `RETAGD_*` are configuration overrides):
//! `SOURCE_REVISION` (and `SOURCE_REVISION_DATE`) when set, as the image build does without
//! `.git`; else `git` when the source is a checkout; else `unknown`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_REVISION");
    let revision = std::env::var("SOURCE_REVISION")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BUILT_REVISION={revision}");
    // The commit's date, not the build's: the same source builds the same binary.
    let date = std::env::var("SOURCE_REVISION_DATE")
        .ok()
        .filter(|d| !d.is_empty())
        .or_else(|| git(&["log", "-1", "--format=%cs"]))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rerun-if-env-changed=SOURCE_REVISION_DATE");
    println!("cargo:rustc-env=BUILT_REVISION_DATE={date}");
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
