#!/usr/bin/env bash
# Builds promtool, Prometheus's rule checker and rule unit-test runner, from the Prometheus Go
# module pinned in hack/promtool/go.mod, into the cache, keyed by that version (a bump rebuilds,
# anything else reuses it). tests/monitoring runs `promtool check rules` and `promtool test
# rules` with it over manifests/monitoring's PrometheusRule. Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

version="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' \
  "$here/promtool/go.mod")"
# Without Prometheus's optional service discoveries (the cloud SDKs; file, http and Kubernetes
# stay): rule checks and rule tests never use them. Measured cold (empty module and build caches,
# 2 cores shared with a test run): 3m15s, 235 CPU-s, 1.0 GB peak, 1.8 GB of caches; with every
# service discovery 6m29s, 537 CPU-s, 3.4 GB peak, 3.6 GB of caches.
tags=remove_all_sd
cache="$CACHE_ROOT/promtool"
bin="$cache/promtool-$version-$tags"
mkdir -p "$cache"
# One build at a time (make test starts them in the background; a test waits for its tool).
exec 9>"$cache/.build.lock"
flock 9
if [ -x "$bin" ]; then
  echo "[$(date +%H:%M:%S)] promtool $version: cached" >&2
else
  echo "[$(date +%H:%M:%S)] building promtool $version..." >&2
  (cd "$here/promtool" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -tags "$tags" \
    -ldflags "-s -w" -o "$bin.tmp" github.com/prometheus/prometheus/cmd/promtool)
  mv "$bin.tmp" "$bin"
  echo "[$(date +%H:%M:%S)] built promtool $version" >&2
fi
ln -sf "$(basename "$bin")" "$cache/promtool"
echo "$bin"
