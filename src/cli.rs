//! The command line, and only the command line: clap types live here and nowhere else.
//! `config` turns them into a validated `Config`.

use std::ffi::OsString;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  # As a container entrypoint: wait for the database, then start the app
  preflight run -- gunicorn app:app

  # Wait for PostgreSQL over IPv6 and a cache, for at most 2 minutes
  DATABASE_URL=postgres://app:secret@db.internal:5432/app \\
    preflight wait --wait-for tcp://cache.internal:6379 --timeout 2m

  # SQLite on a mounted volume, JSON logs
  preflight --log-format json wait --database-url sqlite:/data/app.db

Exit codes: 0 ok, 2 usage, 3 permanent dependency error, 124 deadline passed,
126/127 command not executable/not found, 128+N killed by signal N.";

/// Wait for the database and other dependencies, then start the application.
#[derive(Debug, Parser)]
#[command(name = "preflight", version = env!("PREFLIGHT_VERSION"), about, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log line format on stderr: human-readable text or one JSON object per line.
    #[arg(long, global = true, help_heading = "Logging", env = "PREFLIGHT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in tracing's EnvFilter syntax: `debug`, or `info,preflight=debug`.
    #[arg(
        long,
        global = true,
        help_heading = "Logging",
        env = "PREFLIGHT_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log_level: String,

    /// Colour in text logs: auto (when stderr is a terminal and NO_COLOR is unset), always, never.
    #[arg(long, global = true, help_heading = "Logging", env = "PREFLIGHT_COLOR", value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

