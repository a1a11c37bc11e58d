//! preflight: wait for the database and other dependencies, migrate, then start the app.

mod app;
mod child;
mod classify;
mod cli;
mod config;
mod db;
mod duration;
mod error;
mod exit;
mod http;
mod log;
mod migrate;
mod net;
mod redact;
mod supervise;
mod target;
mod wait;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

/// The static (musl) build's allocator. musl's own maps and unmaps a region for nearly every
/// new size class and gives it back as soon as it is free: parsing the command line alone made
/// some 130 mmap/munmap calls, a third of the start time of `run --init always -- true`
/// (scripts/bench-init.py). dlmalloc keeps what it took. glibc builds keep glibc's malloc.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> ExitCode {
    let started = Instant::now();
    // The lock is taken around fork: a child forked while another thread (tokio's blocking
    // pool) is allocating must not inherit it held.
    // SAFETY: called once, first, while the process has one thread.
    #[cfg(target_env = "musl")]
    unsafe {
        dlmalloc::enable_alloc_after_fork()
    };
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
    redact::install_panic_hook();
    let args = raw_args();
    // Every variable: a password file's path is harmless, a URL in an unexpected one is not.
    let env: Vec<String> = std::env::vars_os()
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .filter(|v| v.contains(':'))
        .collect();
    redact::register_from_raw(args.iter().chain(&env).map(String::as_str));
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(err).into(),
    };
    if let Some(exit) = print_help_files(&cli.command) {
        return exit.into();
    }
    if let Err(err) = log::init(&config::LogConfig::from_cli(&cli)) {
        // A bad --log-level: reported as the format asks, JSON included.
        let json = config::LogConfig::json();
        if cli.log_format == cli::LogFormat::Json && log::init(&json).is_ok() {
            tracing::error!(exit_code = err.exit().code(), "{err}");
        } else {
            eprintln!("preflight: {}", redact::scrub(&err.to_string()));
        }
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

/// An argument error. clap would print it with the argument as given, which may be a URL with
/// its password (`preflight run postgres://u:PW@db/app`): the text is scrubbed first, and under
/// JSON logs it is a JSON log line like every other error.
fn usage_error(err: clap::Error) -> exit::Exit {
    use clap::error::ErrorKind;
    if matches!(err.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = err.print();
        return exit::Exit::Success;
    }
    let mut text = err.render().to_string();
    if let Some(tip) = tip(&err) {
        // Before clap's closing "For more information" line.
        let at = text.find("\nFor more information").map_or(text.len(), |i| i + 1);
        text.insert_str(at, &format!("  tip: {tip}\n\n"));
    }
    let text = redact::scrub(&text);
    let json = config::LogConfig::json();
    if json_logs_requested() && log::init(&json).is_ok() {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let message = lines.next().unwrap_or_default().trim_start_matches("error: ").to_owned();
        let detail = lines.collect::<Vec<_>>().join(" ");
        tracing::error!(exit_code = exit::Exit::Usage.code(), detail, "{message}");
    } else {
        eprint!("{text}");
    }
    exit::Exit::Usage
}

/// The fix for the mistakes people make most: the app's command without `--`, and a bad value
/// that came from an environment variable rather than the command line (clap names the flag).
fn tip(err: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let args = raw_args();
    let args = &args[..args.iter().position(|a| a == "--").unwrap_or(args.len())];
    let invalid = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => return None,
    };
    match err.kind() {
        ErrorKind::UnknownArgument if !invalid.starts_with('-') && args.iter().any(|a| a == "run") => {
            Some(format!("the app's command goes after --: preflight run [OPTIONS] -- {invalid} …"))
        }
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let long = invalid.split_whitespace().next()?.trim_start_matches("--").to_owned();
            let on_command_line =
                args.iter().any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
            let command = <cli::Cli as clap::CommandFactory>::command();
            let env = std::iter::once(&command)
                .chain(command.get_subcommands())
                .flat_map(|c| c.get_arguments())
                .find(|a| a.get_long() == Some(long.as_str()))?
                .get_env()?
                .to_string_lossy()
                .into_owned();
            (!on_command_line && std::env::var_os(&env).is_some())
                .then(|| format!("the value comes from the environment variable {env}: fix or unset it"))
        }
        _ => None,
    }
}

/// Whether `--log-format json` (or PREFLIGHT_LOG_FORMAT=json) was asked for, read from the raw
/// arguments when clap could not parse them. Arguments after `--` are the app's.
fn json_logs_requested() -> bool {
    let args = raw_args();
    let args = &args[..args.iter().position(|a| a == "--").unwrap_or(args.len())];
    let flag = args.iter().enumerate().rev().find_map(|(i, a)| {
        if let Some(v) = a.strip_prefix("--log-format=") {
            Some(v.to_owned())
        } else if a == "--log-format" {
            args.get(i + 1).cloned()
        } else {
            None
        }
    });
    flag.or_else(|| std::env::var("PREFLIGHT_LOG_FORMAT").ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("json"))
}

/// The arguments as given, lossily decoded: an argument that is not UTF-8 (the app's, after
/// `--`, may be anything) is never a reason to panic. clap and the app get the raw ones.
fn raw_args() -> Vec<String> {
    std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect()
}

/// `completions SHELL` and `man`: generated from the same command tree as `--help`.
fn print_help_files(command: &cli::Command) -> Option<exit::Exit> {
    use std::io::Write;
    // Built only here: building the tree costs every start time.
    let tree = <cli::Cli as clap::CommandFactory>::command;
    let mut out = Vec::new();
    match command {
        cli::Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut tree(), "preflight", &mut out)
        }
        cli::Command::Man => {
            if let Err(e) = clap_mangen::Man::new(tree()).render(&mut out) {
                eprintln!("preflight: cannot render the manual page: {e}");
                return Some(exit::Exit::Failure);
            }
        }
        _ => return None,
    }
    // A closed pipe (`preflight man | head`) is not an error worth a message.
    let _ = std::io::stdout().lock().write_all(&out);
    Some(exit::Exit::Success)
}
