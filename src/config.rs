//! The validated configuration. Built once from the command line, before anything runs; nothing
//! below this module knows clap exists.

use std::ffi::OsString;
use std::time::Duration;

use std::path::{Path, PathBuf};

use crate::child::user::User;
use crate::cli::{self, Cli, LogFormat};
use crate::error::Error;
use crate::migrate::alembic::Project;
use crate::migrate::backup::Backup;
use crate::migrate::{Action, MigrateConfig, PassUrl, SchemaMode, Source};
use crate::supervise::args::{ParentDeath, SupervisorArgs};
use crate::target::{self, Target, TargetKind};
use crate::wait::{Backoff, WaitPolicy};

/// Why the command line or the environment was refused (exit 2, before anything connects or
/// is created). Each message names the option and the fix. None quotes a value that may hold a
/// password: URLs are judged by `target`, whose errors never contain one, and command lines
/// are not quoted back.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A rule about one option or between several, in fixed words.
    #[error("{0}")]
    Rule(&'static str),

    #[error("{flag} '{raw}' is not a duration ({source}): write e.g. 250ms, 5s or 2m")]
    NotADuration {
        flag: String,
        raw: String,
        #[source]
        source: humantime::DurationError,
    },

    #[error(
        "{flag} '{raw}' is more than a year: write a shorter duration (0, where the flag takes it, means none)"
    )]
    TooLong { flag: String, raw: String },

    #[error("--backoff-max ({max}) is below --backoff-base ({base}): raise it or lower the base")]
    BackoffBelowBase { max: String, base: String },

    #[error(
        "--database-url-env {name}: the environment variable {name} is not set (or not UTF-8): set it to the \
         database URL, or drop --database-url-env to read DATABASE_URL"
    )]
    UnsetUrlVariable { name: String },

    /// A URL or target, and where it came from.
    #[error("{from}: {source}")]
    Target {
        from: String,
        #[source]
        source: target::TargetError,
    },

    #[error(
        "no migrations: pass --migrations DIR (or create ./migrations), --alembic-config alembic.ini, or \
         --migrate-command{}",
        if *pyproject {
            " (pyproject.toml's [tool.alembic] is not read: put script_location in an alembic.ini)"
        } else {
            ""
        }
    )]
    NoMigrations { pyproject: bool },

    #[error("{flag} {}: no such directory; point it at your migrations, or use --migrate-command", dir.display())]
    NoFolder { flag: &'static str, dir: PathBuf },

    #[error(
        "{flag} {}: this folder holds Python files and no .sql file, like an Alembic script folder: pass \
         --alembic-config with its alembic.ini (or --migrations for a folder of SQL files)",
        dir.display()
    )]
    AlembicFolder { flag: &'static str, dir: PathBuf },

    /// A migrations folder whose files do not make one plan (`SqlFolder::read`'s words).
    #[error("{flag} {}: {why}", dir.display())]
    Folder { flag: &'static str, dir: PathBuf, why: String },

    /// A statement that must not be in a migration (`SqlFolder::check_statements`' words).
    #[error("{}: {why}", dir.display())]
    Statements { dir: PathBuf, why: String },

    #[error(
        "{what} {version}: no migration in {} has this version; give one of its versions{}",
        dir.display(),
        if *or_zero { ", or 0 for all" } else { "" }
    )]
    UnknownVersion { what: &'static str, version: i64, dir: PathBuf, or_zero: bool },

    #[error("revert --to {spec}: revert goes back to a revision (or base); to go to the heads, run migrate")]
    RevertToHeads { spec: String },

    /// A revision the Alembic project does not resolve (the graph's words).
    #[error("{}: {why}", ini.display())]
    Revision { ini: PathBuf, why: String },

    #[error("{what} {}: {why}; give a readable file that holds the value (and nothing else)", path.display())]
    SecretFile { what: &'static str, path: PathBuf, why: String },

    #[error(
        "--rewrite-signal '{spec}': write FROM:TO, e.g. SIGTERM:SIGQUIT, or FROM:none to drop FROM \
         (SIGKILL and SIGSTOP cannot be caught, SIGCHLD is preflight's own)"
    )]
    RewriteSignal { spec: String },

    #[error("--remap-exit '{spec}': write FROM:TO with exit codes 0 to 255, e.g. 143:0")]
    RemapExit { spec: String },

    #[error("--remap-exit gives exit code {from} two meanings ('{first}' and '{second}'): keep one")]
    RemapExitTwice { from: u8, first: String, second: String },

    #[error(
        "--parent-death-signal '{raw}' is not a signal preflight can pass on to the app: write e.g. \
         SIGTERM, TERM or 15 (not SIGKILL, SIGSTOP or SIGCHLD)"
    )]
    ParentDeathSignal { raw: String },

    #[error("{flag} {problem}")]
    Command { flag: &'static str, problem: CommandProblem },
}

