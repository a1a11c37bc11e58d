//! The phases, in order: wait, then (for `run`) start the command. Each phase's duration goes
//! into the closing summary line.

use std::cell::Cell;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{debug, error, info};

use crate::config::{Command, Config, ConfigError, InitPlan, MigratePhase, WaitConfig};
use crate::error::Error;
use crate::exit::Exit;
use crate::migrate::{self, Action};
use crate::supervise;
use crate::wait::{self, millis};

/// Runs the configured command to its end and returns how preflight should exit. For `run`
/// this only returns if the command could not be started.
pub fn run(config: Config, started: Instant) -> Exit {
    let mut timings = Timings::default();
    let result = match config.command {
        Command::Wait(wait) => {
            if wait.targets.is_empty() {
                Err(ConfigError::Rule(
                    "nothing to wait for: set DATABASE_URL or --database-url, or pass --wait-for",
                )
                .into())
            } else {
                phases(wait, None, &mut timings)
            }
        }
        Command::Run { wait, migrate, init, argv } => {
            // From the start, so a parent that dies while we wait or migrate is noticed too.
            if let Some(death) = init.config.parent_death
                && let Err(e) = crate::child::die_with_parent(death.signal, death.parent)
            {
                return fail(
                    Error::Internal(format!("cannot set the parent-death signal: {e}")),
                    &timings,
                    started,
                );
            }
            let migrate = migrate.map(|m| (m, Action::Apply { dry_run: false }));
            phases(wait, migrate, &mut timings).and_then(|()| Err(start(&argv, &init, &timings, started)))
        }
        Command::NewMigration { dir, name, reversible } => {
            match migrate::new_migration(&dir, &name, reversible, std::time::SystemTime::now()) {
                Ok(paths) => {
                    for path in &paths {
                        println!("{}", path.display());
                    }
                    return Exit::Success;
                }
                Err(why) => Err(Error::usage(format!("migrate new: {why}"))),
            }
        }
        Command::Migrate { wait, migrate, action } => phases(wait, Some((migrate, action)), &mut timings),
        Command::Status { wait, phase, json, check } => {
            let policy = wait.policy.clone();
            phases(wait, None, &mut timings).and_then(|()| {
                let current =
                    runtime()?.block_on(migrate::status(&phase.database, &phase.config, json, &policy))?;
                if check && !current {
                    return Err(migrate::error::MigrateError::NotCurrent.into());
                }
                Ok(())
            })
        }
    };
    match result {
        Ok(()) => done(Exit::Success, &timings, started),
        Err(err) => fail(err, &timings, started),
    }
}

fn fail(err: Error, timings: &Timings, started: Instant) -> Exit {
    let exit = err.exit();
    error!(exit_code = exit.code(), "{err}");
    done(exit, timings, started)
}

/// The last line: how long each phase took, and the exit code.
fn done(exit: Exit, timings: &Timings, started: Instant) -> Exit {
    info!(
        wait_ms = timings.wait.map(millis),
        migrate_ms = timings.migrate.map(millis),
        lock_taken = timings.migrate.map(|_| crate::migrate::lock_taken()),
        total_ms = millis(started.elapsed()),
        exit_code = exit.code(),
        "done"
    );
    exit
}

#[derive(Default)]
struct Timings {
    wait: Option<Duration>,
    migrate: Option<Duration>,
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))
}

/// Wait, then migrate if asked, all under one signal watch: SIGTERM in either phase aborts it
/// (dropping the phase closes its connections, which releases the lock and rolls back).
fn phases(
    wait: WaitConfig,
    migrate: Option<(MigratePhase, Action)>,
    timings: &mut Timings,
) -> Result<(), Error> {
    if wait.targets.is_empty() && migrate.is_none() {
        debug!("no targets configured, nothing to wait for");
        return Ok(());
    }
    let runtime = runtime()?;
    let phase = Cell::new("wait");
    let wait_time = Cell::new(None);
    let migrate_time = Cell::new(None);
    let result = runtime.block_on(async {
        let mut shutdown = Shutdown::install()?;
        let work = async {
            let began = Instant::now();
            let deadline = wait.policy.timeout.map(|t| tokio::time::Instant::now() + t);
            // The connection that proved the database ready is kept for the migration phase, so
            // a crowd of replicas costs the server one login each, not two.
            let keep = migrate.as_ref().and(wait.database.as_ref()).map(|_| 0);
            let waited = wait::wait_all(wait.targets, &wait.policy, keep).await;
            wait_time.set(Some(began.elapsed()));
            let first = waited?;
            if let Some((m, action)) = &migrate {
                phase.set("migrate");
                let began = Instant::now();
                let result =
                    migrate::run(&m.database, &m.config, m.mode, action, &wait.policy, deadline, first).await;
                migrate_time.set(Some(began.elapsed()));
                result?;
            }
            Ok::<(), Error>(())
        };
        tokio::pin!(work);
        loop {
            tokio::select! {
                r = &mut work => break r,
                signal = shutdown.recv() => {
                    // A running command passes the signal to its process group and ends the
                    // phase once the group is gone: dropping it now would release the lock
                    // while the command's children still migrate.
                    if crate::migrate::command_handles_signals() {
                        continue;
                    }
                    crate::migrate::kill_mysql_migration(std::time::Duration::from_secs(3)).await;
                    break Err(Error::Signal { signal: signal as i32, name: signal.as_str(), phase: phase.get() });
                }
            }
        }
    });
    timings.wait = wait_time.get();
    timings.migrate = migrate_time.get();
    // A getaddrinfo call may still be blocked in a worker thread; do not wait for it.
    runtime.shutdown_background();
    result
}

