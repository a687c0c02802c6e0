//! `retagd run`: every pipeline reconciles on its own interval, concurrently up to a bound, and
//! one failing pipeline or registry never delays the others.
//!
//! # Shutdown and reload
//!
//! [`run`] takes its signals as a channel, so tests drive it directly. `Stop` (SIGTERM, SIGINT):
//! no new reconcile starts; those in flight finish within the grace period, then `run` returns.
//! A second `Stop` during the grace period ends it at once. `Reload` (SIGHUP): the file is
//! loaded again; an invalid file is logged and the running configuration stays. A valid one
//! replaces the pipelines once their in-flight reconciles end; the first-seen state carries over.
//! `server.listen` is bound once: changing it needs a restart.
//!
//! # What else wakes a pipeline
//!
//! Besides its interval: a registry webhook about one of its repositories, an approval through
//! the API, a promotion by another pipeline into a repository it reads, and its own promotion
//! (one follow-up reconcile, so the status and metrics show the new version at once). Wake-ups
//! during a reconcile coalesce into one more reconcile.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use crate::calendar::{self, Freeze};
use crate::config::{self, Config, EventKind, Pipeline};
use crate::engine::{
    self, ApproveError, Approved, Asked, Backend, Engine, FreezeError, Freezes, Intent, Next,
    Outcome, State,
};
use crate::metrics::Metrics;
use crate::notify::{Event, Notifier};
use crate::registry::{Observer, Registries};
use crate::status::Status;

/// What the process was told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Finish in-flight work and return.
    Stop,
    /// Load the configuration file again.
    Reload,
}

/// Settings of the daemon that are not in the configuration file.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file, loaded again on `Reload`.
    pub config_path: PathBuf,
    /// How long in-flight reconciles may take after `Stop`.
    pub grace: Duration,
    /// Pipelines reconciling at once per registry.
    pub parallel: usize,
}

/// Reconciles in a row that start at once because the one before promoted something.
const MAX_FOLLOW_UPS: u32 = 3;
/// First wait of a pipeline task restarted after a panic, so a bug cannot make a hot loop.
const RESTART_DELAY: Duration = Duration::from_secs(30);
/// After a soak ends, how long before the pipeline looks (the first-seen clock counts in whole
/// seconds).
const SOAK_SLACK: Duration = Duration::from_secs(1);
/// Longest wait after failures, however long the interval.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Builds the engine for `config` (clients, state and freezes); the clients report their
/// requests to `observer`.
pub fn build(config: &Config, observer: Arc<dyn Observer>) -> anyhow::Result<Engine> {
    engine(config, connect(config, observer)?)
}

/// An engine over `backend` with `config`'s state: the first-seen times and freezes of
/// `state_dir` (or memory only), the configuration's calendar of freezes, and the writers' lock
/// in `state_dir`.
fn engine(config: &Config, backend: Arc<dyn Backend>) -> anyhow::Result<Engine> {
    let (state, mut freezes) = match &config.server.state_dir {
        Some(dir) => (State::load(dir)?, Freezes::load(dir)?),
        None => (State::in_memory(), Freezes::in_memory()),
    };
    freezes.set_calendar(config.freezes.clone());
    let engine = Engine::new(backend, state).with_freezes(freezes);
    Ok(match &config.server.state_dir {
        Some(dir) => engine.with_writers_lock(dir),
        None => engine,
    })
}

/// The registry clients of `config` (at start and at each reload).
pub fn connect(config: &Config, observer: Arc<dyn Observer>) -> anyhow::Result<Arc<Registries>> {
    Ok(Arc::new(Registries::new(
        &config.registries,
        Registries::default_docker_config(),
        observer,
    )?))
}

/// Builds the registry backend for a configuration (at start and at each reload).
pub type Connect =
    Box<dyn Fn(&Config, Arc<dyn Observer>) -> anyhow::Result<Arc<dyn Backend>> + Send + Sync>;

