//! The migration phase: bring the schema to the latest version under a cluster-wide lock, or
//! (for readers) wait until another process has.
//!
//! The order of work is chosen so a crowd of replicas costs the database little:
//! 1. one short read of `_sqlx_migrations`, with no lock and no write: when the schema is already
//!    current (the common restart) the phase ends here;
//! 2. otherwise the lock (see `lock`), polled without holding a connection while waiting;
//! 3. under the lock, read again (someone may have migrated meanwhile), back up if configured,
//!    then apply what is pending and release.

pub mod backup;
mod lock;
pub mod plan;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rand::rngs::StdRng;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::classify::{Failure, classify_sqlx, describe_sqlx};
use crate::db::{self, DbConn};
use crate::error::Error;
use crate::exit::Exit;
use crate::target::Target;
use crate::wait::{WaitPolicy, millis};
use plan::{Local, Plan, Problem, State};

/// Where migrations come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory of sqlx-format SQL files.
    Dir(PathBuf),
    /// The project's own tool, e.g. `alembic upgrade head`, already split into argv.
    Command { argv: Vec<String>, check: Option<Vec<String>> },
}

/// What this process does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaMode {
    /// Migrate (under the lock).
    Apply,
    /// Take no lock, write nothing: wait until someone else has migrated.
    Wait,
    /// Neither.
    Skip,
}

#[derive(Debug, Clone)]
pub struct MigrateConfig {
    pub source: Source,
    pub lock_timeout: Duration,
    pub ignore_missing: bool,
    pub single_transaction: bool,
    pub backup: Option<backup::Backup>,
}

/// What `migrate` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Apply {
        dry_run: bool,
    },
    /// Record migrations up to this version (all when `None`) as applied without running them.
    Stamp(Option<i64>),
    /// Run down migrations: those newer than `to`, or the newest `steps`.
    Revert {
        to: Option<i64>,
        steps: u32,
    },
    /// Drop everything, then apply from zero.
    Reset,
}

/// The local migrations, read once.
struct Migrations {
    migrator: Migrator,
    local: Vec<Local>,
    dir: PathBuf,
}

async fn load(dir: &Path) -> Result<Migrations, Error> {
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "--migrations {}: no such directory; point it at your migrations, or use --migrate-command",
            dir.display()
        )));
    }
    let migrator = Migrator::new(dir.to_path_buf()).await.map_err(|e| {
        Error::Config(format!(
            "cannot read migrations from {}: {e}; file names look like 20240101120000_add_users.sql",
            dir.display()
        ))
    })?;
    let files = file_names(dir);
    let down: Vec<i64> = migrator
        .iter()
        .filter(|m| m.migration_type == MigrationType::ReversibleDown)
        .map(|m| m.version)
        .collect();
    let local = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| Local {
            version: m.version,
            description: m.description.to_string(),
            checksum: m.checksum.to_vec(),
            file: files
                .get(&m.version)
                .cloned()
                .unwrap_or_else(|| format!("{}_{}.sql", m.version, m.description)),
            no_tx: m.no_tx,
            reversible: down.contains(&m.version),
        })
        .collect();
    Ok(Migrations { migrator, local, dir: dir.to_path_buf() })
}

/// version → file name of the up migration, for messages.
fn file_names(dir: &Path) -> BTreeMap<i64, String> {
    let mut names = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return names;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql") || name.ends_with(".down.sql") {
            continue;
        }
        if let Some(version) = name.split('_').next().and_then(|v| v.parse::<i64>().ok()) {
            names.insert(version, name);
        }
    }
    names
}

fn up(local: &Migrations, version: i64) -> &Migration {
    local
        .migrator
        .iter()
        .find(|m| m.version == version && !m.migration_type.is_down_migration())
        .expect("every planned version comes from the local migrations")
}

