#!/usr/bin/env bash
# Builds the worker's compiled core (core/: Rust, PyO3, librdkafka linked statically) into a
# wheel, cached by the hash of its sources, and prints the wheel's path. With a virtualenv as
# argument, also installs the wheel into it when it is not the one installed there.
#
#   bash hack/build-core.sh            # -> ~/.cache/csvkafka/core/wheels/<hash>/csvkafka_core-*.whl
#   bash hack/build-core.sh .venv      # and make .venv use it
#
# Cold: about 3 minutes on 2 cores (librdkafka, zstd and zlib are compiled from source);
# the cargo target directory is kept, so a change to core/src rebuilds in seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
cache="${CSVKAFKA_CACHE:-$HOME/.cache/csvkafka}/core"
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

hash="$(cd core && find Cargo.toml Cargo.lock pyproject.toml csvkafka_core.pyi src -type f -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
out="$cache/wheels/$hash"

if ! ls "$out"/*.whl >/dev/null 2>&1; then
  exec 9>"$cache.lock" 2>/dev/null || { mkdir -p "$(dirname "$cache")"; exec 9>"$cache.lock"; }
  flock 9
  if ! ls "$out"/*.whl >/dev/null 2>&1; then
    command -v cargo >/dev/null || [ -x "$HOME/.cargo/bin/cargo" ] ||
      { echo "build-core: cargo not found (install Rust with rustup)" >&2; exit 1; }
    export PATH="$HOME/.cargo/bin:$PATH"
    py="$repo/.venv/bin/python"
    [ -x "$py" ] || py=python3
    "$py" -m maturin --version >/dev/null 2>&1 || "$py" -m pip install -q "maturin>=1.7,<2"
    started=$SECONDS
    log "building the compiled core (sources $hash)..."
    rm -rf "$out.tmp" && mkdir -p "$out.tmp"
    # --compatibility linux: the wheel runs on this Debian and on the image's (same release);
    # OpenSSL is the system's (libssl3), everything else is inside the extension.
    CARGO_TARGET_DIR="$cache/target" "$py" -m maturin build --release --quiet \
      --manifest-path core/Cargo.toml --compatibility linux --interpreter "$py" \
      --out "$out.tmp" >&2
    mv "$out.tmp" "$out"
    # Older wheels: keep the newest three.
    ls -1dt "$cache"/wheels/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
    log "built $(basename "$out"/*.whl) in $((SECONDS - started)) s"
  fi
fi
wheel="$(ls "$out"/*.whl | head -n1)"

if [ $# -ge 1 ]; then
  venv="$1"
  if [ ! -f "$venv/.core-$hash" ]; then
    "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel" >&2
    rm -f "$venv"/.core-*
    touch "$venv/.core-$hash"
  fi
fi
echo "$wheel"