/// Serves HTTP on the bound listener until its stop signal turns true; `retagd run` passes the
/// `server` module's, which the daemon does not know.
pub type Serve = Box<
    dyn FnOnce(
            tokio::net::TcpListener,
            Arc<Shared>,
            watch::Receiver<bool>,
        ) -> futures_util::future::BoxFuture<'static, std::io::Result<()>>
        + Send,
>;

/// What the command line plugs into the daemon: how to reach registries and how to serve HTTP.
pub struct Wiring {
    /// The registry backend for a configuration.
    pub connect: Connect,
    /// The HTTP side.
    pub serve: Serve,
}

impl std::fmt::Debug for Wiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wiring").finish_non_exhaustive()
    }
}

/// The running daemon as its pipeline tasks and the HTTP server see it.
pub struct Shared {
    engine: Arc<Engine>,
    /// The metrics served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// What each pipeline last showed.
    pub status: Status,
    notifier: RwLock<Arc<Notifier>>,
    routes: RwLock<Arc<Routes>>,
    /// True once the daemon stops: approvals are refused, and one in flight starts no copy.
    stopping: watch::Sender<bool>,
    /// Histories read lately, by (pipeline, stage, limit), so a dashboard open in many browsers
    /// reads the registries once per [`HISTORY_FRESH`]; a pipeline's entries go when it writes
    /// a record.
    histories: std::sync::Mutex<HashMap<HistoryKey, (std::time::Instant, Arc<serde_json::Value>)>>,
}

/// A history asked for: pipeline, stage, limit.
type HistoryKey = (String, Option<String>, usize);

/// How long a history read from the registries is served again.
const HISTORY_FRESH: Duration = Duration::from_secs(30);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The running configuration and how to wake each of its pipelines.
#[derive(Debug)]
pub struct Routes {
    /// The configuration in force.
    pub config: Arc<Config>,
    wake: HashMap<String, Arc<Wake>>,
}

/// How long after a push event a pipeline looks again. The CNCF registry (2.8) sends its push
/// event after storing the manifest but before writing the tag, so a reconcile woken by the
/// event alone can list the repository a moment too early.
const PUSH_RECHECK: Duration = Duration::from_millis(500);

/// A pipeline's wake-up call; wake-ups during a reconcile coalesce into one more.
#[derive(Debug, Default)]
struct Wake {
    now: Notify,
    /// When the delayed wake-up after the latest push is due; `Some` while one is scheduled.
    recheck_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Routes {
    fn new(config: Config) -> Routes {
        let wake = config
            .pipelines
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Wake::default())))
            .collect();
        Routes {
            config: Arc::new(config),
            wake,
        }
    }
}

impl Shared {
    /// The daemon's shared part, with an empty status for `config`'s pipelines.
    pub fn new(config: Config, engine: Arc<Engine>, metrics: Arc<Metrics>) -> Shared {
        let status = Status::default();
        status.configure(&config.pipelines);
        let notifier = Notifier::start(&config.notifications, metrics.notifications.clone());
        Shared {
            engine,
            metrics,
            status,
            notifier: RwLock::new(Arc::new(notifier)),
            routes: RwLock::new(Arc::new(Routes::new(config))),
            stopping: watch::Sender::new(false),
            histories: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline's promotions from its registries' records, as `retagd history -o json`
    /// prints them; `None` for a pipeline not configured.
    pub async fn history(
        &self,
        pipeline: &str,
        stage: Option<&str>,
        limit: usize,
    ) -> Option<Arc<serde_json::Value>> {
        let routes = self.routes();
        let p = routes
            .config
            .pipelines
            .iter()
            .find(|p| p.name == pipeline)?;
        let key = (pipeline.to_string(), stage.map(str::to_string), limit);
        let cached = {
            let mut all = self.histories.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|_, (at, _)| at.elapsed() < HISTORY_FRESH);
            all.get(&key).map(|(_, v)| v.clone())
        };
        if let Some(v) = cached {
            return Some(v);
        }
        let found = self.engine.history(p, stage, limit).await;
        let value = Arc::new(found.json(pipeline));
        self.histories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (std::time::Instant::now(), value.clone()));
        Some(value)
    }

