//! The retry schedule: a pure function of (attempt, policy, rng), so it can be tested exactly.
//!
//! # Why full jitter
//! The delay before retry `n` is drawn uniformly from `[0, min(cap, base * 2^n))` ("full
//! jitter", as in AWS's *Exponential Backoff and Jitter*). Of the common schemes it spreads a crowd
//! of replicas most evenly, so 50 pods restarted together do not hit the database in waves, and
//! once the ceiling is reached it has a closed form for both figures the issue sets:
//!
//! * **Detection latency.** Attempts form a renewal process with delays `U(0, C)`. The time from
//!   the moment the database becomes ready to the next attempt is the residual life, whose CDF is
//!   `F(r) = 2r/C - (r/C)^2`. Its median is `(1 - 1/sqrt 2) C ≈ 0.29 C` and its p95 is
//!   `(1 - sqrt 0.05) C ≈ 0.78 C`. With the default `C = 400 ms` that is ≈ 117 ms and ≈ 310 ms, plus
//!   the attempt itself: inside the 150 ms / 500 ms targets with room to spare.
//! * **Load during an outage.** The mean delay is `C / 2`, so one replica makes at most
//!   `2 / C` = 5 attempts per second (fewer, since each attempt takes time), under the 10/s limit.
//!
//! Decorrelated jitter (`min(cap, U(base, 3 * prev))`) behaves much the same but its steady state
//! has no simple form, which makes the defaults harder to justify; full jitter it is.

use std::time::Duration;

use rand::{Rng, RngExt};

/// The knobs of the schedule. Validated in `config`: `base > 0`, `cap >= base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay; doubles with each failure up to `cap`.
    pub base: Duration,
    /// The largest ceiling. Also bounds the detection latency (see the module comment).
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling for the delay after `failures` consecutive failures (1 for the first).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let shift = failures.saturating_sub(1).min(31);
        let grown = self.base.saturating_mul(1u32 << shift);
        grown.min(self.cap)
    }

    /// The delay to sleep after `failures` consecutive failures. The first attempt is never
    /// delayed: callers only ask after a failure.
    pub fn delay<R: Rng + ?Sized>(&self, failures: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(failures);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rng.random_range(0..nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Any policy: the shipped one (the CLI's defaults) is tested in `config`.
    fn policy() -> Backoff {
        Backoff { base: Duration::from_millis(50), cap: Duration::from_millis(400) }
    }

    #[test]
    fn ceiling_doubles_until_the_cap() {
        let p = policy();
        let ms: Vec<u128> = (1..=6).map(|n| p.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 400, 400]);
        assert_eq!(p.ceiling(u32::MAX), p.cap);
    }

    #[test]
    fn delays_stay_below_their_ceiling() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        for failures in 1..40 {
            for _ in 0..100 {
                assert!(p.delay(failures, &mut rng) < p.ceiling(failures));
            }
        }
    }

    #[test]
    fn delays_are_spread_over_the_whole_range() {
        // Full jitter: at the cap the mean is C/2 and both halves of the range are used.
        let p = policy();
        let mut rng = StdRng::seed_from_u64(42);
        let delays: Vec<Duration> = (0..10_000).map(|_| p.delay(10, &mut rng)).collect();
        let mean = delays.iter().sum::<Duration>() / delays.len() as u32;
        assert!((190..=210).contains(&mean.as_millis()), "mean {mean:?}");
        assert!(delays.iter().any(|d| d.as_millis() < 20));
        assert!(delays.iter().any(|d| d.as_millis() > 380));
    }

    #[test]
    fn same_seed_same_schedule() {
        let p = policy();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..20).map(|n| p.delay(n, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn simulated_detection_latency_meets_the_targets() {
        // Simulate the schedule against a database that becomes ready at a random moment 2-3 s
        // after start, with attempts that take 5 ms: the median 150 ms / p95 500 ms.
        let p = policy();
        let mut rng = StdRng::seed_from_u64(2024);
        let attempt = Duration::from_millis(5);
        let mut latencies = Vec::new();
        for _ in 0..2_000 {
            let ready_at = Duration::from_millis(rng.random_range(2000..3000));
            let mut now = Duration::ZERO;
            let mut failures = 0;
            loop {
                now += attempt;
                if now >= ready_at {
                    latencies.push(now - ready_at);
                    break;
                }
                failures += 1;
                now += p.delay(failures, &mut rng);
            }
        }
        latencies.sort();
        let median = latencies[latencies.len() / 2];
        let p95 = latencies[latencies.len() * 95 / 100];
        assert!(median <= Duration::from_millis(150), "median {median:?}");
        assert!(p95 <= Duration::from_millis(500), "p95 {p95:?}");
    }

    #[test]
    fn outage_attempt_rate_stays_under_ten_per_second() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(9);
        let mut now = Duration::ZERO;
        let mut attempts = 0u32;
        let mut failures = 0;
        while now < Duration::from_secs(60) {
            attempts += 1;
            failures += 1;
            now += p.delay(failures, &mut rng);
        }
        let per_second = f64::from(attempts) / 60.0;
        assert!(per_second <= 10.0, "{per_second}/s");
    }
}
