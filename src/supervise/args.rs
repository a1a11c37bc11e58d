//! The supervisor's settings, and their one spelling as flags.
//!
//! `run` validates the user's flags into a [`SupervisorArgs`] (in `config`), then re-executes
//! itself into the supervise-only mode with [`SupervisorArgs::to_argv`]; that mode reads them
//! back with [`SupervisorArgs::from_argv`], without clap (see `supervise::init` for why). The
//! two are each other's inverse, which the tests check field by field: a new option is one field
//! here, written and read in this file only.

use std::ffi::OsStr;
use std::time::Duration;

use crate::child::user::User;
use crate::log::LogFormat;

/// How to supervise the app.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisorArgs {
    /// After a stop signal, SIGKILL the app's group if it outlives this.
    pub stop_timeout: Option<Duration>,
    /// Hold the first stop signal this long before forwarding it.
    pub stop_delay: Option<Duration>,
    /// When the app exits, the rest of its group gets SIGTERM, then SIGKILL after this.
    pub leftover_grace: Duration,
    /// `(from, to)`: a signal received as `from` is forwarded as `to`; `None` drops it.
    pub rewrites: Vec<(i32, Option<i32>)>,
    /// Forward signals to the app alone, not its group.
    pub child_only: bool,
    pub user: Option<User>,
    /// Become a child subreaper (when not PID 1), so orphans come back to us.
    pub subreaper: bool,
    /// `PR_SET_PDEATHSIG` for the supervisor itself.
    pub parent_death: Option<ParentDeath>,
    /// `(from, to)`: the app's exit code `from` (128+N for signal N) is reported as `to`.
    pub remap_exit: Vec<(u8, u8)>,
    pub log_format: LogFormat,
    /// One level name (`info`): what the parent's filter enables for the supervisor.
    pub log_level: String,
    /// Colour in text logs, as the parent decided (`--color`, NO_COLOR, a terminal).
    pub ansi: bool,
}

/// The signal to get when the parent dies, and the parent it was asked under: after the
/// re-exec the parent is checked again, since it may have died in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParentDeath {
    pub signal: i32,
    pub parent: i32,
}

impl Default for SupervisorArgs {
    fn default() -> Self {
        SupervisorArgs {
            stop_timeout: None,
            stop_delay: None,
            leftover_grace: Duration::from_secs(2),
            rewrites: Vec::new(),
            child_only: false,
            user: None,
            subreaper: false,
            parent_death: None,
            remap_exit: Vec::new(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            ansi: false,
        }
    }
}

impl SupervisorArgs {
    /// The flags that [`from_argv`](Self::from_argv) reads back into `self`.
    pub fn to_argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        let mut flag = |name: &str, value: String| argv.extend([name.to_owned(), value]);
        if let Some(d) = self.stop_timeout {
            flag("--stop-timeout", ms(d));
        }
        if let Some(d) = self.stop_delay {
            flag("--stop-delay", ms(d));
        }
        flag("--leftover-grace", ms(self.leftover_grace));
        for (from, to) in &self.rewrites {
            flag(
                "--rewrite-signal",
                format!("{from}:{}", to.map_or_else(|| "none".to_owned(), |t| t.to_string())),
            );
        }
        if let Some(user) = &self.user {
            flag("--user", user.spec.clone());
        }
        if let Some(p) = self.parent_death {
            flag("--parent-death-signal", format!("{}:{}", p.signal, p.parent));
        }
        for (from, to) in &self.remap_exit {
            flag("--remap-exit", format!("{from}:{to}"));
        }
        flag("--log-format", if self.log_format == LogFormat::Json { "json" } else { "text" }.to_owned());
        flag("--log-level", self.log_level.clone());
        if self.child_only {
            argv.push("--signal-child-only".to_owned());
        }
        if self.subreaper {
            argv.push("--subreaper".to_owned());
        }
        if self.ansi {
            argv.push("--ansi".to_owned());
        }
        argv
    }

    /// Reads what [`to_argv`](Self::to_argv) wrote. Anything else is an error naming the flag:
    /// this mode is internal, and a mismatch is a bug to report, not to guess around.
    pub fn from_argv<S: AsRef<OsStr>>(argv: &[S]) -> Result<SupervisorArgs, String> {
        let mut args = SupervisorArgs::default();
        let mut it = argv.iter().map(|a| a.as_ref().to_str());
        while let Some(flag) = it.next() {
            let flag = flag.ok_or("a supervisor flag is not UTF-8")?;
            match flag {
                "--signal-child-only" => {
                    args.child_only = true;
                    continue;
                }
                "--subreaper" => {
                    args.subreaper = true;
                    continue;
                }
                "--ansi" => {
                    args.ansi = true;
                    continue;
                }
                _ => {}
            }
            let value = it.next().flatten().ok_or_else(|| format!("{flag} needs a value"))?;
            let bad = || format!("{flag} '{value}' is not what preflight writes");
            match flag {
                "--stop-timeout" => args.stop_timeout = Some(parse_ms(value).ok_or_else(bad)?),
                "--stop-delay" => args.stop_delay = Some(parse_ms(value).ok_or_else(bad)?),
                "--leftover-grace" => args.leftover_grace = parse_ms(value).ok_or_else(bad)?,
                "--rewrite-signal" => {
                    let (from, to) = value.split_once(':').ok_or_else(bad)?;
                    let to = if to == "none" { None } else { Some(to.parse().map_err(|_| bad())?) };
                    args.rewrites.push((from.parse().map_err(|_| bad())?, to));
                }
                "--user" => args.user = Some(User::parse(value).map_err(|e| e.to_string())?),
                "--parent-death-signal" => {
                    let (signal, parent) = value.split_once(':').ok_or_else(bad)?;
                    args.parent_death = Some(ParentDeath {
                        signal: signal.parse().map_err(|_| bad())?,
                        parent: parent.parse().map_err(|_| bad())?,
                    });
                }
                "--remap-exit" => {
                    let (from, to) = value.split_once(':').ok_or_else(bad)?;
                    args.remap_exit.push((from.parse().map_err(|_| bad())?, to.parse().map_err(|_| bad())?));
                }
                "--log-format" => {
                    args.log_format = match value {
                        "json" => LogFormat::Json,
                        "text" => LogFormat::Text,
                        _ => return Err(bad()),
                    }
                }
                "--log-level" => args.log_level = value.to_owned(),
                _ => return Err(format!("unknown supervisor flag {flag}")),
            }
        }
        Ok(args)
    }

