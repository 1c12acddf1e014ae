#!/usr/bin/env bash
# The Compose specification's JSON schema, as compose-go (the parser docker compose uses) ships it,
# from the Go module proxy into a cache outside the repository; prints its path.
set -euo pipefail
VERSION="${COMPOSE_GO_VERSION:-v2.4.9}"
CACHE="${BATON_CACHE:-$HOME/.cache/baton}/compose-spec"
OUT="$CACHE/compose-spec-$VERSION.json"
if [ -s "$OUT" ]; then echo "$OUT"; exit 0; fi
mkdir -p "$CACHE"
dir=$("$(dirname "$0")/go-module-dir.sh" "github.com/compose-spec/compose-go/v2@$VERSION")
cp "$dir/schema/compose-spec.json" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "$OUT"