    /// The configuration in force.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn reconfigure(&self, config: Config) {
        self.status.configure(&config.pipelines);
        let stages = config
            .pipelines
            .iter()
            .flat_map(|p| p.stages.iter().map(|s| (p.name.clone(), s.name.clone())))
            .collect();
        self.metrics.retain_stages(&stages);
        self.engine.freezes().set_calendar(config.freezes.clone());
        let notifier = Notifier::start(&config.notifications, self.metrics.notifications.clone());
        // The old notifier's queue drains in the background once its last user drops it.
        *self.notifier.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(notifier);
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Routes::new(config));
    }

    /// One reconcile, recorded (see [`Shared::record`]).
    pub async fn reconcile(
        &self,
        pipeline: &Pipeline,
        intent: &Intent,
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Outcome {
        let outcome = self.engine.reconcile(pipeline, intent, stopping).await;
        self.record(&outcome);
        outcome
    }

    /// The one place a reconcile's outcome goes: the log line of a reconcile that could not plan,
    /// the status (and the events it is the first to show, to the notifier), the metrics, and the
    /// wake-ups of pipelines that read a repository it wrote to. A pipeline that a reload removed
    /// meanwhile (an approval that finished late) is not recorded.
    fn record(&self, outcome: &Outcome) {
        let routes = self.routes();
        if !routes.wake.contains_key(&outcome.pipeline) {
            return;
        }
        if let Err(e) = &outcome.plan {
            tracing::error!(
                pipeline = %outcome.pipeline,
                reason = e.reason(),
                error = %e.chain(),
                "reconcile failed"
            );
        }
        let events = self.status.record(outcome);
        self.metrics.record(outcome);
        if outcome.records.iter().any(|r| r.result.is_ok()) {
            self.histories
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(p, _, _), _| *p != outcome.pipeline);
        }
        let notifier = self
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for event in events {
            if event.kind == EventKind::Conflict {
                self.metrics
                    .promotion(&event.pipeline, &event.stage, "conflict", "conflict");
            }
            notifier.send(event);
        }
        for written in outcome.written() {
            for p in &routes.config.pipelines {
                let reads = p
                    .stages
                    .iter()
                    .any(|s| s.registry == written.registry && s.repository == written.repository);
                if p.name != outcome.pipeline && reads {
                    wake(&routes, &p.name);
                }
            }
        }
    }

    /// Approves the promotion into `stage` as `asked` and carries it out now, on a task of its
    /// own: a client that goes away must not cut a copy in half or leave it unrecorded.
    pub async fn approve(
        self: &Arc<Self>,
        pipeline: &str,
        stage: &str,
        asked: Asked,
    ) -> Result<Approved, ApproveError> {
        let shared = self.clone();
        let (pipeline, stage) = (pipeline.to_string(), stage.to_string());
        tokio::spawn(async move { shared.approve_now(&pipeline, &stage, asked).await })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "approval task failed");
                Err(ApproveError::Internal)
            })
    }

    async fn approve_now(
        &self,
        pipeline: &str,
        stage: &str,
        asked: Asked,
    ) -> Result<Approved, ApproveError> {
        let stop = self.stopping.subscribe();
        if *stop.borrow() {
            return Err(ApproveError::Stopping);
        }
        let routes = self.routes();
        let (pipeline, index) = engine::approval_target(&routes.config.pipelines, pipeline, stage)?;
        let intent = asked.intent(index);
        let outcome = self
            .engine
            .reconcile(pipeline, &intent, &move || *stop.borrow())
            .await;
        self.record(&outcome);
        let approved = outcome.approved(index)?;
        if let Approved::Promoted {
            promotion, forced, ..
        } = &approved
        {
            tracing::info!(
                pipeline = %pipeline.name,
                stage = %stage,
                to_tag = %promotion.to_tag,
                digest = %promotion.digest,
                approved_by = %asked.by,
                reason = asked.reason.as_deref().unwrap_or(""),
                forced,
                "approved"
            );
            // The pipeline's own task refreshes the status with the new version.
            wake(&routes, &pipeline.name);
        }
        Ok(approved)
    }

    /// Every freeze not over yet: the configuration's, then those set through the API.
    pub fn freezes(&self) -> Vec<Freeze> {
        self.engine.freezes().current(SystemTime::now())
    }

    /// Sets a freeze (validated by the caller): written to `state_dir` first, then logged and
    /// notified, and the pipelines it covers look again at once so their status shows it.
    pub fn freeze(&self, freeze: Freeze) -> Result<(), FreezeError> {
        self.engine
            .freezes()
            .add(freeze.clone(), SystemTime::now())?;
        tracing::warn!(
            id = %freeze.id,
            by = %freeze.by,
            reason = %freeze.reason,
            pipelines = %list_or_all(&freeze.pipelines),
            stages = %list_or_all(&freeze.stages),
            until = freeze.until.map(calendar::format_time).unwrap_or_default(),
            "frozen"
        );
        self.freeze_changed(EventKind::Freeze, &freeze, &freeze.by);
        Ok(())
    }

    /// Lifts the freeze `id`, or every freeze set through the API; returns what was lifted.
    /// The covered pipelines look again at once, so what the freeze held is promoted now.
    pub fn unfreeze(&self, id: Option<&str>, by: &str) -> Result<Vec<Freeze>, FreezeError> {
        let lifted = self.engine.freezes().lift(id, SystemTime::now())?;
        for freeze in &lifted {
            tracing::warn!(id = %freeze.id, by = %by, reason = %freeze.reason, "unfrozen");
            self.freeze_changed(EventKind::Unfreeze, freeze, by);
        }
        Ok(lifted)
    }

    fn freeze_changed(&self, kind: EventKind, freeze: &Freeze, by: &str) {
        let notifier = self
            .notifier
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        notifier.send(Event::freeze(kind, freeze, by));
        let routes = self.routes();
        for p in &routes.config.pipelines {
            if freeze.pipelines.is_empty() || freeze.pipelines.contains(&p.name) {
                wake(&routes, &p.name);
            }
        }
    }

    /// A registry reported a push of `repository` (on `host`, when it said): wakes every
    /// pipeline with a stage there and returns their names. When `host` names one of the
    /// configured registries only stages of that registry match; an unknown host (a registry
    /// behind a proxy reports the name its clients used) matches by repository alone.
    pub fn pushed(&self, host: Option<&str>, repository: &str) -> Vec<String> {
        let routes = self.routes();
        let config = &routes.config;
        let on_host: Vec<&str> = host
            .map(|h| {
                config
                    .registries
                    .values()
                    .filter(|r| same_host(&r.url, h))
                    .map(|r| r.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let mut woken = Vec::new();
        for p in &config.pipelines {
            let matches = p.stages.iter().any(|s| {
                s.repository == repository
                    && (on_host.is_empty() || on_host.contains(&s.registry.as_str()))
            });
            if matches {
                wake(&routes, &p.name);
                if let Some(w) = routes.wake.get(&p.name) {
                    recheck(w.clone());
                }
                woken.push(p.name.clone());
            }
        }
        woken
    }
}

/// `a, b`, or `all` for an empty list (a freeze's pipelines and stages).
fn list_or_all(names: &[String]) -> String {
    if names.is_empty() {
        "all".to_string()
    } else {
        names.join(", ")
    }
}

fn wake(routes: &Routes, pipeline: &str) {
    if let Some(w) = routes.wake.get(pipeline) {
        w.now.notify_one();
    }
}

/// Wakes the pipeline once more [`PUSH_RECHECK`] after the latest push; one task per pipeline
/// however many pushes arrive.
fn recheck(w: Arc<Wake>) {
    let due = tokio::time::Instant::now() + PUSH_RECHECK;
    let scheduled = w
        .recheck_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(due)
        .is_some();
    if scheduled {
        return;
    }
    tokio::spawn(async move {
        loop {
            let due = *w.recheck_at.lock().unwrap_or_else(|e| e.into_inner());
            let Some(due) = due else { return };
            tokio::time::sleep_until(due).await;
            let mut at = w.recheck_at.lock().unwrap_or_else(|e| e.into_inner());
            if *at == Some(due) {
                *at = None;
                break;
            }
        }
        w.now.notify_one();
    });
}

/// Docker Hub goes by several names.
fn same_host(url: &url::Url, host: &str) -> bool {
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    let ours = match (url.host_str(), url.port()) {
        (Some(h), Some(port)) => format!("{h}:{port}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return false,
    };
    let theirs = host.to_ascii_lowercase();
    ours == theirs
        || (hub(url.host_str().unwrap_or_default()) && hub(&theirs))
        || (url.port().is_none()
            && theirs
                .strip_suffix(if url.scheme() == "https" {
                    ":443"
                } else {
                    ":80"
                })
                .is_some_and(|h| h == ours))
}

/// Runs until `Stop`; see the module docs.
pub async fn run(
    config: Config,
    options: Options,
    wiring: Wiring,
    mut signals: mpsc::Receiver<Signal>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new().context("cannot set up the metrics")?);
    let backend = (wiring.connect)(&config, metrics.clone())?;
    check_secret_files(&config)?;
    let engine = engine(&config, backend)?.with_parallel(options.parallel);
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen; another port: RETAGD_SERVER__LISTEN=127.0.0.1:PORT)",
                config.server.listen
            )
        })?;
    let address = listener.local_addr()?;
    let engine = Arc::new(engine);
    metrics.config_loaded(true);
    metrics.known_stages(&config.pipelines);
    let shared = Arc::new(Shared::new(config, engine.clone(), metrics.clone()));
    let (server_stop, server_stopped) = watch::channel(false);
    let server = tokio::spawn((wiring.serve)(listener, shared.clone(), server_stopped));
    let mut generation = Generation::start(&shared);
    tracing::info!(
        pipelines = shared.routes().config.pipelines.len(),
        config = %options.config_path.display(),
        address = %address,
        "retagd is running"
    );
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            Some(ended) = generation.tasks.join_next_with_id() => {
                generation.restart(ended, &shared);
                continue;
            }
        };
        if signal != Some(Signal::Reload) {
            break;
        }
        let Some((loaded, backend)) = reload(&options, &wiring.connect, &metrics, address).await
        else {
            continue;
        };
        // In-flight reconciles finish first; a stop meanwhile still gets its grace.
        let stopped = tokio::select! {
            _ = generation.stop_and_wait(None) => false,
            _ = second_stop(&mut signals) => true,
        };
        if stopped {
            break;
        }
        engine.set_backend(backend);
        let pipelines = loaded.pipelines.len();
        metrics.known_stages(&loaded.pipelines);
        shared.reconfigure(loaded);
        generation = Generation::start(&shared);
        tracing::info!(pipelines, "configuration reloaded");
    }
    let _ = server_stop.send(true);
    drain(&shared, generation, server, options.grace, &mut signals).await;
    tracing::info!("stopped");
    Ok(())
}

