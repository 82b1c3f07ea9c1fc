#!/usr/bin/env bash
# Builds the object-store protocol servers the tests read from: fake-gcs-server (Go module) and
# Azurite (npm), into a cache keyed by version. S3 is moto's server, from the virtualenv.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

gcs_version="$(awk '/fsouza\/fake-gcs-server/ {print $NF}' "$here/gcs/go.mod")"
mkdir -p "$STORES_CACHE/bin"
if [ -x "$STORES_CACHE/bin/fake-gcs-server-$gcs_version" ]; then
  echo "[$(date +%H:%M:%S)] fake-gcs-server $gcs_version: cached"
else
  echo "[$(date +%H:%M:%S)] building fake-gcs-server $gcs_version..."
  (cd "$here/gcs" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -ldflags "-s -w" \
    -o "$STORES_CACHE/bin/fake-gcs-server-$gcs_version.tmp" github.com/fsouza/fake-gcs-server)
  mv "$STORES_CACHE/bin/fake-gcs-server-$gcs_version.tmp" "$STORES_CACHE/bin/fake-gcs-server-$gcs_version"
fi
ln -sf "fake-gcs-server-$gcs_version" "$STORES_CACHE/bin/fake-gcs-server"

if [ -f "$STORES_CACHE/azurite-$AZURITE_VERSION/.complete" ]; then
  echo "[$(date +%H:%M:%S)] azurite $AZURITE_VERSION: cached"
else
  echo "[$(date +%H:%M:%S)] installing azurite $AZURITE_VERSION from npm..."
  rm -rf "$STORES_CACHE/azurite-$AZURITE_VERSION"
  mkdir -p "$STORES_CACHE/azurite-$AZURITE_VERSION"
  npm install --silent --no-audit --no-fund --prefix "$STORES_CACHE/azurite-$AZURITE_VERSION" "azurite@$AZURITE_VERSION"
  touch "$STORES_CACHE/azurite-$AZURITE_VERSION/.complete"
fi