/// What is wrong with a command line given in an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandProblem {
    Assignment,
    Empty,
    UnbalancedQuote,
}

impl std::fmt::Display for CommandProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CommandProblem::Assignment => {
                "starts with a variable assignment, and commands run without a shell: set the variable in the \
                 environment, or write `env NAME=VALUE command …`"
            }
            CommandProblem::Empty => "is empty: give the command to run, or leave the option out",
            CommandProblem::UnbalancedQuote => "has an unbalanced quote: close it, or escape it with \\",
        })
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Usage(Box::new(e))
    }
}

#[derive(Debug)]
pub struct Config {
    pub command: Command,
}

#[derive(Debug)]
pub enum Command {
    Wait(WaitConfig),
    Run { wait: WaitConfig, migrate: Option<MigratePhase>, init: InitPlan, argv: Vec<OsString> },
    Migrate { wait: WaitConfig, migrate: MigratePhase, action: Action },
    Status { wait: WaitConfig, phase: MigratePhase, json: bool, check: bool },
    NewMigration { dir: PathBuf, name: String, reversible: bool },
}

#[derive(Debug)]
pub struct WaitConfig {
    pub targets: Vec<Target>,
    pub policy: WaitPolicy,
    /// The `--database-url` target, which migrations run against.
    pub database: Option<Target>,
    /// The URL came from `--database-url-env NAME`: the commands preflight runs get it as their
    /// `DATABASE_URL` even when one is set (it is the app's, maybe pooled).
    pub database_from_named_env: bool,
}

/// How `run` starts the app.
#[derive(Debug)]
pub struct InitPlan {
    pub supervise: bool,
    pub config: SupervisorArgs,
}

/// The migration phase, fully resolved: what to run, against which database, in which mode.
#[derive(Debug)]
pub struct MigratePhase {
    pub database: Box<Target>,
    pub config: MigrateConfig,
    pub mode: SchemaMode,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
    /// Colour in text logs (`--color`, NO_COLOR).
    pub ansi: bool,
}

impl LogConfig {
    pub fn from_cli(cli: &Cli) -> Self {
        LogConfig { format: cli.log_format, filter: cli.log_level.clone(), ansi: cli.color.ansi() }
    }