/// Starts the app: exec it, or re-exec preflight into the supervise-only mode that supervises
/// it. Both replace this process, so this only returns on failure.
fn start(argv: &[OsString], init: &InitPlan, timings: &Timings, started: Instant) -> Error {
    info!(
        wait_ms = timings.wait.map(millis),
        migrate_ms = timings.migrate.map(millis),
        lock_taken = timings.migrate.map(|_| crate::migrate::lock_taken()),
        total_ms = millis(started.elapsed()),
        pid = std::process::id(),
        command = %argv[0].to_string_lossy(),
        mode = if init.supervise { "supervise" } else { "exec" },
        "starting"
    );
    debug!(argv = ?argv, "full command line");
    if !init.supervise {
        return supervise::exec(argv, init.config.user.as_ref());
    }
    // Even with nothing waited for or migrated, the supervisor runs in a fresh image: clap,
    // config and the runtime set-up would otherwise stay resident (2588 kB against 1988 kB peak
    // RSS, scripts/bench-init.py) for the app's whole life, for the price of one exec.
    supervise::reexec_supervisor(&init.config.to_argv(), argv)
}

/// The signals that end preflight during its own phases. Installed before any work starts, so a
/// SIGTERM that arrives during the first attempt is not lost.
struct Shutdown {
    streams: Vec<(nix::sys::signal::Signal, Signal)>,
}

impl Shutdown {
    fn install() -> Result<Self, Error> {
        use nix::sys::signal::Signal as S;
        let mut streams = Vec::new();
        for sig in [S::SIGTERM, S::SIGINT, S::SIGHUP, S::SIGQUIT] {
            let stream = signal(SignalKind::from_raw(sig as i32))
                .map_err(|e| Error::Internal(format!("cannot handle {}: {e}", sig.as_str())))?;
            streams.push((sig, stream));
        }
        Ok(Shutdown { streams })
    }

    async fn recv(&mut self) -> nix::sys::signal::Signal {
        std::future::poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*sig);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// `preflight __supervise [flags] -- COMMAND…`, as `run` re-executes itself (see
/// `supervise::args`). `None` when this is not that mode.
pub fn supervise_only() -> Option<Exit> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().map(OsString::as_os_str) != Some(std::ffi::OsStr::new("__supervise")) {
        return None;
    }
    // Re-executed through /proc/self/exe, the kernel named this process `exe`: ps, top and
    // `pkill preflight` should find it under its own name.
    let _ = nix::sys::prctl::set_name(c"preflight");
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("preflight: __supervise needs -- and the command (it is run's internal mode)");
        return Some(Exit::Usage);
    };
    let (flags, argv) = (&args[1..split], &args[split + 1..]);
    // The app's arguments and environment may hold passwords, and errors and debug lines
    // quote the command line.
    let raw: Vec<String> = argv
        .iter()
        .cloned()
        .chain(std::env::vars_os().map(|(_, v)| v))
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    crate::redact::register_by_structure(raw.iter().map(String::as_str));
    let init = match supervise::args::SupervisorArgs::from_argv(flags) {
        Ok(init) => init,
        Err(why) => {
            eprintln!("preflight: __supervise: {why} (it is run's internal mode: use preflight run)");
            return Some(Exit::Usage);
        }
    };
    if let Err(err) = supervise::log::init(init.log_format, &init.log_level, init.ansi) {
        eprintln!("preflight: {err}");
        return Some(err.exit());
    }
    if argv.is_empty() {
        error!(exit_code = Exit::Usage.code(), "run needs a command after --, e.g. -- gunicorn app:app");
        return Some(Exit::Usage);
    }
    Some(supervise::init::supervise(argv, &init).unwrap_or_else(|err| {
        error!(exit_code = err.exit().code(), "{err}");
        err.exit()
    }))
}
