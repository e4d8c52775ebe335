#!/usr/bin/env bash
# Builds stripped release binaries of `tributary` for Linux x86-64 and aarch64 into dist/:
#   dist/tributary-<version>-<target>.tar.xz  (the binary, README.md, LICENSE if present)
#   dist/tributary_cdc-<version>-py3-none-<platform>.whl  (with WHEEL=1: the binary as a Python wheel)
#
# Usage: scripts/build-release.sh [TARGET ...]   (default: x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
#
# A target other than the host's needs its Rust standard library (`rustup target add TARGET`)
# and a linker (Debian: `apt install gcc-aarch64-linux-gnu`; used through
# CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER). Without arguments, a target whose toolchain is
# missing is reported and skipped; a target named on the command line that cannot be built, or
# any failed build, makes the script exit 1.
# Time: a cold release build takes about 21 minutes on 2 cores (most of it compiling delta-rs
# and DataFusion); later builds reuse target/.
set -uo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
targets=("$@")
named=1
if [ ${#targets[@]} -eq 0 ]; then
  targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
  named=0
fi
host=$(rustc -vV | sed -n 's/^host: //p')
mkdir -p dist
failed=0
for target in "${targets[@]}"; do
  echo "== $target"
  if [ "$target" != "$host" ]; then
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
      echo "skipped $target: its standard library is not installed (rustup target add $target)" >&2
      [ $named = 1 ] && failed=1
      continue
    fi
    if [ "$target" = aarch64-unknown-linux-gnu ]; then
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}
      if ! command -v "$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER" >/dev/null; then
        echo "skipped $target: no linker $CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER (apt install gcc-aarch64-linux-gnu)" >&2
        [ $named = 1 ] && failed=1
        continue
      fi
      export CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc}
    fi
  fi
  if ! cargo build --locked --release --target "$target"; then
    echo "failed: $target" >&2
    failed=1
    continue
  fi
  bin="target/$target/release/tributary"
  # The release profile strips symbols already (Cargo.toml); strip again for older toolchains.
  strip_tool=strip
  [ "$target" = aarch64-unknown-linux-gnu ] && [ "$host" != "$target" ] && strip_tool=aarch64-linux-gnu-strip
  command -v "$strip_tool" >/dev/null && "$strip_tool" "$bin" 2>/dev/null || true
  stage=$(mktemp -d)
  top="tributary-$version-$target"
  mkdir "$stage/$top"
  cp "$bin" README.md "$stage/$top"/
  [ -f LICENSE ] && cp LICENSE "$stage/$top"/
  tar -C "$stage" -cJf "dist/$top.tar.xz" "$top"
  rm -rf "$stage"
  ls -l "$bin" "dist/tributary-$version-$target.tar.xz"
  if [ "${WHEEL:-0}" = 1 ]; then
    maturin build --release --locked --target "$target" --out dist || failed=1
  fi
done
exit $failed