    /// JSON lines at info: for errors that come before the configuration is known.
    pub fn json() -> Self {
        LogConfig { format: LogFormat::Json, filter: "info".into(), ansi: false }
    }
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Self, Error> {
        let (log_format, ansi) = (cli.log_format, cli.color.ansi());
        let command = match cli.command {
            cli::Command::Wait(args) => Command::Wait(WaitConfig::from_args(*args)?),
            cli::Command::Run(run) => {
                let wait = WaitConfig::from_args(run.wait)?;
                let migrate = MigratePhase::from_args(&wait, run.migrate, false)?;
                let init = init_plan(&run.init, log_format, ansi)?;
                Command::Run { wait, migrate, init, argv: run.command }
            }
            cli::Command::Migrate(m) => {
                if let Some(cli::MigrateAction::New(new)) = m.action {
                    return Ok(Config {
                        command: Command::NewMigration {
                            dir: new.migrations,
                            name: new.name,
                            reversible: new.reversible,
                        },
                    });
                }
                let (wait, args, action) = match m.action {
                    None => (m.wait, m.migrate, Action::Apply { dry_run: m.dry_run }),
                    Some(cli::MigrateAction::Stamp(s)) => {
                        let to = match s.version.as_str() {
                            "latest" => None,
                            v => Some(v.to_owned()),
                        };
                        (s.wait, s.migrate, Action::Stamp(to))
                    }
                    Some(cli::MigrateAction::Revert(r)) => {
                        if r.steps == Some(0) {
                            return Err(ConfigError::Rule(
                                "--steps 0 reverts nothing: give 1 or more, or --to a revision",
                            )
                            .into());
                        }
                        let action = Action::Revert { to: r.to, steps: r.steps.unwrap_or(1) };
                        (r.wait, r.migrate, action)
                    }
                    Some(cli::MigrateAction::Reset(r)) => {
                        if !r.confirm_destroy_all_data {
                            return Err(ConfigError::Rule("reset drops every table and row in the database, then re-applies every migration: \
                                 pass --confirm-destroy-all-data to do it (and --backup to keep a copy)").into());
                        }
                        (r.wait, r.migrate, Action::Reset)
                    }
                    Some(cli::MigrateAction::New(_)) => unreachable!("handled above"),
                };
                let wait = WaitConfig::from_args(wait)?;
                let migrate = MigratePhase::from_args(&wait, args, true)?
                    .expect("required=true yields a phase or an error");
                check_action(&migrate.config.source, &action)?;
                Command::Migrate { wait, migrate, action }
            }
            // Handled in main before any configuration is read.
            cli::Command::Completions { .. } | cli::Command::Man => {
                return Err(Error::Internal("completions and man need no configuration".into()));
            }
            cli::Command::Status(st) => {
                let wait = WaitConfig::from_args(st.wait)?;
                let phase = MigratePhase::from_args(&wait, st.migrate, true)?
                    .expect("required=true yields a phase or an error");
                if matches!(phase.config.source, Source::Command { .. }) {
                    return Err(ConfigError::Rule("status reads SQL migrations (--migrations DIR) or an Alembic project (--alembic-config); \
                         with --migrate-command ask your tool").into());
                }
                Command::Status { wait, phase, json: st.format == cli::StatusFormat::Json, check: st.check }
            }
        };
        Ok(Config { command })
    }
}

