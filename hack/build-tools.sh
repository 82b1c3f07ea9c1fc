#!/usr/bin/env bash
# Builds the tools only the tests use (helm, promtool, the Argo CD health harness), one after the
# other. `make test` starts it in the background, so a fresh machine compiles them while the
# first tests run; a test that needs a tool waits for its build (each build script holds a lock)
# or finds it cached.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for tool in helm promtool argocd-health; do
  bash "$here/build-$tool.sh" || echo "[$(date +%H:%M:%S)] building $tool failed" >&2
done
