#!/usr/bin/env bash
# Drives bigd with real Matrix clients: matrix-js-sdk (pinned in package.json,
# installed here with `npm ci`) with its Rust crypto. Builds the debug bigd,
# starts it on a free loopback port with a temporary data folder, runs the
# scenarios, stops that bigd (by its PID) and exits non-zero on any failure.
#
# Needs Node.js 20+ and npm (network access to the npm registry the first time).
# E2EE_VERBOSE=1 shows the SDK's logs; KEEP_CLIENT_TEST_DATA=1 keeps the data
# folder and the server log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/lib/deps.sh
source scripts/lib/deps.sh
bigd_require_cargo
bigd_export_target_dir

log() { printf 'clients: %s\n' "$*" >&2; }

for tool in node npm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "$tool not found: install Node.js 20 or later with npm"
        exit 1
    fi
done

log "installing the npm packages (package-lock.json)"
(cd "$here" && timeout 600 npm ci --no-audit --no-fund --loglevel=error)

log "building bigd (debug)"
cargo build --bin bigd
bin="$CARGO_TARGET_DIR/debug/bigd"

data="$(mktemp -d)"
server_log="$data/bigd.log"
pid=""
cleanup() {
    local status=$?
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    if [[ $status -ne 0 && -f "$server_log" ]]; then
        log "last lines of the bigd log ($server_log):"
        tail -n 40 "$server_log" >&2 || true
    fi
    if [[ -z "${KEEP_CLIENT_TEST_DATA:-}" ]]; then
        rm -rf "$data"
    else
        log "kept $data"
    fi
    exit "$status"
}
trap cleanup EXIT INT TERM

# A free loopback port: bind port 0, read it back, release it.
port="$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
base="http://127.0.0.1:$port"

log "starting bigd on $base (data in $data)"
BIGD_SERVER_NAME=localhost \
BIGD_LISTEN="[\"127.0.0.1:$port\"]" \
BIGD_DATA_DIR="$data/data" \
BIGD_REGISTRATION__ENABLED=true \
BIGD_RATE_LIMITS__ENABLED=false \
RUST_LOG="${RUST_LOG:-info}" \
    "$bin" >"$server_log" 2>&1 &
pid=$!

ready=""
for _ in $(seq 150); do
    if node -e "fetch('$base/_matrix/client/versions').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" 2>/dev/null; then
        ready=1
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        log "bigd exited during start-up"
        exit 1
    fi
    sleep 0.2
done
if [[ -z "$ready" ]]; then
    log "bigd did not answer on $base within 30 s"
    exit 1
fi

status=0
for scenario in "$here"/e2ee.mjs; do
    log "running $(basename "$scenario")"
    if ! timeout 300 node "$scenario" "$base"; then
        log "FAILED: $(basename "$scenario")"
        status=1
    fi
done
exit "$status"