impl WaitConfig {
    fn from_args(args: cli::WaitArgs) -> Result<Self, Error> {
        let mut targets = Vec::new();
        let mut database = None;
        // As the official postgres image treats POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE.
        // (--database-url-env is meant to be used beside DATABASE_URL: it names which one.)
        let url_given = args.database_url.as_deref().is_some_and(|u| !u.trim().is_empty());
        if args.database_url_file.is_some() && (url_given || args.database_url_env.is_some()) {
            return Err(ConfigError::Rule(
                "DATABASE_URL_FILE / --database-url-file is set beside DATABASE_URL / --database-url or \
                 --database-url-env: they are exclusive, keep one",
            )
            .into());
        }
        let (source, url) = match (args.database_url_env.as_deref(), &args.database_url_file) {
            (None, Some(path)) => {
                let url = read_secret_file("--database-url-file / DATABASE_URL_FILE", path)?;
                ("--database-url-file / DATABASE_URL_FILE".to_owned(), Some(url))
            }
            (Some(name), _) => {
                let url = std::env::var(name)
                    .map_err(|_| ConfigError::UnsetUrlVariable { name: name.to_owned() })?;
                (name.to_owned(), Some(url))
            }
            (None, None) => ("--database-url / DATABASE_URL".to_owned(), args.database_url),
        };
        let database_from_named_env = args.database_url_env.is_some();
        if let Some(url) = url.as_deref().filter(|u| !u.trim().is_empty()) {
            let target = target::parse_database_url(url)
                .map_err(|e| ConfigError::Target { from: source.clone(), source: e })?;
            database = Some(target.clone());
            targets.push(target);
        }
        // The flag is taken whole (a password may hold a comma); only the variable, one string
        // for many targets, is split.
        let (wait_for, from) = if args.wait_for.is_empty() {
            let var = match std::env::var("PREFLIGHT_WAIT_FOR") {
                Ok(var) => var,
                Err(std::env::VarError::NotPresent) => String::new(),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(ConfigError::Rule("PREFLIGHT_WAIT_FOR is not UTF-8: fix the variable").into());
                }
            };
            (var.split(',').map(str::to_owned).collect(), "PREFLIGHT_WAIT_FOR")
        } else {
            (args.wait_for, "--wait-for")
        };
        for raw in wait_for.iter().filter(|r| !r.trim().is_empty()) {
            targets.push(
                target::parse_wait_for(raw)
                    .map_err(|e| ConfigError::Target { from: from.to_owned(), source: e })?,
            );
        }
        if let Some(path) = &args.wait_for_file {
            let what = "--wait-for-file / PREFLIGHT_WAIT_FOR_FILE";
            let text = read_secret_file(what, path)?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let from = format!("{what} {} line {}", path.display(), n + 1);
                targets
                    .push(target::parse_wait_for(line).map_err(|e| ConfigError::Target { from, source: e })?);
            }
        }

        let timeout = duration("--timeout", &args.timeout)?;
        let attempt_timeout = duration("--attempt-timeout", &args.attempt_timeout)?;
        let base = duration("--backoff-base", &args.backoff_base)?;
        let cap = duration("--backoff-max", &args.backoff_max)?;
        let stagger = duration("--connect-stagger", &args.connect_stagger)?;
        if attempt_timeout.is_zero() {
            return Err(ConfigError::Rule(
                "--attempt-timeout must be more than 0: give each attempt time, e.g. 5s",
            )
            .into());
        }
        if base.is_zero() {
            return Err(ConfigError::Rule("--backoff-base must be more than 0, e.g. 50ms").into());
        }
        if cap < base {
            return Err(
                ConfigError::BackoffBelowBase { max: args.backoff_max, base: args.backoff_base }.into()
            );
        }
        if stagger.is_zero() {
            return Err(ConfigError::Rule("--connect-stagger must be more than 0, e.g. 250ms").into());
        }
        let policy = WaitPolicy {
            backoff: Backoff { base, cap },
            attempt_timeout,
            stagger,
            timeout: (!timeout.is_zero()).then_some(timeout),
            retry_login_errors: args.retry_login_errors,
            progress_every: Duration::from_secs(5),
        };
        Ok(WaitConfig { targets, policy, database, database_from_named_env })
    }
}

impl MigratePhase {
    /// `None` when there is nothing to migrate (no directory, no command) and `required` is
    /// false: `run` is then a plain wait-and-start.
    fn from_args(wait: &WaitConfig, args: cli::MigrateArgs, required: bool) -> Result<Option<Self>, Error> {
        // Checked whether or not there is anything to migrate: a bad value is a bad value.
        let lock_timeout = duration("--lock-timeout", &args.lock_timeout)?;
        let ddl_lock_timeout = duration("--ddl-lock-timeout", &args.ddl_lock_timeout)?;
        let mode = match args.schema {
            cli::SchemaArg::Apply => SchemaMode::Apply,
            cli::SchemaArg::Wait => SchemaMode::Wait,
            cli::SchemaArg::Skip => SchemaMode::Skip,
        };
        let Some(source) = source(&args, mode)? else {
            if mode == SchemaMode::Wait {
                return Err(ConfigError::Rule("--schema wait needs to know what \"current\" means: give the migrations (--migrations DIR, \
                     --alembic-config FILE) or a --schema-check-command").into());
            }
            if required {
                let pyproject =
                    std::fs::read_to_string("pyproject.toml").is_ok_and(|t| t.contains("[tool.alembic]"));
                return Err(ConfigError::NoMigrations { pyproject }.into());
            }
            return Ok(None);
        };
        let Some(database) = wait.database.clone() else {
            if mode == SchemaMode::Skip {
                return Ok(None);
            }
            return Err(ConfigError::Rule("migrations need the database: set DATABASE_URL or --database-url (the lock and the version table live there)").into());
        };
        // PostgreSQL and SQLite run a migration in a transaction that its own COMMIT would
        // cut short. MySQL commits DDL implicitly anyway, and projects there manage their own
        // transactions around DML: left alone.
        let dialect = match database.kind {
            TargetKind::Postgres { .. } => Some(crate::migrate::SqlDialect::Postgres),
            TargetKind::Sqlite { .. } => Some(crate::migrate::SqlDialect::Sqlite),
            _ => None,
        };
        if let (Source::Dir(folder), Some(dialect)) = (&source, dialect) {
            folder
                .check_statements(dialect)
                .map_err(|why| ConfigError::Statements { dir: folder.dir.clone(), why })?;
        }
        if args.single_transaction && matches!(database.kind, TargetKind::MySql { .. }) {
            return Err(ConfigError::Rule("--single-transaction cannot work on MySQL/MariaDB, which commits DDL implicitly: drop the flag").into());
        }
        let backup = match (&args.backup_command, args.backup, &database.kind) {
            (Some(cmd), _, _) => Some(Backup::Command(split_command("--backup-command", cmd)?)),
            (None, true, TargetKind::Sqlite { path: Some(path), .. }) => Some(Backup::Sqlite {
                dir: args.backup_dir.clone().unwrap_or_else(|| match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                }),
                stem: path
                    .file_stem()
                    .map_or_else(|| "database".into(), |s| s.to_string_lossy().into_owned()),
                keep: args.backup_keep.max(1),
            }),
            (None, true, _) => {
                return Err(ConfigError::Rule(
                    "--backup makes SQLite copies only: for this database give --backup-command, \
                     e.g. 'pg_dump -Fc -f /backups/app-${PREFLIGHT_BACKUP_STAMP}.dump $DATABASE_URL'",
                )
                .into());
            }
            (None, false, _) => None,
        };
        let config = MigrateConfig {
            source,
            lock_timeout,
            ddl_lock_timeout: Some(ddl_lock_timeout).filter(|d| !d.is_zero()),
            ddl_retries: args.ddl_retries,
            ignore_missing: args.ignore_missing,
            single_transaction: args.single_transaction,
            backup,
            database_url: if wait.database_from_named_env { PassUrl::Always } else { PassUrl::IfUnset },
        };
        Ok(Some(MigratePhase { database: Box::new(database), config, mode }))
    }
}

