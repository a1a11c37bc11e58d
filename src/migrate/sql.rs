//! The SQL source: a folder of sqlx-format files, applied with sqlx's own migrator code into
//! `_sqlx_migrations` (see `store`), compared with what the database recorded by `plan`.

use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType};
use tracing::{info, warn};

mod files;
mod statements;
pub use files::Folder;
pub use statements::{Dialect, split as split_statements};

use super::plan::{Local, Plan, Problem, State};
use super::{Action, MigrateConfig, Reading, SchemaSource, backup, db_error, store};
use crate::classify::describe_sqlx;
use crate::db::DbConn;
use crate::error::Error;
use crate::exit::Exit;
use crate::target::{Target, TargetKind};
use crate::wait::millis;

/// The local migrations, read once.
pub(super) struct Sql<'a> {
    folder: &'a Folder,
    local: Vec<Local>,
    target: &'a Target,
    config: &'a MigrateConfig,
}

/// A stamp or revert version as the SQL source takes it: the number before `_` in a file name.
pub fn version(flag: &str, raw: &str) -> Result<i64, Error> {
    raw.parse::<i64>().map_err(|_| {
        Error::Config(format!(
            "{flag} '{raw}': give a migration version (the number before '_' in its file name)"
        ))
    })
}

impl<'a> Sql<'a> {
    pub fn new(folder: &'a Folder, target: &'a Target, config: &'a MigrateConfig) -> Self {
        let local = folder
            .migrations
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| Local {
                version: m.version,
                description: m.description.to_string(),
                checksum: m.checksum.to_vec(),
                file: folder.files.get(&(m.version, false)).cloned().unwrap_or_default(),
                no_tx: m.no_tx,
                reversible: folder.files.contains_key(&(m.version, true)),
            })
            .collect();
        Sql { folder, local, target, config }
    }

    fn up(&self, version: i64) -> &Migration {
        self.folder
            .migrations
            .iter()
            .find(|m| m.version == version && !m.migration_type.is_down_migration())
            .expect("every planned version comes from the local migrations")
    }

    fn file_of(&self, version: i64) -> String {
        self.local
            .iter()
            .find(|l| l.version == version)
            .map_or_else(|| version.to_string(), |l| l.file.clone())
    }

    fn mysql(&self) -> bool {
        matches!(self.target.kind, TargetKind::MySql { .. })
    }

    /// `preflight status` for SQL files. `true` when current.
    pub async fn status(&self, conn: &mut DbConn, json: bool) -> Result<bool, Error> {
        let applied = store::read_applied(conn).await.map_err(|e| db_error(self.target, &e))?;
        let plan = Plan::new(&self.local, &applied);
        let current = plan.is_current(self.config.ignore_missing);
        if json {
            println!("{}", crate::redact::scrub(&status_json(&plan, current)));
        } else {
            print!("{}", crate::redact::scrub(&status_text(&plan, current)));
        }
        // After the listing, a problem has its own exit code (11 dirty, 12 changed, 13 missing),
        // as for the Alembic source and for `migrate`; only "pending" is --check's 16.
        if let Some(problem) = plan.problem(self.config.ignore_missing) {
            return Err(self.problem_error(problem));
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

    /// Runs the down migrations of the chosen applied versions, newest first. Every one must have a
    /// `.down.sql`; that is checked before anything runs.
    async fn revert_locked(
        &self,
        conn: &mut DbConn,
        plan: &Plan,
        to: Option<i64>,
        steps: u32,
    ) -> Result<usize, Error> {
        let mut applied: Vec<i64> = plan.with_state(State::Applied).map(|r| r.version).collect();
        // A target that is not behind the database is a mistake, not "nothing to do".
        match to {
            None if steps as usize > applied.len() => {
                return Err(Error::Config(format!(
                    "--steps {steps}: only {} migrations are applied; use fewer, or --to 0 for all",
                    applied.len()
                )));
            }
            Some(v) if v != 0 && !applied.contains(&v) => {
                return Err(Error::Config(format!(
                    "--to {v}: migration {} is not applied; revert only goes back, migrate goes forward",
                    self.file_of(v)
                )));
            }
            _ => {}
        }
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
            let down = self
                .folder
                .migrations
                .iter()
                .find(|m| m.version == *v && m.migration_type == MigrationType::ReversibleDown)
                .ok_or_else(|| Error::Migrate {
                    message: format!(
                        "migration {} has no .down.sql, so it cannot be reverted; nothing was reverted",
                        self.file_of(*v)
                    ),
                    exit: Exit::MigrationFailed,
                })?;
            downs.push(down);
        }
        if let Some(b) = &self.config.backup {
            backup::take(b, conn, self.config, self.target).await?;
        }
        let mut done = 0;
        for down in downs {
            match store::revert(conn, down).await {
                Ok(took) => {
                    info!(version = down.version, description = %down.description, duration_ms = millis(took), "reverted");
                    done += 1;
                }
                Err(e) => return Err(self.migrate_error(e, done, "reverted")),
            }
        }
        Ok(done)
    }

    /// `earlier` migrations of this run were already `done` (applied, or reverted) before `e`.
    fn migrate_error(&self, e: MigrateError, earlier: usize, done: &str) -> Error {
        match e {
            MigrateError::ExecuteMigration(err, version) => {
                let m = self.up(version);
                let line = error_line(&err, m).map(|l| format!(" at line {l}")).unwrap_or_default();
                let state = if self.mysql() {
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
                let message = format!(
                    "migration {} failed{line}: {}; {state}{earlier}",
                    self.file_of(version),
                    crate::redact::scrub_owned(&describe_sqlx(&err))
                );
                // The server went away or said "not yet" (a restart, a busy SQLite file): not
                // the migration's fault, and the phase may try again (see `apply_retrying`).
                let class = crate::classify::classify_sqlx(&err);
                if !class.is_permanent() {
                    return Error::Dependency {
                        target: self.target.name.clone(),
                        failure: crate::classify::Failure::new(class, message),
                    };
                }
                Error::Migrate { message, exit: Exit::MigrationFailed }
            }
            MigrateError::Execute(err) => db_error(self.target, &err),
            other => Error::Migrate {
                message: crate::redact::scrub_owned(&other.to_string()),
                exit: Exit::MigrationFailed,
            },
        }
    }

    fn problem_error(&self, problem: Problem) -> Error {
        match problem {
            Problem::Dirty(r) => Error::Migrate {
                message: format!(
                    "migration {} is dirty: it started and did not finish (success = false in _sqlx_migrations){}; \
                     repair the schema by hand, then DELETE FROM _sqlx_migrations WHERE version = {} and run again",
                    r.file.unwrap_or_else(|| r.version.to_string()),
                    if self.mysql() { ", and MySQL may have applied part of it" } else { "" },
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
                    self.folder.dir.display()
                ),
                exit: Exit::Missing,
            },
        }
    }

    /// A migration timed out waiting for a table lock (try number `tries`). A transactional one
    /// on PostgreSQL was rolled back whole, so it can be tried again after a pause while the
    /// app's transactions finish; otherwise, or when the tries are spent, it is an error naming
    /// the likely blockers (exit 18).
    async fn blocked(&self, conn: &mut DbConn, m: &Migration, tries: u32, done: usize) -> Result<(), Error> {
        let (config, file) = (self.config, self.file_of(m.version));
        let blockers = store::oldest_transactions(conn).await.unwrap_or_default();
        let blockers = if blockers.is_empty() { "unknown".to_owned() } else { blockers.join("; ") };
        let waited =
            config.ddl_lock_timeout.map(|d| humantime::format_duration(d).to_string()).unwrap_or_default();
        let retriable = !m.no_tx && matches!(conn, DbConn::Pg(_));
        if retriable && tries <= config.ddl_retries {
            // Up to 1 s, 2 s, 4 s… (5 s at most), at random: many replicas do not come back at once.
            let ceiling = Duration::from_secs(1 << (tries - 1).min(3)).min(Duration::from_secs(5));
            let pause = Duration::from_millis(rand::random_range(0..=ceiling.as_millis() as u64));
            warn!(
                migration = %file,
                waited = %waited,
                attempt = tries,
                of = config.ddl_retries + 1,
                oldest_transactions = %blockers,
                pause_ms = millis(pause),
                "a migration waited too long for a table lock and was rolled back; trying again"
            );
            tokio::time::sleep(pause).await;
            return Ok(());
        }
        let state = if retriable {
            "it was rolled back, nothing of it was applied".to_owned()
        } else if self.mysql() {
            "MySQL may have applied part of it".to_owned()
        } else {
            "the statements before the one that waited were applied".to_owned()
        };
        Err(Error::Migrate {
            message: format!(
                "migration {file} could not lock its tables within {waited} ({tries} tries); {state}; \
                 {done} migrations before it were applied; the oldest open transactions here: {blockers}; end \
                 them (or wait until they end) and run again, or raise --ddl-lock-timeout / --ddl-retries"
            ),
            exit: Exit::DdlBlocked,
        })
    }

    async fn apply_batch(&self, conn: &mut DbConn, migrations: &[&Migration]) -> Result<usize, Error> {
        if let Some(m) = migrations.iter().find(|m| m.no_tx) {
            return Err(Error::Migrate {
                message: format!(
                    "migration {} is marked -- no-transaction and cannot run inside --single-transaction; \
                     apply it on its own or drop the flag; nothing was applied",
                    self.file_of(m.version)
                ),
                exit: Exit::MigrationFailed,
            });
        }
        let mut tries = 0;
        loop {
            match store::apply_batch(conn, migrations).await {
                Ok(took) => {
                    for (m, d) in migrations.iter().zip(&took) {
                        info!(version = m.version, description = %m.description, duration_ms = millis(*d), "applied");
                    }
                    return Ok(migrations.len());
                }
                // The whole batch was rolled back: tried again like a single migration.
                Err((Some(v), e)) if store::is_lock_timeout(&e) => {
                    tries += 1;
                    self.blocked(conn, self.up(v), tries, 0).await?;
                }
                Err((version, e)) => return Err(self.batch_error(version, &e)),
            }
        }
    }

    fn batch_error(&self, version: Option<i64>, e: &sqlx::Error) -> Error {
        let which =
            version.map_or_else(|| "the batch".to_owned(), |v| format!("migration {}", self.file_of(v)));
        let line = version.and_then(|v| error_line(e, self.up(v)));
        let message = format!(
            "{which} failed{}: {}; nothing was applied (the whole batch was rolled back)",
            line.map(|l| format!(" at line {l}")).unwrap_or_default(),
            crate::redact::scrub_owned(&describe_sqlx(e))
        );
        let class = crate::classify::classify_sqlx(e);
        if !class.is_permanent() {
            return Error::Dependency {
                target: self.target.name.clone(),
                failure: crate::classify::Failure::new(class, message),
            };
        }
        Error::Migrate { message, exit: Exit::MigrationFailed }
    }
}

impl SchemaSource for Sql<'_> {
    async fn read(&self, conn: Option<&mut DbConn>, action: &Action) -> Result<Reading, Error> {
        let conn = conn.expect("the SQL source reads the database");
        let applied = store::read_applied(conn).await.map_err(|e| db_error(self.target, &e))?;
        let plan = Plan::new(&self.local, &applied);
        let problem = plan.problem(self.config.ignore_missing);
        // A dirty row read without the lock may be a MySQL migration in progress (sqlx records
        // success = false before running it): only the lock holder's view of it is final.
        let doubt = match problem {
            Some(Problem::Dirty(_)) => problem.map(|p| self.problem_error(p)),
            Some(p) => return Err(self.problem_error(p)),
            None => None,
        };
        let pending = pending_for(&plan, action)?;
        let plan_lines = pending.iter().map(|v| format!("would apply {} {}", v, self.file_of(*v))).collect();
        Ok(Reading {
            current: pending.is_empty(),
            doubt,
            pending: Some(pending.len()),
            detail: format!("{} migrations applied", applied.len()),
            plan: plan_lines,
        })
    }

    /// Under the lock: read again, then apply (or stamp, revert, reset) what is still pending.
    async fn apply_locked(&self, conn: &mut DbConn, action: &Action) -> Result<usize, Error> {
        let (target, config) = (self.target, self.config);
        if *action == Action::Reset {
            if let Some(b) = &config.backup {
                backup::take(b, conn, config, target).await?;
            }
            store::drop_all(conn).await.map_err(|e| db_error(target, &e))?;
            warn!("reset: every object in the database was dropped; applying every migration from zero");
        }
        let applied = store::read_applied(conn).await.map_err(|e| db_error(target, &e))?;
        let plan = Plan::new(&self.local, &applied);
        if let Some(problem) = plan.problem(config.ignore_missing) {
            return Err(self.problem_error(problem));
        }
        if let Action::Revert { to, steps } = action {
            let to = to.as_deref().map(|v| version("--to", v)).transpose()?;
            return self.revert_locked(conn, &plan, to, *steps).await;
        }
        let pending = pending_for(&plan, action)?;
        if pending.is_empty() {
            info!("another process applied the migrations while we waited for the lock");
            return Ok(0);
        }
        if let (Some(b), false) = (&config.backup, matches!(action, Action::Stamp(_) | Action::Reset)) {
            backup::take(b, conn, config, target).await?;
        }
        store::ensure_table(conn).await.map_err(|e| self.migrate_error(e, 0, "applied"))?;
        let migrations: Vec<&Migration> = pending.iter().map(|v| self.up(*v)).collect();

        if let Action::Stamp(_) = action {
            for m in &migrations {
                store::stamp(conn, m).await.map_err(|e| db_error(target, &e))?;
                info!(version = m.version, description = %m.description, "stamped as applied");
            }
            return Ok(migrations.len());
        }
        if let Some(t) = config.ddl_lock_timeout {
            store::set_lock_timeout(conn, t).await.map_err(|e| db_error(target, &e))?;
        }
        if config.single_transaction {
            return self.apply_batch(conn, &migrations).await;
        }
        let mut done = 0;
        for m in &migrations {
            let mut tries = 0;
            loop {
                match store::apply(conn, m).await {
                    Ok(took) => {
                        info!(version = m.version, description = %m.description, duration_ms = millis(took), "applied");
                        done += 1;
                        break;
                    }
                    Err(MigrateError::ExecuteMigration(e, _)) if store::is_lock_timeout(&e) => {
                        tries += 1;
                        self.blocked(conn, m, tries, done).await?;
                    }
                    Err(e) => return Err(self.migrate_error(e, done, "applied")),
                }
            }
        }
        Ok(done)
    }
}

fn pending_for(plan: &Plan, action: &Action) -> Result<Vec<i64>, Error> {
    let pending = plan.pending();
    Ok(match action {
        Action::Stamp(Some(to)) => {
            let to = version("stamp", to)?;
            pending.into_iter().filter(|v| *v <= to).collect()
        }
        _ => pending,
    })
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