/// Runs the migration phase for `run` and `migrate`.
pub async fn run(
    target: &Target,
    config: &MigrateConfig,
    mode: SchemaMode,
    action: Action,
    policy: &WaitPolicy,
    deadline: Option<Instant>,
    first: Option<DbConn>,
) -> Result<(), Error> {
    match (&config.source, mode) {
        (_, SchemaMode::Skip) => {
            debug!("--schema skip: no migration, no schema check");
            Ok(())
        }
        (Source::Dir(dir), SchemaMode::Apply) => {
            let local = load(dir).await?;
            apply_dir(target, config, &local, action, policy, first).await
        }
        (Source::Dir(dir), SchemaMode::Wait) => {
            let local = load(dir).await?;
            wait_dir(target, config, &local, policy, deadline, first).await
        }
        (Source::Command { argv, check }, SchemaMode::Apply) => {
            apply_command(target, config, argv, check.as_deref(), policy, first).await
        }
        (Source::Command { check, .. }, SchemaMode::Wait) => {
            let check = check
                .as_deref()
                .expect("config requires --schema-check-command with --schema wait and a command source");
            wait_command(check, policy, deadline).await
        }
    }
}

/// Connects for the migration phase, riding out transient refusals (a crowd of replicas can
/// briefly fill `max_connections`) until `until`.
async fn connect(target: &Target, policy: &WaitPolicy, until: Instant) -> Result<DbConn, Error> {
    let mut rng: StdRng = rand::make_rng();
    let mut failures = 0u32;
    loop {
        match db::connect(target, policy.stagger).await {
            Ok((conn, _)) => return Ok(conn),
            Err(failure) if failure.class.is_permanent() || Instant::now() >= until => {
                return Err(Error::Dependency { target: target.name.clone(), failure });
            }
            Err(failure) => {
                debug!(error = %failure.message, class = %failure.class, "cannot connect yet; retrying");
                failures = failures.saturating_add(1);
                tokio::time::sleep(policy.backoff.delay(failures, &mut rng).max(policy.backoff.base)).await;
            }
        }
    }
}

fn db_error(target: &Target, e: &sqlx::Error) -> Error {
    Error::Dependency {
        target: target.name.clone(),
        failure: Failure::new(classify_sqlx(e), target.redactor.redact(&describe_sqlx(e))),
    }
}

async fn apply_dir(
    target: &Target,
    config: &MigrateConfig,
    local: &Migrations,
    action: Action,
    policy: &WaitPolicy,
    first: Option<DbConn>,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut conn = match first {
        Some(conn) => conn,
        None => connect(target, policy, started + config.lock_timeout).await?,
    };
    let destructive = matches!(action, Action::Revert { .. } | Action::Reset);
    if !destructive {
        let fast = fast_path(target, config, local, action, &mut conn, started).await;
        if !matches!(fast, Ok(false)) {
            conn.close().await;
            return fast.map(drop);
        }
    }

    // 2. The lock, trying the connection we already have first.
    let mut guard = lock::acquire(target, Some(conn), config.lock_timeout, policy.stagger).await?;
    let result = apply_locked(target, config, local, action, guard.conn()).await;
    guard.release().await;
    let applied_now = result?;
    info!(applied = applied_now, elapsed_ms = millis(started.elapsed()), "migrations done");
    Ok(())
}

/// Step 1, the fast path: one read, no lock, no write. `true` when the phase is done (the schema
/// is current, or this was a dry run); `false` when the lock is needed.
async fn fast_path(
    target: &Target,
    config: &MigrateConfig,
    local: &Migrations,
    action: Action,
    conn: &mut DbConn,
    started: Instant,
) -> Result<bool, Error> {
    let applied = store::read_applied(conn).await.map_err(|e| db_error(target, &e))?;
    let plan = Plan::new(&local.local, &applied);
    // A dirty row read without the lock may be a MySQL migration in progress (sqlx records
    // success = false before running it): only the lock holder's view of it is final.
    let dry_run = action == (Action::Apply { dry_run: true });
    let dirty_now = !dry_run && matches!(plan.problem(config.ignore_missing), Some(Problem::Dirty(_)));
    if let Some(problem) = plan.problem(config.ignore_missing).filter(|_| !dirty_now) {
        return Err(problem_error(problem, &local.dir, is_mysql(&target.kind)));
    }
    let pending = pending_for(&plan, action);
    if pending.is_empty() && !dirty_now {
        info!(applied = applied.len(), elapsed_ms = millis(started.elapsed()), "schema is current");
        return Ok(true);
    }
    if dry_run {
        for v in &pending {
            let m = local.local.iter().find(|l| l.version == *v).expect("pending comes from local");
            println!("would apply {} {}", m.version, m.file);
        }
        info!(pending = pending.len(), "dry run: nothing was changed");
        return Ok(true);
    }
    Ok(false)
}

