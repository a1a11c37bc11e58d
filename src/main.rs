//! preflight: wait for the database and other dependencies, migrate, then start the app.

mod app;
mod classify;
mod cli;
mod config;
mod db;
mod error;
mod exit;
mod log;
mod migrate;
mod net;
mod supervise;
mod target;
mod wait;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

fn main() -> ExitCode {
    let started = Instant::now();
    // The supervise-only process that `run` re-executes into skips clap: building the whole
    // command tree touches more memory than the supervisor itself needs (see supervise::init).
    if let Some(exit) = app::supervise_only() {
        return exit.into();
    }
    cli_main(started)
}

/// Everything but the supervise-only mode. Kept out of `main` so the supervisor's code stays
/// small and together (scripts/supervisor-layout.ld).
#[inline(never)]
fn cli_main(started: Instant) -> ExitCode {
    // clap prints usage errors itself and exits 2, our code for them.
    let cli = cli::Cli::parse();
    if let Err(err) = log::init(&config::LogConfig::from_cli(&cli)) {
        eprintln!("preflight: {err}");
        return err.exit().into();
    }
    let exit = match config::Config::from_cli(cli) {
        Ok(config) => app::run(config, started),
        Err(err) => {
            tracing::error!(exit_code = err.exit().code(), "{err}");
            err.exit()
        }
    };
    exit.into()
}
