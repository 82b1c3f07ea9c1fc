#!/usr/bin/env bash
# Builds hack/argocd-health, the harness that runs resource_customizations/*/*/health.lua in
# gopher-lua the way Argo CD does, into the cache, keyed by a hash of its sources (an edit
# rebuilds, anything else reuses it). Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

src="$here/argocd-health"
key="$(cd "$src" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)"
cache="$CACHE_ROOT/argocd-health"
bin="$cache/argocd-health-$key"
mkdir -p "$cache"
# One build at a time (make test starts them in the background; a test waits for its tool).
exec 9>"$cache/.build.lock"
flock 9
if [ -x "$bin" ]; then
  echo "[$(date +%H:%M:%S)] argocd-health $key: cached" >&2
else
  echo "[$(date +%H:%M:%S)] building argocd-health $key..." >&2
  (cd "$src" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -ldflags "-s -w" -o "$bin.tmp" .)
  mv "$bin.tmp" "$bin"
fi
ln -sf "$(basename "$bin")" "$cache/argocd-health"
echo "$bin"
