#!/usr/bin/env bash
# Rebuild contracts/build/*.json from contracts/*.sol with the pinned solcjs.
# Needs `npm ci` (or `npm install`) at the repository root first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules/solc ]; then
  echo "node_modules/solc is missing: run 'npm ci' at the repository root first" >&2
  exit 1
fi
rm -rf contracts/build
node contracts/build.mjs