/// Chooses the migration source. `None` when there is none: no flag, no ./alembic.ini, no
/// ./migrations.
fn source(args: &cli::MigrateArgs, mode: SchemaMode) -> Result<Option<Source>, Error> {
    let check = args
        .schema_check_command
        .as_deref()
        .map(|c| split_command("--schema-check-command", c))
        .transpose()?;
    let command =
        args.migrate_command.as_deref().map(|c| split_command("--migrate-command", c)).transpose()?;
    let alembic = match (&args.alembic_config, &args.migrations, &command) {
        (Some(ini), _, _) => Some(ini.clone()),
        (None, None, None) if check.is_none() && Path::new("alembic.ini").is_file() => {
            Some(PathBuf::from("alembic.ini"))
        }
        _ => None,
    };
    if let Some(ini) = alembic {
        if check.is_some() {
            return Err(ConfigError::Rule("--schema-check-command is not needed with an Alembic project: preflight reads alembic_version \
                 itself; drop it").into());
        }
        let project = Project::load(&ini, &args.alembic_version_table)?;
        return Ok(Some(Source::Alembic { project: std::sync::Arc::new(project), upgrade: command }));
    }
    if let Some(argv) = command {
        if mode == SchemaMode::Wait && check.is_none() {
            return Err(ConfigError::Rule("--schema wait with --migrate-command needs --schema-check-command (exit 0 when current), or use \
                 --alembic-config for an Alembic project").into());
        }
        return Ok(Some(Source::Command { argv, check }));
    }
    if let Some(check) = check {
        if mode != SchemaMode::Wait {
            return Err(ConfigError::Rule("--schema-check-command alone is for readers (--schema wait); a writer needs --migrate-command too").into());
        }
        return Ok(Some(Source::Command { argv: Vec::new(), check: Some(check) }));
    }
    let (dir, flag) = match &args.migrations {
        Some(dir) => (dir.clone(), "--migrations"),
        None if Path::new("migrations").is_dir() => (PathBuf::from("migrations"), "./migrations"),
        None => return Ok(None),
    };
    if !dir.is_dir() {
        return Err(ConfigError::NoFolder { flag, dir }.into());
    }
    if looks_like_alembic(&dir) {
        return Err(ConfigError::AlembicFolder { flag, dir }.into());
    }
    let folder = match crate::migrate::SqlFolder::read(&dir) {
        Ok(folder) => folder,
        Err(why) => return Err(ConfigError::Folder { flag, dir, why }.into()),
    };
    Ok(Some(Source::Dir(std::sync::Arc::new(folder))))
}

