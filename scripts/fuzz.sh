#!/usr/bin/env bash
# Runs weir's coverage-guided fuzz targets (fuzz/, cargo-fuzz + libFuzzer on
# the nightly toolchain), one at a time, each for SECONDS, then minimizes each
# target's corpus (cargo fuzz cmin). docs/fuzzing.md says what each target
# covers and records the figures of the last full run.
#
# Usage: ./scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  time per target (default 600); TARGET defaults to every target
#            of `cargo fuzz list`.
#
# Inputs: fuzz/seeds/TARGET (hand-written from real frames, never changed by a
# run) and fuzz/corpus/TARGET (the committed, minimized corpus, which the run
# grows and cmin shrinks again). A crash leaves its input in
# fuzz/artifacts/TARGET/ and makes the script exit non-zero after the other
# targets ran: fix the cause, add a regression test to the normal suite, run
# again. Logs and the final libFuzzer stats go to $LOG_DIR (default
# $CARGO_TARGET_DIR/fuzz-logs or /tmp/weir-fuzz-logs); a summary line per
# target is printed at the end.
#
# Not part of scripts/test.sh: ten minutes a target. test.sh checks, with
# clippy, the `fuzzing` entry points the targets call.
set -euo pipefail

cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-600}"
shift || true
[[ "$SECONDS_PER_TARGET" =~ ^[0-9]+$ ]] || {
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
}

export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# Its own directory: the instrumented nightly build shares nothing with the
# workspace's.
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
LOG_DIR="${LOG_DIR:-${CARGO_TARGET_DIR:-/tmp}/weir-fuzz-logs}"
mkdir -p "$LOG_DIR"

rustup toolchain list | grep -q '^nightly' || {
    echo "fuzz.sh: installing the nightly toolchain (cargo fuzz needs it)"
    rustup toolchain install nightly --profile minimal
}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# No sanitizer: every weir crate is `#![forbid(unsafe_code)]`, so what the
# targets look for is panics, overflows (debug assertions are on) and broken
# invariants (cargo fuzz builds with optimizations and debug assertions), and
# the runs go about twice as fast without AddressSanitizer.
FUZZ=(cargo +nightly fuzz)
BUILD_FLAGS=(-s none --target-dir "$TARGET_DIR")

if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <("${FUZZ[@]}" list --fuzz-dir fuzz)
fi

echo "fuzz.sh: building ${TARGETS[*]}"
(cd fuzz && nice -n 10 "${FUZZ[@]}" build "${BUILD_FLAGS[@]}")

failed=()
summary=()
for t in "${TARGETS[@]}"; do
    corpus="fuzz/corpus/$t"
    seeds="fuzz/seeds/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    log="$LOG_DIR/$t.log"
    echo "fuzz.sh: $t for ${SECONDS_PER_TARGET} s (log: $log)"
    started=$SECONDS
    set +e
    (cd fuzz && nice -n 10 "${FUZZ[@]}" run "${BUILD_FLAGS[@]}" "$t" \
        "../$corpus" "../$seeds" -- \
        -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 -timeout=10 \
        -rss_limit_mb=2048) >"$log" 2>&1
    status=$?
    set -e
    took=$((SECONDS - started))
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
    execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
    if [[ $status -ne 0 ]]; then
        failed+=("$t")
        summary+=("$t: FAILED (exit $status) after ${took} s; see $log and fuzz/artifacts/$t/")
        continue
    fi
    before="$(find "$corpus" -type f | wc -l)"
    # Set-cover merge: within 0.3 % of the features of plain `-merge=1`
    # (what cmin runs) in about 40 % fewer files (docs/fuzzing.md).
    (cd fuzz && nice -n 10 "${FUZZ[@]}" cmin "${BUILD_FLAGS[@]}" "$t" "../$corpus" -- \
        -set_cover_merge=1) \
        >"$LOG_DIR/$t.cmin.log" 2>&1
    after="$(find "$corpus" -type f | wc -l)"
    summary+=("$t: ${took} s, ${execs:-?} executions, final: ${done_line#*DONE}; corpus ${before} -> ${after} files")
done

echo
echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz.sh: crashed: ${failed[*]}" >&2
    exit 1
fi
