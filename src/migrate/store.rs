//! What each database needs for migrations: reading `_sqlx_migrations` without writing,
//! the cluster-wide lock, and applying, stamping and batching migrations.
//!
//! The table and its rows are exactly sqlx-cli 0.9's, and applying goes through sqlx's own
//! `Migrate` implementation, so a project can move between sqlx-cli and preflight either way.
//! The lock uses the key sqlx's migrator uses (`0x3d32ad9e * crc32(database name)`), so
//! preflight and an app that calls `Migrator::run` exclude each other.

use std::time::{Duration, Instant};

use sqlx::migrate::{Migrate, MigrateError, Migration};
use sqlx::{Connection, Executor, Row};

use super::plan::Applied;
use crate::db::DbConn;

pub const TABLE: &str = "_sqlx_migrations";

/// sqlx's lock key for a database name.
pub fn lock_key(database: &str) -> i64 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    0x3d32_ad9e * i64::from(CRC.checksum(database.as_bytes()))
}

/// Reads the recorded migrations. Writes nothing: a missing table reads as empty.
pub async fn read_applied(conn: &mut DbConn) -> Result<Vec<Applied>, sqlx::Error> {
    let exists_sql = match conn {
        DbConn::Pg(_) => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
        DbConn::MySql(_) => {
            "SELECT COUNT(*) > 0 FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = '_sqlx_migrations'"
        }
        DbConn::Sqlite(_) => {
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
        }
    };
    let exists: bool = match conn {
        DbConn::Pg(c) => sqlx::query_scalar(exists_sql).fetch_one(c).await?,
        DbConn::MySql(c) => sqlx::query_scalar::<_, i64>(exists_sql).fetch_one(c).await? != 0,
        DbConn::Sqlite(c) => sqlx::query_scalar(exists_sql).fetch_one(c).await?,
    };
    if !exists {
        return Ok(Vec::new());
    }
    let select = |cast: &str| {
        format!(
            "SELECT version, description, checksum, success, {cast}, execution_time \
             FROM _sqlx_migrations ORDER BY version"
        )
    };
    macro_rules! rows {
        ($c:expr, $sql:expr) => {{
            let rows = sqlx::query(sqlx::AssertSqlSafe($sql)).fetch_all($c).await?;
            rows.iter()
                .map(|r| {
                    Ok(Applied {
                        version: r.try_get(0)?,
                        description: r.try_get(1)?,
                        checksum: r.try_get(2)?,
                        success: r.try_get(3)?,
                        installed_on: r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                        execution_time: r.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
        }};
    }
    match conn {
        DbConn::Pg(c) => {
            rows!(c, select("to_char(installed_on AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"))
        }
        DbConn::MySql(c) => rows!(
            c,
            select(
                "DATE_FORMAT(CONVERT_TZ(installed_on, @@session.time_zone, '+00:00'), '%Y-%m-%dT%H:%i:%sZ')"
            )
        ),
        DbConn::Sqlite(c) => rows!(c, select("strftime('%Y-%m-%dT%H:%M:%SZ', installed_on)")),
    }
}

/// The name of the current database (PostgreSQL, MySQL): the lock key's input.
pub async fn current_database(conn: &mut DbConn) -> Result<String, sqlx::Error> {
    match conn {
        DbConn::Pg(c) => sqlx::query_scalar("SELECT current_database()").fetch_one(c).await,
        DbConn::MySql(c) => sqlx::query_scalar("SELECT DATABASE()").fetch_one(c).await,
        DbConn::Sqlite(_) => Ok("main".into()),
    }
}

/// Tries the database lock once, without waiting. `false`: someone else holds it.
pub async fn try_lock(conn: &mut DbConn, key: i64) -> Result<bool, sqlx::Error> {
    match conn {
        DbConn::Pg(c) => {
            // Notice a dead client during a long statement, so a SIGKILLed holder's session (and
            // its lock) ends within a second rather than when its statement would have ended.
            // PostgreSQL < 14 has no such setting; that is not a reason to fail.
            let _ = c.execute("SET client_connection_check_interval = '1s'").await;
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(c).await
        }
        DbConn::MySql(c) => {
            let got: Option<i64> =
                sqlx::query_scalar("SELECT GET_LOCK(?, 0)").bind(format!("{key:x}")).fetch_one(c).await?;
            Ok(got == Some(1))
        }
        DbConn::Sqlite(_) => Ok(true),
    }
}

pub async fn unlock(conn: &mut DbConn, key: i64) -> Result<(), sqlx::Error> {
    match conn {
        DbConn::Pg(c) => {
            sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(c).await?;
        }
        DbConn::MySql(c) => {
            sqlx::query("SELECT RELEASE_LOCK(?)").bind(format!("{key:x}")).execute(c).await?;
        }
        DbConn::Sqlite(_) => {}
    }
    Ok(())
}

/// Who holds the lock, as far as the server tells us.
#[derive(Debug, Clone, Default)]
/// Who holds the migration lock, as far as the server tells: PostgreSQL hides another role's
/// client address and session start unless we may read all statistics, and then they are
/// unknown, not "local" and "0 s".
pub struct Holder {
    pub name: String,
    pub client: Option<String>,
    /// How old the holder's session is (PostgreSQL), how long it has been in its current
    /// state (MySQL), or since when it holds the lock file (SQLite).
    pub held_for: Option<Duration>,
}

pub async fn holder(conn: &mut DbConn, key: i64) -> Result<Option<Holder>, sqlx::Error> {
    match conn {
        DbConn::Pg(c) => {
            let bits = key as u64;
            let row: Option<(Option<String>, Option<String>, Option<f64>)> = sqlx::query_as(
                "SELECT a.application_name, \
                        CASE WHEN a.client_addr IS NOT NULL THEN host(a.client_addr) \
                             WHEN a.backend_start IS NOT NULL THEN 'local socket' END, \
                        EXTRACT(EPOCH FROM now() - a.backend_start)::float8 \
                 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                   AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid \
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .bind((bits >> 32) as i64)
            .bind((bits & 0xffff_ffff) as i64)
            .fetch_optional(c)
            .await?;
            Ok(row.map(|(name, client, secs)| Holder {
                name: name.unwrap_or_default(),
                client,
                held_for: secs.map(|s| Duration::from_secs_f64(s.max(0.0))),
            }))
        }
        DbConn::MySql(c) => {
            let row: Option<(Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT USER, HOST, TIME FROM information_schema.PROCESSLIST WHERE ID = IS_USED_LOCK(?)",
            )
            .bind(format!("{key:x}"))
            .fetch_optional(c)
            .await?;
            Ok(row.map(|(user, host, secs)| Holder {
                name: user.unwrap_or_default(),
                client: host,
                held_for: secs.map(|s| Duration::from_secs(s.max(0) as u64)),
            }))
        }
        DbConn::Sqlite(_) => Ok(None),
    }
}

/// A `-- no-transaction` migration on PostgreSQL, one statement at a time: sent as one
/// multi-statement query, its statements would share one implicit transaction, which
/// `CREATE INDEX CONCURRENTLY` and its kind refuse. A failure says which statement failed;
/// the ones before it stay applied, as they would with psql.
async fn run_one_by_one(c: &mut sqlx::PgConnection, m: &Migration) -> Result<(), MigrateError> {
    let statements = super::sql::split_statements(m.sql.as_str(), super::sql::Dialect::Postgres);
    let total = statements.len();
    for (n, statement) in statements.into_iter().enumerate() {
        if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.text)).execute(&mut *c).await {
            if n > 0 {
                tracing::warn!(
                    version = m.version,
                    statement = n + 1,
                    of = total,
                    line = statement.line,
                    "a no-transaction migration failed part way: the statements before this one were applied"
                );
            }
            return Err(MigrateError::ExecuteMigration(e, m.version));
        }
    }
    Ok(())
}

/// Bounds how long each statement of this session waits for a lock: PostgreSQL's
/// `lock_timeout`, MySQL's `lock_wait_timeout` (whole seconds: rounded up, so never shorter than
/// asked). SQLite has no
/// such wait (its busy timeout covers the file lock).
pub async fn set_lock_timeout(conn: &mut DbConn, timeout: Duration) -> Result<(), sqlx::Error> {
    match conn {
        DbConn::Pg(c) => {
            let sql = format!("SET lock_timeout = '{}ms'", timeout.as_millis().max(1));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(drop)
        }
        DbConn::MySql(c) => {
            let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
            let sql = format!("SET SESSION lock_wait_timeout = {}", secs.max(1));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(drop)
        }
        DbConn::Sqlite(_) => Ok(()),
    }
}

/// Whether a statement gave up waiting for a lock (PostgreSQL 55P03, MySQL 1205).
pub fn is_lock_timeout(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else { return false };
    db.code().as_deref() == Some("55P03")
        || db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().is_some_and(|m| m.number() == 1205)
}

/// The sessions with the oldest open transactions in this database: the likely holders of
/// the locks a migration waited for (the wait itself is over when this is asked).
///
/// The statement that timed out no longer waits, so `pg_blocking_pids` has nothing to say
/// afterwards: these are the other sessions' transactions that hold locks on the database's own
/// tables (the candidates), oldest first, each with the tables it holds; without any, the
/// oldest open transactions.
pub async fn oldest_transactions(conn: &mut DbConn) -> Result<Vec<String>, sqlx::Error> {
    let DbConn::Pg(c) = conn else { return Ok(Vec::new()) };
    type Row = (i32, Option<String>, Option<String>, Option<f64>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.pid, a.application_name, a.state, \
                EXTRACT(EPOCH FROM now() - a.xact_start)::float8, \
                (SELECT string_agg(DISTINCT c.relname, ', ') FROM pg_locks l \
                   JOIN pg_class c ON c.oid = l.relation \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE l.pid = a.pid AND l.granted AND c.relkind IN ('r', 'p', 'm', 'v') \
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema')) AS tables \
         FROM pg_stat_activity a \
         WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL \
         ORDER BY (SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                    WHERE l.pid = a.pid AND l.granted AND c.relnamespace <> 'pg_catalog'::regnamespace) = 0, \
                  a.xact_start \
         LIMIT 3",
    )
    .fetch_all(c)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(pid, app, state, secs, tables)| {
            let app = app.filter(|a| !a.is_empty()).unwrap_or_else(|| "no application_name".into());
            let state = state.unwrap_or_else(|| "state unknown".into());
            let age = secs.map(|s| format!(", transaction open {s:.0}s")).unwrap_or_default();
            let holds = tables.map(|t| format!(", holds locks on {t}")).unwrap_or_default();
            format!("pid {pid} ({app}, {state}{age}{holds})")
        })
        .collect())
}

/// Drops `table` (`name` or `schema.name`, already validated as plain identifiers) if it exists.
pub async fn drop_table(conn: &mut DbConn, table: &str) -> Result<(), sqlx::Error> {
    let quoted = |q: char| table.split('.').map(|p| format!("{q}{p}{q}")).collect::<Vec<_>>().join(".");
    let sql = match conn {
        DbConn::MySql(_) => format!("DROP TABLE IF EXISTS {}", quoted('`')),
        _ => format!("DROP TABLE IF EXISTS {}", quoted('"')),
    };
    match conn {
        DbConn::Pg(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(drop),
        DbConn::MySql(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(drop),
        DbConn::Sqlite(c) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(c).await.map(drop),
    }
}

/// Creates `_sqlx_migrations` if it is missing, as sqlx does.
pub async fn ensure_table(conn: &mut DbConn) -> Result<(), MigrateError> {
    match conn {
        DbConn::Pg(c) => c.ensure_migrations_table(TABLE).await,
        DbConn::MySql(c) => c.ensure_migrations_table(TABLE).await,
        DbConn::Sqlite(c) => c.ensure_migrations_table(TABLE).await,
    }
}

/// Applies one migration with sqlx's own implementation: on PostgreSQL and SQLite the script and
/// its bookkeeping row commit together; on MySQL a `success = false` row goes first.
pub async fn apply(conn: &mut DbConn, migration: &Migration) -> Result<Duration, MigrateError> {
    match conn {
        DbConn::Pg(c) if migration.no_tx => {
            let start = Instant::now();
            run_one_by_one(c, migration).await?;
            let elapsed = start.elapsed();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {TABLE} (version, description, success, checksum, execution_time) \
                 VALUES ($1, $2, TRUE, $3, $4)"
            )))
            .bind(migration.version)
            .bind(&*migration.description)
            .bind(&*migration.checksum)
            .bind(i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX))
            .execute(&mut *c)
            .await?;
            Ok(elapsed)
        }
        DbConn::Pg(c) => c.apply(TABLE, migration).await,
        DbConn::MySql(c) => c.apply(TABLE, migration).await,
        DbConn::Sqlite(c) => c.apply(TABLE, migration).await,
    }
}

