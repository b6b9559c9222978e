#!/usr/bin/env bash
# Builds and runs the bigd server (release build). Installs missing system
# packages first (needs root for that). Arguments go to bigd, e.g.
#   scripts/run.sh --config bigd.toml
# With no arguments bigd runs on its embedded defaults (see README.md).
set -euo pipefail

# The build must run in the repository (cargo reads .cargo/config.toml from the
# current directory), but bigd itself runs in the caller's directory so that
# relative paths in the arguments and the default ./bigd-data mean what the
# caller expects.
caller_dir="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh

bigd_install_deps
bigd_require_cargo
bigd_export_target_dir

cargo build --release --bin bigd
# Resolved here: CARGO_TARGET_DIR may be relative to the repository.
bigd_bin="$(cd "$CARGO_TARGET_DIR/release" && pwd)/bigd"
cd "$caller_dir"
exec "$bigd_bin" "$@"
