"""Runs a command under a new pseudo-terminal, as `docker run -it` would: the command is a
session leader whose controlling terminal is the pty. Then plays a script against it.

usage: pty-drive.py STEPS -- COMMAND...
STEPS is a JSON list of ["expect", TEXT] (wait, at most 15 s, until TEXT has appeared in the
output since the previous expect) and ["send", TEXT] (write TEXT to the terminal, e.g. "\u0003"
for Ctrl-C). Prints one JSON object: output, exit code or signal, and a failed step if any.
"""
import json, os, pty, select, signal, sys, time

steps = json.loads(sys.argv[1])
argv = sys.argv[sys.argv.index("--") + 1:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)

out = b""
mark = 0
failed = None


def pump(timeout):
    """Reads what is there within `timeout`. None when the terminal is closed, else the bytes."""
    global out
    r, _, _ = select.select([fd], [], [], timeout)
    if not r:
        return b""
    try:
        data = os.read(fd, 65536)
    except OSError:
        return None
    if not data:
        return None
    out += data
    return data


for kind, text in steps:
    if kind == "send":
        os.write(fd, text.encode())
        continue
    deadline = time.monotonic() + 15
    while text.encode() not in out[mark:]:
        left = deadline - time.monotonic()
        if left <= 0 or pump(min(left, 0.2)) is None:
            failed = [kind, text]
            break
    if failed:
        break
    mark = out.index(text.encode(), mark) + len(text)

status = None
deadline = time.monotonic() + 15
while status is None and time.monotonic() < deadline:
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
    elif pump(0.05) is None:
        time.sleep(0.05)
if status is None:
    failed = failed or ["exit", "timed out"]
    os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
for _ in range(100):
    if not pump(0):
        break
print(json.dumps({
    "output": out.decode(errors="replace"),
    "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
    "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    "failed": failed,
}))
