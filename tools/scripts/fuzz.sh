#!/usr/bin/env bash
# Runs every Go fuzz target in the workspace briefly, one target per `go test`
# invocation (go test -fuzz accepts only one package and one target).
#
# Usage: tools/scripts/fuzz.sh [fuzztime]     (default: $FUZZTIME or 10s)
# Run from the workspace root (the Taskfile does). Targets are discovered by
# grepping *_test.go files for `func FuzzXxx(`, so new targets are picked up
# automatically. Modules outside go.work (tools/) are skipped.
set -euo pipefail

fuzztime="${1:-${FUZZTIME:-10s}}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# Workspace module directories, from go.work (no jq needed).
mapfile -t mods < <(go work edit -json | sed -n 's/.*"DiskPath": *"\(.*\)".*/\1/p')

targets=()
for m in "${mods[@]}"; do
  [ -d "$m" ] || continue
  while IFS= read -r f; do
    dir="./$(dirname "${f#./}")"
    while IFS= read -r name; do
      targets+=("$dir $name")
    done < <(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*\*testing\.F).*/\1/p' "$f")
  done < <(grep -rl --include='*_test.go' '^func Fuzz' "$m" 2>/dev/null | sort)
done

if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no fuzz targets found"
  exit 0
fi

echo "fuzz: ${#targets[@]} target(s), -fuzztime=${fuzztime} each"
failed=()
for t in "${targets[@]}"; do
  read -r dir name <<<"$t"
  echo "=== fuzz ${dir} ${name}"
  start=$SECONDS
  if go test -run='^$' -fuzz="^${name}\$" -fuzztime="${fuzztime}" "${dir}"; then
    echo "--- ok   ${dir} ${name} ($((SECONDS - start))s)"
  else
    echo "--- FAIL ${dir} ${name} ($((SECONDS - start))s)"
    failed+=("${dir} ${name}")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed (crashers are saved under <pkg>/testdata/fuzz/):"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) passed"
