//! The test harness: real PostgreSQL and MariaDB servers in temp dirs on free loopback ports,
//! network namespaces with their own hosts files, and a runner for the preflight binary that
//! waits for log events rather than sleeping.
//!
//! Servers are initialised once per test binary into a template data directory and copied for
//! each test, so a test pays for a server start (~0.2 s) rather than an initdb (~2 s).

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const USER: &str = "preflight";
/// Deliberately distinctive, so a test can grep every output for it.
pub const PASSWORD: &str = "pw-S3cr3t-4Real";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_preflight")
}

/// A port for a server to listen on. Free when returned, not reserved: a server binds it
/// soon after. For a port that must stay unanswered, use [`DeadPort`].
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback port nothing listens on, reserved for as long as this lives: the socket is bound
/// but never listens, so a connection to it is refused, and no other test or server can take
/// the port meanwhile (no SO_REUSEADDR, so not even a listener that sets it).
pub struct DeadPort {
    socket: Option<tokio::net::TcpSocket>,
    pub port: u16,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        DeadPort { socket: Some(socket), port }
    }

    /// Gives the port up to a listener: the dependency comes up.
    pub fn listen(mut self) -> TcpListener {
        drop(self.socket.take());
        TcpListener::bind(("127.0.0.1", self.port)).unwrap()
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 20 ms until it is true or `limit` passes.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to));
}

pub fn pg_bin(name: &str) -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = fs::read_dir(root)
        .expect("PostgreSQL binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    versions.sort();
    versions.last().expect("a PostgreSQL version").join("bin").join(name)
}

fn ids(user: &str) -> (u32, u32) {
    let line = run(Command::new("id").arg("-u").arg(user));
    let uid = line.trim().parse().unwrap();
    let line = run(Command::new("id").arg("-g").arg(user));
    (uid, line.trim().parse().unwrap())
}

/// Directories to delete when the test process exits.
static AT_EXIT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A temp dir for a server template. The templates live in statics, which are never dropped,
/// so a `TempDir` would stay in /tmp after every run: this one is removed at exit instead.
fn template_dir(prefix: &str) -> PathBuf {
    extern "C" fn cleanup() {
        if let Ok(dirs) = AT_EXIT.lock() {
            for dir in dirs.iter() {
                let _ = fs::remove_dir_all(dir);
            }
        }
    }
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap().keep();
    let mut dirs = AT_EXIT.lock().unwrap();
    if dirs.is_empty() {
        // SAFETY: registers a plain function; it runs once, from exit(), after the tests.
        unsafe { nix::libc::atexit(cleanup) };
    }
    dirs.push(dir.clone());
    dir
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

static PG_TEMPLATE: OnceLock<PathBuf> = OnceLock::new();

fn pg_template() -> &'static Path {
    PG_TEMPLATE.get_or_init(|| {
        let root = template_dir("pf-pgtpl-");
        let (uid, gid) = ids("postgres");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let data = root.join("data");
        let pwfile = root.join("pw");
        fs::write(&pwfile, PASSWORD).unwrap();
        nix::unistd::chown(&root, Some(uid.into()), Some(gid.into())).unwrap();
        nix::unistd::chown(&pwfile, Some(uid.into()), Some(gid.into())).unwrap();
        run(Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "scram-sha-256", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display())));
        // initdb allows only 127.0.0.1 and ::1; tests also connect over namespace addresses.
        let mut hba = fs::OpenOptions::new().append(true).open(data.join("pg_hba.conf")).unwrap();
        writeln!(hba, "host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256").unwrap();
        data
    })
}

