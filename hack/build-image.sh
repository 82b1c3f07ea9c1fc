#!/usr/bin/env bash
# Builds the project's Dockerfile into docker.io/library/csv-kafka:<tag> with podman, with no
# Docker engine, no registry and no network inside the build:
#   - the base is a local Debian bookworm made once with mmdebstrap (no base image to pull);
#   - the Python dependencies come from a wheelhouse built on the host (pip reaches the index
#     there; the build's network namespace is empty);
#   - the image is saved as an OCI archive that `ctr -n k8s.io images import` takes, name kept.
# The tag hashes the image's sources (hack/image-tag.sh): a built tag is never rebuilt.
# The last line on stdout is the image reference; podman's and pip's output goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

log() { echo "[$(date +%H:%M:%S)] $*"; }

tag="$(bash "$here/image-tag.sh")"
ref="docker.io/library/csv-kafka:$tag"
base_ref="localhost/csvkafka-base:bookworm"
img_cache="${IMAGE_CACHE:-$CACHE_ROOT/image}"
archive="$img_cache/csv-kafka-$tag.tar"
mkdir -p "$img_cache"
# One build at a time: concurrent runs would share the wheelhouse, the build context's
# wheelhouse/ and the archive's name. The lock goes with the process.
exec 9>"$img_cache/.build.lock"
flock 9

# podman's settings for this machine (see shared/REAL-NODE.md): crun refuses the hybrid
# cgroups, the open-files hard limit cannot be raised past 20000, and `netns = "none"` keeps
# builds offline and stops podman from making its CNI bridge.
export CONTAINERS_CONF="$img_cache/containers.conf"
cat >"$CONTAINERS_CONF.tmp" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"

if [ -s "$archive" ]; then
  log "image $ref: cached ($archive)"
  echo "$ref"
  exit 0
fi

