//! The `wick` binary: parse the configuration, set up logging, serve until a signal.

use clap::Parser;
use tokio::net::TcpListener;

use wick::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let Command::Serve(config) = cli.command;
    wick::telemetry::init(config.log_format);
    let listener = match TcpListener::bind(config.listen_addr()).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(address = %config.listen_addr(), error = %e, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    match wick::server::run(*config, listener, wick::signals::shutdown()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "wick failed");
            eprintln!("wick: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
