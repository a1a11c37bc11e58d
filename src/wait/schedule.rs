//! The one retry schedule of every loop that waits on a database or a lock: the wait for each
//! target, readers waiting for the writer, the migration phase retrying a transient error, and
//! the migration lock (on a server or a lock file). Each used to re-derive its deadline, failure
//! count, randomness and report throttle; now "every wait is bounded and reported" holds by
//! construction.
//!
//! [`Schedule::next`] is pure: it takes the time and the randomness, so it is tested with a
//! clock that is only a number, without sleeping.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::Backoff;

#[derive(Debug, Clone)]
pub struct Schedule {
    backoff: Backoff,
    deadline: Option<Instant>,
    report_every: Duration,
    /// No delay shorter than this (readers: they are many, the writer is one).
    floor: Duration,
    failures: u32,
    last_report: Option<Instant>,
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Sleep this long, then try again. Never past the deadline: the last try is made at it.
    pub sleep: Duration,
    /// Say so at info level now (the first failure, then every `report_every`).
    pub report: bool,
}

impl Schedule {
    /// `deadline`: `None` waits forever.
    pub fn new(backoff: Backoff, deadline: Option<Instant>, report_every: Duration) -> Schedule {
        Schedule { backoff, deadline, report_every, floor: Duration::ZERO, failures: 0, last_report: None }
    }

    pub fn with_floor(mut self, floor: Duration) -> Schedule {
        self.floor = floor;
        self
    }

    /// The dependency got further than last time: look again soon, not after a grown delay.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// After a failure at `now`: how long to sleep before the next try, or `None` when the
    /// deadline has passed and it is time to give up.
    pub fn next<R: Rng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> Option<Step> {
        if self.deadline.is_some_and(|d| now >= d) {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        let report = self.last_report.is_none_or(|t| now.saturating_duration_since(t) >= self.report_every);
        if report {
            self.last_report = Some(now);
        }
        let delay = self.backoff.delay(self.failures, rng).max(self.floor);
        let sleep = match self.deadline {
            Some(d) => delay.min(d.saturating_duration_since(now)),
            None => delay,
        };
        Some(Step { sleep, report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff { base: 50 * MS, cap: 400 * MS }
    }

    #[test]
    fn delays_grow_stay_jittered_and_never_pass_the_deadline() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut s = Schedule::new(backoff(), Some(t0 + 1000 * MS), 5000 * MS);
        let mut now = t0;
        let mut steps = 0;
        while let Some(step) = s.next(now, &mut rng) {
            let ceiling = backoff().ceiling(steps + 1);
            assert!(step.sleep < ceiling || now + step.sleep == t0 + 1000 * MS, "{step:?} at {steps}");
            now += step.sleep.max(MS);
            steps += 1;
            assert!(steps < 1000, "never gave up");
        }
        assert!(now >= t0 + 1000 * MS && now < t0 + 1001 * MS, "gave up at {:?}", now - t0);
    }

    #[test]
    fn reports_are_the_first_failure_then_one_per_interval() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(1);
        let mut s = Schedule::new(backoff(), None, 1000 * MS);
        let reports: Vec<bool> = [0, 300, 900, 1000, 1500, 2100]
            .iter()
            .map(|&ms| s.next(t0 + ms * MS, &mut rng).unwrap().report)
            .collect();
        assert_eq!(reports, [true, false, false, true, false, true]);
    }

    #[test]
    fn a_reset_starts_the_growth_again_and_a_floor_holds() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(9);
        let mut s = Schedule::new(backoff(), None, 1000 * MS).with_floor(50 * MS);
        for _ in 0..10 {
            assert!(s.next(t0, &mut rng).unwrap().sleep >= 50 * MS);
        }
        s.reset();
        // The first delay after a reset is below the base again (then floored to it).
        assert_eq!(s.next(t0, &mut rng).unwrap().sleep, 50 * MS);
        let mut none = Schedule::new(backoff(), Some(t0), 1000 * MS);
        assert_eq!(none.next(t0, &mut rng), None);
    }
}