/// Runs a down migration and deletes its row, with sqlx's own implementation.
pub async fn revert(conn: &mut DbConn, migration: &Migration) -> Result<Duration, MigrateError> {
    match conn {
        DbConn::Pg(c) if migration.no_tx => {
            let start = Instant::now();
            run_one_by_one(c, migration).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {TABLE} WHERE version = $1")))
                .bind(migration.version)
                .execute(&mut *c)
                .await?;
            Ok(start.elapsed())
        }
        DbConn::Pg(c) => c.revert(TABLE, migration).await,
        DbConn::MySql(c) => c.revert(TABLE, migration).await,
        DbConn::Sqlite(c) => c.revert(TABLE, migration).await,
    }
}

/// Drops every object: PostgreSQL's current schema (recreated empty, with its owner), every
/// table and view of the MySQL database, everything in the SQLite file.
pub async fn drop_all(conn: &mut DbConn) -> Result<(), sqlx::Error> {
    match conn {
        DbConn::Pg(c) => {
            let (schema, owner): (String, String) = sqlx::query_as(
                "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text FROM pg_namespace n \
                 WHERE n.nspname = current_schema()",
            )
            .fetch_one(&mut *c)
            .await?;
            let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let mut sql = format!(
                "DROP SCHEMA {0} CASCADE; CREATE SCHEMA {0} AUTHORIZATION {1};",
                quote(&schema),
                quote(&owner)
            );
            if schema == "public" {
                // What initdb grants on public, so the app's role can still use it.
                sql.push_str(" GRANT USAGE ON SCHEMA public TO PUBLIC;");
            }
            c.execute(sqlx::AssertSqlSafe(sql)).await?;
        }
        DbConn::MySql(c) => {
            let objects: Vec<(String, String)> = sqlx::query_as(
                "SELECT CAST(table_name AS CHAR), CAST(table_type AS CHAR) FROM information_schema.tables \
                 WHERE table_schema = DATABASE()",
            )
            .fetch_all(&mut *c)
            .await?;
            c.execute("SET FOREIGN_KEY_CHECKS = 0").await?;
            for (name, kind) in objects {
                let what = if kind == "VIEW" { "VIEW" } else { "TABLE" };
                let sql = format!("DROP {what} IF EXISTS `{}`", name.replace('`', "``"));
                c.execute(sqlx::AssertSqlSafe(sql)).await?;
            }
            c.execute("SET FOREIGN_KEY_CHECKS = 1").await?;
        }
        DbConn::Sqlite(c) => {
            let objects: Vec<(String, String)> = sqlx::query_as(
                "SELECT type, name FROM sqlite_master \
                 WHERE name NOT LIKE 'sqlite_%' AND type IN ('table', 'view', 'trigger')",
            )
            .fetch_all(&mut *c)
            .await?;
            c.execute("PRAGMA foreign_keys = OFF").await?;
            for (kind, name) in objects {
                let sql = format!("DROP {} IF EXISTS \"{}\"", kind.to_uppercase(), name.replace('"', "\"\""));
                c.execute(sqlx::AssertSqlSafe(sql)).await?;
            }
            c.execute("PRAGMA foreign_keys = ON").await?;
            c.execute("VACUUM").await?;
        }
    }
    Ok(())
}

