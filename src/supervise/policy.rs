//! The supervisor's decisions, apart from the system calls that carry them out: a pure function
//! of (state, event, now) that returns what to do. `init` feeds it the signals and the app's
//! exit, and performs its [`Action`]s; the tests here drive it with a made-up clock.

use std::time::{Duration, Instant};

use nix::libc;

use super::args::SupervisorArgs;

/// How often to look at the app's group while members that are not our children remain
/// (preflight is then neither PID 1 nor a subreaper, so their exits send no SIGCHLD).
pub const GROUP_POLL: Duration = Duration::from_millis(100);

/// How the app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Exited(u8),
    Signaled(i32),
}

impl Ended {
    /// The code a shell would give: the exit code, or 128 + the signal.
    pub fn code(self) -> u8 {
        match self {
            Ended::Exited(code) => code,
            Ended::Signaled(sig) => (128 + sig).clamp(0, 255) as u8,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `signal` to the app's group (or to the app alone, with `group` false).
    Forward { signal: i32, group: bool },
    /// A received signal that `--rewrite-signal SIG:none` drops.
    Drop { signal: i32 },
    /// The first stop signal, held by `--stop-delay` until `until`.
    Hold { signal: i32, delay: Duration },
    /// `--stop-timeout` passed with the app still running: SIGKILL the app and its group.
    KillApp,
    /// The app is gone and members of its group remain: SIGTERM them.
    TermLeftovers,
    /// They outlived `--leftover-grace`: SIGKILL them.
    KillLeftovers,
    /// Everything is over: exit with `code` (`ended.code()` unless `--remap-exit` changed it).
    Exit { ended: Ended, code: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leftovers {
    /// The app is running, or has just ended.
    None,
    /// SIGTERM sent; SIGKILL at this instant.
    Termed { kill_at: Instant },
    /// SIGKILL sent; only waiting for the group to be gone.
    Killed,
}

/// What the supervisor knows, between events.
#[derive(Debug)]
pub struct Policy<'a> {
    args: &'a SupervisorArgs,
    ended: Option<Ended>,
    /// When to SIGKILL after a stop signal (`--stop-timeout`).
    stop_at: Option<Instant>,
    /// A stop signal held back by `--stop-delay`, and when to send it.
    held: Option<(i32, Instant)>,
    leftovers: Leftovers,
}

impl<'a> Policy<'a> {
    pub fn new(args: &'a SupervisorArgs) -> Self {
        Policy { args, ended: None, stop_at: None, held: None, leftovers: Leftovers::None }
    }

    /// The app was reaped.
    pub fn app_ended(&mut self, ended: Ended) {
        self.ended = Some(ended);
        self.stop_at = None;
        self.held = None;
    }

    /// The passing of time: what is due at `now`. `group_alive` says whether any member of the
    /// app's group is left (asked only once the app has ended).
    pub fn tick(&mut self, now: Instant, group_alive: impl FnOnce() -> bool) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(ended) = self.ended {
            if self.args.child_only || !group_alive() {
                let code = self.args.remapped(ended.code());
                return vec![Action::Exit { ended, code }];
            }
            match self.leftovers {
                Leftovers::None => {
                    self.leftovers = Leftovers::Termed { kill_at: now + self.args.leftover_grace };
                    actions.push(Action::TermLeftovers);
                }
                Leftovers::Termed { kill_at } if now >= kill_at => {
                    self.leftovers = Leftovers::Killed;
                    actions.push(Action::KillLeftovers);
                }
                _ => {}
            }
            return actions;
        }
        if let Some((signal, at)) = self.held
            && now >= at
        {
            self.held = None;
            actions.push(self.forward(signal));
            self.stop_started(now);
        }
        if let Some(at) = self.stop_at
            && now >= at
        {
            self.stop_at = None;
            actions.push(Action::KillApp);
        }
        actions
    }

    /// A signal was received (not SIGCHLD, which only means "reap").
    pub fn signal(&mut self, received: i32, now: Instant) -> Vec<Action> {
        let Some(signal) = self.args.rewritten(received) else {
            return vec![Action::Drop { signal: received }];
        };
        let is_stop = received == libc::SIGTERM || received == libc::SIGINT;
        if !is_stop || self.ended.is_some() {
            return vec![self.forward(signal)];
        }
        match (self.args.stop_delay, self.held) {
            (Some(delay), None) if self.stop_at.is_none() => {
                self.held = Some((signal, now + delay));
                vec![Action::Hold { signal, delay }]
            }
            (_, Some(_)) => {
                // A second stop signal while one is held: the operator insists.
                self.held = None;
                self.stop_started(now);
                vec![self.forward(signal)]
            }
            _ => {
                self.stop_started(now);
                vec![self.forward(signal)]
            }
        }
    }

    /// How long the loop may wait for the next signal before [`tick`](Self::tick) has
    /// something to do. `None`: until a signal comes.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        let kill_at = match self.leftovers {
            Leftovers::Termed { kill_at } => Some(kill_at),
            _ => None,
        };
        let due = [self.stop_at, self.held.map(|(_, at)| at), kill_at].into_iter().flatten().min();
        let timeout = due.map(|at| at.saturating_duration_since(now));
        if self.ended.is_some() { Some(timeout.map_or(GROUP_POLL, |t| t.min(GROUP_POLL))) } else { timeout }
    }

