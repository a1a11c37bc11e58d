#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs the MariaDB server if missing, then runs
# every unit and end-to-end test (real PostgreSQL, MariaDB, SQLite, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
exec cargo test --locked "$@"
