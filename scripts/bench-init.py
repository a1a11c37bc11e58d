#!/usr/bin/env python3
"""Benchmarks of preflight as an init, with tini and dumb-init (Debian packages) in the same run.

Figures:
  1. RSS while supervising an idle app (VmRSS, the peak VmHWM, and the anonymous and file-backed
     parts, sampled 1 s in), for the static musl preflight (plain, and after a SQLite wait and
     migration), the glibc build, tini, tini-static and dumb-init;
  2. signal-forwarding latency: SIGUSR1 sent to the init until the app's handler runs
     (median and p95 of 50);
  3. overhead: the wall time of `INIT -- true` minus that of `true` (mean of 200 runs).

Every init runs with stdin on /dev/null, as in a container started without -t: with a terminal
on stdin, tini and dumb-init hand it to the app's process group, which costs them ~2 ms a start
here, and the figure would depend on where the script was run from.

Installs tini and dumb-init with apt-get when they are missing. Run as root.

Usage: scripts/bench-init.py
"""

import atexit
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BIN, ROOT, build_release, pct  # noqa: E402

STATIC = os.path.join(ROOT, "target", f"{os.uname().machine}-unknown-linux-musl", "release", "preflight")
SQLITE_DIR = tempfile.mkdtemp(prefix="pf-bench-init-db-")
atexit.register(shutil.rmtree, SQLITE_DIR, ignore_errors=True)
INITS = {
    # The shipped artifact (scripts/build-static.sh), as a plain init and after a wait and a
    # migration on SQLite (the re-exec into the supervise-only mode must leave nothing resident).
    "preflight": [STATIC, "run", "--init", "always", "--"],
    "preflight+db": [STATIC, "run", "--init", "always", "--database-url", f"sqlite:{SQLITE_DIR}/app.db",
                     "--migrations", os.path.join(ROOT, "examples", "migrations"), "--"],
    "preflight-gnu": [BIN, "run", "--init", "always", "--"],
    "tini": ["tini", "-s", "--"],
    "tini-static": ["tini-static", "-s", "--"],
    "dumb-init": ["dumb-init"],
}

APP = r"""
import os, signal, sys, time
out = sys.argv[1]
def handler(n, f):
    with open(out, "a") as fh:
        fh.write(f"{time.time()}\n")
signal.signal(signal.SIGUSR1, handler)
open(out + ".ready", "w").close()
while True:
    signal.pause()
"""


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def env():
    # preflight's defaults: text logs at info ("started" and "exited" are written).
    return {k: v for k, v in os.environ.items() if not k.startswith("PREFLIGHT_")}


def rss(init):
    p = subprocess.Popen(INITS[init] + ["sleep", "3"], env=env(), stdin=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    time.sleep(1)
    values = status(p.pid, "VmRSS"), status(p.pid, "VmHWM"), status(p.pid, "RssAnon"), status(p.pid, "RssFile")
    p.wait()
    return values


def latency(init, rounds=50):
    d = tempfile.mkdtemp(prefix="pf-bench-init-")
    out = os.path.join(d, "times")
    p = subprocess.Popen(INITS[init] + ["python3", "-c", APP, out], env=env(), stdin=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    end = time.time() + 10
    while not os.path.exists(out + ".ready"):
        assert time.time() < end, "the app did not start"
        time.sleep(0.01)
    lat = []
    for i in range(rounds):
        t = time.time()
        os.kill(p.pid, signal.SIGUSR1)
        while True:
            lines = open(out).read().split() if os.path.exists(out) else []
            if len(lines) > i:
                lat.append((float(lines[i]) - t) * 1e6)
                break
            time.sleep(0.0005)
        time.sleep(0.01)
    # SIGTERM, not SIGKILL: the init must take its app down with it.
    p.terminate()
    p.wait(10)
    shutil.rmtree(d, ignore_errors=True)
    return lat


def overhead(cmd, runs=200):
    t = time.perf_counter()
    for _ in range(runs):
        subprocess.run(cmd, env=env(), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t) / runs * 1000


def main():
    if not (shutil.which("tini") and shutil.which("dumb-init")):
        subprocess.run(["apt-get", "install", "-y", "-qq", "tini", "dumb-init"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), stdout=subprocess.DEVNULL)
    build_release()
    subprocess.run([os.path.join(ROOT, "scripts", "build-static.sh")], cwd=ROOT, check=True)
    print("== 1. RSS while supervising an idle app, 1 s in (kB; RssFile = pages of the binary and libc)")
    for init in INITS:
        now, peak, anon, file = rss(init)
        print(f"  {init:14} VmRSS {now:6d}   VmHWM {peak:6d}   RssAnon {anon:5d}   RssFile {file:6d}")
    print("== 2. signal-forwarding latency, SIGUSR1 to the init until the app's handler runs (us)")
    for init in INITS:
        v = latency(init)
        print(f"  {init:14} median {statistics.median(v):7.0f}   p95 {pct(v, 95):7.0f}")
    print("== 3. overhead of `INIT -- true` over `true` (ms per run, mean of 200)")
    plain = overhead(["true"])
    for init in INITS:
        ms = overhead(INITS[init] + ["true"])
        print(f"  {init:14} {ms - plain:6.2f} ms  ({ms:.2f} ms in all)")


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("bench-init: run as root")
    main()