/// An Alembic script folder: `env.py`, or `.py` files (or `versions/`), and no `.sql` file.
fn looks_like_alembic(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let names: Vec<String> =
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let sql = names.iter().any(|n| n.ends_with(".sql"));
    let python =
        names.iter().any(|n| n.ends_with(".py") || n == "script.py.mako") || dir.join("versions").is_dir();
    !sql && python
}

/// Stamp, revert, reset and dry runs, checked against the source before anything connects.
fn check_action(source: &Source, action: &Action) -> Result<(), Error> {
    match (source, action) {
        (Source::Command { .. }, Action::Apply { dry_run: false }) => Ok(()),
        (Source::Command { .. }, _) => Err(ConfigError::Rule("stamp, revert, reset and --dry-run work on SQL migrations (--migrations DIR) and Alembic projects \
             (--alembic-config); with --migrate-command use your tool's own").into()),
        (Source::Dir(folder), Action::Stamp(Some(v))) => {
            let version = crate::migrate::sql_version("stamp", v)?;
            if folder.has(version) {
                Ok(())
            } else {
                Err(ConfigError::UnknownVersion { what: "stamp", version, dir: folder.dir.clone(), or_zero: false }.into())
            }
        }
        (Source::Dir(folder), Action::Revert { to: Some(v), .. }) => {
            let version = crate::migrate::sql_version("--to", v)?;
            if version == 0 || folder.has(version) {
                Ok(())
            } else {
                Err(ConfigError::UnknownVersion { what: "--to", version, dir: folder.dir.clone(), or_zero: true }.into())
            }
        }
        (Source::Alembic { .. }, Action::Revert { to: Some(spec), .. }) if spec == "heads" || spec == "head" => {
            Err(ConfigError::RevertToHeads { spec: spec.clone() }.into())
        }
        (Source::Alembic { project, .. }, Action::Stamp(Some(spec)) | Action::Revert { to: Some(spec), .. }) => {
            project.graph.resolve(spec).map(drop).map_err(|why| ConfigError::Revision { ini: project.ini.clone(), why }.into())
        }
        _ => Ok(()),
    }
}

