//! The SQL source: a folder of sqlx-format files, applied with sqlx's own migrator code into
//! `_sqlx_migrations` (see `store`), compared with what the database recorded by `plan`.

use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType};
use tracing::{info, warn};

mod files;
pub mod new;
mod statements;
pub use files::Folder;
pub use statements::{Dialect, split as split_statements};

use super::error::{Blocked, Left, MigrateError};
use super::plan::{Local, Plan, Problem, State};
use super::{Action, MigrateConfig, Reading, SchemaSource, backup, db_error, store};
use crate::db::DbConn;
use crate::duration::millis;
use crate::error::Error;
use crate::target::{Target, TargetKind};

/// The local migrations, read once.
pub(super) struct Sql<'a> {
    folder: &'a Folder,
    local: Vec<Local>,
    target: &'a Target,
    config: &'a MigrateConfig,
}

/// A stamp or revert version as the SQL source takes it: the number before `_` in a file name.
pub fn version(flag: &str, raw: &str) -> Result<i64, Error> {
    raw.parse::<i64>()
        .map_err(|_| MigrateError::NotAVersion { flag: flag.to_owned(), raw: raw.to_owned() }.into())
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
                return Err(MigrateError::TooManySteps {
                    steps,
                    applied: applied.len(),
                    unit: "migrations are",
                    at: String::new(),
                    all: "0 for all",
                }
                .into());
            }
            Some(v) if v != 0 && !applied.contains(&v) => {
                return Err(MigrateError::NotApplied {
                    spec: v.to_string(),
                    what: format!("migration {}", self.file_of(v)),
                    at: String::new(),
                }
                .into());
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
                .ok_or_else(|| MigrateError::NoDown { migration: self.file_of(*v) })?;
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
    fn migrate_error(&self, e: sqlx::migrate::MigrateError, earlier: usize, done: &'static str) -> Error {
        match e {
            sqlx::migrate::MigrateError::ExecuteMigration(source, version) => {
                let m = self.up(version);
                let left = if self.mysql() {
                    Left::MySqlDirty { version }
                } else if m.no_tx {
                    Left::NoTransaction
                } else {
                    Left::RolledBack
                };
                let line = error_line(&source, m);
                self.failed(MigrateError::Failed {
                    migration: self.file_of(version),
                    line,
                    source,
                    left,
                    earlier,
                    done,
                })
            }
            sqlx::migrate::MigrateError::Execute(err) => db_error(self.target, &err),
            source => MigrateError::Migrator { source }.into(),
        }
    }

    /// A failed migration whose cause was the server going away or saying "not yet" (a
    /// restart, a busy SQLite file) is not the migration's fault: a dependency failure, which
    /// the phase may try again (see `apply_retrying`).
    fn failed(&self, e: MigrateError) -> Error {
        let (MigrateError::Failed { source, .. } | MigrateError::BatchFailed { source, .. }) = &e else {
            return e.into();
        };
        let class = crate::classify::classify_sqlx(source);
        if class.is_permanent() {
            return e.into();
        }
        Error::Dependency {
            target: self.target.name.clone(),
            failure: crate::classify::Failure::new(class, e.to_string()),
        }
    }

    fn problem_error(&self, problem: Problem) -> Error {
        let migration = |r: &super::plan::Row| r.file.clone().unwrap_or_else(|| r.version.to_string());
        match problem {
            Problem::Dirty(r) => {
                MigrateError::Dirty { migration: migration(&r), version: r.version, mysql: self.mysql() }
            }
            Problem::Changed(r) => MigrateError::Changed { migration: migration(&r) },
            Problem::Missing(r) => MigrateError::Missing {
                version: r.version,
                description: r.description,
                dir: self.folder.dir.clone(),
            },
        }
        .into()
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
        let left = if retriable {
            Blocked::RolledBack
        } else if self.mysql() {
            Blocked::MySqlPartial
        } else {
            Blocked::StatementsBefore
        };
        Err(MigrateError::DdlBlocked { migration: file, waited, tries, left, done, blockers }.into())
    }

    async fn apply_batch(&self, conn: &mut DbConn, migrations: &[&Migration]) -> Result<usize, Error> {
        if let Some(m) = migrations.iter().find(|m| m.no_tx) {
            return Err(MigrateError::NoTransactionInBatch { migration: self.file_of(m.version) }.into());
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
                Err((version, e)) => return Err(self.batch_error(version, e)),
            }
        }
    }

    fn batch_error(&self, version: Option<i64>, source: sqlx::Error) -> Error {
        let line = version.and_then(|v| error_line(&source, self.up(v)));
        self.failed(MigrateError::BatchFailed { migration: version.map(|v| self.file_of(v)), line, source })
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
                    Err(sqlx::migrate::MigrateError::ExecuteMigration(e, _))
                        if store::is_lock_timeout(&e) =>
                    {
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
    let mut out = format!(
        "{:<20} {:<8} {:<20} {:>10}  {}\n",
        "VERSION", "STATE", "INSTALLED", "DURATION", "DESCRIPTION"
    );
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
    let count = |state| plan.with_state(state).count();
    out.push_str(&format!(
        "{} applied, {} pending, {} changed, {} missing, {} dirty: the schema is {}\n",
        count(State::Applied),
        count(State::Pending),
        count(State::Changed),
        count(State::Missing),
        count(State::Dirty),
        if current { "current" } else { "not current" }
    ));
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