    /// What the app's exit code `code` is reported as.
    pub fn remapped(&self, code: u8) -> u8 {
        self.remap_exit.iter().find(|(from, _)| *from == code).map_or(code, |(_, to)| *to)
    }

    /// What a received signal is forwarded as: itself, another, or nothing.
    pub fn rewritten(&self, sig: i32) -> Option<i32> {
        self.rewrites.iter().find(|(from, _)| *from == sig).map_or(Some(sig), |(_, to)| *to)
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn parse_ms(raw: &str) -> Option<Duration> {
    raw.strip_suffix("ms")?.parse().ok().map(Duration::from_millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field set to something other than its default.
    fn everything() -> SupervisorArgs {
        SupervisorArgs {
            stop_timeout: Some(Duration::from_millis(25_000)),
            stop_delay: Some(Duration::from_millis(1500)),
            leftover_grace: Duration::from_millis(300),
            rewrites: vec![(15, Some(3)), (28, None)],
            child_only: true,
            user: Some(User::parse("0:0").expect("the tests run as root")),
            subreaper: true,
            parent_death: Some(ParentDeath { signal: 15, parent: 4242 }),
            remap_exit: vec![(143, 0), (1, 0)],
            log_format: LogFormat::Json,
            log_level: "debug".to_owned(),
            ansi: true,
        }
    }

    #[test]
    fn the_flags_read_back_into_the_same_settings() {
        for args in [SupervisorArgs::default(), everything()] {
            let argv = args.to_argv();
            assert_eq!(SupervisorArgs::from_argv(&argv).unwrap(), args, "{argv:?}");
        }
    }

    #[test]
    fn each_field_changes_the_flags() {
        // A field that to_argv forgot would round-trip as its default and pass the test above
        // only for the default: so each field alone must change the output.
        let base = SupervisorArgs::default().to_argv();
        let full = everything();
        let one_field_each: Vec<SupervisorArgs> = vec![
            SupervisorArgs { stop_timeout: full.stop_timeout, ..Default::default() },
            SupervisorArgs { stop_delay: full.stop_delay, ..Default::default() },
            SupervisorArgs { leftover_grace: full.leftover_grace, ..Default::default() },
            SupervisorArgs { rewrites: full.rewrites.clone(), ..Default::default() },
            SupervisorArgs { child_only: true, ..Default::default() },
            SupervisorArgs { user: full.user.clone(), ..Default::default() },
            SupervisorArgs { subreaper: true, ..Default::default() },
            SupervisorArgs { parent_death: full.parent_death, ..Default::default() },
            SupervisorArgs { remap_exit: full.remap_exit.clone(), ..Default::default() },
            SupervisorArgs { log_format: LogFormat::Json, ..Default::default() },
            SupervisorArgs { log_level: "debug".into(), ..Default::default() },
            SupervisorArgs { ansi: true, ..Default::default() },
        ];
        for args in one_field_each {
            let argv = args.to_argv();
            assert_ne!(argv, base, "{args:?}");
            assert_eq!(SupervisorArgs::from_argv(&argv).unwrap(), args);
        }
    }

    #[test]
    fn anything_else_is_refused_by_name() {
        assert!(
            SupervisorArgs::from_argv(&["--stop-delay", "5s"]).unwrap_err().contains("--stop-delay '5s'")
        );
        assert!(SupervisorArgs::from_argv(&["--stop-delay"]).unwrap_err().contains("needs a value"));
        assert!(SupervisorArgs::from_argv(&["--frobnicate", "1"]).unwrap_err().contains("--frobnicate"));
        assert!(SupervisorArgs::from_argv(&["--remap-exit", "300:0"]).is_err());
    }

    #[test]
    fn remaps_and_rewrites_apply_to_their_own_value_only() {
        let args = everything();
        assert_eq!((args.remapped(143), args.remapped(1), args.remapped(2)), (0, 0, 2));
        assert_eq!((args.rewritten(15), args.rewritten(28), args.rewritten(1)), (Some(3), None, Some(1)));
    }
}
