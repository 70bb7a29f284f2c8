//! The `wick` binary: parse the configuration, set up logging and threads, serve until a signal.

use std::process::ExitCode;

use tokio::net::TcpListener;

use wick::config::{Cli, Command, Config};

/// mimalloc keeps freed pages for reuse where glibc returns each multi-megabyte activation
/// buffer to the kernel and page-faults it back on the next forward pass.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Cli::from_env().command {
        Command::Serve(config) => config,
        Command::Probe { url, timeout } => {
            return match wick::probe::get_status(&url, Config::secs(timeout)) {
                Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("wick probe: {url} answered {status}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("wick probe: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    wick::telemetry::init(config.log_format);
    match wick::model::simd::check_env() {
        Ok(level) => tracing::info!(
            simd = %level,
            cpu_has = %wick::model::simd::detected(),
            "vector instructions chosen for the CPU kernels"
        ),
        Err(e) => {
            eprintln!("wick: {e}");
            return ExitCode::FAILURE;
        }
    }
    size_math_threads(&config);
    // Blocking threads only tokenize (CPU-bound): more than a few per core adds memory
    // (a stack and an allocator heap each) without adding throughput.
    let blocking_threads = 2 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 2;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wick: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(*config))
}

/// candle sizes its CPU thread pool from RAYON_NUM_THREADS, else from the physical core count,
/// which ignores a container's CPU quota. Set it to the quota (or --threads) before any thread
/// exists, so the model never runs more threads than the pod may use.
fn size_math_threads(config: &Config) {
    let threads = config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
}

async fn serve(config: Config) -> ExitCode {
    let listener = match TcpListener::bind(config.listen_addr()).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(address = %config.listen_addr(), error = %e, "cannot listen");
            eprintln!("wick: cannot listen on {}: {e}", config.listen_addr());
            return ExitCode::FAILURE;
        }
    };
    match wick::server::run(config, listener, wick::signals::shutdown()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "wick failed");
            eprintln!("wick: {e:#}");
            ExitCode::FAILURE
        }
    }
}