/// One grace period for everything in flight: reconciles, HTTP requests (approvals) and queued
/// notifications. New approvals are refused from the start (the server stopped accepting
/// connections already); the state is saved whatever finished.
async fn drain(
    shared: &Shared,
    mut generation: Generation,
    mut server: tokio::task::JoinHandle<std::io::Result<()>>,
    grace: Duration,
    signals: &mut mpsc::Receiver<Signal>,
) {
    let deadline = tokio::time::Instant::now() + grace;
    let _ = shared.stopping.send(true);
    let finished = shut_down(&mut generation, grace, signals).await;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let server_left = if finished { left() } else { Duration::ZERO };
    match tokio::time::timeout(server_left, &mut server).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => {
            server.abort();
            tracing::warn!("stopped before HTTP requests in flight finished");
        }
    }
    shared.engine.save_state();
    let notifier = std::mem::replace(
        &mut *shared.notifier.write().unwrap_or_else(|e| e.into_inner()),
        Arc::new(Notifier::disabled()),
    );
    if let Ok(notifier) = Arc::try_unwrap(notifier) {
        notifier.close(left()).await;
    }
}

/// Loads the configuration file again and connects its registries; `None` (logged) when either
/// fails, and the running configuration stays. The file is read and parsed on a blocking
/// thread: whatever it holds, the runtime's workers keep serving `/healthz`, the API and the
/// pipelines meanwhile.
async fn reload(
    options: &Options,
    connect: &Connect,
    metrics: &Arc<Metrics>,
    address: std::net::SocketAddr,
) -> Option<(Config, Arc<dyn Backend>)> {
    let failed = |error: String| {
        metrics.config_loaded(false);
        tracing::error!(
            error = %error,
            "configuration reload failed; keeping the running configuration"
        );
    };
    let path = options.config_path.clone();
    let loaded = match tokio::task::spawn_blocking(move || config::load(&path)).await {
        Ok(Ok(l)) => l.config,
        Ok(Err(e)) => {
            failed(format!("{:#}", anyhow::Error::new(e)));
            return None;
        }
        Err(e) => {
            failed(format!("loading the configuration failed: {e}"));
            return None;
        }
    };
    let backend = match connect(&loaded, metrics.clone())
        .and_then(|b| check_secret_files(&loaded).map(|()| b))
    {
        Ok(b) => b,
        Err(e) => {
            failed(format!("{e:#}"));
            return None;
        }
    };
    metrics.config_loaded(true);
    if loaded.server.listen != address && loaded.server.listen.port() != 0 {
        tracing::warn!(
            listen = %loaded.server.listen,
            "server.listen changed; it takes effect at the next restart"
        );
    }
    Some((loaded, backend))
}

