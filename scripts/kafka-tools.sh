#!/usr/bin/env bash
# Kafka's command-line tools (the kafka-tools jar: ProducerPerformance and ConsumerPerformance, which
# kafka-producer-perf-test.sh / kafka-consumer-perf-test.sh run) and their runtime dependencies, fetched from Maven
# Central with Maven (deploy/kafka/tools/pom.xml, the Kafka version of scripts/kafka.sh) into
# ~/.cache/gatherly/tools-kafka-<version>/libs (not kafka-*: kafka_broker.kafka_libs() takes the newest
# ~/.cache/gatherly/kafka-*/complete for the broker's jars). Used by bench/kafka_throughput.py. Safe to run again.
# Prints the jar directory.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/kafka.sh >/dev/null  # Java and Maven, and the broker the tools are measured against
POM=deploy/kafka/tools/pom.xml
VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
BROKER="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)"
if [ "$VERSION" != "$BROKER" ]; then
  echo "deploy/kafka/tools/pom.xml has Kafka $VERSION but deploy/kafka/pom.xml $BROKER: keep them equal" >&2
  exit 1
fi
DIR="${GATHERLY_KAFKA_TOOLS_HOME:-$HOME/.cache/gatherly/tools-kafka-$VERSION}"

if [ -f "$DIR/libs/kafka-tools-$VERSION.jar" ] && [ -f "$DIR/complete" ]; then
  echo "$DIR/libs"
  exit 0
fi

echo "== fetching Kafka's tools $VERSION and their dependencies from Maven Central" >&2
rm -rf "$DIR"
mkdir -p "$DIR"
mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$DIR/libs" >&2
touch "$DIR/complete"  # only a finished copy counts: an interrupted one is fetched again
echo "$DIR/libs"