pub use crate::log::{Color, LogFormat};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Wait until every dependency is ready, then exit 0.
    ///
    /// Example: preflight wait --database-url postgres://app@db/app --timeout 30s
    Wait(Box<WaitArgs>),
    /// Wait for every dependency, migrate (or wait for the schema), then start COMMAND in place
    /// of preflight.
    ///
    /// Example: preflight run --migrate-command 'alembic upgrade head' -- gunicorn app:app
    Run(Box<RunArgs>),
    /// Wait for the database, migrate it under a cluster-wide lock, and exit: for Kubernetes
    /// init containers and fly.io's release_command.
    ///
    /// Example: preflight migrate --migrations ./migrations
    Migrate(Box<MigrateCommand>),
    /// Show every migration as applied, pending, changed or missing.
    ///
    /// Example: preflight status --check --timeout 5s
    Status(Box<StatusArgs>),
    /// Print a shell completion script to stdout.
    ///
    /// Example: preflight completions bash > /etc/bash_completion.d/preflight
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout.
    ///
    /// Example: preflight man > /usr/local/share/man/man1/preflight.1
    Man,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitMode {
    /// Supervise when preflight is PID 1, exec otherwise.
    Auto,
    /// Always supervise; when not PID 1, become a child subreaper so orphans still come back.
    Always,
    /// Always exec: the app replaces preflight.
    Never,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Starting the app")]
pub struct InitArgs {
    /// auto: supervise the app when preflight is PID 1, exec it otherwise. always: supervise.
    /// never: exec.
    #[arg(long, env = "PREFLIGHT_INIT", value_enum, default_value_t = InitMode::Auto)]
    pub init: InitMode,

    /// After a stop signal (SIGTERM, SIGINT) is forwarded, SIGKILL the app's group if it has not
    /// exited within this long. Off by default: orchestrators escalate anyway. Example: 25s
    #[arg(long, env = "PREFLIGHT_STOP_TIMEOUT", value_name = "DURATION")]
    pub stop_timeout: Option<String>,

    /// Hold the first SIGTERM/SIGINT this long before forwarding it, so the load balancer stops
    /// routing to this instance first (replaces a `preStop: sleep` hook). Example: 5s
    #[arg(long, env = "PREFLIGHT_STOP_DELAY", value_name = "DURATION")]
    pub stop_delay: Option<String>,

    /// When the app exits, the rest of its process group gets SIGTERM, then SIGKILL after this.
    #[arg(long, env = "PREFLIGHT_LEFTOVER_GRACE", default_value = "2s", value_name = "DURATION")]
    pub leftover_grace: String,

    /// Forward signal FROM as TO, e.g. SIGTERM:SIGQUIT for nginx's graceful stop; TO `none`
    /// (or 0) drops FROM, e.g. SIGWINCH:none. Repeatable.
    #[arg(long, env = "PREFLIGHT_REWRITE_SIGNAL", value_name = "FROM:TO", value_delimiter = ',')]
    pub rewrite_signal: Vec<String>,

    /// Report the app's exit code FROM as TO, e.g. 143:0 for an app that exits 143 on SIGTERM
    /// (128+N is death by signal N). Repeatable. Makes `--init auto` supervise.
    #[arg(long, env = "PREFLIGHT_REMAP_EXIT", value_name = "FROM:TO", value_delimiter = ',')]
    pub remap_exit: Vec<String>,

    /// Signal preflight gets from the kernel when its parent dies (like tini -p), e.g. SIGTERM:
    /// for when something else is PID 1 (`docker run --init`, a shared process namespace).
    #[arg(long, env = "PREFLIGHT_PARENT_DEATH_SIGNAL", value_name = "SIGNAL")]
    pub parent_death_signal: Option<String>,

    /// Send forwarded signals to the app alone, not to its whole process group.
    #[arg(long, env = "PREFLIGHT_SIGNAL_CHILD_ONLY", value_parser = BoolishValueParser::new())]
    pub signal_child_only: bool,

    /// Run the app as USER[:GROUP] (names or numeric ids); needs root. A name also gets its
    /// supplementary groups; numeric ids get none. Example: 65534:65534
    #[arg(long, env = "PREFLIGHT_USER", value_name = "USER[:GROUP]")]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MigrateCommand {
    #[command(subcommand)]
    pub action: Option<MigrateAction>,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub migrate: MigrateArgs,

    /// Print what would be applied, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Record migrations as applied without running them, to adopt an existing database
    /// (like `alembic stamp head`).
    ///
    /// Example: preflight migrate stamp latest
    Stamp(StampArgs),
    /// Run down migrations (`.down.sql`), newest first, under the lock.
    ///
    /// Example: preflight migrate revert --steps 1
    Revert(RevertArgs),
    /// The fresh-baseline reset: drop every object in the database (PostgreSQL: the current
    /// schema) and apply every migration from zero. Takes a backup first when one is configured.
    ///
    /// Example: preflight migrate reset --confirm-destroy-all-data --backup
    Reset(ResetArgs),
    /// Create the next migration file in the migrations folder, named as sqlx-cli names it:
    /// `<UTC timestamp>_<name>.sql`, or the next number in a folder numbered 1, 2, 3…
    /// Prints the path(s) on stdout. Touches no database.
    ///
    /// Example: preflight migrate new "add users" --reversible
    New(NewArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// What the migration does; spaces become `_`.
    pub name: String,

    /// Create the `.up.sql` and `.down.sql` pair (a folder that has pairs gets pairs anyway).
    #[arg(long, short = 'r')]
    pub reversible: bool,

    /// The migrations folder (created if missing).
    #[arg(long, env = "PREFLIGHT_MIGRATIONS", default_value = "migrations", value_name = "DIR")]
    pub migrations: std::path::PathBuf,
}

#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Revert every applied migration newer than this version (with Alembic: downgrade to this
    /// revision, or base).
    #[arg(long, value_name = "VERSION", conflicts_with = "steps")]
    pub to: Option<String>,

    /// Revert this many of the newest applied migrations (default 1).
    #[arg(long, value_name = "N")]
    pub steps: Option<u32>,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub migrate: MigrateArgs,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    /// Required: reset destroys every table and row.
    #[arg(long)]
    pub confirm_destroy_all_data: bool,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub migrate: MigrateArgs,
}

#[derive(Debug, Args)]
pub struct StampArgs {
    /// Stamp every migration up to and including this version, or `latest` (with Alembic: a
    /// revision, `heads` or `base`).
    #[arg(id = "target_version", default_value = "latest", value_name = "VERSION")]
    pub version: String,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub migrate: MigrateArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub migrate: MigrateArgs,

    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    /// Exit 16 unless the schema is current: for readiness probes and CI.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaArg {
    /// Migrate, under the cluster-wide lock.
    Apply,
    /// Take no lock and write nothing; wait until another process has migrated.
    Wait,
    /// Neither migrate nor check.
    Skip,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Migrating")]
pub struct MigrateArgs {
    /// Directory of SQL migrations in sqlx's format (`<version>_<desc>.sql`, or `.up.sql` /
    /// `.down.sql`). Default: ./migrations when it exists.
    #[arg(long, env = "PREFLIGHT_MIGRATIONS", value_name = "DIR")]
    pub migrations: Option<std::path::PathBuf>,

    /// An Alembic project: its ini file. Revisions and alembic_version are read without Python;
    /// Alembic runs only when something is to be done. Default: ./alembic.ini when it exists.
    #[arg(long, env = "PREFLIGHT_ALEMBIC_CONFIG", value_name = "FILE", conflicts_with = "migrations")]
    pub alembic_config: Option<std::path::PathBuf>,

    /// The version table Alembic's env.py uses, when it sets version_table (and
    /// version_table_schema: write schema.table).
    #[arg(
        long,
        env = "PREFLIGHT_ALEMBIC_VERSION_TABLE",
        default_value = "alembic_version",
        value_name = "NAME"
    )]
    pub alembic_version_table: String,

    /// Run the project's own migration tool instead, split into arguments without a shell. With
    /// --alembic-config, it replaces `alembic -c FILE upgrade heads`.
    /// Example: --migrate-command 'npx prisma migrate deploy'
    #[arg(
        long,
        env = "PREFLIGHT_MIGRATE_COMMAND",
        value_name = "COMMAND",
        hide_env_values = true,
        conflicts_with = "migrations"
    )]
    pub migrate_command: Option<String>,

    /// apply: migrate under the lock. wait: take no lock, wait for another process to migrate
    /// (readers). skip: neither.
    #[arg(long, env = "PREFLIGHT_SCHEMA", value_enum, default_value_t = SchemaArg::Apply)]
    pub schema: SchemaArg,

    /// For tools other than Alembic: exits 0 when the schema is current, 1 when not (2, 126, 127
    /// or a signal: the check is broken). Readers poll it; writers run it first and skip the lock
    /// when it passes. Example: 'npx prisma migrate status'
    #[arg(long, env = "PREFLIGHT_SCHEMA_CHECK_COMMAND", value_name = "COMMAND", hide_env_values = true)]
    pub schema_check_command: Option<String>,

    /// The longest to wait for another process's migration lock. Example: 10m
    #[arg(long, env = "PREFLIGHT_LOCK_TIMEOUT", default_value = "5m", value_name = "DURATION")]
    pub lock_timeout: String,

    /// The longest one migration waits for a lock on a table the app is using (PostgreSQL
    /// lock_timeout, MySQL lock_wait_timeout), so that it never queues the app's queries behind
    /// it for long; it is then rolled back and tried again (--ddl-retries). 0: no limit.
    #[arg(long, env = "PREFLIGHT_DDL_LOCK_TIMEOUT", default_value = "5s", value_name = "DURATION")]
    pub ddl_lock_timeout: String,

    /// How many more times a migration that timed out on a table lock is tried, after a
    /// random pause that grows each time (PostgreSQL, transactional migrations).
    #[arg(long, env = "PREFLIGHT_DDL_RETRIES", default_value_t = 5, value_name = "N")]
    pub ddl_retries: u32,

    /// Accept migrations applied in the database but absent locally (a newer release ran them).
    #[arg(long, env = "PREFLIGHT_IGNORE_MISSING", value_parser = BoolishValueParser::new())]
    pub ignore_missing: bool,

    /// Apply every pending migration in one transaction: all or none (PostgreSQL, SQLite).
    #[arg(long, env = "PREFLIGHT_SINGLE_TRANSACTION", value_parser = BoolishValueParser::new())]
    pub single_transaction: bool,

    /// Back up before migrating, when something is pending (and before revert and reset).
    /// SQLite: VACUUM INTO a timestamped file. Other databases need --backup-command.
    #[arg(long, env = "PREFLIGHT_BACKUP", value_parser = BoolishValueParser::new())]
    pub backup: bool,

    /// Where SQLite backups go. Default: beside the database.
    #[arg(long, env = "PREFLIGHT_BACKUP_DIR", value_name = "DIR")]
    pub backup_dir: Option<std::path::PathBuf>,

    /// How many SQLite backups to keep; older ones are deleted.
    #[arg(long, env = "PREFLIGHT_BACKUP_KEEP", default_value_t = 5, value_name = "N")]
    pub backup_keep: usize,

    /// A backup command run under the lock before migrating, without a shell; $VAR and ${VAR}
    /// are expanded from the environment, and PREFLIGHT_BACKUP_STAMP holds a UTC timestamp.
    /// Example: 'pg_dump -Fc -f /backups/app-${PREFLIGHT_BACKUP_STAMP}.dump $DATABASE_URL'
    #[arg(long, env = "PREFLIGHT_BACKUP_COMMAND", value_name = "COMMAND", hide_env_values = true)]
    pub backup_command: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub migrate: MigrateArgs,

    #[command(flatten)]
    pub init: InitArgs,

    /// The application to start, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Waiting")]
