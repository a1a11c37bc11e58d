//! The migration phase: bring the schema to the latest version under a cluster-wide lock, or
//! (for readers) wait until another process has.
//!
//! Three sources of migrations sit behind one seam, [`SchemaSource`]: a folder of sqlx-format SQL
//! files (`sql`), an Alembic project read natively (`alembic`), and any other tool's command
//! (`command`). Each says how to read the schema's state without writing, and how to change it
//! under the lock. What is written once, here, for all three:
//!
//! 1. the fast path: one read, with no lock and no write; when the schema is already current (the
//!    common restart) the phase ends here, with no process started;
//! 2. otherwise the lock (see `lock`), polled without holding a connection while waiting;
//! 3. under the lock the source reads again (someone may have migrated meanwhile), backs up if
//!    configured, changes the schema and checks the result; then the lock is released;
//! 4. readers (`--schema wait`) poll the same read, with backoff, until it says current.

pub mod alembic;
pub mod backup;
mod command;
pub mod error;
mod lock;
pub mod plan;
mod process;
mod sql;
mod store;

pub use lock::kill_mysql_migration;
pub use lock::taken as lock_taken;
pub use process::handles_signals as command_handles_signals;
pub use sql::Dialect as SqlDialect;
pub use sql::Folder as SqlFolder;
pub use sql::new::create as new_migration;
pub use sql::version as sql_version;

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::classify::{Failure, classify_sqlx, describe_sqlx};
use crate::db::{self, DbConn};
use crate::error::Error;
use crate::target::Target;
use crate::wait::{Schedule, WaitPolicy, millis};
use error::MigrateError;

/// Where migrations come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A directory of sqlx-format SQL files, read and validated when the configuration is.
    Dir(Arc<sql::Folder>),
    /// The project's own tool, e.g. `prisma migrate deploy`, already split into argv.
    Command { argv: Vec<String>, check: Option<Vec<String>> },
    /// An Alembic project, read without Python; `upgrade` replaces `alembic -c INI upgrade heads`.
    Alembic { project: Arc<alembic::Project>, upgrade: Option<Vec<String>> },
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
    /// How long one migration may wait for a table lock (`None`: no limit), and how many more
    /// tries it gets when that passes (SQL files).
    pub ddl_lock_timeout: Option<Duration>,
    pub ddl_retries: u32,
    pub ignore_missing: bool,
    pub single_transaction: bool,
    pub backup: Option<backup::Backup>,
    /// The commands preflight runs (migration tool, check, backup) get `DATABASE_URL` set to the
    /// URL preflight waited for: when unset, or always when the URL came from
    /// `--database-url-env NAME` (the operator named the URL migrations must use).
    pub database_url: PassUrl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassUrl {
    IfUnset,
    Always,
}

/// What `migrate` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Apply {
        dry_run: bool,
    },
    /// Record migrations up to this version or revision (all, or the heads, when `None`) as
    /// applied without running them.
    Stamp(Option<String>),
    /// Undo migrations: those newer than `to`, or the newest `steps`.
    Revert {
        to: Option<String>,
        steps: u32,
    },
    /// Drop everything, then apply from zero.
    Reset,
}

/// What a source read, without the lock and without writing.
pub(crate) struct Reading {
    /// Nothing to do for the action.
    pub current: bool,
    /// A problem only the lock holder can judge: a MySQL migration in progress looks like a dirty
    /// row from outside. A dry run reports it; a writer takes the lock to look again; a reader
    /// keeps waiting.
    pub doubt: Option<Error>,
    /// How many migrations are pending, when known.
    pub pending: Option<usize>,
    /// Where the schema stands, for the log (`3 migrations applied`, `at 0005 (the head)`).
    pub detail: String,
    /// What `--dry-run` prints, one line each.
    pub plan: Vec<String>,
}

/// One source of migrations. Errors from `read` are problems no waiting fixes (a changed file, a
/// revision the database has and the files do not, a broken check command).
#[allow(async_fn_in_trait)]
pub(crate) trait SchemaSource {
    /// Whether `read` needs a database connection (a check command does not).
    fn reads_database(&self) -> bool {
        true
    }
    async fn read(&self, conn: Option<&mut DbConn>, action: &Action) -> Result<Reading, Error>;
    /// Under the lock: read again, back up, change the schema and check the result. Returns how
    /// many migrations changed.
    async fn apply_locked(&self, conn: &mut DbConn, action: &Action) -> Result<usize, Error>;
}

