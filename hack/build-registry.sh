#!/usr/bin/env bash
# Builds the Schema Registry the tests register Avro and JSON schemas in: AxonOps Schema
# Registry (Go module, Confluent's REST API, in-memory storage), into a cache keyed by version.
# Prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

version="$(awk '/axonops\/axonops-schema-registry / {print $NF}' "$here/registry/go.mod")"
out="$REGISTRY_CACHE/schema-registry-$version"
if [ -x "$out" ]; then
  echo "[$(date +%H:%M:%S)] schema registry $version: cached"
else
  echo "[$(date +%H:%M:%S)] building schema registry $version..."
  mkdir -p "$REGISTRY_CACHE"
  (cd "$here/registry" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -ldflags "-s -w" \
    -o "$out.tmp" github.com/axonops/axonops-schema-registry/cmd/schema-registry)
  mv "$out.tmp" "$out"
fi
echo "$out"
