#!/usr/bin/env bash
# Resolves Apache Kafka's jars from Maven Central into a cache keyed by version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

libs="$KAFKA_CACHE/libs"
if [ -f "$libs/.complete" ]; then
  echo "[$(date +%H:%M:%S)] kafka $KAFKA_VERSION: cached"
  exit 0
fi
echo "[$(date +%H:%M:%S)] resolving Apache Kafka $KAFKA_VERSION jars from Maven Central..."
rm -rf "$libs"
mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
  dependency:copy-dependencies -DoutputDirectory="$libs" -DincludeScope=runtime
touch "$libs/.complete"
echo "[$(date +%H:%M:%S)] kafka jars ready: $(ls "$libs" | wc -l) files"
