#!/usr/bin/env bash
# Builds the Prometheus server from the Prometheus Go module pinned in hack/promtool/go.mod (the
# one version promtool is built from too), into the cache, keyed by that version and the build
# tags (a bump rebuilds, anything else reuses it). Prints the binary's path last.
#
# Tags: remove_all_sd drops every optional service discovery (AWS, Azure, GCE, Consul, ...; file
# and http always stay) and enable_kubernetes_sd puts Kubernetes's back, for kubernetes_sd_configs
# (each plugins/plugin_<sd>.go is `!remove_all_sd || enable_<sd>_sd`). Unlike promtool, which
# imports the Kubernetes SD itself, the server without enable_kubernetes_sd rejects
# kubernetes_sd_configs ("field kubernetes_sd_configs not found"). Parts of the AWS, Azure and
# Google SDKs stay whatever the tags: remote write's SigV4, Azure AD and Google IAM auth use them.
# Without builtinassets: that tag embeds the React UI, which npm builds and the Go module does not
# ship, so the UI's pages answer 500; the HTTP API (/api/v1/...), /metrics and /-/ready work.
# Measured cold (empty module and build caches, 2 cores shared with a test run): 3m18s, 281 CPU-s,
# 1.3 GB peak, 2.3 GB of caches (1.1 GB modules, 1.2 GB build), a 73 MB binary; with the caches
# that build-promtool.sh leaves: 2m40s, 218 CPU-s. Cached: 0.02 s.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

version="$(awk '$1 == "require" && $2 == "github.com/prometheus/prometheus" {print $3}' \
  "$here/promtool/go.mod")"
tags=remove_all_sd,enable_kubernetes_sd
# The server's own version (its --version, prometheus_build_info and /api/v1/status/buildinfo):
# Prometheus 3.y.z is the module's v0.3yy.z.
minor_patch="${version#v0.3}"
server_version="3.$((10#${minor_patch%%.*})).${minor_patch#*.}"
cache="$CACHE_ROOT/prometheus"
bin="$cache/prometheus-$version-${tags//,/+}"
mkdir -p "$cache"
if [ -x "$bin" ]; then
  echo "[$(date +%H:%M:%S)] prometheus $version: cached" >&2
else
  echo "[$(date +%H:%M:%S)] building prometheus $version ($tags)..." >&2
  (cd "$here/promtool" && GOFLAGS="-buildvcs=false -mod=mod" go build -trimpath -tags "$tags" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$server_version" \
    -o "$bin.tmp" github.com/prometheus/prometheus/cmd/prometheus)
  mv "$bin.tmp" "$bin"
  echo "[$(date +%H:%M:%S)] built prometheus $version" >&2
fi
ln -sf "$(basename "$bin")" "$cache/prometheus"
echo "$bin"
