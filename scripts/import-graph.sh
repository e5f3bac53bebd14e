#!/usr/bin/env bash
# The module import graph of a crate: one line `A -> B` for every module A
# (a file under SRC) that names module B through `crate::` (or `super::` from a
# submodule), comments left out; exits 1 and names the circle when there is
# one. The crate root (lib.rs: re-exports and the public config types) is left
# out: every module may use it.
#
#   scripts/import-graph.sh [SRC]     # default: runtime/src
set -euo pipefail
src=${1:-runtime/src}
src=${src%/}

# A file's module path: runtime/src/openai/task.rs -> openai::task.
module_of() {
  local rel=${1#"$src"/}
  rel=${rel%.rs}
  rel=${rel%/mod}
  echo "${rel//\//::}"
}

mapfile -t files < <(find "$src" -name '*.rs' ! -path "$src/lib.rs" ! -path "$src/main.rs" | sort)
declare -A is_module=()
for f in "${files[@]}"; do is_module[$(module_of "$f")]=1; done

# The module a path names: its longest prefix that is a module.
resolve() {
  local path=$1 best='' prefix=''
  IFS=':' read -ra parts <<<"${path//::/:}"
  for p in "${parts[@]}"; do
    prefix=${prefix:+$prefix::}$p
    [[ -n ${is_module[$prefix]:-} ]] && best=$prefix
  done
  echo "$best"
}

edges=$(
  for f in "${files[@]}"; do
    from=$(module_of "$f")
    parent=${from%::*}
    [[ $parent == "$from" ]] && parent=''
    # Code only, one line (grouped `use crate::{a, b::c}` span lines).
    code=$(grep -v '^[[:space:]]*//' "$f" | tr '\n' ' ')
    {
      grep -oE 'crate::(\{[^}]*\}|[a-z_][a-z0-9_]*(::[a-z_][a-z0-9_]*)*)' <<<"$code" |
        sed -E 's/^crate:://; s/^\{//; s/\}$//' | tr ',' '\n' | sed -E 's/[{ ]//g'
      if [[ -n $parent ]]; then
        grep -oE 'super::[a-z_][a-z0-9_]*' <<<"$code" | sed -E "s/^super::/$parent::/" || true
        grep -qE 'super::(\{|[A-Z*])' <<<"$code" && echo "$parent"
      fi
    } | while read -r path; do
      [[ -z $path ]] && continue
      to=$(resolve "$path")
      [[ -n $to && $to != "$from" ]] && echo "$from -> $to"
    done || true
  done | sort -u
)
echo "$edges"
if ! out=$(sed 's/ -> / /' <<<"$edges" | tsort 2>&1 >/dev/null) || [[ -n $out ]]; then
  echo "import circle in $src:" >&2
  echo "$out" >&2
  exit 1
fi
echo "no import circle in $src"