fn pending_for(plan: &Plan, action: Action) -> Vec<i64> {
    let pending = plan.pending();
    match action {
        Action::Stamp(Some(to)) => pending.into_iter().filter(|v| *v <= to).collect(),
        _ => pending,
    }
}

/// Step 3, under the lock: read again, then apply (or stamp) what is still pending. Returns how many.
async fn apply_locked(
    target: &Target,
    config: &MigrateConfig,
    local: &Migrations,
    action: Action,
    conn: &mut DbConn,
) -> Result<usize, Error> {
    let mysql = matches!(conn, DbConn::MySql(_));
    if action == Action::Reset {
        if let Some(b) = &config.backup {
            backup::take(b, conn).await?;
        }
        store::drop_all(conn).await.map_err(|e| db_error(target, &e))?;
        warn!("reset: every object in the database was dropped; applying every migration from zero");
    }
    let applied = store::read_applied(conn).await.map_err(|e| db_error(target, &e))?;
    let plan = Plan::new(&local.local, &applied);
    if let Some(problem) = plan.problem(config.ignore_missing) {
        return Err(problem_error(problem, &local.dir, mysql));
    }
    if let Action::Revert { to, steps } = action {
        return revert_locked(target, config, local, conn, &plan, to, steps).await;
    }
    let pending = pending_for(&plan, action);
    if pending.is_empty() {
        info!("another process applied the migrations while we waited for the lock");
        return Ok(0);
    }
    if let (Some(b), false) = (&config.backup, matches!(action, Action::Stamp(_) | Action::Reset)) {
        backup::take(b, conn).await?;
    }
    store::ensure_table(conn).await.map_err(|e| migrate_error(target, local, e, mysql, 0, "applied"))?;
    let migrations: Vec<&Migration> = pending.iter().map(|v| up(local, *v)).collect();

    if let Action::Stamp(_) = action {
        for m in &migrations {
            store::stamp(conn, m).await.map_err(|e| db_error(target, &e))?;
            info!(version = m.version, description = %m.description, "stamped as applied");
        }
        return Ok(migrations.len());
    }

    if config.single_transaction {
        if let Some(m) = migrations.iter().find(|m| m.no_tx) {
            return Err(Error::Migrate {
                message: format!(
                    "migration {} is marked -- no-transaction and cannot run inside --single-transaction; \
                     apply it on its own or drop the flag; nothing was applied",
                    file_of(local, m.version)
                ),
                exit: Exit::MigrationFailed,
            });
        }
        return match store::apply_batch(conn, &migrations).await {
            Ok(took) => {
                for (m, d) in migrations.iter().zip(&took) {
                    info!(version = m.version, description = %m.description, duration_ms = millis(*d), "applied");
                }
                Ok(migrations.len())
            }
            Err((version, e)) => {
                let which = version
                    .map_or_else(|| "the batch".to_owned(), |v| format!("migration {}", file_of(local, v)));
                let line = version.and_then(|v| error_line(&e, up(local, v)));
                Err(Error::Migrate {
                    message: format!(
                        "{which} failed{}: {}; nothing was applied (the whole batch was rolled back)",
                        line.map(|l| format!(" at line {l}")).unwrap_or_default(),
                        target.redactor.redact(&describe_sqlx(&e))
                    ),
                    exit: Exit::MigrationFailed,
                })
            }
        };
    }

    let mut done = 0;
    for m in &migrations {
        match store::apply(conn, m).await {
            Ok(took) => {
                info!(version = m.version, description = %m.description, duration_ms = millis(took), "applied");
                done += 1;
            }
            Err(e) => return Err(migrate_error(target, local, e, mysql, done, "applied")),
        }
    }
    Ok(done)
}

fn is_mysql(kind: &crate::target::TargetKind) -> bool {
    matches!(kind, crate::target::TargetKind::MySql { .. })
}

fn file_of(local: &Migrations, version: i64) -> String {
    local.local.iter().find(|l| l.version == version).map_or_else(|| version.to_string(), |l| l.file.clone())
}

/// The 1-based line of the statement's error position, when PostgreSQL gives one.
fn error_line(e: &sqlx::Error, m: &Migration) -> Option<usize> {
    let db = e.as_database_error()?;
    let pg = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
    match pg.position()? {
        sqlx::postgres::PgErrorPosition::Original(chars) => {
            Some(m.sql.as_str().chars().take(chars.saturating_sub(1)).filter(|c| *c == '\n').count() + 1)
        }
        _ => None,
    }
}

