//! The cluster-wide migration lock, taken so that of 50 replicas starting together exactly one
//! migrates.
//!
//! # Theory of operation
//! A blocked `pg_advisory_lock` pins a server backend for as long as it waits; with a few hundred
//! replicas that exhausts `max_connections` before the app itself can connect. So a waiter never
//! holds a connection while it waits: it connects, tries the lock once (`pg_try_advisory_lock`,
//! `GET_LOCK(key, 0)`), and if someone else has it, asks the server who, disconnects, and sleeps
//! a jittered delay before trying again on a new connection. Only the holder keeps a connection,
//! and it is a dedicated one (never pooled), so closing it releases the lock on every path:
//! explicitly on success and on SQL errors, by the server noticing the closed socket when the
//! process dies (`client_connection_check_interval` makes PostgreSQL notice within a second even
//! in the middle of a long statement).
//!
//! SQLite has no server: the lock is an exclusive `flock` on `<database>.lock` beside the file,
//! which the kernel drops when the process dies.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use rand::rngs::StdRng;
use tokio::time::Instant;
use tracing::{debug, info};

use super::error::MigrateError;
use super::store::{self, Holder};
use crate::classify::Failure;
use crate::db::{self, DbConn};
use crate::error::Error;
use crate::target::{Target, TargetKind};
use crate::wait::{Backoff, Schedule, millis};

/// How a waiter polls: the first retry within 100 ms, then a random delay of up to 2 s (1 s on
/// average once grown), so 200 waiters cost the server about 200 short logins a second.
const POLL: Backoff = Backoff { base: Duration::from_millis(100), cap: Duration::from_secs(2) };
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The lock, held. Release it with [`LockGuard::release`]; dropping it also releases it (the
/// connection closes), just less politely.
pub struct LockGuard {
    conn: Option<DbConn>,
    key: i64,
    /// SQLite's lock file, kept open (and locked) for as long as the guard lives.
    file: Option<Flock<File>>,
}

impl LockGuard {
    pub fn conn(&mut self) -> &mut DbConn {
        self.conn.as_mut().expect("the connection is only taken by release()")
    }

    pub async fn release(mut self) {
        MYSQL_MIGRATOR.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut conn) = self.conn.take() {
            if let Err(e) = store::unlock(&mut conn, self.key).await {
                // Closing the connection releases it anyway.
                debug!(error = %e, "explicit unlock failed; closing the connection releases the lock");
            }
            conn.close().await;
        }
        if let Some(file) = self.file.take() {
            // Who held it is no longer true: a later holder that does not write (an operator's
            // flock) must not be reported under our name.
            let _ = file.set_len(0);
        }
        debug!("migration lock released");
    }
}

/// Takes the lock, polling until `timeout`. `first` is an already open connection to try first,
/// so the common uncontended case costs no extra connection.
pub async fn acquire(
    target: &Target,
    first: Option<DbConn>,
    timeout: Duration,
    stagger: Duration,
) -> Result<LockGuard, Error> {
    if let TargetKind::Sqlite { path: Some(path), .. } = &target.kind {
        if let Some(conn) = first {
            conn.close().await;
        }
        return acquire_file(target, path, timeout, stagger).await;
    }
    // Every step below is bounded by the schedule, but a frozen server (stopped, or a network
    // that drops packets) can hold one query forever: the whole wait is bounded here too, a
    // second after the deadline (the last try's query, which names the holder, runs at the
    // deadline).
    let start = Instant::now();
    let bound = start + timeout + Duration::from_secs(1);
    match tokio::time::timeout_at(bound, acquire_db(target, first, timeout, stagger, start)).await {
        Ok(result) => result,
        Err(_) => Err(lock_timeout(target, timeout, None)),
    }
}

