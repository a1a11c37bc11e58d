//! The crowd: 200 migrators at once against a PostgreSQL with max_connections = 40, more than
//! it accepts at once: the first logins meet "too many clients" (53300) and retry. It has a
//! test binary of its own so that it runs alone: cargo runs test binaries one after another,
//! and a parallel test's load would change what it measures.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_crowd_of_200_migrators_succeeds_and_waiters_do_not_camp_on_connections() {
    let mut pg = Pg::new("127.0.0.1", None).setting("max_connections", "40");
    pg.start();
    let admin = pg.url("127.0.0.1");
    // The crowd logs in as an ordinary role; the sampler below is a superuser, so PostgreSQL's
    // superuser_reserved_connections keep it a slot however many the crowd takes.
    sql_exec(
        &admin,
        &format!("CREATE ROLE crowd LOGIN PASSWORD '{PASSWORD}'; GRANT CREATE ON SCHEMA public TO crowd;"),
    );
    let url = admin.replacen(&format!("{USER}:"), "crowd:", 1);
    let m = Migrations::new(&[
        ("1_a.sql", "CREATE TABLE a (id INTEGER);\nSELECT pg_sleep(0.5);\n"),
        ("2_b.sql", "CREATE TABLE b (id INTEGER);\nSELECT pg_sleep(0.5);\n"),
        ("3_c.sql", "INSERT INTO a VALUES (1);\nSELECT pg_sleep(0.5);\n"),
    ]);
    // Every 50 ms: how many connections the crowd holds while one of them holds the lock.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let admin = admin.clone();
        std::thread::spawn(move || {
            use sqlx::Connection;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
                let mut during_lock = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (held, crowd): (i64, i64) = sqlx::query_as(
                        "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted), \
                                (SELECT count(*) FROM pg_stat_activity WHERE usename = 'crowd')",
                    )
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                    if held > 0 {
                        during_lock.push(crowd);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                during_lock
            })
        })
    };
    let args = ["migrate", "--database-url", &url, "--migrations", m.path()];
    let results = crowd(200, &args, Duration::from_secs(120));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut during_lock = sampler.join().unwrap();
    let failed: Vec<&Finished> = results.iter().filter(|d| d.code() != Some(0)).collect();
    assert!(failed.is_empty(), "{} of 200 failed; first:\n{}", failed.len(), failed[0]);
    assert_eq!(sql_i64(&admin, "SELECT COUNT(*) FROM a"), 1);
    // The migrations hold the lock for 1.5 s: about 30 samples.
    assert!(during_lock.len() >= 10, "only {} samples while the lock was held", during_lock.len());
    during_lock.sort();
    let median = during_lock[during_lock.len() / 2];
    eprintln!("crowd connections while the lock was held: median {median}, samples {during_lock:?}");
    // The holder's one connection plus the waiters' short polls: far from the 37 slots a
    // crowd camping on connections would fill.
    assert!(
        median <= 10,
        "the crowd held a median of {median} connections while one migrated: {during_lock:?}"
    );
}