/// `earlier` migrations of this run were already `done` (applied, or reverted) before `e`.
fn migrate_error(
    target: &Target,
    local: &Migrations,
    e: MigrateError,
    mysql: bool,
    earlier: usize,
    done: &str,
) -> Error {
    match e {
        MigrateError::ExecuteMigration(err, version) => {
            let m = up(local, version);
            let line = error_line(&err, m).map(|l| format!(" at line {l}")).unwrap_or_default();
            let state = if mysql {
                format!(
                    "MySQL commits DDL as it goes, so the database may be partially changed and the \
                     migration is recorded as dirty: repair the schema by hand, then \
                     DELETE FROM _sqlx_migrations WHERE version = {version} and run again"
                )
            } else if m.no_tx {
                "it ran without a transaction (-- no-transaction), so statements before the failure \
                 may have taken effect"
                    .to_owned()
            } else {
                "it was rolled back: nothing of it was applied".to_owned()
            };
            let earlier = if earlier > 0 {
                format!("; {earlier} earlier migration(s) of this run stay {done}")
            } else {
                String::new()
            };
            Error::Migrate {
                message: format!(
                    "migration {} failed{line}: {}; {state}{earlier}",
                    file_of(local, version),
                    target.redactor.redact(&describe_sqlx(&err))
                ),
                exit: Exit::MigrationFailed,
            }
        }
        MigrateError::Execute(err) => db_error(target, &err),
        other => Error::Migrate {
            message: target.redactor.redact(&other.to_string()),
            exit: Exit::MigrationFailed,
        },
    }
}

fn problem_error(problem: Problem, dir: &Path, mysql: bool) -> Error {
    match problem {
        Problem::Dirty(r) => Error::Migrate {
            message: format!(
                "migration {} is dirty: it started and did not finish (success = false in _sqlx_migrations){}; \
                 repair the schema by hand, then DELETE FROM _sqlx_migrations WHERE version = {} and run again",
                r.file.unwrap_or_else(|| r.version.to_string()),
                if mysql { ", and MySQL may have applied part of it" } else { "" },
                r.version
            ),
            exit: Exit::Dirty,
        },
        Problem::Changed(r) => Error::Migrate {
            message: format!(
                "migration {} changed after it was applied (checksum mismatch; CRLF line endings cause this too): \
                 restore the file as it was applied, and put new changes in a new migration",
                r.file.unwrap_or_else(|| r.version.to_string())
            ),
            exit: Exit::Changed,
        },
        Problem::Missing(r) => Error::Migrate {
            message: format!(
                "migration {} ({}) is applied in the database but missing from {}: restore the file, \
                 or pass --ignore-missing if a newer release applied it",
                r.version,
                r.description,
                dir.display()
            ),
            exit: Exit::Missing,
        },
    }
}

/// Readers: wait, within the deadline, until every local migration is applied.
async fn wait_dir(
    target: &Target,
    config: &MigrateConfig,
    local: &Migrations,
    policy: &WaitPolicy,
    deadline: Option<Instant>,
    mut first: Option<DbConn>,
) -> Result<(), Error> {
    let start = Instant::now();
    let mut rng: StdRng = rand::make_rng();
    let mut failures = 0u32;
    let mut last_report: Option<Instant> = None;
    // Without a deadline, reconnecting gives up after the lock timeout's worth of refusals.
    let until = deadline.unwrap_or_else(|| start + config.lock_timeout);
    loop {
        let mut conn = match first.take() {
            Some(conn) => conn,
            None => connect(target, policy, until).await?,
        };
        let applied = store::read_applied(&mut conn).await;
        conn.close().await;
        let applied = applied.map_err(|e| db_error(target, &e))?;
        let plan = Plan::new(&local.local, &applied);
        match plan.problem(config.ignore_missing) {
            Some(Problem::Dirty(_)) | None => {}
            Some(problem) => {
                return Err(problem_error(problem, &local.dir, is_mysql(&target.kind)));
            }
        }
        if plan.is_current(config.ignore_missing) {
            info!(waited_ms = millis(start.elapsed()), "schema is current");
            return Ok(());
        }
        if last_report.is_none_or(|t| t.elapsed() >= policy.progress_every) {
            info!(
                pending = plan.with_state(State::Pending).count(),
                dirty = plan.with_state(State::Dirty).count(),
                waited_ms = millis(start.elapsed()),
                "waiting for another process to migrate"
            );
            last_report = Some(Instant::now());
        }
        failures = failures.saturating_add(1);
        sleep_within(policy, &mut rng, failures, deadline, start).await?;
    }
}

