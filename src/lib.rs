//! retagd promotes container images between environments (dev -> rc -> release) by copying
//! manifests inside registries, choosing what to promote with per-environment tag filters that
//! behave exactly like Flux's ImagePolicy.
//!
//! # Layout
//!
//! Modules in layers, lowest first; each imports only modules of lower layers (the `layers` unit
//! test below checks every `crate::` path in `src/`, so this map stays true):
//!
//! 1. [`secret`]: secret files (passwords, tokens, webhook secrets, notification URLs), all read
//!    by one rule, and the [`Secret`](secret::Secret) type that never prints.
//!    [`reference`](mod@reference): image references and digests by the OCI grammar; the gate
//!    every name passes before it reaches a URL. [`policy`]: tag selection (`filter_tags` +
//!    `semver` / `alphabetical` / `numerical`) with Flux's semantics, including the Masterminds
//!    range language. [`calendar`]: promotion windows in IANA time zones, and RFC 3339 times.
//!    Pure: no I/O.
//! 2. [`template`]: promotion target tag templates (`v{major}.{minor}.{patch}-rc.{n}`).
//!    [`cosign`]: key-based cosign signatures checked against a digest (`promote.verify`).
//!    [`record`]: the promotion record artifact written next to each promoted image. Pure as
//!    well.
//! 3. [`config`]: the configuration file (TOML or YAML plus `RETAGD_*` overrides), validated up
//!    front with key paths in every error.
//! 4. [`registry`]: the registry client: tag lists, manifests, and copies with the fewest
//!    requests (retries, rate limits, auth, TLS). [`notify`]: promotion events out to webhooks
//!    (retagd's JSON or Slack), queued per endpoint and delivered in the background with
//!    retries, so a dead endpoint never holds up a reconcile.
//! 5. [`engine`]: the promotion engine: a pure planner (registry snapshot -> actions), the
//!    driver that observes and applies through its `Backend`, and the typed [`engine::Outcome`]
//!    of each reconcile that every consumer reads.
//! 6. [`status`]: what the daemon last saw of each pipeline, and the events it is the first to
//!    show. [`metrics`]: the Prometheus metric families.
//! 7. [`daemon`]: `retagd run`: pipelines on their intervals and wake-ups, signals, reload, and
//!    the one recorder of outcomes. [`server`]: the HTTP listener: `/metrics`, health, the status
//!    and approval API, webhooks; it reaches the daemon through [`server::Handle`] only.
//! 8. [`cli`]: the `retagd` command line; it wires the daemon and the server together.
//!    `main.rs` only maps its result to an exit code.

pub mod calendar;
pub mod cli;
pub mod config;
pub mod cosign;
pub mod daemon;
pub mod engine;
#[cfg(test)]
mod fuzzing;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod record;
pub mod reference;
pub mod registry;
pub mod secret;
pub mod server;
pub mod status;
pub mod template;

/// The layer map of the crate doc, checked: every `crate::` path outside comments in a module's
/// files names a module of a lower layer.
#[cfg(test)]
mod layers {
    use std::path::Path;

    /// Lowest first; `fuzzing` is the property-test helper every layer may use in tests.
    const LAYERS: &[&[&str]] = &[
        &["fuzzing"],
        &["secret", "reference", "policy", "calendar"],
        &["template", "cosign", "record"],
        &["config"],
        &["registry", "notify"],
        &["engine"],
        &["status", "metrics"],
        &["daemon", "server"],
        &["cli"],
    ];

    fn layer(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&module))
    }

    fn files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
                files(&entry.path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
    }

    /// The top-level modules `text` names as `crate::NAME`, outside `//` comments.
    fn imports(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                found.push(name);
            }
        }
        found
    }

    #[test]
    fn every_module_imports_only_modules_of_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut broken = Vec::new();
        let mut modules = 0;
        for entry in std::fs::read_dir(&src).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if name == "lib" || name == "main" {
                continue;
            }
            let Some(own) = layer(&name) else {
                broken.push(format!("module {name} is not in the layer map"));
                continue;
            };
            modules += 1;
            let mut all = Vec::new();
            files(&path, &mut all);
            for file in all {
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                for import in imports(&text) {
                    match layer(&import) {
                        Some(l) if l < own || import == name => {}
                        _ => broken.push(format!(
                            "{}: {name} (layer {own}) uses crate::{import} ({})",
                            file.display(),
                            layer(&import)
                                .map_or("not a module".to_string(), |l| format!("layer {l}"))
                        )),
                    }
                }
            }
        }
        assert!(
            modules >= 10,
            "found only {modules} modules under {}",
            src.display()
        );
        assert!(broken.is_empty(), "layering broken:\n{}", broken.join("\n"));
    }

    #[test]
    fn the_import_scan_sees_paths_and_skips_comments() {
        let text = "use crate::engine::Outcome;\n// crate::cli is only named here\nlet x = crate::registry::copy;";
        assert_eq!(imports(text), ["engine", "registry"]);
    }
}
