"""Shared pieces of the benchmark scripts: a PostgreSQL server of their own, and statistics."""

import datetime as dt
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "preflight")
PASSWORD = "bench-pw"


def build_release():
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=ROOT, check=True)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name):
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1] + "/" + name


def as_postgres(args):
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"] + args


class Postgres:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="pf-bench-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        pw = os.path.join(self.root, "pw")
        with open(pw, "w") as f:
            f.write(PASSWORD)
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(pw, "postgres", "postgres")
        subprocess.run(as_postgres([pg_bin("initdb"), "-D", self.data, "-U", "bench", "-A", "scram-sha-256",
                                    "--no-sync", "--no-instructions", f"--pwfile={pw}"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(self.root, "server.log")

    def url(self, password=PASSWORD, db="postgres"):
        return f"postgres://bench:{password}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name):
        subprocess.run(["psql", "-q", self.url(), "-c", f"CREATE DATABASE {name}"], check=True)
        return self.url(db=name)

    def start(self):
        open(self.log, "w").close()
        shutil.chown(self.log, "postgres", "postgres")
        self.proc = subprocess.Popen(
            as_postgres([pg_bin("postgres"), "-D", self.data, "-p", str(self.port),
                         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data}",
                         "-c", "log_line_prefix=%m ", "-c", "log_timezone=UTC", "-c", "fsync=off"]),
            stdout=subprocess.DEVNULL, stderr=open(self.log, "a"))

    def ready_time(self, limit=30):
        end = time.time() + limit
        while time.time() < end:
            with open(self.log) as f:
                for line in f:
                    if "ready to accept connections" in line:
                        stamp = line.split(" UTC ")[0]
                        return dt.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(
                            tzinfo=dt.timezone.utc).timestamp()
            time.sleep(0.01)
        raise RuntimeError("postgres did not become ready:\n" + open(self.log).read())

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: the next start needs no recovery
            self.proc.wait(30)
            self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