/// The API token and webhook secret files are read at each request (so a rotated Secret takes
/// effect), but one that cannot be read at start is a mistake to report now.
fn check_secret_files(config: &Config) -> anyhow::Result<()> {
    let approvers = config.server.all_approvers();
    let files = approvers
        .iter()
        .map(|a| (a.key.as_str(), Some(&a.token_file)))
        .chain([("webhooks.secret_file", config.webhooks.secret_file.as_ref())]);
    for (key, file) in files {
        if let Some(path) = file {
            crate::secret::read(key, path)?;
        }
    }
    Ok(())
}

/// Stops the pipelines and waits at most `grace` (or until a second stop); true when every
/// reconcile in flight finished.
async fn shut_down(
    generation: &mut Generation,
    grace: Duration,
    signals: &mut mpsc::Receiver<Signal>,
) -> bool {
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: letting reconciles in flight finish"
    );
    let finished = tokio::select! {
        done = generation.stop_and_wait(Some(grace)) => done,
        _ = second_stop(signals) => false,
    };
    if !finished {
        generation.abort();
        tracing::warn!("stopped before reconciles in flight finished");
    }
    finished
}

async fn second_stop(signals: &mut mpsc::Receiver<Signal>) {
    while let Some(s) = signals.recv().await {
        if s == Signal::Stop {
            return;
        }
    }
    std::future::pending::<()>().await
}

