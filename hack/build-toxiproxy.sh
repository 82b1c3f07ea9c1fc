#!/usr/bin/env bash
# Builds Toxiproxy (Go module, pinned in hack/toxiproxy/go.mod), the fault-injecting TCP proxy of
# the network fault scenarios, into a cache keyed by version. Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

version="$(awk '/Shopify\/toxiproxy\/v2 / {print $NF}' "$here/toxiproxy/go.mod")"
out="$TOXIPROXY_CACHE/toxiproxy-server-$version"
if [ -x "$out" ]; then
  echo "[$(date +%H:%M:%S)] toxiproxy $version: cached"
else
  echo "[$(date +%H:%M:%S)] building toxiproxy $version..."
  mkdir -p "$TOXIPROXY_CACHE"
  (cd "$here/toxiproxy" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -ldflags "-s -w" \
    -o "$out.tmp" github.com/Shopify/toxiproxy/v2/cmd/server)
  mv "$out.tmp" "$out"
fi
echo "$out"
