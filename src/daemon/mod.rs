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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{self, Config, Pipeline};
use crate::engine::{Engine, Intent, State};
use crate::registry::{NoObserver, Registries};

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
    /// Pipelines reconciling at once.
    pub parallel: usize,
}

/// Pipelines reconciling at once by default. Registries are protected by their own
/// `max_concurrency` underneath; this bound is about memory and fairness, and is wide so that
/// pipelines stuck on an unresponsive registry (up to five 60 s read timeouts) do not hold up
/// the rest.
pub const DEFAULT_PARALLEL: usize = 16;
/// Longest wait after failures, however long the interval.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Builds the clients and state for `config`.
pub fn build(config: &Config) -> anyhow::Result<(Arc<Registries>, State)> {
    let registries = Registries::new(
        &config.registries,
        Registries::default_docker_config(),
        Arc::new(NoObserver),
    )?;
    let state = match &config.server.state_dir {
        Some(dir) => State::load(dir)?,
        None => State::in_memory(),
    };
    Ok((Arc::new(registries), state))
}

/// Runs until `Stop`; see the module docs.
pub async fn run(
    config: Config,
    options: Options,
    mut signals: mpsc::Receiver<Signal>,
) -> anyhow::Result<()> {
    let (registries, state) = build(&config)?;
    let limit = Arc::new(Semaphore::new(options.parallel.max(1)));
    let engine = Arc::new(Engine::new(registries, state).limiting_applies_to(limit));
    let mut generation = Generation::start(&config, &engine);
    tracing::info!(
        pipelines = config.pipelines.len(),
        config = %options.config_path.display(),
        "retagd is running"
    );
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            Some(ended) = generation.tasks.join_next_with_id() => {
                generation.restart(ended, &engine);
                continue;
            }
        };
        match signal {
            Some(Signal::Reload) => match config::load(&options.config_path) {
                Err(e) => tracing::error!(
                    error = %format!("{:#}", anyhow::Error::new(e)),
                    "configuration reload failed; keeping the running configuration"
                ),
                Ok(loaded) => {
                    let registries = match Registries::new(
                        &loaded.config.registries,
                        Registries::default_docker_config(),
                        Arc::new(NoObserver),
                    ) {
                        Ok(r) => Arc::new(r),
                        Err(e) => {
                            tracing::error!(error = %e, "configuration reload failed; keeping the running configuration");
                            continue;
                        }
                    };
                    // In-flight reconciles finish first; a stop meanwhile still gets its grace.
                    let stopped = tokio::select! {
                        _ = generation.stop_and_wait(None) => false,
                        _ = second_stop(&mut signals) => true,
                    };
                    if stopped {
                        return shut_down(&mut generation, &engine, options.grace, &mut signals)
                            .await;
                    }
                    engine.set_registries(registries);
                    generation = Generation::start(&loaded.config, &engine);
                    tracing::info!(
                        pipelines = loaded.config.pipelines.len(),
                        "configuration reloaded"
                    );
                }
            },
            Some(Signal::Stop) | None => {
                return shut_down(&mut generation, &engine, options.grace, &mut signals).await
            }
        }
    }
}

/// Stops the pipelines, waits at most `grace` (or until a second stop), saves the state.
async fn shut_down(
    generation: &mut Generation,
    engine: &Engine,
    grace: Duration,
    signals: &mut mpsc::Receiver<Signal>,
) -> anyhow::Result<()> {
    tracing::info!(
        grace_s = grace.as_secs(),
        "stopping: letting reconciles in flight finish"
    );
    let finished = tokio::select! {
        done = generation.stop_and_wait(Some(grace)) => done,
        _ = second_stop(signals) => false,
    };
    if finished {
        tracing::info!("stopped");
    } else {
        generation.abort();
        tracing::warn!("stopped before reconciles in flight finished");
    }
    engine.save_state();
    Ok(())
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
    fn start(config: &Config, engine: &Arc<Engine>) -> Generation {
        let (stop, _) = watch::channel(false);
        let mut generation = Generation {
            stop,
            tasks: JoinSet::new(),
            pipelines: HashMap::new(),
        };
        for pipeline in &config.pipelines {
            generation.spawn(pipeline.clone(), engine);
        }
        generation
    }

    fn spawn(&mut self, pipeline: Pipeline, engine: &Arc<Engine>) {
        let task = pipeline_loop(engine.clone(), pipeline.clone(), self.stop.subscribe());
        let id = self.tasks.spawn(task).id();
        self.pipelines.insert(id, pipeline);
    }

    /// A pipeline task ended while running, which only a panic does: say so and start it again,
    /// so one bug cannot silently stop a pipeline for good.
    fn restart(
        &mut self,
        ended: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
        engine: &Arc<Engine>,
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
            "pipeline task ended unexpectedly; restarting it"
        );
        self.spawn(pipeline, engine);
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

async fn pipeline_loop(engine: Arc<Engine>, pipeline: Pipeline, mut stop: watch::Receiver<bool>) {
    // Spread the first reconciles over a second.
    let mut delay = Duration::from_millis(fastrand::u64(0..1000));
    let mut failures = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        // Once started, a reconcile runs to its end (a copy is never cut in half by a stop), but
        // it starts no further copy once a stop is asked for.
        let stopping = stop.clone();
        let result = engine
            .reconcile(&pipeline, &Intent::default(), &move || *stopping.borrow())
            .await;
        delay = match result {
            Ok((_, applied)) if applied.iter().all(|a| a.result.is_ok()) => {
                failures = 0;
                jittered(pipeline.interval)
            }
            Ok(_) => {
                failures += 1;
                backoff(failures, pipeline.interval)
            }
            Err(e) => {
                failures += 1;
                let wait = backoff(failures, pipeline.interval);
                tracing::error!(
                    pipeline = %pipeline.name,
                    error = %format!("{:#}", anyhow::Error::new(e)),
                    retry_in_s = wait.as_secs(),
                    "reconcile failed"
                );
                wait
            }
        };
    }
}

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
