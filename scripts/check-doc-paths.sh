#!/usr/bin/env bash
# Every Rust source path the docs cite exists: lists each backticked path of
# the form `some-dir/…/file.rs` in README.md and docs/*.md (links included:
# [`x.rs`](…)), and checks it against the working tree, relative to the
# repository root. Prints each missing path with the file and line that cite
# it and exits 1 when there is one; prints how many paths it checked otherwise.
#
#   scripts/check-doc-paths.sh
set -euo pipefail
cd "$(dirname "$0")/.."

docs=(README.md docs/*.md)
checked=0
missing=0
while IFS=: read -r file line path; do
  checked=$((checked + 1))
  if [[ ! -e $path ]]; then
    echo "$file:$line: \`$path\` does not exist" >&2
    missing=$((missing + 1))
  fi
done < <(grep -noE '`[a-z-]+/[^ `]*\.rs`' "${docs[@]}" | sed -E 's/`//g')

if ((missing > 0)); then
  echo "check-doc-paths: $missing of $checked cited paths are missing" >&2
  exit 1
fi
echo "check-doc-paths: all $checked cited paths exist"
