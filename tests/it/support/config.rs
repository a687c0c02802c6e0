//! retagd configurations built from parts: a test names the pipelines, stages, registries and
//! settings it is about and the builder writes the TOML, instead of each test carrying its own
//! copy of the syntax. Tests about the syntax itself or its error messages (`cli`, `chart`) keep
//! their text as written.

use std::path::{Path, PathBuf};

/// `approval = "auto"`, the `promote` options of an automatic promotion.
pub const AUTO: &str = r#"approval = "auto""#;
/// `approval = "manual"`, the `promote` options of a promotion that waits for an approval.
pub const MANUAL: &str = r#"approval = "manual""#;

/// One `[[pipelines.stages]]` table.
#[derive(Clone, Debug)]
pub struct Stage {
    name: String,
    lines: Vec<String>,
}

impl Stage {
    /// A stage named `name` with no other key yet.
    pub fn new(name: &str) -> Stage {
        Stage {
            name: name.to_string(),
            lines: Vec::new(),
        }
    }

    /// `filter_tags = { pattern = 'PATTERN' }` (a literal string: backslashes stay as written).
    #[must_use]
    pub fn filter(self, pattern: &str) -> Stage {
        self.line(format!("filter_tags = {{ pattern = '{pattern}' }}"))
    }

    /// `filter_tags = { pattern = 'PATTERN', extract = 'EXTRACT' }`.
    #[must_use]
    pub fn filter_extract(self, pattern: &str, extract: &str) -> Stage {
        self.line(format!(
            "filter_tags = {{ pattern = '{pattern}', extract = '{extract}' }}"
        ))
    }

    /// `policy = { semver = { range = "RANGE" } }`.
    #[must_use]
    pub fn semver(self, range: &str) -> Stage {
        self.line(format!("policy = {{ semver = {{ range = \"{range}\" }} }}"))
    }

    /// `registry = "NAME"`: the stage lives in another registry than its pipeline.
    #[must_use]
    pub fn in_registry(self, name: &str) -> Stage {
        self.line(format!("registry = \"{name}\""))
    }

    /// `repository = "REPOSITORY"`: the stage lives in another repository than its pipeline.
    #[must_use]
    pub fn in_repository(self, repository: &str) -> Stage {
        self.line(format!("repository = \"{repository}\""))
    }

    /// `promote = { from = "FROM", tag = "TAG", OPTIONS }`, `options` being TOML key-value pairs
    /// such as [`AUTO`] or `approval = "auto", min_age = "1h"`.
    #[must_use]
    pub fn promote(self, from: &str, tag: &str, options: &str) -> Stage {
        self.line(format!(
            "promote = {{ from = \"{from}\", tag = \"{tag}\", {options} }}"
        ))
    }

    fn line(mut self, line: String) -> Stage {
        self.lines.push(line);
        self
    }
}

/// One `[[pipelines]]` table with its stages.
#[derive(Clone, Debug)]
pub struct Pipeline {
    name: String,
    registry: String,
    repository: String,
    /// Pipeline-level lines such as `records = false`.
    settings: Vec<String>,
    stages: Vec<Stage>,
}

impl Pipeline {
    /// A pipeline named `name` over `repository` in the registry called `registry`, no stage yet.
    pub fn new(name: &str, registry: &str, repository: &str) -> Pipeline {
        Pipeline {
            name: name.to_string(),
            registry: registry.to_string(),
            repository: repository.to_string(),
            settings: Vec::new(),
            stages: Vec::new(),
        }
    }

    /// Adds a pipeline-level `key = value` line, such as `records = false`.
    #[must_use]
    pub fn setting(mut self, line: &str) -> Pipeline {
        self.settings.push(line.to_string());
        self
    }

    /// The example pipeline (dev -> staging -> production in registry `local`, semver tags
    /// `vX.Y.Z-dev.N`, `vX.Y.Z-rc.N`, `vX.Y.Z`) named `name` over `repository`, with these
    /// `promote` options for staging and production.
    pub fn example(name: &str, repository: &str, staging: &str, production: &str) -> Pipeline {
        Pipeline::new(name, "local", repository)
            .stage(
                Stage::new("dev")
                    .filter(r"^v\d+\.\d+\.\d+-dev\.\d+$")
                    .semver(">=1.0.0-0"),
            )
            .stage(
                Stage::new("staging")
                    .filter(r"^v\d+\.\d+\.\d+-rc\.\d+$")
                    .semver(">=1.0.0-rc.0")
                    .promote("dev", "v{major}.{minor}.{patch}-rc.{n}", staging),
            )
            .stage(
                Stage::new("production")
                    .filter(r"^v\d+\.\d+\.\d+$")
                    .semver(">=1.0.0")
                    .promote("staging", "v{major}.{minor}.{patch}", production),
            )
    }