fn insert_sql(conn: &DbConn) -> &'static str {
    match conn {
        DbConn::Pg(_) => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ($1, $2, TRUE, $3, $4)"
        }
        _ => {
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (?, ?, TRUE, ?, ?)"
        }
    }
}

async fn insert_row<'c, E>(
    executor: E,
    sql: &'static str,
    m: &Migration,
    nanos: i64,
) -> Result<(), sqlx::Error>
where
    E: Executor<'c>,
    for<'q> i64: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> &'q str: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> &'q [u8]: sqlx::Encode<'q, E::Database> + sqlx::Type<E::Database>,
    for<'q> <E::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<E::Database>,
{
    sqlx::query::<E::Database>(sql)
        .bind(m.version)
        .bind(&*m.description)
        .bind(&*m.checksum)
        .bind(nanos)
        .execute(executor)
        .await
        .map(drop)
}

/// Records migrations as applied without running them (`stamp`), as sqlx's `skip` does.
pub async fn stamp(conn: &mut DbConn, migration: &Migration) -> Result<(), sqlx::Error> {
    let sql = insert_sql(conn);
    match conn {
        DbConn::Pg(c) => insert_row(c, sql, migration, -1).await,
        DbConn::MySql(c) => insert_row(c, sql, migration, -1).await,
        DbConn::Sqlite(c) => insert_row(c, sql, migration, -1).await,
    }
}