# --- the base: Debian bookworm minbase with python3, made once -------------------------------
make_base() {
  local tar="$img_cache/base-bookworm.tar"
  if [ ! -s "$tar" ]; then
    # The Debian sources apt already uses on this host: files naming a bookworm suite
    # (third-party repositories name their own suites).
    local sources=() f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      grep -v '^[[:space:]]*#' "$f" | grep -qE '(^|[[:space:]])bookworm(-[a-z]+)?([[:space:]]|$)' \
        && sources+=("$f")
    done
    [ ${#sources[@]} -gt 0 ] || { echo "no bookworm apt sources under /etc/apt" >&2; exit 1; }
    log "making the base image with mmdebstrap (${sources[*]})..."
    # No docs, man pages or translations in a runtime image (copyright files stay).
    # merged-usr hook: /usr merged by symlinks and the empty usr-is-merged package, instead of
    # the usrmerge package, which drags in perl (47 MB) for a one-off conversion.
    mmdebstrap --variant=minbase --mode=root --format=tar --quiet \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --include=python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/lintian/*' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/*' \
      bookworm "$tar.tmp" "${sources[@]}"
    mv "$tar.tmp" "$tar"
    log "base tarball: $(du -h "$tar" | cut -f1)"
  fi
  log "importing the base as $base_ref..."
  podman import \
    --change 'ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV=LANG=C.UTF-8' \
    --change 'CMD=["/bin/bash"]' \
    "$tar" "$base_ref" >/dev/null
}

# --- the wheelhouse: the runtime dependencies as wheels, keyed by pyproject.toml ---------------
# Native wheels ship their libraries unstripped (polars alone carries 40 MB of symbol tables)
# and neither base has binutils, so they are stripped here, on the host: unpacked, stripped
# of what dynamic linking does not need, and repacked by `wheel pack`, which writes a RECORD
# with the new hashes. The `wheel` tool runs from its own wheel in the wheelhouse.
# A library whose loadable segments strip changed is put back as it was: libraries that
# auditwheel patched with patchelf (numpy's OpenBLAS) come out of strip unloadable
# ("ELF load command address/offset not page-aligned").
load_segments() { readelf -lW "$1" 2>/dev/null | grep -E '^[[:space:]]+LOAD' || true; }
strip_wheels() {
  local py="$1" dir="$2" w t so segments before after
  if ! command -v strip >/dev/null || ! command -v readelf >/dev/null; then
    log "no strip (binutils) on this host: wheels left unstripped"
    return 0
  fi
  local wheel_cli=(env PYTHONPATH="$(ls "$dir"/wheel-*-py3-none-any.whl | head -n1)" "$py" -m wheel)
  before="$(du -sk "$dir" | cut -f1)"
  for w in "$dir"/*.whl; do
    case "$w" in *-none-any.whl) continue ;; esac  # pure Python
    t="$(mktemp -d)"
    "${wheel_cli[@]}" unpack --dest "$t/src" "$w" >/dev/null
    find "$t/src" -type f \( -name '*.so' -o -name '*.so.*' \) -print0 |
      while IFS= read -r -d '' so; do
        segments="$(load_segments "$so")"
        cp -p "$so" "$so.orig"
        if [ -n "$segments" ] && strip --strip-unneeded "$so" 2>/dev/null &&
          [ "$(load_segments "$so")" = "$segments" ]; then
          rm -f "$so.orig"
        else
          mv -f "$so.orig" "$so"
          echo "strip: left as it was: ${so#"$t"/src/}" >&2
        fi
      done
    mkdir "$t/out"
    "${wheel_cli[@]}" pack --dest-dir "$t/out" "$t"/src/*/ >/dev/null
    rm -f "$w" && mv "$t"/out/*.whl "$dir/"
    rm -rf "$t"
  done
  after="$(du -sk "$dir" | cut -f1)"
  log "stripped native wheels: $((before / 1024)) MB -> $((after / 1024)) MB compressed"
}

make_wheelhouse() {
  local key wh py host_py base_py
  if [ -x "$repo/.venv/bin/pip" ]; then py="$repo/.venv/bin/python"; else py=python3; fi
  # Binary wheels are made for the host's Python: it must be the base's minor version.
  host_py="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  base_py="$(podman run --rm --network=none "$base_ref" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$host_py" != "$base_py" ]; then
    echo "the wheelhouse needs Python $base_py on the host (the base's); $py is $host_py" >&2
    exit 1
  fi
  # Bump the recipe number when the way wheels are made changes: old wheelhouses go stale.
  # (The image tag covers only the image's sources: remove the image and its archive too.)
  # The compiled core's wheel (built and cached by hack/build-core.sh) joins the dependencies.
  local core_wheel
  core_wheel="$(bash "$repo/hack/build-core.sh")"
  key="$({ echo "recipe 5 python $host_py"; cat "$repo/pyproject.toml"; basename "$(dirname "$core_wheel")"; } |
    sha256sum | cut -c1-12)"
  wh="$img_cache/wheelhouse-$key"
  if [ ! -f "$wh/.complete" ]; then
    log "building the wheelhouse (pyproject $key) with $("$py" --version)..."
    rm -rf "$wh.tmp" && mkdir -p "$wh.tmp"
    # The project's runtime dependencies as pyproject.toml lists them (no dev extras), plus its
    # build backend: the image builds the project itself from source, offline, in pip's
    # isolated build environment. The project is not built here (it would go stale, and
    # leave build/ and *.egg-info in the work tree).
    "$py" -c 'import sys, tomllib
meta = tomllib.load(open(sys.argv[1], "rb"))
print(*meta["project"]["dependencies"], *meta["build-system"]["requires"], "wheel", sep="\n")' \
      "$repo/pyproject.toml" >"$wh.tmp/requirements.txt"
    # PIP_FIND_LINKS: this host's environment may point pip at other local wheels; not here.
    PIP_FIND_LINKS= "$py" -m pip wheel --quiet --wheel-dir "$wh.tmp" \
      --find-links "$(dirname "$core_wheel")" -r "$wh.tmp/requirements.txt" >&2
    strip_wheels "$py" "$wh.tmp"
    touch "$wh.tmp/.complete"
    rm -rf "$wh" && mv "$wh.tmp" "$wh"
    # Older wheelhouses: keep the newest two.
    ls -1dt "$img_cache"/wheelhouse-*/ 2>/dev/null | grep -v '\.tmp/$' | tail -n +3 | xargs -r rm -rf
    log "wheelhouse: $(ls "$wh"/*.whl | wc -l) wheels, $(du -sh "$wh" | cut -f1)"
  fi
  # Into the build context (gitignored; .dockerignore lets it through). Hard links: no copy.
  trap 'rm -rf "$repo/wheelhouse"' EXIT
  rm -rf "$repo/wheelhouse"
  mkdir -p "$repo/wheelhouse"
  cp -l "$wh"/*.whl "$repo/wheelhouse/" 2>/dev/null || cp "$wh"/*.whl "$repo/wheelhouse/"
}

if podman image exists "$ref"; then
  log "image $ref: already in podman storage"
else
  started=$SECONDS
  podman image exists "$base_ref" || make_base
  make_wheelhouse
  log "building $ref..."
  # --layers=false: no intermediate images. A tag is built once, and a new tag means new
  # sources, so cached build steps would be the few before `COPY . /src` only.
  podman build --network=none --pull=never --layers=false \
    --build-arg BASE_IMAGE="$base_ref" \
    --tag "$ref" --file "$repo/Dockerfile" "$repo" >&2
  log "built $ref in $((SECONDS - started)) s: $(podman image inspect --format '{{.Size}}' "$ref" | numfmt --to=si)B"
fi

log "saving $archive..."
rm -f "$archive.tmp"
podman save --quiet --format oci-archive --output "$archive.tmp" "$ref"
mv "$archive.tmp" "$archive"
# Archives of other tags: keep the newest two; images whose archive is gone leave podman's
# storage too (about 300 MB each), with their build layers.
ls -1t "$img_cache"/csv-kafka-*.tar | tail -n +3 | xargs -r rm -f
podman images --noheading --format '{{.Repository}}:{{.Tag}}' --filter reference=csv-kafka |
  while read -r old; do
    [ -f "$img_cache/csv-kafka-${old##*:}.tar" ] || podman rmi "$old" >/dev/null
  done
log "saved: $(du -h "$archive" | cut -f1)"
echo "$ref"