/// The pipeline tasks of one configuration.
struct Generation {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    pipelines: HashMap<tokio::task::Id, Pipeline>,
}

impl Generation {
    fn start(shared: &Arc<Shared>) -> Generation {
        let (stop, _) = watch::channel(false);
        let mut generation = Generation {
            stop,
            tasks: JoinSet::new(),
            pipelines: HashMap::new(),
        };
        for pipeline in &shared.routes().config.pipelines {
            // Spread the first reconciles over a second.
            let first = Duration::from_millis(fastrand::u64(0..1000));
            generation.spawn(pipeline.clone(), shared, first);
        }
        generation
    }

    fn spawn(&mut self, pipeline: Pipeline, shared: &Arc<Shared>, first: Duration) {
        let wake = shared
            .routes()
            .wake
            .get(&pipeline.name)
            .cloned()
            .unwrap_or_default();
        let task = pipeline_loop(
            shared.clone(),
            pipeline.clone(),
            self.stop.subscribe(),
            wake,
            first,
        );
        let id = self.tasks.spawn(task).id();
        self.pipelines.insert(id, pipeline);
    }

    /// A pipeline task ended while running, which only a panic does: say so and start it again,
    /// so one bug cannot silently stop a pipeline for good.
    fn restart(
        &mut self,
        ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        shared: &Arc<Shared>,
    ) {
        let id = match &ended {
            Ok((id, ())) => *id,
            Err(e) => e.id(),
        };
        let Some(pipeline) = self.pipelines.remove(&id) else {
            return;
        };
        if *self.stop.borrow() {
            return;
        }
        tracing::error!(
            pipeline = %pipeline.name,
            error = %ended.err().map(|e| e.to_string()).unwrap_or_default(),
            restart_in_s = RESTART_DELAY.as_secs(),
            "pipeline task ended unexpectedly; restarting it"
        );
        self.spawn(pipeline, shared, RESTART_DELAY);
    }

