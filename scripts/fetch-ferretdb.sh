#!/usr/bin/env bash
# Build FerretDB (a MongoDB wire-protocol server on SQLite) from the Go module proxy into a cache
# outside the repository; prints the binary's path. Idempotent: a built binary is reused.
set -euo pipefail
VERSION="${FERRETDB_VERSION:-v1.24.0}"
CACHE="${BATON_CACHE:-$HOME/.cache/baton}/ferretdb"
BIN="$CACHE/ferretdb-$VERSION"
if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then echo "$BIN"; exit 0; fi
mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# `go install` asks the proxy for FerretDB's version list, which it refuses: build from the exact version.
src=$("$(dirname "$0")/go-module-dir.sh" "github.com/FerretDB/FerretDB@$VERSION")
cp -r "$src" "$work/src" && chmod -R u+w "$work/src"
# FerretDB embeds its version from this file (its build normally writes it with git describe).
echo "$VERSION" > "$work/src/build/version/version.txt"
( cd "$work/src" && go build -trimpath -o "$BIN.tmp" ./cmd/ferretdb >&2 )
mv "$BIN.tmp" "$BIN"
echo "$BIN"
