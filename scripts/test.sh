#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is missing (MariaDB, musl-tools, the
# PyPI tools), runs every unit and end-to-end test (real PostgreSQL, MariaDB, SQLite, network
# namespaces), then the container test of the static binary and the deployment-file lints.
# With arguments, only `cargo test ARGS` runs (e.g. scripts/test.sh --test init).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
if (($#)); then
  exec cargo test --locked "$@"
fi
cargo test --locked
echo "== scripts/e2e-container.sh"
scripts/e2e-container.sh
echo "== scripts/lint-deploy.sh"
scripts/lint-deploy.sh
