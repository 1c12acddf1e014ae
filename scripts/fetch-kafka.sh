#!/usr/bin/env bash
# Fetch Apache Kafka (broker + tools) jars from Maven Central with mvn into a cache
# outside the repository. Idempotent: a complete cache is reused.
set -euo pipefail
KAFKA_VERSION="${KAFKA_VERSION:-4.2.0}"
SCALA_VERSION="${SCALA_VERSION:-2.13}"
CACHE="${BATON_CACHE:-$HOME/.cache/baton}/kafka-${KAFKA_VERSION}"
# Bump when the dependency list below changes, so stale caches are refreshed.
HARNESS_REV=2
if [ -f "$CACHE/.complete-$HARNESS_REV" ]; then echo "$CACHE"; exit 0; fi
command -v mvn >/dev/null || { echo "mvn not found: install Maven (apt-get install maven)" >&2; exit 1; }
command -v java >/dev/null || { echo "java not found: install a JDK 17 (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
mkdir -p "$CACHE"
cat > "$CACHE/pom.xml" <<POM
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.baton.harness</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_${SCALA_VERSION}</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
POM
rm -rf "$CACHE/libs"
( cd "$CACHE" && mvn -q -B dependency:copy-dependencies -DoutputDirectory="$CACHE/libs" -DincludeScope=runtime >&2 )
touch "$CACHE/.complete-$HARNESS_REV"
echo "$CACHE"