/// Runs the migration phase for `run` and `migrate`.
pub async fn run(
    target: &Target,
    config: &MigrateConfig,
    mode: SchemaMode,
    action: &Action,
    policy: &WaitPolicy,
    deadline: Option<Instant>,
    first: Option<DbConn>,
) -> Result<(), Error> {
    if mode == SchemaMode::Skip {
        debug!("--schema skip: no migration, no schema check");
        return Ok(());
    }
    let phase = Phase { target, config, policy };
    match &config.source {
        Source::Dir(folder) => {
            let source = sql::Sql::new(folder, target, config);
            phase.run(&source, mode, action, deadline, first).await
        }
        Source::Command { argv, check } => {
            let source = command::Command::new(argv, check.as_deref(), target, config);
            phase.run(&source, mode, action, deadline, first).await
        }
        Source::Alembic { project, upgrade } => {
            let source = alembic::Alembic::new(project, upgrade.as_deref(), target, config);
            phase.run(&source, mode, action, deadline, first).await
        }
    }
}

/// `preflight status`: every migration and its state, on stdout. `true` when current.
pub async fn status(
    target: &Target,
    config: &MigrateConfig,
    json: bool,
    policy: &WaitPolicy,
) -> Result<bool, Error> {
    let mut conn = connect(target, policy, Instant::now() + policy.attempt_timeout).await?;
    let result = match &config.source {
        Source::Dir(folder) => sql::Sql::new(folder, target, config).status(&mut conn, json).await,
        Source::Alembic { project, upgrade } => {
            alembic::Alembic::new(project, upgrade.as_deref(), target, config).status(&mut conn, json).await
        }
        // Refused with exit 2 while the configuration is read.
        Source::Command { .. } => Err(Error::Internal("status has no reader for --migrate-command".into())),
    };
    conn.close().await;
    result
}

/// The parts of the phase that every source shares.
struct Phase<'a> {
    target: &'a Target,
    config: &'a MigrateConfig,
    policy: &'a WaitPolicy,
}

impl Phase<'_> {
    async fn run<S: SchemaSource>(
        &self,
        source: &S,
        mode: SchemaMode,
        action: &Action,
        deadline: Option<Instant>,
        first: Option<DbConn>,
    ) -> Result<(), Error> {
        match mode {
            SchemaMode::Skip => Ok(()),
            SchemaMode::Apply => self.apply_retrying(source, action, deadline, first).await,
            SchemaMode::Wait => self.wait(source, deadline, first).await,
        }
    }

    /// `apply`, again when the database fails with an error waiting may fix (the server
    /// restarting, 57P01; SQLite busy behind the app's write transaction; the network) within
    /// the deadline (`--timeout`, or `--lock-timeout` without one). What was committed stays and
    /// what was not was rolled back, so the next try reads the state afresh and goes on. Only
    /// for applying and stamping: a revert or reset that failed half way is not repeated.
    async fn apply_retrying<S: SchemaSource>(
        &self,
        source: &S,
        action: &Action,
        deadline: Option<Instant>,
        mut first: Option<DbConn>,
    ) -> Result<(), Error> {
        let until = deadline.unwrap_or_else(|| Instant::now() + self.config.lock_timeout);
        let retriable = matches!(action, Action::Apply { .. } | Action::Stamp(_));
        let mut rng: StdRng = rand::make_rng();
        let mut schedule = Schedule::new(self.policy.backoff, Some(until), self.policy.progress_every)
            .with_floor(self.policy.backoff.base);
        let mut tries = 1u32;
        loop {
            match self.apply(source, action, first.take()).await {
                Err(Error::Dependency { target, failure }) if retriable && !failure.class.is_permanent() => {
                    let Some(step) = schedule.next(Instant::now(), &mut rng) else {
                        return Err(Error::Dependency { target, failure });
                    };
                    warn!(
                        error = %failure.message,
                        attempt = tries,
                        "the database failed during the migration phase with an error that waiting may fix; \
                         what was committed stays, the rest was rolled back; trying again"
                    );
                    tries += 1;
                    tokio::time::sleep(step.sleep).await;
                }
                other => return other,
            }
        }
    }

    async fn apply<S: SchemaSource>(
        &self,
        source: &S,
        action: &Action,
        first: Option<DbConn>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut conn = match first {
            Some(conn) => conn,
            None => connect(self.target, self.policy, started + self.config.lock_timeout).await?,
        };
        // 1. The fast path, except for the verbs that always change something.
        if !matches!(action, Action::Revert { .. } | Action::Reset) {
            let reading = source.read(Some(&mut conn), action).await;
            let done = match reading {
                Err(e) => Some(Err(e)),
                Ok(r) if *action == (Action::Apply { dry_run: true }) => Some(match r.doubt {
                    Some(problem) => Err(problem),
                    None => {
                        for line in &r.plan {
                            println!("{}", crate::redact::scrub(line));
                        }
                        info!(pending = r.pending, "dry run: nothing was changed");
                        Ok(())
                    }
                }),
                Ok(r) if r.current && r.doubt.is_none() => {
                    info!(state = %r.detail, elapsed_ms = millis(started.elapsed()), "schema is current");
                    Some(Ok(()))
                }
                Ok(_) => None,
            };
            if let Some(result) = done {
                conn.close().await;
                return result;
            }
        }
        // 2. The lock, trying the connection we already have first; 3. the change, under it.
        let mut guard =
            lock::acquire(self.target, Some(conn), self.config.lock_timeout, self.policy.stagger).await?;
        let result = source.apply_locked(guard.conn(), action).await;
        guard.release().await;
        let changed = result?;
        info!(applied = changed, elapsed_ms = millis(started.elapsed()), "migrations done");
        Ok(())
    }

    /// Readers: wait, within the deadline, until the source reads current.
    async fn wait<S: SchemaSource>(
        &self,
        source: &S,
        deadline: Option<Instant>,
        mut first: Option<DbConn>,
    ) -> Result<(), Error> {
        let start = Instant::now();
        let mut rng: StdRng = rand::make_rng();
        // Readers poll no faster than once per backoff base: they are many, the writer is one.
        let mut schedule = Schedule::new(self.policy.backoff, deadline, self.policy.progress_every)
            .with_floor(self.policy.backoff.base);
        // Without a deadline, reconnecting gives up after the lock timeout's worth of refusals.
        let until = deadline.unwrap_or_else(|| start + self.config.lock_timeout);
        let action = Action::Apply { dry_run: false };
        loop {
            let reading = if source.reads_database() {
                let mut conn = match first.take() {
                    Some(conn) => conn,
                    None => connect(self.target, self.policy, until).await?,
                };
                let mut reading = source.read(Some(&mut conn), &action).await;
                // A problem in doubt (a dirty row) may be a writer at work. With nobody holding
                // the lock, it is not: read once more (the writer may have just finished) and,
                // if it is still there, it is final. Waiting for the deadline would not fix it.
                if matches!(&reading, Ok(r) if r.doubt.is_some())
                    && !lock::is_held(self.target, &mut conn).await
                {
                    reading = source.read(Some(&mut conn), &action).await;
                    if let Ok(Reading { doubt: Some(problem), .. }) = reading {
                        conn.close().await;
                        return Err(problem);
                    }
                }
                conn.close().await;
                reading?
            } else {
                if let Some(conn) = first.take() {
                    conn.close().await;
                }
                source.read(None, &action).await?
            };
            if reading.current && reading.doubt.is_none() {
                info!(state = %reading.detail, waited_ms = millis(start.elapsed()), "schema is current");
                return Ok(());
            }
            let Some(step) = schedule.next(Instant::now(), &mut rng) else {
                let waited = Duration::from_millis(millis(start.elapsed()));
                return Err(MigrateError::NeverCurrent { waited }.into());
            };
            if step.report {
                info!(
                    pending = reading.pending,
                    state = %reading.detail,
                    in_doubt = reading.doubt.is_some(),
                    waited_ms = millis(start.elapsed()),
                    "waiting for another process to migrate"
                );
            }
            tokio::time::sleep(step.sleep).await;
        }
    }
}