pub struct WaitArgs {
    /// The database to wait for: postgres://, postgresql://, mysql://, mariadb:// or sqlite:
    /// (a SQLAlchemy `+driver` suffix is accepted). Example: postgres://app:pw@[::1]:5432/app
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Read the database URL from this file instead: a Docker secret (/run/secrets/NAME) or a
    /// Kubernetes Secret volume, so the password is neither in the environment nor in argv.
    /// One trailing newline is dropped. Exclusive with --database-url / DATABASE_URL.
    #[arg(long, env = "DATABASE_URL_FILE", value_name = "PATH")]
    pub database_url_file: Option<std::path::PathBuf>,

    /// Read the database URL from the environment variable NAME instead of DATABASE_URL (as
    /// dbmate's --env): e.g. a direct URL for migrations beside the app's pooled DATABASE_URL.
    #[arg(long, env = "PREFLIGHT_DATABASE_URL_ENV", value_name = "NAME")]
    pub database_url_env: Option<String>,

    /// Another dependency: tcp://HOST:PORT, http(s)://HOST[:PORT]/PATH (2xx is ready; options
    /// status=2xx,301 body=REGEX ca=PEM insecure=1 in the query),
    /// redis(s)://[USER:PASSWORD@]HOST[:PORT][/DB] (logs in and answers PING), unix:///PATH (a socket accepts), file:///PATH (exists) or a database URL. Repeat the flag. Without the flag, PREFLIGHT_WAIT_FOR holds the targets
    /// separated by commas (a comma inside a password is written %2C there).
    /// Example: --wait-for tcp://redis:6379 --wait-for http://api:8080/healthz
    #[arg(long, value_name = "TARGET")]
    pub wait_for: Vec<String>,