async fn sleep_within(
    policy: &WaitPolicy,
    rng: &mut StdRng,
    failures: u32,
    deadline: Option<Instant>,
    start: Instant,
) -> Result<(), Error> {
    // Readers poll no faster than once per backoff ceiling: they are many, the writer is one.
    let delay = policy.backoff.delay(failures, rng).max(policy.backoff.base);
    if let Some(d) = deadline
        && Instant::now() + delay >= d
    {
        tokio::time::sleep_until(d).await;
        return Err(Error::Migrate {
            message: format!(
                "the schema is still not current after {}: is the writer (a process with --schema apply) running? \
                     Raise --timeout if its migrations take longer",
                humantime::format_duration(Duration::from_millis(millis(start.elapsed())))
            ),
            exit: Exit::Timeout,
        });
    }
    tokio::time::sleep(delay).await;
    Ok(())
}

/// Runs a command with our stdout, stderr and environment (plus `env`), no shell.
async fn run_command(
    argv: &[String],
    what: &str,
    env: &[(&str, &str)],
) -> Result<std::process::ExitStatus, Error> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: restore_for_exec only calls sigaction and pthread_sigmask, which are
    // async-signal-safe, and reads atomics.
    unsafe {
        cmd.pre_exec(|| {
            crate::supervise::sigconf::restore_for_exec();
            Ok(())
        });
    }
    info!(command = %argv[0], "running {what}");
    let mut child = cmd.spawn().map_err(|e| {
        let exit =
            if e.kind() == std::io::ErrorKind::NotFound { Exit::NotFound } else { Exit::NotExecutable };
        Error::Exec {
            program: argv[0].clone().into(),
            reason: format!("{what}: {e}"),
            path: std::env::var_os("PATH").unwrap_or_default(),
            exit,
        }
    })?;
    child.wait().await.map_err(|e| Error::Internal(format!("waiting for the {what}: {e}")))
}

/// Under the lock: check again (another replica may have migrated while we waited), back up,
/// then run the command. `None` when the check says there is nothing to do.
async fn command_locked(
    config: &MigrateConfig,
    argv: &[String],
    check: Option<&[String]>,
    conn: &mut DbConn,
) -> Result<Option<std::process::ExitStatus>, Error> {
    if let Some(check) = check
        && run_command(check, "schema check command", &[]).await?.success()
    {
        info!("another process applied the migrations while we waited for the lock");
        return Ok(None);
    }
    // Without a check command there is no telling whether the command will change anything,
    // so the backup is taken every time.
    if let Some(b) = &config.backup {
        backup::take(b, conn).await?;
    }
    run_command(argv, "migration command", &[]).await.map(Some)
}

async fn apply_command(
    target: &Target,
    config: &MigrateConfig,
    argv: &[String],
    check: Option<&[String]>,
    policy: &WaitPolicy,
    first: Option<DbConn>,
) -> Result<(), Error> {
    let started = Instant::now();
    if let Some(check) = check
        && run_command(check, "schema check command", &[]).await?.success()
    {
        info!(elapsed_ms = millis(started.elapsed()), "schema is current (the check command says so)");
        return Ok(());
    }
    let mut guard = lock::acquire(target, first, config.lock_timeout, policy.stagger).await?;
    let status = command_locked(config, argv, check, guard.conn()).await;
    guard.release().await;
    let Some(status) = status? else { return Ok(()) };
    if !status.success() {
        return Err(Error::Migrate {
            message: format!(
                "the migration command '{}' failed ({status}); its own output above says why; the database \
                 is in whatever state the command left it",
                // Only the program: its arguments may carry secrets.
                argv[0]
            ),
            exit: Exit::CommandFailed,
        });
    }
    info!(elapsed_ms = millis(started.elapsed()), "migration command done");
    Ok(())
}

