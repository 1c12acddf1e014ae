#!/usr/bin/env bash
# Check Grafana dashboards against Grafana's own dashboard model: the TypeScript types Grafana publishes as
# @grafana/schema (npm), with TypeScript's compiler. Each dashboard JSON must satisfy `Dashboard` as an object literal:
# every field known (a misspelt key fails), every type right, every required field there (docs/decisions/0021).
# Installs both packages once into ~/.cache/baton/grafana-model (npm registry); usage: check-grafana-dashboard.sh FILE...
set -euo pipefail
SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3
command -v npm >/dev/null 2>&1 || { echo "check-grafana-dashboard: npm (Node.js) is needed" >&2; exit 2; }
cache="${XDG_CACHE_HOME:-$HOME/.cache}/baton/grafana-model-$SCHEMA_VERSION"
if [ ! -x "$cache/node_modules/.bin/tsc" ] || [ ! -d "$cache/node_modules/@grafana/schema" ]; then
  mkdir -p "$cache"
  (cd "$cache" && npm install --no-audit --no-fund --silent --no-package-lock \
    "typescript@$TYPESCRIPT_VERSION" "@grafana/schema@$SCHEMA_VERSION" >/dev/null 2>&1) \
    || { echo "check-grafana-dashboard: npm install of @grafana/schema@$SCHEMA_VERSION failed" >&2; exit 2; }
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$cache/node_modules" "$work/node_modules"
cat >"$work/tsconfig.json" <<'JSON'
{"compilerOptions": {"strict": true, "noEmit": true, "module": "esnext", "moduleResolution": "bundler",
 "target": "es2022", "skipLibCheck": true}, "include": ["*.ts"]}
JSON
i=0
for dashboard in "$@"; do
  i=$((i + 1))
  {
    echo 'import type { Dashboard } from "@grafana/schema";'
    echo '// The model names its enums (ThresholdsMode, ...); a JSON file holds their values: check against those.'
    echo 'type Json<T> = T extends string ? `${T}` : T extends number | boolean | null | undefined ? T'
    echo '  : T extends Array<infer U> ? Array<Json<U>> : T extends object ? { [K in keyof T]: Json<T[K]> } : T;'
    echo "export const dashboard$i ="
    sed '$ s/$/ satisfies Json<Dashboard>;/' "$dashboard"
  } >"$work/dashboard$i.ts"
done
if ! (cd "$work" && node_modules/.bin/tsc -p tsconfig.json); then
  echo "check-grafana-dashboard: $* does not follow Grafana's dashboard model (@grafana/schema $SCHEMA_VERSION)" >&2
  exit 1
fi
echo "$# dashboard(s) follow Grafana's dashboard model (@grafana/schema $SCHEMA_VERSION)"
