//! The `retagd` binary: parse, run, map the result to an exit status.

use std::process::ExitCode;

use clap::Parser;
use retagd::cli::{self, Cli};

/// jemalloc rather than glibc's malloc, with its background thread returning freed pages
/// within seconds. Loading a large configuration makes short-lived heap (the parser's and
/// figment's value trees), and reconciles parse tag lists of thousands of tags; glibc kept
/// that high-water mark and per-thread arenas in the daemon's RSS (97 MiB at 1,000 pipelines
/// of 1,000 tags, about 20 MB of it live), jemalloc without the thread 75 MiB, with it 38 MiB,
/// and with the shorter decay of `.cargo/config.toml` 37 MiB. See docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Only memory use depends on it: without the thread, pages go back at the next
    // allocations instead, later.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    match cli::run(cli, &mut stdout, &mut stderr) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`retagd man | head`): nothing more to say, as other tools do.
        Err(failure)
            if failure.error().chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("error: {:#}", failure.error());
            ExitCode::from(failure.exit_code())
        }
    }
}
