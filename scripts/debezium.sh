#!/usr/bin/env bash
# Kafka Connect and Debezium's PostgreSQL connector, for the outbox connectors (tests/debezium, `gatherly stack up`):
# the Connect worker's jars (same Kafka version as scripts/kafka.sh; deploy/debezium/connect-pom.xml) into
# ~/.cache/gatherly/kafka-connect-<kafka version>/libs, and Debezium <version> with its dependencies
# (deploy/debezium/pom.xml) into ~/.cache/gatherly/debezium-<version>/plugins/debezium-connector-postgres, the
# plugin.path a worker loads it from (gatherly.kernel.kafka_connect runs one). Fetched from Maven Central with Maven
# (cached in ~/.m2). Installs Java 17 and Maven from Debian when missing. Safe to run again. Prints both directories.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/debezium/connect-pom.xml)"
DEBEZIUM_VERSION="$(sed -n 's:.*<debezium.version>\(.*\)</debezium.version>.*:\1:p' deploy/debezium/pom.xml)"
CONNECT="${GATHERLY_KAFKA_CONNECT_HOME:-$HOME/.cache/gatherly/kafka-connect-$KAFKA_VERSION}"
DEBEZIUM="${GATHERLY_DEBEZIUM_HOME:-$HOME/.cache/gatherly/debezium-$DEBEZIUM_VERSION}"

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "== installing Java 17 and Maven" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
fi

fetch() {  # fetch <pom> <directory> <what>: the pom's runtime dependencies, once; only a finished copy counts
  if [ -f "$2/complete" ]; then return; fi
  echo "== fetching $3 from Maven Central (a minute or two the first time)" >&2
  rm -rf "$2"
  mkdir -p "$2"
  mvn -q -B -f "$1" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$2" >&2
  touch "$2/complete"
}

fetch deploy/debezium/connect-pom.xml "$CONNECT/libs" "Kafka Connect $KAFKA_VERSION"
fetch deploy/debezium/pom.xml "$DEBEZIUM/plugins/debezium-connector-postgres" "Debezium $DEBEZIUM_VERSION"
echo "$CONNECT/libs"
echo "$DEBEZIUM/plugins"
