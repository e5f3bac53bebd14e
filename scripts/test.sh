#!/usr/bin/env bash
# Runs every test of weir on a fresh machine (Debian, Rust via rustup).
#
# Stages:
#   1. set-up   install what the tests need and is missing (Debian packages,
#               rustup components); never reinstalls what is already there
#   2. fmt      cargo fmt --all -- --check
#   3. clippy   cargo clippy --workspace --all-targets -- -D warnings
#   4. test     cargo test --workspace  (unit, integration and doc tests)
#
# Usage: ./scripts/test.sh [--setup-only]
# Exits non-zero as soon as a stage fails.
set -euo pipefail

cd "$(dirname "$0")/.."

# Two jobs unless told otherwise: small CI machines run out of memory with more.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
if [[ -n "${CI:-}" ]]; then
    export CARGO_TERM_COLOR=never
fi

banner() {
    printf '\n==> %s\n' "$*"
}

fail() {
    printf 'test.sh: %s\n' "$*" >&2
    exit 1
}

# Run a command as root (directly, or through sudo when not root).
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        fail "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=0

# ensure_pkg BINARY PACKAGE: install Debian PACKAGE unless BINARY is on PATH.
# `apt-get update` runs at most once per invocation.
ensure_pkg() {
    local binary="$1" package="$2"
    if command -v "$binary" >/dev/null 2>&1; then
        echo "  $binary: present ($(command -v "$binary"))"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        fail "$binary is missing and apt-get is not available: install $package by hand"
    echo "  $binary: missing, installing Debian package $package"
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq update
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -qq install -y --no-install-recommends "$package" >/dev/null
    command -v "$binary" >/dev/null 2>&1 ||
        fail "installed $package but $binary is still not on PATH"
    echo "  $binary: installed ($(command -v "$binary"))"
}

# ensure_component NAME CHECK...: add rustup component NAME unless CHECK succeeds.
ensure_component() {
    local component="$1"
    shift
    if "$@" >/dev/null 2>&1; then
        echo "  $component: present"
        return 0
    fi
    command -v rustup >/dev/null 2>&1 ||
        fail "$component is missing and rustup is not available"
    echo "  $component: missing, adding it with rustup"
    rustup component add "$component"
}

setup() {
    banner "set-up"
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: install Rust with rustup first"
    cargo --version
    ensure_component rustfmt cargo fmt --version
    ensure_component clippy cargo clippy --version
    # The store differential test and the end-to-end tests start a real redis-server.
    ensure_pkg redis-server redis-server
}

setup
if [[ "${1:-}" == "--setup-only" ]]; then
    exit 0
fi

banner "fmt: cargo fmt --all -- --check"
cargo fmt --all -- --check

banner "clippy: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# No --all-targets here: it would skip the doc tests.
banner "test: cargo test --workspace"
cargo test --workspace

banner "all tests passed"
