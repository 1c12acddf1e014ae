#!/usr/bin/env bash
# Make sure the machine has what `make test` needs beyond Python: a JDK 17+ and Maven (for the real
# Kafka broker) and Go (to build FerretDB, the MongoDB wire-protocol test server). Installs missing ones from Debian's packages when running as root.
set -euo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${missing[*]}; install them (e.g. sudo apt-get install ${missing[*]}) and re-run" >&2
  exit 1
fi
echo "installing ${missing[*]} from Debian's packages" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
