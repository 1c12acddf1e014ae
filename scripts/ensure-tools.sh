#!/usr/bin/env bash
# Make sure the machine has what `make test` needs beyond Python: a JDK 17+ and Maven (for the real
# Kafka broker), Go (to build FerretDB, the MongoDB wire-protocol test server) and Chromium (the approval page's
# browser test: Playwright drives Debian's build, never one `playwright install` downloads) and promtool (Debian's
# `prometheus` package: the alert rules' checks and unit tests). Installs missing ones from Debian's packages when
# running as root. With arguments (java, mvn, go, chromium, promtool) it checks only those.
set -euo pipefail
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(java mvn go chromium promtool)
missing=()
lean=()  # installed without recommends: chromium's pull in a desktop's worth of packages
for tool in "${wanted[@]}"; do
  case "$tool" in
    java) command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless) ;;
    mvn) command -v mvn >/dev/null 2>&1 || missing+=(maven) ;;
    go) command -v go >/dev/null 2>&1 || missing+=(golang-go) ;;
    chromium) command -v chromium >/dev/null 2>&1 || lean+=(chromium) ;;
    promtool) command -v promtool >/dev/null 2>&1 || lean+=(prometheus) ;;
    *) echo "ensure-tools: unknown tool '$tool' (known: java mvn go chromium promtool)" >&2; exit 2 ;;
  esac
done
if [ ${#missing[@]} -eq 0 ] && [ ${#lean[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${missing[*]} ${lean[*]}; install them (e.g. sudo apt-get install ${missing[*]} ${lean[*]}) and re-run" >&2
  exit 1
fi
echo "installing ${missing[*]} ${lean[*]} from Debian's packages" >&2
apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ${#lean[@]} -gt 0 ]; then
  # Only the binaries are wanted: no package may start a service (the prometheus package would start a server).
  policy=/usr/sbin/policy-rc.d
  own_policy=false
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=true; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
  if $own_policy; then rm -f "$policy"; fi
fi