    /// Adds `stage` after the others.
    #[must_use]
    pub fn stage(mut self, stage: Stage) -> Pipeline {
        self.stages.push(stage);
        self
    }

    /// Changes the stage called `name` with `change`; panics when there is none.
    #[must_use]
    pub fn map_stage(mut self, name: &str, change: impl FnOnce(Stage) -> Stage) -> Pipeline {
        let index = self
            .stages
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("pipeline {}: no stage {name}", self.name));
        let stage = self.stages.remove(index);
        self.stages.insert(index, change(stage));
        self
    }

    /// The `[[pipelines]]` table and its `[[pipelines.stages]]` tables.
    pub fn toml(&self) -> String {
        let mut text = format!(
            "\n[[pipelines]]\nname = \"{}\"\nregistry = \"{}\"\nrepository = \"{}\"\n",
            self.name, self.registry, self.repository
        );
        for line in &self.settings {
            text.push_str(line);
            text.push('\n');
        }
        for stage in &self.stages {
            text.push_str(&format!(
                "\n[[pipelines.stages]]\nname = \"{}\"\n",
                stage.name
            ));
            for line in &stage.lines {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

/// A whole configuration file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    interval: Option<String>,
    server: Option<Vec<String>>,
    registries: Vec<(String, Vec<String>)>,
    pipelines: Vec<Pipeline>,
    tables: Vec<String>,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Config {
        Config::default()
    }

    /// `[defaults] interval = "INTERVAL"`.
    #[must_use]
    pub fn interval(mut self, interval: &str) -> Config {
        self.interval = Some(interval.to_string());
        self
    }

    /// A `[server]` table listening on `127.0.0.1:0` (the daemon logs the port it got).
    #[must_use]
    pub fn server(mut self) -> Config {
        self.server
            .get_or_insert_with(|| vec!["listen = \"127.0.0.1:0\"".to_string()]);
        self
    }

    /// Adds `line` (TOML, e.g. `state_dir = "..."`) to the [`Config::server`] table.
    #[must_use]
    pub fn server_setting(self, line: &str) -> Config {
        let mut config = self.server();
        if let Some(lines) = config.server.as_mut() {
            lines.push(line.to_string());
        }
        config
    }

    /// `[registries.NAME] url = "URL"`.
    #[must_use]
    pub fn registry(mut self, name: &str, url: &str) -> Config {
        self.registries
            .push((name.to_string(), vec![format!("url = \"{url}\"")]));
        self
    }

    /// Adds `line` (TOML, e.g. `username = "bob"`) to the registry called `name`; panics when
    /// there is none.
    #[must_use]
    pub fn registry_setting(mut self, name: &str, line: &str) -> Config {
        let (_, lines) = self
            .registries
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("config: no registry {name}"));
        lines.push(line.to_string());
        self
    }

    /// Adds `pipeline` after the others.
    #[must_use]
    pub fn pipeline(mut self, pipeline: Pipeline) -> Config {
        self.pipelines.push(pipeline);
        self
    }

    /// Changes the pipeline called `name` with `change`; panics when there is none.
    #[must_use]
    pub fn map_pipeline(mut self, name: &str, change: impl FnOnce(Pipeline) -> Pipeline) -> Config {
        let index = self
            .pipelines
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("config: no pipeline {name}"));
        let pipeline = self.pipelines.remove(index);
        self.pipelines.insert(index, change(pipeline));
        self
    }

    /// Appends other tables (`[webhooks]`, `[[notifications]]`, ...) as written.
    #[must_use]
    pub fn table(mut self, toml: &str) -> Config {
        self.tables.push(toml.to_string());
        self
    }

    /// The configuration as TOML.
    pub fn toml(&self) -> String {
        let mut text = String::new();
        if let Some(interval) = &self.interval {
            text.push_str(&format!("[defaults]\ninterval = \"{interval}\"\n"));
        }
        if let Some(lines) = &self.server {
            text.push_str(&format!("\n[server]\n{}\n", lines.join("\n")));
        }
        for (name, lines) in &self.registries {
            text.push_str(&format!("\n[registries.{name}]\n{}\n", lines.join("\n")));
        }
        for pipeline in &self.pipelines {
            text.push_str(&pipeline.toml());
        }
        for table in &self.tables {
            text.push('\n');
            text.push_str(table);
            text.push('\n');
        }
        text
    }

    /// Writes the configuration to `path`; returns `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.toml())
            .unwrap_or_else(|e| panic!("write the config {}: {e}", path.display()));
        path.to_path_buf()
    }
}
