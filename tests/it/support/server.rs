//! Runs an axum router on its own thread and runtime, bound to `127.0.0.1:0`.
//!
//! A server on the test's own runtime stops answering while the test blocks that runtime (a
//! `#[tokio::test]` is single-threaded by default, and a test may run the `retagd` binary
//! synchronously). A dedicated thread avoids that deadlock whatever the test does.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// A running background server; dropping it stops the server and every open connection.
pub struct BackgroundServer {
    /// The address the server listens on.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundServer {
    /// Binds a loopback port now (so the address is known and accepting when this returns) and
    /// serves `make_router()` on a new thread. The router is built on the server's runtime, so it
    /// may create clients (reqwest) whose connection pools live there.
    pub fn spawn<F>(name: &str, make_router: F) -> BackgroundServer
    where
        F: FnOnce(SocketAddr) -> axum::Router + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("{name}: bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{name}: local address of the listener: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{name}: make the listener non-blocking: {e}"));
        let (tx, rx) = oneshot::channel::<()>();
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("{thread_name}: build the runtime: {e}"));
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .unwrap_or_else(|e| panic!("{thread_name}: adopt the listener: {e}"));
                    let router = make_router(addr);
                    tokio::select! {
                        result = axum::serve(listener, router) => {
                            if let Err(e) = result {
                                eprintln!("{thread_name}: server stopped: {e}");
                            }
                        }
                        _ = rx => {}
                    }
                });
                // Dropping the runtime here cancels every connection task still running.
            })
            .unwrap_or_else(|e| panic!("{name}: spawn the server thread: {e}"));
        BackgroundServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread was already printed; do not panic again in drop.
            let _ = thread.join();
        }
    }
}