/// Applies `migrations` in one transaction: all or none (PostgreSQL and SQLite). Returns each
/// migration's duration. On failure, the version that failed and the error.
pub async fn apply_batch(
    conn: &mut DbConn,
    migrations: &[&Migration],
) -> Result<Vec<Duration>, (Option<i64>, sqlx::Error)> {
    let sql = insert_sql(conn);
    macro_rules! batch {
        ($c:expr) => {{
            let mut tx = Connection::begin($c).await.map_err(|e| (None, e))?;
            let mut took = Vec::with_capacity(migrations.len());
            for m in migrations {
                let start = Instant::now();
                tx.execute(m.sql.clone()).await.map_err(|e| (Some(m.version), e))?;
                let elapsed = start.elapsed();
                let nanos = i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
                insert_row(&mut *tx, sql, m, nanos).await.map_err(|e| (Some(m.version), e))?;
                took.push(elapsed);
            }
            tx.commit().await.map_err(|e| (None, e))?;
            Ok(took)
        }};
    }
    match conn {
        DbConn::Pg(c) => batch!(c),
        DbConn::Sqlite(c) => batch!(c),
        DbConn::MySql(_) => Err((
            None,
            sqlx::Error::Configuration(
                "MySQL commits DDL implicitly, so it cannot apply a batch atomically".into(),
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_key_matches_sqlx() {
        // sqlx: 0x3d32ad9e * crc32_iso_hdlc(name). crc32("postgres") = 0x156a8775 (zlib.crc32).
        let crc = 0x156a_8775_i64;
        assert_eq!(lock_key("postgres"), 0x3d32_ad9e * crc);
    }
}