async fn wait_command(check: &[String], policy: &WaitPolicy, deadline: Option<Instant>) -> Result<(), Error> {
    let start = Instant::now();
    let mut rng: StdRng = rand::make_rng();
    let mut failures = 0u32;
    loop {
        let status = run_command(check, "schema check command", &[]).await?;
        if status.success() {
            info!(waited_ms = millis(start.elapsed()), "schema is current");
            return Ok(());
        }
        debug!(%status, "schema check command says not current yet");
        failures = failures.saturating_add(1);
        sleep_within(policy, &mut rng, failures, deadline, start).await?;
    }
}

/// `preflight status`: every migration and its state.
pub async fn status(
    target: &Target,
    dir: &Path,
    ignore_missing: bool,
    json: bool,
    policy: &WaitPolicy,
) -> Result<bool, Error> {
    let local = load(dir).await?;
    let mut conn = connect(target, policy, Instant::now() + policy.attempt_timeout).await?;
    let applied = store::read_applied(&mut conn).await;
    conn.close().await;
    let applied = applied.map_err(|e| db_error(target, &e))?;
    let plan = Plan::new(&local.local, &applied);
    let current = plan.is_current(ignore_missing);
    if json {
        println!("{}", status_json(&plan, current));
    } else {
        print!("{}", status_text(&plan, current));
    }
    if !current {
        warn!(
            pending = plan.with_state(State::Pending).count(),
            changed = plan.with_state(State::Changed).count(),
            missing = plan.with_state(State::Missing).count(),
            dirty = plan.with_state(State::Dirty).count(),
            "schema is not current"
        );
    }
    Ok(current)
}

fn status_text(plan: &Plan, current: bool) -> String {
    let mut out = String::new();
    for r in &plan.rows {
        let when = r.installed_on.as_deref().unwrap_or("-");
        let took = match r.execution_time {
            Some(ns) if ns >= 0 => format!("{:.1}ms", ns as f64 / 1e6),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<20} {:<8} {:<20} {:>10}  {}\n",
            r.version,
            r.state.as_str(),
            when,
            took,
            r.description
        ));
    }
    out.push_str(if current { "schema is current\n" } else { "schema is not current\n" });
    out
}

fn status_json(plan: &Plan, current: bool) -> String {
    let rows: Vec<serde_json::Value> = plan
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "version": r.version,
                "description": r.description,
                "state": r.state.as_str(),
                "file": r.file,
                "installed_on": r.installed_on,
                "execution_ms": r.execution_time.filter(|ns| *ns >= 0).map(|ns| ns as f64 / 1e6),
            })
        })
        .collect();
    serde_json::json!({ "current": current, "migrations": rows }).to_string()
}

/// Runs the down migrations of the chosen applied versions, newest first. Every one must have a
/// `.down.sql`; that is checked before anything runs.
async fn revert_locked(
    target: &Target,
    config: &MigrateConfig,
    local: &Migrations,
    conn: &mut DbConn,
    plan: &Plan,
    to: Option<i64>,
    steps: u32,
) -> Result<usize, Error> {
    let mysql = matches!(conn, DbConn::MySql(_));
    let mut applied: Vec<i64> = plan.with_state(State::Applied).map(|r| r.version).collect();
    applied.reverse();
    let chosen: Vec<i64> = match to {
        Some(to) => applied.into_iter().filter(|v| *v > to).collect(),
        None => applied.into_iter().take(steps as usize).collect(),
    };
    if chosen.is_empty() {
        info!("nothing to revert");
        return Ok(0);
    }
    let mut downs = Vec::with_capacity(chosen.len());
    for v in &chosen {
        let down = local
            .migrator
            .iter()
            .find(|m| m.version == *v && m.migration_type == MigrationType::ReversibleDown)
            .ok_or_else(|| Error::Migrate {
                message: format!(
                    "migration {} has no .down.sql, so it cannot be reverted; nothing was reverted",
                    file_of(local, *v)
                ),
                exit: Exit::MigrationFailed,
            })?;
        downs.push(down);
    }
    if let Some(b) = &config.backup {
        backup::take(b, conn).await?;
    }
    let mut done = 0;
    for down in downs {
        match store::revert(conn, down).await {
            Ok(took) => {
                info!(version = down.version, description = %down.description, duration_ms = millis(took), "reverted");
                done += 1;
            }
            Err(e) => return Err(migrate_error(target, local, e, mysql, done, "reverted")),
        }
    }
    Ok(done)
}
