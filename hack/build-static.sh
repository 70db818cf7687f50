#!/usr/bin/env bash
# Builds otau-operator as a static binary (glibc, crt-static) for the container image
# (docs/architecture.md §9.11): the Dockerfile's builder stage runs this, and tests/deploy/image.rs runs
# it to check that the binary it copies is static and starts.
#
#   hack/build-static.sh [PROFILE [OUT]]
#
# PROFILE  cargo profile, default `release` (the image); `dev` builds faster for tests.
# OUT      copy the binary there without its debug info (the Dockerfile uses
#          /out/otau-operator; the release build's debug info is ~165 MB of its ~200 MB).
#
# The build has its own target folder, <cargo target dir>/static, so its RUSTFLAGS do not
# invalidate the normal build. Prints the binary's path as the last line of stdout.
set -euo pipefail

profile="${1:-release}"
out="${2:-}"
triple="x86_64-unknown-linux-gnu"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}/static"

case "$profile" in
  dev | test) folder="debug" ;;
  *) folder="$profile" ;;
esac

export RUSTFLAGS="-C target-feature=+crt-static${RUSTFLAGS:+ $RUSTFLAGS}"
cargo build --manifest-path "$root/Cargo.toml" --locked --profile "$profile" \
  --target "$triple" --target-dir "$target_dir" --bin otau-operator >&2

binary="$target_dir/$triple/$folder/otau-operator"
# A static executable has no program interpreter: `file` says "statically linked" (or
# "static-pie linked"), never "dynamically linked".
kind="$(file -b "$binary")"
case "$kind" in
  *"dynamically linked"* | *"interpreter"*)
    echo "error: $binary is not static: $kind" >&2
    exit 1
    ;;
esac
if [ -n "$out" ]; then
  mkdir -p "$(dirname "$out")"
  strip --strip-debug -o "$out" "$binary"
  binary="$out"
fi
echo "$binary"
