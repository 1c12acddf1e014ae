#!/usr/bin/env bash
# The Compose specification's JSON schema, as compose-go (the parser docker compose uses) ships it,
# from the Go module proxy into a cache outside the repository; prints its path.
set -euo pipefail
VERSION="${COMPOSE_GO_VERSION:-v2.4.9}"
CACHE="${BATON_CACHE:-$HOME/.cache/baton}/compose-spec"
OUT="$CACHE/compose-spec-$VERSION.json"
if [ -s "$OUT" ]; then echo "$OUT"; exit 0; fi
command -v go >/dev/null || { echo "go not found: install Go to fetch the compose schema" >&2; exit 1; }
mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
( cd "$work" && go mod init baton-compose-schema >/dev/null 2>&1 )
dir=$(cd "$work" && go mod download -json "github.com/compose-spec/compose-go/v2@$VERSION" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
cp "$dir/schema/compose-spec.json" "$OUT.tmp" && mv "$OUT.tmp" "$OUT"
echo "$OUT"