    /// Tells the tasks to stop and waits for them, at most `grace`; true when all ended.
    async fn stop_and_wait(&mut self, grace: Option<Duration>) -> bool {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        match grace {
            Some(g) => tokio::time::timeout(g, all).await.is_ok(),
            None => {
                all.await;
                true
            }
        }
    }

    fn abort(&mut self) {
        self.tasks.abort_all();
    }
}

/// `interval` +- 10%, so pipelines with one interval do not hit a registry in lockstep.
fn jittered(interval: Duration) -> Duration {
    let spread = interval.as_secs_f64() * 0.1;
    let offset = (fastrand::f64() * 2.0 - 1.0) * spread;
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(0.1))
}

/// After `failures` failed reconciles in a row: 5 s doubling, capped by the interval and
/// [`MAX_BACKOFF`], so a broken registry is retried sooner than the interval but not hammered.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let secs = 5u64.saturating_mul(1 << failures.min(10).saturating_sub(1));
    Duration::from_secs(secs).min(interval).min(MAX_BACKOFF)
}

async fn pipeline_loop(
    shared: Arc<Shared>,
    pipeline: Pipeline,
    mut stop: watch::Receiver<bool>,
    wake: Arc<Wake>,
    first: Duration,
) {
    let mut delay = first;
    let mut failures = 0u32;
    let mut follow_ups = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.now.notified() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        // Once started, a reconcile runs to its end (a copy is never cut in half by a stop), but
        // it starts no further copy once a stop is asked for.
        let stopping = stop.clone();
        // Boxed: the reconcile's state machine is about 6 KB, and inline it would make every
        // pipeline task that size while it sleeps (6 MB at 1,000 pipelines).
        let outcome =
            Box::pin(shared.reconcile(&pipeline, &Intent::default(), &move || *stopping.borrow()))
                .await;
        failures = if outcome.succeeded() { 0 } else { failures + 1 };
        let next = outcome.next();
        // A promotion changed what the stages select: look again at once, so the status and
        // metrics show it (a few times at most, whatever a registry does).
        follow_ups = if next == Next::Now { follow_ups + 1 } else { 0 };
        delay = if next == Next::Now && follow_ups <= MAX_FOLLOW_UPS {
            Duration::ZERO
        } else if failures == 0 {
            // A stage waiting for min_age is looked at again when its soak ends, so an
            // automatic promotion or a pending approval is not an interval late.
            let soaked = outcome
                .waiting_until()
                .map(|until| until.duration_since(SystemTime::now()).unwrap_or_default());
            jittered(pipeline.interval).min(soaked.map_or(Duration::MAX, |d| d + SOAK_SLACK))
        } else {
            backoff(failures, pipeline.interval)
        };
    }
}

#[cfg(test)]
mod run_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_within_the_interval() {
        let hour = Duration::from_secs(3600);
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f, hour).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(3, Duration::from_secs(15)), Duration::from_secs(15));
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60)).as_secs_f64();
            assert!((54.0..=66.0).contains(&d), "{d}");
        }
    }
}
