//! retagd promotes container images between environments (dev -> rc -> release) by copying
//! manifests inside registries, choosing what to promote with per-environment tag filters that
//! behave exactly like Flux's ImagePolicy.
//!
//! # Layout
//!
//! - [`config`]: the configuration file (TOML or YAML plus `RETAGD_*` overrides), validated up
//!   front with key paths in every error.
//! - [`policy`]: tag selection (`filter_tags` + `semver` / `alphabetical` / `numerical`) with
//!   Flux's semantics, including the Masterminds range language. Pure: no I/O.
//! - [`template`]: promotion target tag templates (`v{major}.{minor}.{patch}-rc.{n}`).
//! - [`reference`](mod@reference): image references and digests by the OCI grammar; the gate every name passes
//!   before it reaches a URL.
//! - [`engine`]: the promotion engine: a pure planner (registry snapshot -> actions), the
//!   driver that observes and applies, and the first-seen state for `min_age`.
//! - [`daemon`]: `retagd run`: pipelines on their intervals and wake-ups, signals, reload, and
//!   the status the API serves.
//! - [`server`]: the HTTP listener: `/metrics`, health, the status and approval API, webhooks.
//! - [`metrics`]: the Prometheus metric families.
//! - [`notify`]: promotion events out to webhooks (retagd's JSON or Slack), queued per endpoint
//!   and delivered in the background with retries, so a dead endpoint never holds up a reconcile.
//! - [`registry`]: the registry client: tag lists, manifests, and copies with the fewest requests
//!   (retries, rate limits, auth, TLS).
//! - [`cli`]: the `retagd` command line; `main.rs` only maps its result to an exit code.
//! - [`secret`]: secret files (passwords, tokens, webhook secrets, notification URLs), all read
//!   by one rule, and the [`Secret`](secret::Secret) type that never prints. It imports nothing
//!   of retagd's.
//!
//! Dependencies point one way: `policy`, `template` and `reference` know nothing of
//! configuration files, the command line or the network; `registry` knows configuration only
//! through [`config::Registry`], and `notify` only through [`config::Notification`].

pub mod cli;
pub mod config;
pub mod daemon;
pub mod engine;
#[cfg(test)]
mod fuzzing;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod secret;
pub mod server;
pub mod template;
