#!/usr/bin/env bash
# Prints the image tag: the first 12 hex of a sha256 over exactly the files the Dockerfile
# copies (names and contents). Tracked files plus untracked, non-ignored ones, so uncommitted
# edits change the tag; a tracked file deleted in the work tree is left out, as the build
# would leave it out. Fast: no build, no network.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# core/ reaches the image as a wheel in the wheelhouse (or is built by a plain docker build).
paths=(Dockerfile pyproject.toml README.md ingest_worker operator core)
{
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- "${paths[@]}"
  else  # a source tarball: every file under the same paths
    find "${paths[@]}" -type f -print0
  fi
} | tr '\0' '\n' | grep -v -e '/__pycache__/' -e '\.pyc$' | LC_ALL=C sort -u |
  while IFS= read -r f; do [ -f "$f" ] && printf '%s\n' "$f"; done |
  tr '\n' '\0' | xargs -0 -r sha256sum | sha256sum | cut -c1-12
