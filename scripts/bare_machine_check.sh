#!/usr/bin/env bash
# The two commands on a bare machine. A fresh clone, a "system" python3 that holds unrelated packages
# (a throw-away venv made from the machine's python3, standing in for a user's interpreter), no uv
# anywhere on PATH, and an environment holding only HOME, PATH, LANG and the machine's network settings
# (proxies, CA certificates, pip's configuration): no UV_*, VIRTUAL_ENV, PYTHONPATH or AIRFLOW_* from
# the caller. `make demo` must pass there, and pass again when run a second time,
# and leave that interpreter exactly as it was: its `pip freeze --all` and its bin/ are compared before
# and after. It clones what is committed (HEAD by default), not the work tree.
#
#   BARE_CHECK_TEST=1         also run `make test` after the demo (and print its time)
#   BARE_CHECK_COMMIT=<rev>   check that commit instead of HEAD, e.g. to see an older Makefile fail
#   BARE_CHECK_KEEP=1         keep the temporary folder (the clone and the interpreter) for a look
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
rev=$(git -C "$repo" rev-parse --verify "${BARE_CHECK_COMMIT:-HEAD}^{commit}")
machine_python=$(command -v python3)

work=$(mktemp -d "${TMPDIR:-/tmp}/autocalls-bare-machine.XXXXXX")
if [[ "${BARE_CHECK_KEEP:-}" == 1 ]]; then
  echo "keeping $work"
else
  trap 'rm -rf "$work"' EXIT
fi
system_python="$work/system-python"
clone="$work/clone"

echo "--- a throw-away 'system' python3 with unrelated packages, from $machine_python"
"$machine_python" -m venv "$system_python"
"$system_python/bin/python" -m pip install -q --disable-pip-version-check six idna

# PATH: that interpreter first, then the machine's PATH without any folder that holds a uv.
path="$system_python/bin"
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  [[ -n "$dir" && ! -e "$dir/uv" ]] && path="$path:$dir"
done
bare_env=(env -i "HOME=$HOME" "PATH=$path" "LANG=${LANG:-C.UTF-8}")
while IFS= read -r name; do
  bare_env+=("$name=${!name}")
done < <(compgen -e | grep -E '^(TMPDIR|TERM|CI|PIP_.*|SSL_CERT_.*|.*_CA_BUNDLE|.*_(proxy|PROXY))$' || true)

found_python=$("${bare_env[@]}" sh -c 'command -v python3')
if [[ "$found_python" != "$system_python/bin/python3" ]]; then
  echo "FAIL: python3 on the bare PATH is $found_python, not the throw-away interpreter" >&2
  exit 1
fi
if found_uv=$("${bare_env[@]}" sh -c 'command -v uv'); then
  echo "FAIL: uv is reachable on the bare PATH: $found_uv" >&2
  exit 1
fi
echo "python3 is $found_python; no uv on PATH"

snapshot() {
  "$system_python/bin/python" -m pip freeze --all --disable-pip-version-check
  echo "--- bin/"
  ls "$system_python/bin"
}
snapshot >"$work/before.txt"
echo "its packages: $(grep -v -e '^---' "$work/before.txt" | grep '==' | tr '\n' ' ')"

echo "--- a fresh clone at $(git -C "$repo" log -1 --format='%h %s' "$rev")"
git clone -q "$repo" "$clone"
git -C "$clone" checkout -q --detach "$rev"

failed=()
run() {
  local what="make $1${2:+ ($2)}" start=$SECONDS
  echo "--- $what, in the clone under the bare environment"
  if (cd "$clone" && "${bare_env[@]}" make "$1"); then
    echo "$what passed in $((SECONDS - start)) s"
  else
    echo "$what FAILED after $((SECONDS - start)) s"
    failed+=("$what")
  fi
}
run demo
((${#failed[@]})) || run demo again  # nothing left to install, and the first run's state in build/demo
if [[ "${BARE_CHECK_TEST:-}" == 1 && ${#failed[@]} -eq 0 ]]; then
  run test
fi

snapshot >"$work/after.txt"
if ! diff -u "$work/before.txt" "$work/after.txt"; then
  echo "the throw-away system python3 changed (diff above: - before, + after)"
  failed+=("system python3 left as it was")
fi

if ((${#failed[@]})); then
  printf 'Bare-machine check FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "Bare-machine check passed: the system python3 is exactly as it was"
