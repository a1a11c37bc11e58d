//! The crowd: 200 migrators at once against a PostgreSQL with max_connections = 40. It has a
//! test binary of its own so that it runs alone: cargo runs test binaries one after another,
//! and a parallel test's load would change what it measures.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_crowd_of_200_migrators_never_exhausts_postgres_connections() {
    let mut pg = Pg::new("127.0.0.1", None).setting("max_connections", "40");
    pg.start();
    let url = pg.url("127.0.0.1");
    let m = Migrations::new(&[
        ("1_a.sql", "CREATE TABLE a (id INTEGER);\nSELECT pg_sleep(0.5);\n"),
        ("2_b.sql", "CREATE TABLE b (id INTEGER);\nSELECT pg_sleep(0.5);\n"),
        ("3_c.sql", "INSERT INTO a VALUES (1);\nSELECT pg_sleep(0.5);\n"),
    ]);
    // An outside client (the app, say) connecting every 100 ms meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        let url = url.clone();
        std::thread::spawn(move || {
            let (mut ok, mut refused) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match sql_try_connect(&url) {
                    Ok(()) => ok += 1,
                    Err(e) => refused.push(e),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, refused)
        })
    };
    let args = ["migrate", "--database-url", &url, "--migrations", m.path()];
    let results = crowd(200, &args, Duration::from_secs(120));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, refused) = probe.join().unwrap();
    let failed: Vec<&Finished> = results.iter().filter(|d| d.code() != Some(0)).collect();
    assert!(failed.is_empty(), "{} of 200 failed; first:\n{}", failed.len(), failed[0]);
    assert!(
        refused.is_empty(),
        "the outside client was refused {} times (ok {ok}): {:?}",
        refused.len(),
        refused.first()
    );
    assert!(ok >= 3, "the outside client connected only {ok} times");
    assert_eq!(sql_i64(&url, "SELECT COUNT(*) FROM a"), 1);
}