    /// More targets, from a file: one per line (blank lines and lines starting with # are
    /// skipped), for targets whose URLs hold passwords. Example: /run/secrets/wait-for
    #[arg(long, env = "PREFLIGHT_WAIT_FOR_FILE", value_name = "PATH")]
    pub wait_for_file: Option<std::path::PathBuf>,

    /// Overall deadline for the wait; 0 waits forever. Example: 2m
    #[arg(long, env = "PREFLIGHT_TIMEOUT", default_value = "60s", value_name = "DURATION")]
    pub timeout: String,

    /// The most one attempt (DNS, connect, login) may take. Example: 2s
    #[arg(long, env = "PREFLIGHT_ATTEMPT_TIMEOUT", default_value = "5s", value_name = "DURATION")]
    pub attempt_timeout: String,

    /// Ceiling of the first retry's random delay; it doubles per failure up to --backoff-max.
    #[arg(long, env = "PREFLIGHT_BACKOFF_BASE", default_value = "50ms", value_name = "DURATION")]
    pub backoff_base: String,

    /// Largest random delay between attempts. Once the dependency is up, it is seen about
    /// 0.3 × this later on median. Example: 1s
    #[arg(long, env = "PREFLIGHT_BACKOFF_MAX", default_value = "400ms", value_name = "DURATION")]
    pub backoff_max: String,