/// Validates the init flags into the supervisor's settings, and decides whether to supervise.
fn init_plan(args: &cli::InitArgs, log_format: LogFormat, ansi: bool) -> Result<InitPlan, Error> {
    let stop_timeout = args.stop_timeout.as_deref().map(|d| duration("--stop-timeout", d)).transpose()?;
    let stop_delay = args.stop_delay.as_deref().map(|d| duration("--stop-delay", d)).transpose()?;
    let leftover_grace = duration("--leftover-grace", &args.leftover_grace)?;
    let mut rewrites = Vec::new();
    for spec in args.rewrite_signal.iter().filter(|s| !s.trim().is_empty()) {
        let bad = || ConfigError::RewriteSignal { spec: spec.clone() };
        let (from, to) = spec.split_once(':').ok_or_else(bad)?;
        let to = match to.trim() {
            "none" | "NONE" | "0" => None,
            to => Some(parse_signal(to).ok_or_else(bad)?),
        };
        let from = parse_signal(from).filter(|&s| s != nix::libc::SIGCHLD).ok_or_else(bad)?;
        rewrites.push((from, to));
    }
    let mut remap_exit = Vec::new();
    for spec in args.remap_exit.iter().filter(|s| !s.trim().is_empty()) {
        let code = |raw: &str| raw.trim().parse::<u8>().ok();
        let pair = spec.split_once(':').and_then(|(from, to)| Some((code(from)?, code(to)?)));
        let (from, to) = pair.ok_or_else(|| ConfigError::RemapExit { spec: spec.clone() })?;
        if let Some((_, earlier)) = remap_exit.iter().find(|(f, _)| *f == from) {
            return Err(ConfigError::RemapExitTwice {
                from,
                first: format!("{from}:{earlier}"),
                second: spec.trim().to_owned(),
            }
            .into());
        }
        remap_exit.push((from, to));
    }
    let parent_death = match args.parent_death_signal.as_deref() {
        None => None,
        Some(raw) => {
            let signal = parse_signal(raw)
                .filter(|&s| s != nix::libc::SIGCHLD)
                .ok_or_else(|| ConfigError::ParentDeathSignal { raw: raw.to_owned() })?;
            Some(ParentDeath { signal, parent: nix::unistd::getppid().as_raw() })
        }
    };
    let supervise = match args.init {
        cli::InitMode::Always => true,
        cli::InitMode::Never if !remap_exit.is_empty() => {
            return Err(ConfigError::Rule(
                "--remap-exit needs preflight to supervise the app, and --init never execs it: drop one of them",
            )
            .into());
        }
        cli::InitMode::Never => false,
        // Someone must outlive the app to remap its status.
        cli::InitMode::Auto => std::process::id() == 1 || !remap_exit.is_empty(),
    };
    let config = SupervisorArgs {
        stop_timeout,
        stop_delay,
        leftover_grace,
        rewrites,
        child_only: args.signal_child_only,
        user: args.user.as_deref().map(User::parse).transpose()?,
        // Not PID 1 and supervising: orphans must still come back to us.
        subreaper: supervise && std::process::id() != 1,
        parent_death,
        remap_exit,
        // The supervise-only process logs as this one does, at the level this filter gives
        // the supervisor's events (it has no EnvFilter of its own).
        log_format,
        log_level: crate::supervise::log::level_for_supervisor().to_owned(),
        ansi,
    };
    Ok(InitPlan { supervise, config })
}

/// `SIGTERM`, `TERM`, `term` or `15`. SIGKILL and SIGSTOP cannot be caught, so not rewritten.
fn parse_signal(raw: &str) -> Option<i32> {
    let raw = raw.trim();
    let n = match raw.parse::<i32>() {
        Ok(n) => n,
        Err(_) => {
            let upper = raw.to_ascii_uppercase();
            let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
            name.parse::<nix::sys::signal::Signal>().ok()? as i32
        }
    };
    ((1..=64).contains(&n) && n != nix::libc::SIGKILL && n != nix::libc::SIGSTOP).then_some(n)
}

/// Splits a command line into argv the way a POSIX shell would quote it, without running one:
/// scratch images have no shell.
fn split_command(flag: &'static str, raw: &str) -> Result<Vec<String>, Error> {
    match shlex::split(raw) {
        // `NAME=value cmd` is a shell's syntax; without a shell it would be run as a program
        // named `NAME=value`.
        Some(argv) if argv[0].split('/').next().is_some_and(|w| w.contains('=')) => {
            Err(ConfigError::Command { flag, problem: CommandProblem::Assignment }.into())
        }
        Some(argv) if !argv.is_empty() => Ok(argv),
        Some(_) => Err(ConfigError::Command { flag, problem: CommandProblem::Empty }.into()),
        // Not quoted back: the command line may hold a password.
        None => Err(ConfigError::Command { flag, problem: CommandProblem::UnbalancedQuote }.into()),
    }
}

/// The contents of a file that holds a secret (a Docker or Kubernetes secret), without its
/// trailing newline. Its URLs' passwords are registered for redaction before anything can print
/// them; errors name the path, never the contents.
fn read_secret_file(what: &'static str, path: &Path) -> Result<String, Error> {
    let bad = |why: String| ConfigError::SecretFile { what, path: path.to_path_buf(), why };
    let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("it is not UTF-8 text".into()))?;
    crate::redact::register_from_raw(text.lines());
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if text.trim().is_empty() {
        return Err(bad("it is empty".into()).into());
    }
    Ok(text.to_owned())
}