async fn acquire_db(
    target: &Target,
    first: Option<DbConn>,
    timeout: Duration,
    stagger: Duration,
    start: Instant,
) -> Result<LockGuard, Error> {
    let deadline = start + timeout;
    let mut rng: StdRng = rand::make_rng();
    let mut schedule = Schedule::new(POLL, Some(deadline), PROGRESS_EVERY);
    let mut first = first;
    let mut attempts = 0u32;
    let mut key = None;
    loop {
        attempts += 1;
        let mut conn = match first.take() {
            Some(conn) => conn,
            None => match db::connect(target, stagger).await {
                Ok((conn, _)) => conn,
                Err(f) if f.class.is_permanent() => return Err(dependency(target, f)),
                Err(f) => {
                    debug!(error = %f.message, "cannot connect to take the migration lock; retrying");
                    let Some(step) = schedule.next(Instant::now(), &mut rng) else {
                        return Err(lock_timeout(target, timeout, None));
                    };
                    tokio::time::sleep(step.sleep).await;
                    continue;
                }
            },
        };
        let result: Result<(bool, i64), sqlx::Error> = async {
            let k = match key {
                Some(k) => k,
                None => store::lock_key(&store::current_database(&mut conn).await?),
            };
            Ok((store::try_lock(&mut conn, k).await?, k))
        }
        .await;
        match result {
            Ok((true, k)) => {
                let waited = start.elapsed();
                mark_taken();
                info!(waited_ms = millis(waited), attempts, "migration lock acquired");
                if let DbConn::MySql(c) = &mut conn
                    && let Ok(id) =
                        sqlx::query_scalar::<_, u64>("SELECT CONNECTION_ID()").fetch_one(&mut *c).await
                {
                    *MYSQL_MIGRATOR.lock().unwrap_or_else(|e| e.into_inner()) = Some((target.clone(), id));
                }
                return Ok(LockGuard { conn: Some(conn), key: k, file: None });
            }
            Ok((false, k)) => {
                key = Some(k);
                let step = schedule.next(Instant::now(), &mut rng);
                // Asking who holds the lock is one more query: only when it will be said.
                let holder = if step.is_none_or(|s| s.report) {
                    store::holder(&mut conn, k).await.ok().flatten()
                } else {
                    None
                };
                conn.close().await;
                let Some(step) = step else {
                    return Err(lock_timeout(target, timeout, holder));
                };
                if step.report {
                    report_holder(holder.as_ref(), start.elapsed());
                }
                tokio::time::sleep(step.sleep).await;
            }
            Err(e) => {
                conn.close().await;
                debug!(error = %crate::redact::scrub_owned(&e.to_string()), "lock attempt failed; retrying");
                let Some(step) = schedule.next(Instant::now(), &mut rng) else {
                    return Err(lock_timeout(target, timeout, None));
                };
                tokio::time::sleep(step.sleep).await;
            }
        }
    }
}

/// The MySQL connection that holds the lock and migrates, while it does. MySQL does not notice
/// a client that went away until it next writes to it: a statement list in progress would run
/// to its end after preflight stopped. On a stop signal it is killed from a second connection.
static MYSQL_MIGRATOR: std::sync::Mutex<Option<(Target, u64)>> = std::sync::Mutex::new(None);

/// Stops a MySQL migration in progress (`KILL` of its connection, from a new one), so that the
/// server does not go on with the statements after the one running. Bounded by `limit`;
/// `true` when one was killed.
pub async fn kill_mysql_migration(limit: Duration) -> bool {
    let Some((target, id)) = MYSQL_MIGRATOR.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return false;
    };
    let kill = async {
        let (mut conn, _) = db::connect(&target, Duration::from_millis(250)).await.ok()?;
        let DbConn::MySql(c) = &mut conn else { return None };
        let done = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {id}"))).execute(&mut *c).await.is_ok();
        conn.close().await;
        Some(done)
    };
    let killed = tokio::time::timeout(limit, kill).await.ok().flatten().unwrap_or(false);
    if killed {
        tracing::warn!(
            connection = id,
            "the MySQL session holding the migration lock was stopped (KILL): the server runs no more of its \
             statements; a migration it was running is recorded as dirty and may be partly applied (check the \
             schema, then DELETE its row from _sqlx_migrations)"
        );
    } else {
        tracing::warn!(
            connection = id,
            "could not stop the MySQL migration in progress: it may still be running"
        );
    }
    killed
}

/// Set once this process has taken the migration lock: the summary line says so
/// (`lock_taken=`), so that "a no-op start takes no lock" is a field, not log wording.
static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn taken() -> bool {
    TAKEN.load(std::sync::atomic::Ordering::SeqCst)
}

