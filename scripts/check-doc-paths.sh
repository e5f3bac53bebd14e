#!/usr/bin/env bash
# Every path the docs cite exists. Lists, in README.md and docs/*.md:
#   - every backticked Rust source path, `some-dir/…/file.rs` (links
#     included: [`x.rs`](…));
#   - every other backticked path that starts with a top-level directory of
#     the repository (`runtime/tests/`, `store-redis/src/lua/store.lua`,
#     `scripts/test.sh`, …), unless git ignores it (`tests/browser/node_modules`
#     is made by the set-up step);
# and checks each against the working tree, relative to the repository root.
# Prints every missing path with the file and line that cite it and exits 1
# when there is one; prints how many paths it checked otherwise.
#
#   scripts/check-doc-paths.sh
set -euo pipefail
cd "$(dirname "$0")/.."

docs=(README.md docs/*.md)
# The repository's top-level directories, as an alternation: core|runtime|…
top=$(git ls-files | grep / | cut -d/ -f1 | sort -u | sed 's/[.]/\\./g' | paste -sd'|')

checked=0
missing=0
while IFS=: read -r file line path; do
  if [[ $path != *.rs ]]; then
    [[ $path =~ ^($top)/ ]] || continue
    if git check-ignore -q -- "$path"; then continue; fi
  fi
  checked=$((checked + 1))
  if [[ ! -e $path ]]; then
    echo "$file:$line: \`$path\` does not exist" >&2
    missing=$((missing + 1))
  fi
done < <(grep -noE '`[a-zA-Z0-9_.-]+/[^ `]*`' "${docs[@]}" | sed -E 's/`//g')

# The pattern above is wider than `[a-z-]+/…\.rs`: make sure it missed none.
rs=$(grep -oE '`[a-z-]+/[^ `]*\.rs`' "${docs[@]}" | wc -l)
rs_checked=$(grep -oE '`[a-zA-Z0-9_.-]+/[^ `]*\.rs`' "${docs[@]}" | wc -l)
if ((rs > rs_checked)); then
  echo "check-doc-paths: $rs Rust paths cited, only $rs_checked checked" >&2
  exit 1
fi

if ((missing > 0)); then
  echo "check-doc-paths: $missing of $checked cited paths are missing" >&2
  exit 1
fi
echo "check-doc-paths: all $checked cited paths exist"
