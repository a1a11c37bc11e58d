//! The validated configuration. Built once from the command line, before anything runs; nothing
//! below this module knows clap exists.

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::{self, Cli, LogFormat};
use crate::error::Error;
use crate::target::{self, Target};
use crate::wait::{Backoff, WaitPolicy};

#[derive(Debug)]
pub struct Config {
    pub command: Command,
}

#[derive(Debug)]
pub enum Command {
    Wait(WaitConfig),
    Run {
        wait: WaitConfig,
        argv: Vec<OsString>,
    },
}

#[derive(Debug)]
pub struct WaitConfig {
    pub targets: Vec<Target>,
    pub policy: WaitPolicy,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

impl LogConfig {
    pub fn from_cli(cli: &Cli) -> Self {
        LogConfig {
            format: cli.log_format,
            filter: cli.log_level.clone(),
        }
    }
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Self, Error> {
        let command = match cli.command {
            cli::Command::Wait(args) => Command::Wait(WaitConfig::from_args(args)?),
            cli::Command::Run(run) => Command::Run {
                wait: WaitConfig::from_args(run.wait)?,
                argv: run.command,
            },
        };
        Ok(Config { command })
    }
}

impl WaitConfig {
    fn from_args(args: cli::WaitArgs) -> Result<Self, Error> {
        let mut targets = Vec::new();
        if let Some(url) = args
            .database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
        {
            targets.push(
                target::parse_database_url(url)
                    .map_err(|e| Error::Config(format!("--database-url / DATABASE_URL: {e}")))?,
            );
        }
        for raw in args.wait_for.iter().filter(|r| !r.trim().is_empty()) {
            targets.push(
                target::parse_wait_for(raw)
                    .map_err(|e| Error::Config(format!("--wait-for / PREFLIGHT_WAIT_FOR: {e}")))?,
            );
        }

        let timeout = duration("--timeout", &args.timeout)?;
        let attempt_timeout = duration("--attempt-timeout", &args.attempt_timeout)?;
        let base = duration("--backoff-base", &args.backoff_base)?;
        let cap = duration("--backoff-max", &args.backoff_max)?;
        let stagger = duration("--connect-stagger", &args.connect_stagger)?;
        if attempt_timeout.is_zero() {
            return Err(Error::Config(
                "--attempt-timeout must be more than 0: give each attempt time, e.g. 5s".into(),
            ));
        }
        if base.is_zero() {
            return Err(Error::Config(
                "--backoff-base must be more than 0, e.g. 50ms".into(),
            ));
        }
        if cap < base {
            return Err(Error::Config(format!(
                "--backoff-max ({}) is below --backoff-base ({}): raise it or lower the base",
                args.backoff_max, args.backoff_base
            )));
        }
        if stagger.is_zero() {
            return Err(Error::Config(
                "--connect-stagger must be more than 0, e.g. 250ms".into(),
            ));
        }
        let policy = WaitPolicy {
            backoff: Backoff { base, cap },
            attempt_timeout,
            stagger,
            timeout: (!timeout.is_zero()).then_some(timeout),
            retry_login_errors: args.retry_login_errors,
            progress_every: Duration::from_secs(5),
        };
        Ok(WaitConfig { targets, policy })
    }
}

/// Human durations (`250ms`, `5s`, `2m`, `1h30m`); a bare `0` is accepted for "none".
pub fn duration(flag: &str, raw: &str) -> Result<Duration, Error> {
    let raw = raw.trim();
    if raw == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(raw).map_err(|e| {
        Error::Config(format!(
            "{flag} '{raw}' is not a duration ({e}): write e.g. 250ms, 5s or 2m"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn wait_config(args: &[&str]) -> Result<WaitConfig, Error> {
        let mut argv = vec!["preflight", "wait"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            cli::Command::Wait(a) => WaitConfig::from_args(a),
            cli::Command::Run(_) => unreachable!(),
        }
    }

    #[test]
    fn durations_take_human_forms() {
        assert_eq!(duration("x", "250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("x", "0").unwrap(), Duration::ZERO);
        let err = duration("--timeout", "soon").unwrap_err().to_string();
        assert!(err.contains("--timeout") && err.contains("5s"), "{err}");
    }

    #[test]
    fn zero_timeout_means_forever() {
        let c = wait_config(&["--timeout", "0"]).unwrap();
        assert_eq!(c.policy.timeout, None);
    }

    #[test]
    fn inverted_backoff_is_rejected() {
        let err = wait_config(&["--backoff-base", "1s", "--backoff-max", "100ms"]).unwrap_err();
        assert!(err.to_string().contains("--backoff-max"));
    }

    #[test]
    fn a_bad_wait_for_names_the_flag() {
        let err = wait_config(&["--wait-for", "tcp://db"])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--wait-for"), "{err}");
    }
}