    fn forward(&self, signal: i32) -> Action {
        Action::Forward { signal, group: !self.args.child_only && self.ended.is_none() }
    }

    fn stop_started(&mut self, now: Instant) {
        if self.stop_at.is_none()
            && let Some(timeout) = self.args.stop_timeout
        {
            self.stop_at = Some(now + timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: i32 = libc::SIGTERM;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_signal_is_forwarded_to_the_group_as_it_came() {
        let args = SupervisorArgs::default();
        let mut p = Policy::new(&args);
        let t = Instant::now();
        assert_eq!(p.signal(libc::SIGUSR1, t), [Action::Forward { signal: libc::SIGUSR1, group: true }]);
        assert_eq!(p.timeout(t), None, "nothing is due: wait for signals only");
        let child_only = SupervisorArgs { child_only: true, ..Default::default() };
        assert_eq!(
            Policy::new(&child_only).signal(TERM, t),
            [Action::Forward { signal: TERM, group: false }]
        );
    }

    #[test]
    fn rewrites_change_or_drop_the_signal() {
        let args =
            SupervisorArgs { rewrites: vec![(TERM, Some(libc::SIGQUIT)), (28, None)], ..Default::default() };
        let mut p = Policy::new(&args);
        let t = Instant::now();
        assert_eq!(p.signal(TERM, t), [Action::Forward { signal: libc::SIGQUIT, group: true }]);
        assert_eq!(p.signal(28, t), [Action::Drop { signal: 28 }]);
    }

    #[test]
    fn the_stop_delay_holds_the_first_stop_signal_and_a_second_one_goes_at_once() {
        let args = SupervisorArgs { stop_delay: Some(ms(500)), ..Default::default() };
        let t = Instant::now();
        let mut p = Policy::new(&args);
        assert_eq!(p.signal(TERM, t), [Action::Hold { signal: TERM, delay: ms(500) }]);
        assert_eq!(p.timeout(t), Some(ms(500)));
        assert_eq!(p.tick(t + ms(499), || true), []);
        assert_eq!(p.tick(t + ms(500), || true), [Action::Forward { signal: TERM, group: true }]);

        let mut p = Policy::new(&args);
        p.signal(TERM, t);
        assert_eq!(
            p.signal(libc::SIGINT, t + ms(10)),
            [Action::Forward { signal: libc::SIGINT, group: true }]
        );
        assert_eq!(p.tick(t + ms(600), || true), [], "the held one is not sent again");
    }

    #[test]
    fn the_stop_timeout_counts_from_the_forwarded_stop_signal() {
        let args =
            SupervisorArgs { stop_delay: Some(ms(500)), stop_timeout: Some(ms(1000)), ..Default::default() };
        let t = Instant::now();
        let mut p = Policy::new(&args);
        p.signal(TERM, t);
        p.tick(t + ms(500), || true);
        assert_eq!(p.timeout(t + ms(500)), Some(ms(1000)));
        assert_eq!(p.tick(t + ms(1499), || true), []);
        assert_eq!(p.tick(t + ms(1500), || true), [Action::KillApp]);
        assert_eq!(p.tick(t + ms(9000), || true), [], "SIGKILL once");
    }

    #[test]
    fn leftovers_get_sigterm_then_sigkill_after_the_grace_then_the_exit_waits_for_them() {
        let args = SupervisorArgs { leftover_grace: ms(300), ..Default::default() };
        let t = Instant::now();
        let mut p = Policy::new(&args);
        p.app_ended(Ended::Exited(0));
        assert_eq!(p.tick(t, || true), [Action::TermLeftovers]);
        assert_eq!(p.timeout(t), Some(GROUP_POLL));
        assert_eq!(p.tick(t + ms(299), || true), []);
        assert_eq!(p.tick(t + ms(300), || true), [Action::KillLeftovers]);
        assert_eq!(p.timeout(t + ms(300)), Some(GROUP_POLL), "no far-off sentinel: polls the group");
        assert_eq!(p.tick(t + ms(5000), || true), []);
        assert_eq!(p.tick(t + ms(5100), || false), [Action::Exit { ended: Ended::Exited(0), code: 0 }]);
    }

    #[test]
    fn signals_after_the_app_ended_go_to_leftovers_one_by_one_not_held() {
        let args = SupervisorArgs { stop_delay: Some(ms(500)), ..Default::default() };
        let mut p = Policy::new(&args);
        p.app_ended(Ended::Exited(0));
        assert_eq!(p.signal(TERM, Instant::now()), [Action::Forward { signal: TERM, group: false }]);
    }

    #[test]
    fn exit_codes_are_remapped_signal_deaths_included() {
        let args = SupervisorArgs { remap_exit: vec![(143, 0), (3, 4)], ..Default::default() };
        let t = Instant::now();
        for (ended, code) in [
            (Ended::Signaled(libc::SIGTERM), 0),
            (Ended::Exited(143), 0),
            (Ended::Exited(3), 4),
            (Ended::Exited(5), 5),
            (Ended::Signaled(libc::SIGKILL), 137),
        ] {
            let mut p = Policy::new(&args);
            p.app_ended(ended);
            assert_eq!(p.tick(t, || false), [Action::Exit { ended, code }]);
        }
    }
}
