#!/usr/bin/env python3
"""Benchmarks of the wait phase, with a shell wait loop measured in the same run.

Figures:
  1. detection latency: PostgreSQL starts at a random moment 2-3 s after the waiter; latency is
     the waiter's exit (preflight: its `ready` log line) minus the server's own
     "ready to accept connections" log line, both on this machine's clock;
  2. attempts per second during an outage (the server is down for the whole --timeout);
  3. time to fail on a wrong password (PostgreSQL, and MariaDB when mariadbd is installed);
  4. the release binary's size.

The peer is the Divemap entrypoint's loop (../shared/seeds/003): up to 10 tries of a 5 s TCP
check with a random 1-5 s sleep between them. Run as root (PostgreSQL runs as `postgres`).

Usage: scripts/bench-wait.py [--runs N] [--outage SECONDS]
"""

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BIN, PASSWORD, Postgres, build_release, free_port, pct  # noqa: E402

DIVEMAP_LOOP = r"""
host=$1; port=$2
for i in $(seq 1 10); do
  if timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then exit 0; fi
  sleep $((RANDOM % 5 + 1))
done
exit 1
"""


def log_time(line):
    stamp = line.split()[0].rstrip("Z")
    return dt.datetime.fromisoformat(stamp[:26]).replace(tzinfo=dt.timezone.utc).timestamp()


def detection(pg, runs, waiter):
    latencies = []
    for _ in range(runs):
        if waiter == "preflight":
            proc = subprocess.Popen([BIN, "wait", "--database-url", pg.url(), "--timeout", "30s"],
                                    stderr=subprocess.PIPE, text=True)
        else:
            proc = subprocess.Popen(["bash", "-c", DIVEMAP_LOOP, "loop", "127.0.0.1", str(pg.port)])
        time.sleep(random.uniform(2.0, 3.0))
        pg.start()
        if waiter == "preflight":
            _, err = proc.communicate(timeout=60)
            end = next(log_time(l) for l in err.splitlines() if " ready " in l)
        else:
            proc.wait(60)
            end = time.time()
        assert proc.returncode == 0, f"{waiter} exited {proc.returncode}"
        latencies.append((end - pg.ready_time()) * 1000)
        pg.stop()
    return latencies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=25)
    ap.add_argument("--outage", type=int, default=60)
    args = ap.parse_args()
    build_release()

    pg = Postgres()
    try:
        print(f"== 1. detection latency, {args.runs} runs each, server starts 2-3 s after the waiter")
        ours = detection(pg, args.runs, "preflight")
        theirs = detection(pg, args.runs, "divemap-loop")
        for name, v in [("preflight", ours), ("divemap loop", theirs)]:
            print(f"  {name:13} median {statistics.median(v):7.0f} ms   p95 {pct(v, 95):7.0f} ms   "
                  f"max {max(v):7.0f} ms")
        print(f"  ratio (loop / preflight): median {statistics.median(theirs) / statistics.median(ours):.1f}x, "
              f"p95 {pct(theirs, 95) / pct(ours, 95):.1f}x")

        print(f"== 2. attempts during a {args.outage} s outage (connection refused)")
        t = time.time()
        out = subprocess.run([BIN, "wait", "--database-url", pg.url(), "--timeout", f"{args.outage}s",
                              "--log-level", "debug"], stderr=subprocess.PIPE, text=True)
        took = time.time() - t
        attempts = out.stderr.count("attempt failed")
        print(f"  preflight: {attempts} attempts in {took:.1f} s = {attempts / took:.2f}/s (exit {out.returncode})")
        print("  divemap loop: at most 10 attempts in 9-45 s, then it gives up")

        print("== 3. time to fail on a wrong password (10 runs)")
        pg.start()
        pg.ready_time()
        times = []
        for _ in range(10):
            t = time.time()
            out = subprocess.run([BIN, "wait", "--database-url", pg.url("wrong")], stderr=subprocess.PIPE, text=True)
            times.append((time.time() - t) * 1000)
            assert out.returncode == 3, out.stderr
        print(f"  preflight, PostgreSQL (scram-sha-256): median {statistics.median(times):.1f} ms, exit 3")
        t = time.time()
        rc = subprocess.run(["bash", "-c", DIVEMAP_LOOP, "loop", "127.0.0.1", str(pg.port)]).returncode
        print(f"  divemap loop: exits {rc} after {(time.time() - t) * 1000:.0f} ms, calling the database "
              "ready: the wrong password surfaces only when the app starts")
        pg.stop()
        if shutil.which("mariadbd"):
            mariadb_wrong_password()
    finally:
        pg.cleanup()

    size = os.path.getsize(BIN)
    print(f"== 4. release binary: {size} bytes ({size / 1024 / 1024:.2f} MiB), {BIN}")


def mariadb_wrong_password():
    root = tempfile.mkdtemp(prefix="pf-bench-my-")
    data = os.path.join(root, "data")
    port = free_port()
    try:
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log = os.path.join(data, "error.log")
        proc = subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={data}", f"--port={port}",
                                 "--bind-address=127.0.0.1", f"--socket={data}/s.sock", "--user=root",
                                 f"--log-error={log}", "--skip-log-bin"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.time() + 60
        while "ready for connections" not in (open(log).read() if os.path.exists(log) else ""):
            assert time.time() < end, "mariadb did not start"
            time.sleep(0.05)
        times = []
        for _ in range(10):
            t = time.time()
            out = subprocess.run([BIN, "wait", "--database-url", f"mysql://root:wrong@127.0.0.1:{port}/mysql"],
                                 stderr=subprocess.PIPE, text=True)
            times.append((time.time() - t) * 1000)
            assert out.returncode == 3, out.stderr
        print(f"  preflight, MariaDB (mysql_native_password): median {statistics.median(times):.1f} ms, exit 3")
        proc.kill()
        proc.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench-wait: run as root (PostgreSQL runs as the postgres user)")
    main()
