#!/usr/bin/env python3
"""Regenerates scripts/supervisor-layout.ld: the code and read-only data a supervising preflight
uses, so the static build can lay them out next to each other.

Why: the supervisor stays resident for the whole life of the app, and the kernel maps file
pages in 64 kB "fault-around" blocks. The supervisor runs only a few hundred kB of code, but
spread over a 3.5 MB text section it would keep ~1.2 MB resident. Grouped, it keeps what it
runs (scripts/bench-init.py measures it against tini and dumb-init).

How: build an unstripped static binary with a link map (its own target dir), run the
supervise-only mode under valgrind's lackey in the situations it handles (normal exit,
forwarded signals, stop delay and timeout, leftovers, orphans, --user, exec failure, both log
formats), take every instruction and data address it used, find the input section holding it
in the link map, and write one linker-script line per section, code and read-only data apart. Rust's legacy symbol hashes and v0 crate disambiguators are wildcarded so
the list survives unrelated code changes; a stale or missing entry only costs memory, never
correctness. Run it after changing the supervise path or the toolchain, then check the figure
with scripts/bench-init.py.

Needs valgrind (apt-get install valgrind). Usage: scripts/profile-supervisor.py
"""
import bisect
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "scripts", "supervisor-layout.ld")
TARGET = f"{os.uname().machine}-unknown-linux-musl"


def die(msg):
    sys.exit(f"profile-supervisor: {msg}")


def build():
    target_dir = os.path.join(ROOT, "target", "profile-static")
    link_map = os.path.join(target_dir, "preflight.map")
    env = dict(os.environ)
    env.update(
        CARGO_TARGET_DIR=target_dir,
        CARGO_PROFILE_RELEASE_STRIP="false",
        PREFLIGHT_LINK_LAYOUT="",  # profile the default layout: names do not depend on it
        RUSTFLAGS=env.get("RUSTFLAGS", "") + f" -C link-arg=-Wl,-Map={link_map}",
    )
    subprocess.run([os.path.join(ROOT, "scripts", "build-static.sh")], env=env, check=True)
    return os.path.join(target_dir, TARGET, "release", "preflight"), link_map


def scenarios(tmp):
    """(flags, command, signals to send once it runs): every path of the supervise loop."""
    ready = os.path.join(tmp, "ready")
    return [
        (["--log-format", "json"], ["true"], []),
        ([], ["sh", "-c", "exit 3"], []),
        (["--log-level", "debug"], ["sh", "-c", "sleep 30"], ["HUP", "USR1", "WINCH", "TERM"]),
        # A password in the app's argv, in both formats: hidden in the debug command line.
        (["--log-level", "debug"], ["sh", "-c", "exit 0", "postgres://u:argv-Pw@db/app"], []),
        (["--log-format", "json", "--log-level", "debug"], ["true", "postgres://u:argv-Pw@db/app"], []),
        (
            ["--stop-timeout", "300ms", "--stop-delay", "10ms", "--rewrite-signal", "15:3", "--log-level", "debug"],
            ["sh", "-c", "trap '' TERM QUIT; sleep 30"],
            ["TERM"],
        ),
        (
            ["--subreaper", "--leftover-grace", "200ms", "--log-format", "json"],
            ["sh", "-c", f"(trap '' TERM; touch {ready}; sleep 30) & while [ ! -e {ready} ]; do sleep 0.02; done"],
            [],
        ),
        (["--subreaper"], ["sh", "-c", "for i in 1 2 3; do (sleep 0.1 &); done; sleep 0.5"], []),
        (
            ["--remap-exit", "143:0", "--rewrite-signal", "28:none", "--parent-death-signal", f"15:{os.getpid()}"],
            ["sh", "-c", "sleep 30"],
            ["WINCH", "TERM"],
        ),
        (["--user", "65534:65534", "--signal-child-only"], ["sh", "-c", "sleep 30"], ["INT"]),
        ([], ["/nonexistent/app"], []),
    ]


def profile(binary, tmp):
    """Every address the supervisor fetched an instruction from or read data at."""
    addrs = set()
    for i, (flags, command, sigs) in enumerate(scenarios(tmp)):
        log = os.path.join(tmp, f"lackey.{i}")
        argv = ["valgrind", "-q", "--tool=lackey", "--trace-mem=yes", f"--log-file={log}", binary]
        # As in a real container: a database URL with a password in the environment, which
        # the supervisor registers for redaction and then scrubs from every line.
        env = dict(os.environ, DATABASE_URL="postgres://app:profile-Pw@db.internal:5432/app")
        p = subprocess.Popen(argv + ["__supervise", *flags, "--", *command], stderr=subprocess.DEVNULL, env=env)
        if sigs:
            time.sleep(2)  # valgrind starts slowly; the app must be running before we signal
            for s in sigs:
                p.send_signal(getattr(signal, "SIG" + s))
                time.sleep(0.3)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            die(f"scenario {i} ({command}) did not end")
        for line in open(log, errors="replace"):
            m = re.match(r"^ ?[ILSM] +([0-9a-f]+),", line)
            if m:
                addrs.add(int(m.group(1), 16))
    return addrs