/// Connects for the migration phase, riding out transient refusals (a crowd of replicas can
/// briefly fill `max_connections`) until `until`.
async fn connect(target: &Target, policy: &WaitPolicy, until: Instant) -> Result<DbConn, Error> {
    let mut rng: StdRng = rand::make_rng();
    let mut schedule =
        Schedule::new(policy.backoff, Some(until), policy.progress_every).with_floor(policy.backoff.base);
    loop {
        let failure = match db::connect(target, policy.stagger).await {
            Ok((conn, _)) => return Ok(conn),
            Err(failure) if failure.class.is_permanent() => failure,
            Err(failure) => match schedule.next(Instant::now(), &mut rng) {
                Some(step) => {
                    debug!(error = %failure.message, class = %failure.class, "cannot connect yet; retrying");
                    tokio::time::sleep(step.sleep).await;
                    continue;
                }
                None => failure,
            },
        };
        return Err(Error::Dependency { target: target.name.clone(), failure });
    }
}

fn db_error(target: &Target, e: &sqlx::Error) -> Error {
    Error::Dependency {
        target: target.name.clone(),
        failure: Failure::new(classify_sqlx(e), crate::redact::scrub_owned(&describe_sqlx(e))),
    }
}

/// The environment a command gets on top of ours: `DATABASE_URL` = the URL preflight waited for,
/// spelled `spelled` (the Alembic source spells it for SQLAlchemy). It is left alone only when it
/// is set to another URL than the one preflight used (`--database-url` given beside it), unless
/// `--database-url-env` named the URL for migrations.
fn command_env(config: &MigrateConfig, target: &Target, spelled: String) -> Vec<(&'static str, String)> {
    let set = std::env::var_os("DATABASE_URL");
    let ours = target.url.expose();
    match (config.database_url, set) {
        (PassUrl::IfUnset, Some(existing)) if existing.to_str() != Some(ours) => {
            // Neither value is printed: both may hold a password.
            warn!(
                "DATABASE_URL is set to another URL than the one preflight waited for (--database-url); \
                 the commands get DATABASE_URL as it is set, so they may migrate another database"
            );
            Vec::new()
        }
        _ => vec![("DATABASE_URL", spelled)],
    }
}
