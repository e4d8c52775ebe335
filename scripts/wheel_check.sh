#!/usr/bin/env bash
# The one-step install, checked: builds the Python wheel that ships the `tributary` binary
# (maturin, `bindings = "bin"`), installs it in a fresh virtual environment, and runs
# `tributary demo` there twice (the second run starts clean and prints the same summaries).
#
# Usage: scripts/wheel_check.sh [--release]
#   default: the dev profile (reuses the debug build of `cargo test`; what .ci/run does)
#   --release: the release profile, as a published wheel (a cold build takes about 21 minutes)
# Needs: python3 with venv and pip; maturin (installed into a build venv if missing, from PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=(--profile dev)
[ "${1:-}" = --release ] && profile=(--release)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! command -v maturin >/dev/null; then
  python3 -m venv "$work/build"
  "$work/build/bin/pip" install --quiet --disable-pip-version-check 'maturin>=1.5,<2'
  export PATH="$work/build/bin:$PATH"
fi
maturin build --locked "${profile[@]}" --out "$work/wheels"
wheel=$(ls "$work"/wheels/tributary_cdc-*.whl)
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --no-index "$wheel"
# The console entry point is on the venv's PATH, not cargo's target folder.
export PATH="$work/venv/bin:$PATH"
hash -r
[ "$(command -v tributary)" = "$work/venv/bin/tributary" ] || { echo "tributary is not the wheel's" >&2; exit 1; }
tributary --version
cd "$work"
tributary demo > first.txt
tributary demo > second.txt
grep -q "starting clean" second.txt || { echo "the second demo did not start clean" >&2; exit 1; }
for f in first.txt second.txt; do
  grep -q "applied as run 2" "$f" || { echo "$f: day 2 not applied" >&2; cat "$f"; exit 1; }
done
echo "wheel check: PASS (tributary from the wheel ran the demo twice)"