def input_sections(link_map):
    """(address, size, section, file) of every code and read-only data input section, from a
    GNU ld map."""
    rows, pending = [], None
    for line in open(link_map, errors="replace"):
        m = re.match(r"^ (\.\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$", line)
        if m:
            rows.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1), m.group(4).strip()))
            pending = None
            continue
        m = re.match(r"^ (\.\S+)\s*$", line)
        if m:
            pending = m.group(1)
            continue
        m = re.match(r"^\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$", line)
        if m and pending:
            rows.append((int(m.group(1), 16), int(m.group(2), 16), pending, m.group(3).strip()))
        pending = None
    return sorted(r for r in rows if r[1] > 0 and r[0] > 0 and r[2].startswith((".text", ".rodata")))


def pattern(section, file):
    """A linker-script input section description for this section, robust to rebuilds."""
    if section in (".text", ".rodata"):
        # No per-function sections (musl's assembly memcpy, crt's _start): by archive member.
        m = re.search(r"([^/]+)\(([^)]+)\)$", file)
        # The member's suffix differs between musl builds (Rust's bundled libc.a has .lo).
        obj = f"*{m.group(1)}:{os.path.splitext(m.group(2))[0]}.*" if m else "*" + os.path.basename(file)
        return f"{obj}({section})"
    # Legacy mangling hash, and the numbered copies LLVM makes (`….llvm.123`, switch tables' `.8`).
    name = re.sub(r"17h[0-9a-f]{16}E(\.llvm\.\d+|\.\d+)?$", "17h*", section)
    name = re.sub(r"Cs[0-9A-Za-z]+_(?=\d)", "Cs*_", name)  # v0 crate disambiguator
    name = re.sub(r"\.llvm\.\d+$", ".llvm.*", name)
    return f"*({name})"


def block(output, before, patterns, size):
    lines = "".join(f"    {p}\n" for p in patterns)
    return f"/* {len(patterns)} input sections, {size // 1024} kB */\nSECTIONS\n{{\n  {output} :\n  {{\n{lines}  }}\n}}\nINSERT BEFORE {before};\n"


def main():
    if subprocess.run(["which", "valgrind"], capture_output=True).returncode != 0:
        die("valgrind is not installed: apt-get install valgrind")
    with tempfile.TemporaryDirectory(prefix="pf-profile-") as tmp:
        binary, link_map = build()
        addrs = profile(binary, tmp)
    sections = input_sections(link_map)
    starts = [s[0] for s in sections]
    hot = {".text": {}, ".rodata": {}}
    sizes = {".text": 0, ".rodata": 0}
    for a in sorted(addrs):
        i = bisect.bisect_right(starts, a) - 1
        if i < 0 or not (sections[i][0] <= a < sections[i][0] + sections[i][1]):
            continue
        start, size, section, file = sections[i]
        kind = ".text" if section.startswith(".text") else ".rodata"
        pat = pattern(section, file)
        if pat not in hot[kind]:
            hot[kind][pat] = start
            sizes[kind] += size
    if len(hot[".text"]) < 50:
        die(f"only {len(hot['.text'])} hot code sections found: is the link map from this build?")
    with open(OUT, "w") as f:
        f.write(
            "/* Generated by scripts/profile-supervisor.py: the code and read-only data a supervising\n"
            "   preflight uses, in the order of the profiled build. build.rs passes this to the linker\n"
            "   for the static build (PREFLIGHT_LINK_LAYOUT), so they sit together instead of spread\n"
            "   over the whole binary. Do not edit by hand. */\n"
        )
        for kind, output in ((".text", ".text.supervisor"), (".rodata", ".rodata.supervisor")):
            f.write(block(output, kind, sorted(hot[kind], key=hot[kind].get), sizes[kind]))
    print(
        f"profile-supervisor: {OUT}: code {len(hot['.text'])} sections {sizes['.text'] // 1024} kB, "
        f"read-only data {len(hot['.rodata'])} sections {sizes['.rodata'] // 1024} kB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
