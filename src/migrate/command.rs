//! The command source: any other tool (Prisma, Knex, Flyway, an Alembic driven by hand), run as
//! `--migrate-command`, with an optional `--schema-check-command` that says whether the schema is
//! current.
//!
//! A check answers by its exit status: 0 current; 2 (a usage error, as from an option the
//! installed version does not know), 126, 127 or death by a signal mean the check itself is
//! broken; any other status means "not current" (`alembic current --check-heads` exits 255).

use std::process::ExitStatus;

use tracing::{debug, info};

use super::error::MigrateError;
use super::{Action, MigrateConfig, Reading, SchemaSource, backup, command_env, process};
use crate::db::DbConn;
use crate::error::Error;
use crate::target::Target;

pub(super) struct Command<'a> {
    argv: &'a [String],
    check: Option<&'a [String]>,
    target: &'a Target,
    config: &'a MigrateConfig,
}

impl<'a> Command<'a> {
    pub fn new(
        argv: &'a [String],
        check: Option<&'a [String]>,
        target: &'a Target,
        config: &'a MigrateConfig,
    ) -> Self {
        Command { argv, check, target, config }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        command_env(self.config, self.target, self.target.url.expose().to_owned())
    }

    /// `Ok(true)` when the check says current, `Ok(false)` when it says not yet.
    async fn check(&self, check: &[String]) -> Result<bool, Error> {
        let status = process::run(check, &check[0], "schema check command", &self.env()).await?;
        if status.success() {
            return Ok(true);
        }
        if broken(status) {
            return Err(MigrateError::CheckBroken { program: check[0].clone(), status }.into());
        }
        debug!(%status, "schema check command says not current yet");
        Ok(false)
    }
}

fn broken(status: ExitStatus) -> bool {
    matches!(status.code(), None | Some(2 | 126 | 127))
}

impl SchemaSource for Command<'_> {
    fn reads_database(&self) -> bool {
        false
    }

    async fn read(&self, _conn: Option<&mut DbConn>, _action: &Action) -> Result<Reading, Error> {
        let (current, detail) = match self.check {
            Some(check) => {
                let current = self.check(check).await?;
                (current, if current { "the check command says so" } else { "the check command says not" })
            }
            None => (false, "no check command: the migration command runs every time"),
        };
        Ok(Reading {
            current,
            doubt: None,
            pending: None,
            detail: detail.into(),
            plan: self
                .argv
                .first()
                .map(|p| format!("would run the migration command '{p}'"))
                .into_iter()
                .collect(),
        })
    }

    /// Under the lock: check again (another replica may have migrated while we waited), back up,
    /// then run the command.
    async fn apply_locked(&self, conn: &mut DbConn, _action: &Action) -> Result<usize, Error> {
        if let Some(check) = self.check
            && self.check(check).await?
        {
            info!("another process applied the migrations while we waited for the lock");
            return Ok(0);
        }
        // Without a check command there is no telling whether the command will change anything,
        // so the backup is taken every time.
        if let Some(b) = &self.config.backup {
            backup::take(b, conn, self.config, self.target).await?;
        }
        let status = process::run(self.argv, &self.argv[0], "migration command", &self.env()).await?;
        if !status.success() {
            // Only the program: its arguments may carry secrets.
            return Err(MigrateError::CommandFailed { program: self.argv[0].clone(), status }.into());
        }
        info!("migration command done");
        Ok(1)
    }
}