/// Human durations (`250ms`, `5s`, `2m`, `1h30m`); a bare `0` is accepted for "none".
/// Durations are capped at a year: longer ones overflow clock arithmetic and the supervisor's
/// copy of the flag, and a deadline of centuries is a typo for something else.
pub fn duration(flag: &str, raw: &str) -> Result<Duration, Error> {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    let raw = raw.trim();
    if raw == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(raw).map_err(|source| ConfigError::NotADuration {
        flag: flag.to_owned(),
        raw: raw.to_owned(),
        source,
    })?;
    if d > YEAR {
        return Err(ConfigError::TooLong { flag: flag.to_owned(), raw: raw.to_owned() }.into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn wait_config(args: &[&str]) -> Result<WaitConfig, Error> {
        let mut argv = vec!["preflight", "wait"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            cli::Command::Wait(a) => WaitConfig::from_args(*a),
            _ => unreachable!(),
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
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("SIGKILL"), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
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

    fn migrate_args(args: &[&str]) -> cli::MigrateArgs {
        let mut argv = vec!["preflight", "migrate"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            cli::Command::Migrate(m) => m.migrate,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_python_script_folder_is_not_read_as_sql() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("migrations");
        std::fs::create_dir_all(folder.join("versions")).unwrap();
        std::fs::write(folder.join("env.py"), "").unwrap();
        assert!(looks_like_alembic(&folder));
        let args = migrate_args(&["--migrations", folder.to_str().unwrap()]);
        let err = source(&args, SchemaMode::Apply).unwrap_err().to_string();
        assert!(err.contains("--alembic-config"), "{err}");
        // A folder with SQL in it is SQL, whatever else it holds.
        std::fs::write(folder.join("1_a.sql"), "").unwrap();
        assert!(!looks_like_alembic(&folder));
        assert!(matches!(source(&args, SchemaMode::Apply), Ok(Some(Source::Dir(_)))));
    }

    #[test]
    fn a_check_command_alone_serves_readers_only() {
        let args = migrate_args(&["--schema-check-command", "true"]);
        assert!(matches!(
            source(&args, SchemaMode::Wait),
            Ok(Some(Source::Command { argv, check: Some(_) })) if argv.is_empty()
        ));
        let err = source(&args, SchemaMode::Apply).unwrap_err().to_string();
        assert!(err.contains("--migrate-command"), "{err}");
        let cmd = migrate_args(&["--migrate-command", "tool up"]);
        assert!(source(&cmd, SchemaMode::Wait).unwrap_err().to_string().contains("--schema-check-command"));
    }

    #[test]
    fn a_bad_version_table_name_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ini = dir.path().join("alembic.ini");
        std::fs::write(&ini, "[alembic]\nscript_location = %(here)s\n").unwrap();
        let ok = migrate_args(&["--alembic-config", ini.to_str().unwrap()]);
        assert!(matches!(source(&ok, SchemaMode::Apply), Ok(Some(Source::Alembic { .. }))));
        let bad =
            migrate_args(&["--alembic-config", ini.to_str().unwrap(), "--alembic-version-table", "x; DROP"]);
        assert!(source(&bad, SchemaMode::Apply).unwrap_err().to_string().contains("--alembic-version-table"));
    }

    /// What ships is what the README's retry schedule describes: 50 ms doubling to 400 ms, a
    /// 5 s attempt timeout, a 250 ms stagger, a 60 s deadline.
    #[test]
    fn the_shipped_schedule_is_the_documented_one() {
        let w = wait_config(&[]).unwrap();
        let ms = |d: Duration| d.as_millis();
        let ceilings: Vec<u128> = (1..=5).map(|n| ms(w.policy.backoff.ceiling(n))).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 400]);
        assert_eq!(ms(w.policy.attempt_timeout), 5000);
        assert_eq!(ms(w.policy.stagger), 250);
        assert_eq!(w.policy.timeout, Some(Duration::from_secs(60)));
        let readme = include_str!("../README.md");
        for documented in ["| `PREFLIGHT_BACKOFF_BASE` | `50ms` |", "| `PREFLIGHT_BACKOFF_MAX` | `400ms` |"] {
            assert!(readme.contains(documented), "README no longer says {documented}");
        }
    }

    #[test]
    fn a_bad_wait_for_names_the_flag() {
        let err = wait_config(&["--wait-for", "tcp://db"]).unwrap_err().to_string();
        assert!(err.starts_with("--wait-for"), "{err}");
    }
}
