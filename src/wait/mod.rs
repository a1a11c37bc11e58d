//! The wait phase: every target in parallel, each with its own retry schedule, all under one
//! deadline. [`Schedule`] is the schedule of every other wait too (readers, the lock, the
//! migration phase's retries).
//!
//! Each target loops: attempt (under the per-attempt timeout) → classify → stop on success or on
//! a permanent error, else sleep a jittered delay and go again. The first permanent error anywhere
//! ends the whole wait at once (the other targets are cancelled): there is no point waiting for
//! a cache while the database rejects our password.

pub mod backoff;
pub mod schedule;

mod probe;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::classify::{Class, Failure};
use crate::db::DbConn;
use crate::error::Error;
use crate::target::Target;
pub use backoff::Backoff;
pub use schedule::Schedule;

/// How to wait. Built and validated by `config`.
#[derive(Debug, Clone)]
pub struct WaitPolicy {
    pub backoff: Backoff,
    /// The most one attempt (resolve + connect + login) may take.
    pub attempt_timeout: Duration,
    /// RFC 8305's "connection attempt delay": how long one address gets before the next starts.
    pub stagger: Duration,
    /// The overall deadline, from the start of the wait. `None` waits forever.
    pub timeout: Option<Duration>,
    /// Treat login and missing-database errors as "not yet".
    pub retry_login_errors: bool,
    /// How often a target that is still not ready says so at info level.
    pub progress_every: Duration,
}

/// Why the wait ended without every target ready.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// A target answered with an error waiting will not fix.
    #[error("{target}: {}", failure.message)]
    Permanent { target: String, failure: Failure },
    /// The deadline passed; these targets were still not ready.
    #[error("{}", timeout_message(*.timeout, .pending))]
    Timeout { timeout: Duration, pending: Vec<Pending> },
}

/// The wait's errors become the process's: a permanent answer is a dependency error (3), the
/// deadline is a timeout (124) that keeps the wait's own error as its source.
impl From<WaitError> for Error {
    fn from(err: WaitError) -> Self {
        match err {
            WaitError::Permanent { target, failure } => Error::Dependency { target, failure },
            timeout @ WaitError::Timeout { .. } => Error::Timeout(Box::new(timeout)),
        }
    }
}

fn timeout_message(timeout: Duration, pending: &[Pending]) -> String {
    let what: Vec<String> = pending
        .iter()
        .map(|p| match &p.last {
            Some(f) => {
                format!("{} ({}, last error: {}: {})", p.target, attempts(p.attempts), f.class, f.message)
            }
            None => format!("{} ({})", p.target, attempts(p.attempts)),
        })
        .collect();
    format!(
        "not ready after {}: {}; check that it is up and reachable from here, or raise --timeout",
        humantime::format_duration(timeout),
        what.join("; ")
    )
}

fn attempts(n: u32) -> String {
    if n == 1 { "1 attempt".into() } else { format!("{n} attempts") }
}

#[derive(Debug)]
pub struct Pending {
    pub target: String,
    pub attempts: u32,
    pub last: Option<Failure>,
}

enum Outcome {
    Ready(Option<DbConn>),
    Permanent(Failure),
    Timeout(Pending),
}

/// Waits until every target is ready, one fails permanently, or the deadline passes.
///
/// With `keep`, the connection that proved the target at that index ready is returned open
/// instead of closed, so the next phase can use it.
pub async fn wait_all(
    targets: Vec<Target>,
    policy: &WaitPolicy,
    keep: Option<usize>,
) -> Result<Option<DbConn>, WaitError> {
    let deadline = policy.timeout.map(|t| Instant::now() + t);
    let mut tasks = JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        let keep = keep == Some(index);
        let target = Arc::new(target);
        let policy = policy.clone();
        // Each replica, and each target, draws its own jitter: that is the point of jitter.
        let rng: rand::rngs::StdRng = rand::make_rng();
        tasks.spawn(async move {
            let outcome = wait_one(&target, &policy, deadline, rng, keep).await;
            (target, outcome)
        });
    }
    let mut pending = Vec::new();
    let mut kept = None;
    while let Some(joined) = tasks.join_next().await {
        let (target, outcome) =
            joined.expect("wait tasks neither panic (panic=abort) nor get cancelled while joined");
        match outcome {
            Outcome::Ready(conn) => kept = kept.or(conn),
            // Returning drops the JoinSet, which cancels the other targets' loops.
            Outcome::Permanent(failure) => {
                return Err(WaitError::Permanent { target: target.name.clone(), failure });
            }
            Outcome::Timeout(p) => pending.push(p),
        }
    }
    match policy.timeout {
        Some(timeout) if !pending.is_empty() => Err(WaitError::Timeout { timeout, pending }),
        _ => Ok(kept),
    }
}

async fn wait_one<R: Rng>(
    target: &Target,
    policy: &WaitPolicy,
    deadline: Option<Instant>,
    mut rng: R,
    keep: bool,
) -> Outcome {
    let start = Instant::now();
    let mut attempts: u32 = 0;
    let mut schedule = Schedule::new(policy.backoff, deadline, policy.progress_every);
    let mut last: Option<Failure> = None;
    loop {
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if remaining == Some(Duration::ZERO) {
            return Outcome::Timeout(Pending { target: target.name.clone(), attempts, last });
        }
        let budget = remaining.map_or(policy.attempt_timeout, |r| r.min(policy.attempt_timeout));
        attempts += 1;
        let result = match tokio::time::timeout(budget, probe::attempt(target, policy.stagger)).await {
            Ok(result) => result,
            Err(_) => Err(Failure::new(
                Class::Network,
                format!(
                    "no answer within {}",
                    humantime::format_duration(Duration::from_millis(millis(budget)))
                ),
            )),
        };
        let failure = match result {
            Ok(ready) => {
                info!(
                    target = %target,
                    address = %ready.at,
                    attempts,
                    elapsed_ms = millis(start.elapsed()),
                    "ready"
                );
                let conn = match ready.conn {
                    Some(conn) if keep => Some(conn),
                    Some(conn) => {
                        conn.close().await;
                        None
                    }
                    None => None,
                };
                return Outcome::Ready(conn);
            }
            Err(failure) => failure,
        };
        let elapsed_ms = millis(start.elapsed());
        debug!(target = %target, attempt = attempts, class = %failure.class, error = %failure.message, elapsed_ms, "attempt failed");
        if failure.class.is_permanent() && !(policy.retry_login_errors && failure.class.is_login()) {
            return Outcome::Permanent(failure);
        }
        // The dependency got further than last time (refused → starting up): it is coming up, so
        // look again soon rather than after a grown delay.
        if last.as_ref().is_some_and(|prev| failure.class > prev.class) {
            debug!(target = %target, from = %last.as_ref().map_or(Class::Dns, |p| p.class), to = %failure.class, "progress, backoff reset");
            schedule.reset();
        }
        let Some(step) = schedule.next(Instant::now(), &mut rng) else {
            return Outcome::Timeout(Pending { target: target.name.clone(), attempts, last: Some(failure) });
        };
        if step.report && attempts == 1 {
            info!(target = %target, class = %failure.class, error = %failure.message, "waiting");
        } else if step.report {
            info!(
                target = %target,
                attempts,
                elapsed_ms,
                class = %failure.class,
                error = %failure.message,
                "still waiting"
            );
        }
        last = Some(failure);
        // Never past the deadline: the next turn finds it passed and gives up.
        tokio::time::sleep(step.sleep).await;
    }
}

pub use crate::duration::millis;
