# shellcheck shell=bash
# Shared setup for scripts/test.sh, scripts/run.sh and .ci/run. Source it; do not run it.
#
# Building bigd needs Debian's RocksDB (linked through .cargo/config.toml) and
# libclang (bindgen in librocksdb-sys). See /work/shared/BUILD.md.

BIGD_APT_PACKAGES=(librocksdb-dev libclang-dev pkg-config)

bigd_log() {
    printf 'bigd: %s\n' "$*" >&2
}

# Installs whichever of BIGD_APT_PACKAGES is missing. Does nothing (and needs no
# root) when all are present. Exits the calling script if it cannot install.
bigd_install_deps() {
    if ! command -v dpkg >/dev/null 2>&1; then
        bigd_log "dpkg not found: not a Debian-based system; make sure RocksDB 7.8 (library and headers), libclang and pkg-config are installed"
        return 0
    fi

    local pkg
    local -a missing=()
    for pkg in "${BIGD_APT_PACKAGES[@]}"; do
        # `dpkg -s` also succeeds for removed packages whose config files remain,
        # so look at the status line instead of only the exit code. No `grep -q`:
        # it may quit before dpkg is done writing, and under pipefail dpkg's
        # SIGPIPE would count as "missing".
        if ! dpkg -s "$pkg" 2>/dev/null | grep '^Status: install ok installed$' >/dev/null; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi

    if [[ "$(id -u)" -ne 0 ]]; then
        bigd_log "missing packages: ${missing[*]}"
        bigd_log "run this script as root, or install them first:"
        bigd_log "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
        exit 1
    fi

    bigd_log "installing missing packages: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# A rustup install puts cargo in ~/.cargo/bin, which non-login shells (CI, sudo)
# may not have on PATH.
bigd_require_cargo() {
    if command -v cargo >/dev/null 2>&1; then
        return 0
    fi
    if [[ -n "${HOME:-}" && -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
        return 0
    fi
    bigd_log "cargo not found: install the Rust toolchain (https://rustup.rs) first"
    exit 1
}

# Keeps build output outside the work tree so it survives a fresh checkout.
# An existing CARGO_TARGET_DIR wins.
bigd_export_target_dir() {
    if [[ -z "${CARGO_TARGET_DIR:-}" ]]; then
        if [[ -n "${HOME:-}" ]]; then
            CARGO_TARGET_DIR="$HOME/.cache/bigd-target"
        else
            CARGO_TARGET_DIR="$PWD/target"
        fi
    fi
    export CARGO_TARGET_DIR
}
