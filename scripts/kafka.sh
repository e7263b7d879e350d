#!/usr/bin/env bash
# Apache Kafka (KRaft), the broker the log tests run against (GATHERLY_TEST_LOG_BACKENDS=...,kafka): its jars and
# their runtime dependencies fetched from Maven Central with Maven (deploy/kafka/pom.xml; cached in ~/.m2) into
# ~/.cache/gatherly/kafka-<version>/libs. Run a broker with
#   java -cp "$HOME/.cache/gatherly/kafka-<version>/libs/*" kafka.Kafka server.properties
# after formatting its storage with kafka.tools.StorageTool (the tests do both: kernel/tests/kafka_broker.py).
# Installs Java 17 and Maven from Debian when missing. Safe to run again. Prints the jar directory.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

POM=deploy/kafka/pom.xml
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
DIR="${GATHERLY_KAFKA_HOME:-$HOME/.cache/gatherly/kafka-$VERSION}"

if [ -f "$DIR/libs/kafka_2.13-$VERSION.jar" ] && [ -f "$DIR/complete" ]; then
  echo "$DIR/libs"
  exit 0
fi

if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "== installing Java 17 and Maven" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
fi

echo "== fetching Kafka $VERSION and its dependencies from Maven Central (a minute the first time)" >&2
rm -rf "$DIR"
mkdir -p "$DIR"
mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$DIR/libs" >&2
touch "$DIR/complete"  # only a finished copy counts: an interrupted one is fetched again
echo "$DIR/libs"
