#!/usr/bin/env bash
# Builds helm (Go module helm.sh/helm/v3), to lint, render and install charts/csv-kafka in the
# tests, into a cache keyed by version. Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

version="$(awk '/helm.sh\/helm\/v3 / {print $NF}' "$here/helm/go.mod")"
out="$HELM_CACHE/helm-$version"
mkdir -p "$HELM_CACHE"
# One build at a time (make test starts them in the background; a test waits for its tool).
exec 9>"$HELM_CACHE/.build.lock"
flock 9
if [ -x "$out" ]; then
  echo "[$(date +%H:%M:%S)] helm $version: cached"
else
  echo "[$(date +%H:%M:%S)] building helm $version..."
  (cd "$here/helm" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -ldflags "-s -w" \
    -o "$out.tmp" helm.sh/helm/v3/cmd/helm)
  mv "$out.tmp" "$out"
fi
echo "$out"