fn mark_taken() {
    TAKEN.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether some process holds the migration lock now, asked without taking it (a reader must
/// not). When the answer cannot be had, `true`: the caller keeps waiting rather than failing.
pub async fn is_held(target: &Target, conn: &mut DbConn) -> bool {
    if let TargetKind::Sqlite { path: Some(path), .. } = &target.kind {
        return match File::open(lock_path(path)) {
            // Never created: no writer ever ran here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(_) => true,
            Ok(file) => Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
        };
    }
    let probe = async {
        let key = store::lock_key(&store::current_database(conn).await?);
        store::holder(conn, key).await
    };
    probe.await.map_or(true, |holder| holder.is_some())
}

fn report_holder(holder: Option<&Holder>, waited: Duration) {
    match holder {
        Some(h) => info!(
            holder = %h.name,
            holder_client = h.client.as_deref().unwrap_or("unknown"),
            held_ms = h.held_for.map(millis),
            waited_ms = millis(waited),
            "waiting for the migration lock"
        ),
        None => info!(waited_ms = millis(waited), "waiting for the migration lock"),
    }
}

fn dependency(target: &Target, failure: Failure) -> Error {
    Error::Dependency { target: target.name.clone(), failure }
}

fn lock_timeout(target: &Target, timeout: Duration, holder: Option<Holder>) -> Error {
    let holder = holder.map(|h| {
        let name = if h.name.is_empty() { "an unnamed session" } else { &h.name };
        let from = h.client.as_deref().map(|c| format!(" from {c}")).unwrap_or_default();
        let age = h.held_for.map(|d| format!(", for {}s", d.as_secs())).unwrap_or_default();
        format!("{name}{from}{age}")
    });
    MigrateError::LockTimeout { target: target.name.clone(), within: timeout, holder }.into()
}

/// The holder of a lock file, as it wrote itself when it took the lock (`NAME since UNIX`). A
/// process that is not preflight (an operator's `flock`) writes nothing: then it is unknown.
fn file_holder(path: &Path) -> Holder {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let parsed = text.trim().rsplit_once(" since ").and_then(|(name, since)| {
        let since = std::time::UNIX_EPOCH + Duration::from_secs(since.parse().ok()?);
        Some((name.to_owned(), std::time::SystemTime::now().duration_since(since).unwrap_or_default()))
    });
    match parsed {
        // A preflight on this host that is no longer running: killed before it could clear the
        // file. Whoever holds the lock now did not write.
        Some((name, _)) if written_by_dead_process(&name) => Holder {
            name: format!(
                "a process that did not say who it is (the file still names {name}, which has exited)"
            ),
            client: Some(path.display().to_string()),
            held_for: None,
        },
        Some((name, held)) => Holder { name, client: Some(path.display().to_string()), held_for: Some(held) },
        None => Holder {
            name: "a process that did not say who it is".into(),
            client: Some(path.display().to_string()),
            held_for: None,
        },
    }
}

/// `preflight/HOST/PID` of this host whose process is gone.
fn written_by_dead_process(name: &str) -> bool {
    let mut parts = name.split('/');
    let (Some("preflight"), Some(host), Some(pid)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let here = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    let Ok(pid) = pid.parse::<i32>() else { return false };
    host == here && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

async fn acquire_file(
    target: &Target,
    db_path: &Path,
    timeout: Duration,
    stagger: Duration,
) -> Result<LockGuard, Error> {
    let path = lock_path(db_path);
    let start = Instant::now();
    let deadline = start + timeout;
    let mut rng: StdRng = rand::make_rng();
    let mut schedule = Schedule::new(POLL, Some(deadline), PROGRESS_EVERY);
    let locked = loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| MigrateError::LockFile { path: path.clone(), source })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut locked) => {
                // Say who we are and since when, for the next waiter's progress line.
                let _ = locked.set_len(0);
                let since = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let _ = write!(&mut *locked, "{} since {since}", crate::target::application_name());
                break locked;
            }
            Err((_, _errno)) => {
                let Some(step) = schedule.next(Instant::now(), &mut rng) else {
                    return Err(lock_timeout(target, timeout, Some(file_holder(&path))));
                };
                if step.report {
                    report_holder(Some(&file_holder(&path)), start.elapsed());
                }
                tokio::time::sleep(step.sleep).await;
            }
        }
    };
    let waited = start.elapsed();
    mark_taken();
    info!(waited_ms = millis(waited), lock_file = %path.display(), "migration lock acquired");
    let (conn, _) = db::connect(target, stagger).await.map_err(|f| dependency(target, f))?;
    Ok(LockGuard { conn: Some(conn), key: 0, file: Some(locked) })
}