/// A PostgreSQL server of our own. Stopped (SIGQUIT, immediate) when dropped.
pub struct Pg {
    _root: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
    listen: String,
    netns: Option<String>,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Pg {
    /// Stops (`true`) or continues the server and every backend: a server that accepts nothing
    /// and answers nothing, as one behind a dropped network would.
    pub fn freeze(&self, stop: bool) {
        let Some(child) = &self.child else { return };
        let pid = child.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let signal = if stop { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT };
        for p in std::iter::once(pid.to_string()).chain(children.split_whitespace().map(str::to_owned)) {
            if let Ok(p) = p.parse::<i32>() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), signal);
            }
        }
    }

    /// A server that will listen on `listen` (PostgreSQL's listen_addresses syntax), in `netns`
    /// if given. Not started yet.
    pub fn new(listen: &str, netns: Option<&str>) -> Pg {
        let root = tempfile::Builder::new().prefix("pf-pg-").tempdir().unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let data = root.path().join("data");
        copy_dir(pg_template(), &data);
        Pg {
            _root: root,
            data,
            port: free_port(),
            listen: listen.to_owned(),
            netns: netns.map(str::to_owned),
            extra: Vec::new(),
            child: None,
        }
    }

    /// A started server on 127.0.0.1, and the URL to reach it as our user.
    pub fn running() -> (Pg, String) {
        let mut pg = Pg::new("127.0.0.1", None);
        pg.start();
        let url = pg.url("127.0.0.1");
        (pg, url)
    }

    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.extra.push(format!("{key}={value}"));
        self
    }

    /// Starts the postmaster without waiting for it.
    pub fn spawn(&mut self) {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "setpriv"]);
                c
            }
            None => Command::new("setpriv"),
        };
        cmd.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(pg_bin("postgres"))
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg(format!("listen_addresses={}", self.listen))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.data.display()))
            .args(["-c", "fsync=off", "-c", "logging_collector=off"]);
        for kv in &self.extra {
            cmd.arg("-c").arg(kv);
        }
        let log = fs::File::create(self.data.join("server.log")).unwrap();
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().expect("start postgres"));
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    /// Waits for the server's own "ready to accept connections" line.
    pub fn wait_ready(&self) {
        wait_until("postgres to be ready", Duration::from_secs(30), || {
            self.log().contains("ready to accept connections")
        });
    }

    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    /// Starts a standby and waits until it is in recovery (and so answers 57P03).
    pub fn start_standby(&mut self) {
        self.spawn();
        wait_until("postgres to enter standby mode", Duration::from_secs(30), || {
            self.log().contains("entering standby mode")
        });
    }

    pub fn url_for(&self, host: &str, password: &str, db: &str) -> String {
        format!("postgres://{USER}:{password}@{host}:{}/{db}", self.port)
    }

    pub fn url(&self, host: &str) -> String {
        self.url_for(host, PASSWORD, "postgres")
    }

    /// Turns a server started as a standby (see [`Pg::into_standby`]) into a primary.
    pub fn promote(&self) {
        run(Command::new("setpriv")
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(pg_bin("pg_ctl"))
            .arg("promote")
            .arg("-D")
            .arg(&self.data)
            .arg("-W"));
    }

    /// Makes the next start a standby that refuses every login with 57P03, as PostgreSQL does
    /// while it is still recovering.
    pub fn into_standby(self) -> Self {
        fs::write(self.data.join("standby.signal"), "").unwrap();
        let (uid, gid) = ids("postgres");
        nix::unistd::chown(&self.data.join("standby.signal"), Some(uid.into()), Some(gid.into())).unwrap();
        self.setting("hot_standby", "off")
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGQUIT,
            );
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MariaDB

static MARIADB_TEMPLATE: OnceLock<PathBuf> = OnceLock::new();

fn mariadbd_command(data: &Path, port: u16) -> Command {
    let mut cmd = Command::new("mariadbd");
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", data.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", data.join("mysqld.pid").display()))
        .arg(format!("--log-error={}", data.join("error.log").display()))
        .arg(format!("--port={port}"))
        .args([
            "--bind-address=127.0.0.1",
            "--user=root",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
            "--skip-name-resolve",
        ]);
    cmd
}

fn mariadb_template() -> &'static Path {
    MARIADB_TEMPLATE.get_or_init(|| {
        let root = template_dir("pf-mytpl-");
        let data = root.join("data");
        run(Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"]));
        // Start once to create our user, then stop cleanly so the copy is consistent.
        let port = free_port();
        let mut server =
            mariadbd_command(&data, port).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let log = data.join("error.log");
        wait_until("mariadb template to be ready", Duration::from_secs(60), || {
            fs::read_to_string(&log).unwrap_or_default().contains("ready for connections")
        });
        run(Command::new("mariadb")
            .arg(format!("--socket={}", data.join("mysqld.sock").display()))
            .args(["-uroot", "-e"])
            .arg(format!(
                "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
                     GRANT ALL ON *.* TO '{USER}'@'%'; CREATE DATABASE app;"
            )));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        server.wait().unwrap();
        fs::remove_file(&log).ok();
        data
    })
}