    /// How long one address gets before the next one is tried in parallel (RFC 8305).
    #[arg(long, env = "PREFLIGHT_CONNECT_STAGGER", default_value = "250ms", value_name = "DURATION")]
    pub connect_stagger: String,

    /// Keep waiting through login errors (wrong password, no such user or database) instead of
    /// failing at once: for setups that create the user or database after the server starts.
    #[arg(long, env = "PREFLIGHT_RETRY_LOGIN_ERRORS", value_parser = BoolishValueParser::new())]
    pub retry_login_errors: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_shows_env_vars_and_defaults_but_not_secrets() {
        let mut cmd = Cli::command();
        let wait = cmd.find_subcommand_mut("wait").expect("wait subcommand exists");
        let help = wait.render_long_help().to_string();
        for needle in ["DATABASE_URL", "PREFLIGHT_TIMEOUT", "[default: 60s]", "PREFLIGHT_BACKOFF_MAX"] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
        // Options are grouped by phase (global ones are copied into subcommands at build).
        let mut cmd = Cli::command();
        cmd.build();
        let run = cmd.find_subcommand_mut("run").expect("run subcommand exists").render_help().to_string();
        let at = |heading: &str| {
            run.find(&format!("\n{heading}:\n")).unwrap_or_else(|| panic!("{heading}: {run}"))
        };
        assert!(
            at("Waiting") < at("Migrating")
                && at("Migrating") < at("Starting the app")
                && at("Starting the app") < at("Logging")
        );
        assert!(run[at("Waiting")..at("Migrating")].contains("--timeout"), "{run}");
        assert!(run[at("Starting the app")..at("Logging")].contains("--stop-timeout"), "{run}");
        // Help prints an env var's value unless told not to: every variable that can hold a
        // URL (or a command, which can hold a password) is hidden, in every subcommand.
        let cmd = Cli::command();
        let mut checked = 0;
        for sub in cmd.get_subcommands().flat_map(|s| std::iter::once(s).chain(s.get_subcommands())) {
            for arg in sub.get_arguments() {
                let Some(env) = arg.get_env().and_then(|e| e.to_str()) else { continue };
                // (PREFLIGHT_DATABASE_URL_ENV holds a variable's name and DATABASE_URL_FILE a
                // path, not a URL.)
                let names_a_place = env.ends_with("_ENV") || env.ends_with("_FILE");
                if (env.contains("URL") || env.contains("COMMAND")) && !names_a_place {
                    assert!(arg.is_hide_env_values_set(), "{env} would be shown by --help");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 3, "only {checked} secret-bearing variables found");
    }

    /// The boolean variables, each spelled `1/0/yes/no/on/off/true/false` (tests/wait.rs runs
    /// them). A new one must be added here, with `BoolishValueParser`.
    pub const BOOLEAN_VARIABLES: [&str; 5] = [
        "PREFLIGHT_SIGNAL_CHILD_ONLY",
        "PREFLIGHT_IGNORE_MISSING",
        "PREFLIGHT_SINGLE_TRANSACTION",
        "PREFLIGHT_BACKUP",
        "PREFLIGHT_RETRY_LOGIN_ERRORS",
    ];

    #[test]
    fn every_boolean_variable_is_listed() {
        let cmd = Cli::command();
        let mut found: Vec<String> = Vec::new();
        for sub in cmd.get_subcommands().flat_map(|s| std::iter::once(s).chain(s.get_subcommands())) {
            for arg in sub.get_arguments().filter(|a| matches!(a.get_action(), clap::ArgAction::SetTrue)) {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                    found.push(env.to_owned());
                }
            }
        }
        found.sort();
        found.dedup();
        let mut listed = BOOLEAN_VARIABLES.map(str::to_owned).to_vec();
        listed.sort();
        assert_eq!(found, listed);
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let cli =
            Cli::try_parse_from(["preflight", "run", "--timeout", "5s", "--", "echo", "--timeout"]).unwrap();
        match cli.command {
            Command::Run(run) => {
                assert_eq!(run.command, ["echo", "--timeout"]);
                assert_eq!(run.wait.timeout, "5s");
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
