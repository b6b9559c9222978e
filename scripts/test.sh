#!/usr/bin/env bash
# Runs all of bigd's tests. Installs missing system packages first (needs root
# for that). Extra arguments go to the test runner, e.g. `scripts/test.sh sync::`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh

bigd_install_deps
bigd_require_cargo
bigd_export_target_dir
bigd_log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
    bigd_log "cargo-nextest not found; using cargo test"
    cargo test --workspace --all-targets --no-fail-fast "$@"
fi

# Tests that drive bigd with real Matrix clients (JavaScript/Python) live in
# their own step.
clients=tests/clients/run.sh
if [[ -x "$clients" ]]; then
    bigd_log "running $clients"
    "$clients"
elif [[ -e "$clients" ]]; then
    bigd_log "warning: $clients exists but is not executable; skipping it"
fi
