//! The processes tests start: the `retagd` binary under test with a clean environment, and
//! [`ProcessGuard`], which kills and reaps a child when dropped, so that no registry,
//! Prometheus, daemon or interrupted `retagd reconcile` outlives its test (also when it panics).

use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The `retagd` binary with a clean environment: no `RETAGD_*` variable of the test run (the
/// suites' own switches such as `RETAGD_FAULTS` would be configuration overrides to it), the
/// default log level spelled out, and no Docker config of the machine's user.
pub fn retagd() -> Command {
    retagd_at(env!("CARGO_BIN_EXE_retagd"))
}

/// [`retagd`] with another binary (a baseline build, in the benchmarks).
pub fn retagd_at(binary: &str) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars() {
        if key.starts_with("RETAGD_") {
            command.env_remove(key);
        }
    }
    command
        .env("RETAGD_LOG", "info")
        .env("DOCKER_CONFIG", "/nonexistent");
    command
}

/// A child process that is killed (SIGKILL) and reaped when dropped. It dereferences to the
/// [`Child`], for its ID, pipes and `try_wait`.
pub struct ProcessGuard {
    child: Child,
    watchdog: Option<Child>,
}

impl ProcessGuard {
    /// Guards `child`, a process that the test itself stops or that ends on its own.
    pub fn new(child: Child) -> ProcessGuard {
        ProcessGuard {
            child,
            watchdog: None,
        }
    }

    /// Guards `child` with a [`spawn_watchdog`] as well: for servers, which must also die when
    /// the test process is killed and no drop runs.
    pub fn watched(child: Child) -> ProcessGuard {
        let watchdog = spawn_watchdog(child.id());
        ProcessGuard { child, watchdog }
    }

    /// Kills the process and reaps it; the watchdog first, so that it can never signal a
    /// reused process ID. The error is the kill's (the process is reaped in any case).
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        let killed = self.child.kill();
        let status = self.child.wait();
        killed.and(status)
    }
}

impl Deref for ProcessGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ProcessGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Drop does not run when the test process is killed (a CI time-out, `kill -9`). A watchdog
/// `sh` waits for EOF on a pipe whose only writer is this process, and then kills `pid` (a server
/// process the harness started): so the server dies with the test process however that ends.
/// (Rust opens pipes close-on-exec, so no other child holds the write end.) The guard kills and
/// reaps the watchdog before it stops the server itself, so that the watchdog can never signal a
/// reused process ID. Best effort: without `sh`, no watchdog.
fn spawn_watchdog(pid: u32) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read _unused; kill {pid} 2>/dev/null"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}