/// A MariaDB server of our own. Stopped (SIGKILL: the data is throwaway) when dropped.
pub struct MariaDb {
    _root: tempfile::TempDir,
    pub data: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl MariaDb {
    pub fn new() -> MariaDb {
        let root = tempfile::Builder::new().prefix("pf-my-").tempdir().unwrap();
        let data = root.path().join("data");
        copy_dir(mariadb_template(), &data);
        MariaDb { _root: root, data, port: free_port(), child: None }
    }

    pub fn spawn(&mut self) {
        let child =
            mariadbd_command(&self.data, self.port).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        self.child = Some(child.expect("start mariadbd"));
    }

    pub fn wait_ready(&self) {
        let log = self.data.join("error.log");
        wait_until("mariadb to be ready", Duration::from_secs(60), || {
            fs::read_to_string(&log).unwrap_or_default().contains("ready for connections")
        });
    }

    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    pub fn url_for(&self, password: &str, db: &str) -> String {
        format!("mysql://{USER}:{password}@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// A network namespace with loopback up and its own `/etc/hosts` and `/etc/resolv.conf` (which
/// `ip netns exec` bind-mounts from `/etc/netns/NAME/`). The resolver points at a loopback port
/// where nothing listens, so a name missing from the hosts file fails fast and no query leaves
/// the namespace.
pub struct Netns {
    pub name: String,
}

static NETNS_SEQ: Mutex<u32> = Mutex::new(0);

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let seq = {
            let mut n = NETNS_SEQ.lock().unwrap();
            *n += 1;
            *n
        };
        let name = format!("pf-{tag}-{}-{seq}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        fs::create_dir_all(ns.etc()).unwrap();
        fs::write(ns.etc().join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            .unwrap();
        ns.set_hosts("");
        ns
    }

    fn etc(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS…`.
    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// Rewrites the namespace's hosts file in place (same inode, so a bind mount sees it).
    pub fn set_hosts(&self, entries: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.etc().join("hosts"))
            .unwrap();
        write!(f, "127.0.0.1 localhost\n::1 localhost\n{entries}").unwrap();
    }

    /// An address of ours inside the namespace, on loopback (no duplicate-address detection).
    pub fn add_address(&self, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", "lo", "nodad"]);
    }

    /// Makes `addr` a dead host: packets to it leave on a veth whose peer drops them (they
    /// carry a MAC nobody has), so a connect neither succeeds nor is refused, it just hangs.
    pub fn add_dead_host(&self, addr: &str) {
        let exists = Command::new("ip").args(["-n", &self.name, "link", "show", "dead0"]).output().unwrap();
        if !exists.status.success() {
            self.ip(&["link", "add", "dead0", "type", "veth", "peer", "name", "dead1"]);
            self.ip(&["link", "set", "dead0", "up"]);
            self.ip(&["link", "set", "dead1", "up"]);
        }
        self.ip(&["route", "add", addr, "dev", "dead0"]);
        self.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            "02:00:00:00:de:ad",
            "dev",
            "dead0",
            "nud",
            "permanent",
        ]);
    }

    /// A command to run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = fs::remove_dir_all(self.etc());
    }
}

// ---------------------------------------------------------------------------------------------
// Running preflight

/// A running preflight whose stderr is read line by line, so tests can wait for log events.
pub struct Preflight {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    pub started: Instant,
    desc: String,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stderr: String,
    pub stdout: String,
    pub elapsed: Duration,
    pub desc: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts the exit code, printing everything on failure.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "{self}");
        self
    }

    pub fn expect_no_password(&self) -> &Self {
        assert!(
            !self.stderr.contains(PASSWORD) && !self.stdout.contains(PASSWORD),
            "password leaked: {self}"
        );
        self
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.desc, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

impl Preflight {
    /// Starts `preflight ARGS…`, or `ip netns exec NS preflight ARGS…`.
    pub fn spawn(netns: Option<&Netns>, args: &[&str]) -> Preflight {
        Self::spawn_with(netns, args, &[])
    }

    pub fn spawn_with(netns: Option<&Netns>, args: &[&str], env: &[(&str, &str)]) -> Preflight {
        let cmd = match netns {
            Some(ns) => ns.command(bin()),
            None => Command::new(bin()),
        };
        Self::spawn_cmd(cmd, args, env)
    }

    /// Starts `preflight ARGS…` in the working directory `dir`.
    pub fn spawn_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Preflight {
        let mut cmd = Command::new(bin());
        cmd.current_dir(dir);
        Self::spawn_cmd(cmd, args, env)
    }

    /// Starts preflight as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`).
    pub fn spawn_pid1(args: &[&str], env: &[(&str, &str)]) -> Preflight {
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", bin()]);
        Self::spawn_cmd(cmd, args, env)
    }

    /// The pid, in our namespace, of the process `unshare` forked: preflight as PID 1.
    pub fn inner_pid(&self) -> i32 {
        let path = format!("/proc/{0}/task/{0}/children", self.child.id());
        let mut found = 0;
        wait_until("unshare to fork preflight", Duration::from_secs(10), || {
            found = fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
                .unwrap_or(0);
            found > 0
        });
        found
    }

    /// Starts `cmd ARGS…` (a command that runs preflight, set up by the caller).
    pub fn spawn_cmd(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Preflight {
        cmd.args(args).env_remove("DATABASE_URL").env("PREFLIGHT_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let desc = format!("{cmd:?}");
        let mut child = cmd.spawn().expect("spawn preflight");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Preflight { child, lines: rx, seen: Vec::new(), started: Instant::now(), desc }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for a stderr line containing every one of `needles`; returns it.
    pub fn wait_for_line(&mut self, needles: &[&str], limit: Duration) -> String {
        if let Some(line) = self.seen.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {needles:?} within {limit:?}; seen:\n{}", self.seen.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("preflight ended without a line with {needles:?}; seen:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    /// Waits (bounded) for the process to exit and collects its output.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = Instant::now() + limit;
        let status = loop {
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {limit:?}; stderr so far:\n{}",
                    self.desc,
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut stdout);
        }
        Finished { status, stderr: self.seen.join("\n"), stdout, elapsed, desc: self.desc.clone() }
    }
}

impl Drop for Preflight {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs preflight to completion.
pub fn preflight(netns: Option<&Netns>, args: &[&str], limit: Duration) -> Finished {
    Preflight::spawn(netns, args).finish(limit)
}

// ---------------------------------------------------------------------------------------------
// Talking to the databases directly, to check what preflight did

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// Runs `sql` (one or more statements) on the database at `url`.
pub fn sql_exec(url: &str, sql: &str) {
    use sqlx::Connection;
    block_on(async {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        } else if url.starts_with("mysql") {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
    })
}

/// The first column of the first row of `sql`, as an integer.
pub fn sql_i64(url: &str, sql: &str) -> i64 {
    use sqlx::Connection;
    block_on(async {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut c).await.unwrap()
        } else if url.starts_with("mysql") {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut c).await.unwrap()
        }
    })
}

/// The first column of every row of `sql`, as text.
pub fn sql_strings(url: &str, sql: &str) -> Vec<String> {
    use sqlx::Connection;
    block_on(async {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if url.starts_with("postgres") {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, String>(sql).fetch_all(&mut c).await.unwrap()
        } else if url.starts_with("mysql") {
            let mut c = sqlx::MySqlConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, String>(sql).fetch_all(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar::<_, String>(sql).fetch_all(&mut c).await.unwrap()
        }
    })
}

/// A directory of migration files.
pub struct Migrations {
    pub dir: tempfile::TempDir,
}

impl Migrations {
    pub fn new(files: &[(&str, &str)]) -> Migrations {
        let m = Migrations { dir: tempfile::Builder::new().prefix("pf-mig-").tempdir().unwrap() };
        for (name, sql) in files {
            m.add(name, sql);
        }
        m
    }

    pub fn add(&self, name: &str, sql: &str) {
        fs::write(self.dir.path().join(name), sql).unwrap();
    }

    pub fn remove(&self, name: &str) {
        fs::remove_file(self.dir.path().join(name)).unwrap();
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }
}

/// Starts `n` preflight processes at once and waits for them all.
/// Starts `n` preflight processes at once and waits for them all, `limit` for the whole crowd.
pub fn crowd(n: usize, args: &[&str], limit: Duration) -> Vec<Finished> {
    let deadline = Instant::now() + limit;
    let procs: Vec<Preflight> = (0..n).map(|_| Preflight::spawn(None, args)).collect();
    procs.into_iter().map(|p| p.finish(deadline.saturating_duration_since(Instant::now()))).collect()
}

/// Connects once and runs `SELECT 1`; the error's text if that fails.
pub fn sql_try_connect(url: &str) -> Result<(), String> {
    use sqlx::Connection;
    block_on(async {
        let mut c = sqlx::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
        sqlx::query("SELECT 1").execute(&mut c).await.map_err(|e| e.to_string())?;
        let _ = c.close().await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A redis-server (Debian's) on a free loopback port, with a password, its data in a temp dir.
/// Stopped when dropped.
pub struct Redis {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub port: u16,
    log: PathBuf,
}

impl Redis {
    pub const PASSWORD: &'static str = "r3dis-Pw,x";

    /// Starts the server without waiting for it.
    pub fn spawn() -> Redis {
        Redis::spawn_on(free_port())
    }

    pub fn spawn_on(port: u16) -> Redis {
        Redis::spawn_with(&["--port", &port.to_string()], port)
    }

    /// TLS only, on a free port, with this certificate and key (clients are not asked for one).
    pub fn running_tls(cert: &Path, key: &Path) -> Redis {
        let port = free_port();
        let r = Redis::spawn_with(
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ],
            port,
        );
        r.wait_ready();
        r
    }

    fn spawn_with(listen: &[&str], port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", Self::PASSWORD, "--databases", "4"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/install-test-deps.sh installs it)");
        Redis { child: Some(child), _dir: dir, port, log }
    }

    pub fn running() -> Redis {
        let r = Redis::spawn();
        r.wait_ready();
        r
    }

    pub fn wait_ready(&self) {
        wait_until("redis to accept connections", Duration::from_secs(20), || {
            fs::read_to_string(&self.log).unwrap_or_default().contains("Ready to accept connections")
        });
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/DB`, the password percent-encoded.
    pub fn url(&self, db: u32) -> String {
        format!("redis://:{}@127.0.0.1:{}/{db}", Self::PASSWORD.replace(',', "%2C"), self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
