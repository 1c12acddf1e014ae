#!/usr/bin/env bash
# Download one exact Go module version from the module proxy; print its directory in the module cache.
# (`go install pkg@version` also asks the proxy for the module's version list, which it refuses for some.)
set -euo pipefail
command -v go >/dev/null || { echo "go not found: install Go (apt-get install golang-go)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" && go mod init baton-module-fetch >/dev/null 2>&1
go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'
