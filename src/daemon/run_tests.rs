//! [`run`] driven through its signal channel on paused time: the in-memory registry backend
//! through `Wiring.connect`, and a server that only waits for its stop signal. What the daemon
//! did is read from the backend (copies, HEADs), never from its insides.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use tokio::time::Instant;

use super::*;
use crate::engine::memory::{Memory, Op};
use crate::engine::tests::{pipeline_toml, REGISTRIES};

const GRACE: Duration = Duration::from_secs(30);

const APP: [(&str, &str); 3] = [("r", "app/dev"), ("r", "app/rc"), ("r", "app/release")];
const WEB: [(&str, &str); 2] = [("r", "web/dev"), ("r", "web/rc")];

fn config_text(pipelines: &[String]) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{REGISTRIES}{}",
        pipelines.concat()
    )
}

/// A daemon running on its own task.
struct Daemon {
    signals: mpsc::Sender<Signal>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn start(file: &Path, backend: &Arc<Memory>) -> Daemon {
    let config = config::load(file).unwrap().config;
    let options = Options {
        config_path: file.to_path_buf(),
        grace: GRACE,
        parallel: 4,
    };
    let backend = backend.clone();
    let wiring = Wiring {
        connect: Box::new(move |_, _| Ok(backend.clone() as Arc<dyn Backend>)),
        serve: Box::new(
            |_: tokio::net::TcpListener, _: Arc<Shared>, mut stop: watch::Receiver<bool>| {
                Box::pin(async move {
                    while !*stop.borrow_and_update() {
                        if stop.changed().await.is_err() {
                            break;
                        }
                    }
                    Ok(())
                })
            },
        ),
    };
    let (signals, received) = mpsc::channel(4);
    let task = tokio::spawn(run(config, options, wiring, received));
    Daemon { signals, task }
}

/// Waits on paused time until `done` holds; two intervals (1 min) at most.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(150);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn run_reconciles_reloads_keeps_the_config_on_a_bad_reload_and_stops() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "app/dev", "v1.2.0-dev.1");
    backend.push("r", "app/release", "v1.0.0");
    backend.push("r", "app/release", "v0.9.0");
    backend.push("r", "web/dev", "v2.0.0-dev.1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retagd.toml");
    let app = pipeline_toml("app", &APP, Some("manual"));
    std::fs::write(&file, config_text(std::slice::from_ref(&app))).unwrap();
    let daemon = start(&file, &backend);

    until("app's rc", || !backend.tags("r", "app/rc").is_empty()).await;
    // The release waits for approval; deciding so needed v0.9.0's digest once, then cached.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(backend.heads("r", "app/release", "v0.9.0"), 1);
    assert!(
        backend.tags("r", "web/rc").is_empty(),
        "web is not configured"
    );

    // A new pipeline: it reconciles, and the engine's state (its digest cache) carries over.
    let web = pipeline_toml("web", &WEB, None);
    std::fs::write(&file, config_text(&[app.clone(), web])).unwrap();
    let before = backend.heads("r", "app/dev", "v1.2.0-dev.1");
    daemon.signals.send(Signal::Reload).await.unwrap();
    until("web's rc", || !backend.tags("r", "web/rc").is_empty()).await;
    until("app to reconcile again", || {
        backend.heads("r", "app/dev", "v1.2.0-dev.1") > before
    })
    .await;
    assert_eq!(backend.heads("r", "app/release", "v0.9.0"), 1);

    // An invalid file: logged, and the running configuration keeps reconciling.
    std::fs::write(&file, "[[pipelines]\nname =").unwrap();
    daemon.signals.send(Signal::Reload).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let d = backend.push("r", "app/dev", "v1.3.0-dev.1");
    until("app's next rc", || {
        backend.tags("r", "app/rc").get("v1.3.0-rc.1") == Some(&d)
    })
    .await;
    assert!(!daemon.task.is_finished());

    daemon.signals.send(Signal::Stop).await.unwrap();
    let stopped = tokio::time::timeout(GRACE, daemon.task).await;
    assert!(
        matches!(stopped, Ok(Ok(Ok(())))),
        "run did not return in the grace period: {stopped:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_stuck_at_stop_ends_run_after_the_grace_period() {
    let backend = Arc::new(Memory::default());
    backend.push("r", "web/dev", "v2.0.0-dev.1");
    let _never = backend.hold_copies();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("retagd.toml");
    std::fs::write(&file, config_text(&[pipeline_toml("web", &WEB, None)])).unwrap();
    let daemon = start(&file, &backend);
    until("the copy to start", || backend.calls(Op::Copy) == 1).await;

    let asked = Instant::now();
    daemon.signals.send(Signal::Stop).await.unwrap();
    let stopped = tokio::time::timeout(GRACE * 2, daemon.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "run hung: {stopped:?}");
    let took = asked.elapsed();
    assert!(
        took >= GRACE && took < GRACE + Duration::from_secs(1),
        "{took:?}"
    );
    assert!(backend.tags("r", "web/rc").is_empty());
}
