#!/usr/bin/env python3
"""Schema-free structural checks of the deployment files, beyond what yamllint and a TOML parse see.

Every preflight command line in them (Dockerfile CMD under a preflight ENTRYPOINT, fly.toml's
release_command and processes, Kubernetes args, Compose commands) is run through the real CLI
with --help inserted, so an unknown flag or a bad enum value fails here, not in production.
Kubernetes: selectors match, Secret references resolve, probes name real ports, volume mounts
name real volumes, non-root security contexts, terminationGracePeriodSeconds covers
--stop-delay + --stop-timeout and the startupProbe covers PREFLIGHT_TIMEOUT. fly.toml:
kill_timeout covers PREFLIGHT_STOP_TIMEOUT and build-target names a Dockerfile stage.

Usage: check-deploy.py PREFLIGHT_BINARY FILE...
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib

import yaml

ERRORS = []
OUR_IMAGES = ("preflight", "preflight-demo")


def error(path, message):
    ERRORS.append(f"{path}: {message}")


def seconds(value):
    """'60s', '2m', '500ms', 30 → seconds (float)."""
    if isinstance(value, (int, float)):
        return float(value)
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", str(value)):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def check_cli(path, where, args):
    """`preflight ARGS` must parse: run it with --help before the `--` (or at the end)."""
    cut = args.index("--") if "--" in args else len(args)
    probe = args[:cut] + ["--help"]
    done = subprocess.run([PREFLIGHT] + probe, capture_output=True, text=True)
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()[:1]
        error(path, f"{where}: `preflight {' '.join(args)}` does not parse: {first}")
    if "run" in args[:1] and "--" not in args:
        error(path, f"{where}: `preflight run` without `-- COMMAND`")


def flag(args, name):
    for i, a in enumerate(args):
        if a == "--":
            break
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def dockerfile_stages(path):
    stages, current = {}, None
    text = re.sub(r"\\\n", " ", open(path).read())
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            parent = stages.get(m.group(1), {})
            current = {"entrypoint": parent.get("entrypoint"), "cmd": parent.get("cmd")}
            stages[m.group(2) or f"#{len(stages)}"] = current
            continue
        m = re.match(r"(ENTRYPOINT|CMD)\s+(\[.*\])\s*$", line, re.I)
        if m and current is not None:
            current[m.group(1).lower()] = json.loads(m.group(2))
            if m.group(1).upper() == "ENTRYPOINT":
                current["cmd"] = None
    return stages


def check_dockerfile(path):
    for name, stage in dockerfile_stages(path).items():
        entry, cmd = stage.get("entrypoint"), stage.get("cmd")
        if entry and os.path.basename(entry[0]) == "preflight" and cmd and cmd != ["--help"]:
            check_cli(path, f"stage {name} CMD", entry[1:] + cmd)


def check_fly(path):
    config = tomllib.load(open(path, "rb"))
    env = config.get("env", {})
    release = config.get("deploy", {}).get("release_command")
    if release:
        check_cli(path, "release_command", shlex.split(release))
    for name, command in config.get("processes", {}).items():
        check_cli(path, f"processes.{name}", shlex.split(command))
    stop = env.get("PREFLIGHT_STOP_TIMEOUT")
    kill = config.get("kill_timeout", 5)
    if stop and seconds(stop) >= seconds(kill):
        error(path, f"PREFLIGHT_STOP_TIMEOUT {stop} must be below kill_timeout {kill}")
    if env.get("PREFLIGHT_STOP_TIMEOUT") and env.get("PREFLIGHT_INIT") != "always":
        error(path, "on Fly preflight is not PID 1: PREFLIGHT_STOP_TIMEOUT needs PREFLIGHT_INIT=always")
    build = config.get("build", {})
    dockerfile = build.get("dockerfile", "Dockerfile")
    if not os.path.exists(dockerfile):
        error(path, f"[build] dockerfile {dockerfile} does not exist (relative to the repository root)")
    elif build.get("build-target") and build["build-target"] not in dockerfile_stages(dockerfile):
        error(path, f"build-target {build['build-target']} is not a stage of {dockerfile}")
    url = env.get("DATABASE_URL", "")
    if url.startswith("sqlite:"):
        mounts = config.get("mounts", [])
        mounts = [mounts] if isinstance(mounts, dict) else mounts
        if not any(url.split(":", 1)[1].startswith(m.get("destination", "") + "/") for m in mounts):
            error(path, f"{url} is not on a [[mounts]] volume: the database would vanish with the machine")


def check_kubernetes(path, docs, secrets):
    for doc in docs:
        kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
        where = f"{kind}/{name}"
        if not doc.get("apiVersion") or not kind or not name:
            error(path, f"{where}: apiVersion, kind and metadata.name are required")
            continue
        if kind not in ("Deployment", "Job", "StatefulSet"):
            continue
        template = doc.get("spec", {}).get("template", {})
        pod = template.get("spec", {})
        if kind != "Job":
            wanted = doc["spec"].get("selector", {}).get("matchLabels", {})
            labels = template.get("metadata", {}).get("labels", {})
            if not wanted or any(labels.get(k) != v for k, v in wanted.items()):
                error(path, f"{where}: selector {wanted} does not match the template's labels {labels}")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        grace = pod.get("terminationGracePeriodSeconds", 30)
        containers = [("initContainers", c) for c in pod.get("initContainers", [])]
        containers += [("containers", c) for c in pod.get("containers", [])]
        if not pod.get("containers"):
            error(path, f"{where}: no containers")
        for group, c in containers:
            cw = f"{where} {group}/{c.get('name')}"
            if not c.get("name") or not c.get("image"):
                error(path, f"{cw}: name and image are required")
                continue
            env = {}
            for e in c.get("env", []):
                if "value" in e and not isinstance(e["value"], str):
                    error(path, f"{cw}: env {e.get('name')} value must be a string (quote it)")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref.get("key") not in secrets.get(ref.get("name"), set()):
                    error(path, f"{cw}: env {e['name']} refers to secret {ref.get('name')}/{ref.get('key')}, "
                          "which no Secret in examples/kubernetes defines")
                env[e.get("name")] = e.get("value")
            for m in c.get("volumeMounts", []):
                if m.get("name") not in volumes:
                    error(path, f"{cw}: volumeMount {m.get('name')} names no volume")
            if not c["image"].split(":")[0].endswith(OUR_IMAGES):
                continue
            args = c.get("args", [])
            if not all(isinstance(a, str) for a in args):
                error(path, f"{cw}: every arg must be a string")
                continue
            check_cli(path, cw, args)
            psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
            if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                error(path, f"{cw}: runAsNonRoot must be true")
            if not isinstance(csc.get("runAsUser", psc.get("runAsUser")), int):
                error(path, f"{cw}: runAsUser must be numeric (runAsNonRoot cannot check a name)")
            if csc.get("allowPrivilegeEscalation") is not False or csc.get("readOnlyRootFilesystem") is not True:
                error(path, f"{cw}: set allowPrivilegeEscalation: false and readOnlyRootFilesystem: true")
            if group == "containers" and args[:1] == ["run"]:
                needed = seconds(flag(args, "--stop-delay") or 0) + seconds(flag(args, "--stop-timeout") or 0)
                if needed >= grace:
                    error(path, f"{cw}: --stop-delay + --stop-timeout ({needed:g}s) must be below "
                          f"terminationGracePeriodSeconds ({grace})")
                if not any(m.get("mountPath") == "/tmp" for m in c.get("volumeMounts", [])):
                    error(path, f"{cw}: a read-only root needs a writable /tmp (emptyDir)")
            ports = {p.get("name") for p in c.get("ports", [])} | {p.get("containerPort") for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and port not in ports:
                    error(path, f"{cw}: {probe} port {port} is not one of the container's ports")
            startup = c.get("startupProbe")
            if group == "containers" and startup:
                window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
                deadline = seconds(flag(args, "--timeout") or env.get("PREFLIGHT_TIMEOUT") or "60s")
                if window <= deadline:
                    error(path, f"{cw}: startupProbe allows {window}s, not more than the {deadline:g}s wait "
                          "deadline: the kubelet would kill a pod that is still waiting")


def check_compose(path, doc):
    services = doc.get("services", {})
    for name, svc in services.items():
        if not svc.get("image") and not svc.get("build"):
            error(path, f"service {name}: image or build is required")
        for dep in svc.get("depends_on", []):
            if dep not in services:
                error(path, f"service {name}: depends_on {dep}, which is not a service")
        build = svc.get("build")
        if isinstance(build, dict):
            dockerfile = os.path.join(os.path.dirname(path), build.get("context", "."), "Dockerfile")
            if not os.path.exists(dockerfile):
                error(path, f"service {name}: no Dockerfile at {dockerfile}")
            elif build.get("target") and build["target"] not in dockerfile_stages(dockerfile):
                error(path, f"service {name}: target {build['target']} is not a stage of {dockerfile}")
        command = svc.get("command")
        if command:
            check_cli(path, f"service {name} command", command if isinstance(command, list) else shlex.split(command))
        url = svc.get("environment", {}).get("DATABASE_URL", "")
        host = re.match(r"\w+://[^@/]*@([^:/]+)", url)
        if host and host.group(1) not in services:
            error(path, f"service {name}: DATABASE_URL host {host.group(1)} is not a service")


def main():
    global PREFLIGHT
    PREFLIGHT, files = sys.argv[1], sys.argv[2:]
    yamls = {f: [d for d in yaml.safe_load_all(open(f)) if d] for f in files if f.endswith((".yaml", ".yml"))}
    secrets = {}
    for docs in yamls.values():
        for d in docs:
            if d.get("kind") == "Secret":
                keys = set(d.get("stringData", {})) | set(d.get("data", {}))
                secrets.setdefault(d["metadata"]["name"], set()).update(keys)
    for f in files:
        if os.path.basename(f) == "Dockerfile":
            check_dockerfile(f)
        elif f.endswith(".toml"):
            check_fly(f)
        elif "compose" in os.path.basename(f):
            check_compose(f, yamls[f][0])
        elif f in yamls:
            check_kubernetes(f, yamls[f], secrets)
    for e in ERRORS:
        print(f"check-deploy: {e}", file=sys.stderr)
    if ERRORS:
        sys.exit(1)
    print(f"check-deploy: {len(files)} files OK", file=sys.stderr)


if __name__ == "__main__":
    main()
