#!/usr/bin/env bash
# Vendor the console's third-party libraries (uPlot, xterm.js, @noble/hashes' SHA-256; pinned in console/package-lock.json)
# into console/static/vendor/ (git-ignored). Skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=console/static/vendor
if [ -f "$vendor/uPlot.esm.js" ] && [ -f "$vendor/uPlot.min.css" ] && [ -f "$vendor/xterm.mjs" ] \
    && [ -f "$vendor/xterm.css" ] && [ -f "$vendor/addon-fit.mjs" ] && [ -f "$vendor/noble-hashes/sha2.js" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "==> npm not found: the console's health charts (uPlot), shell terminal (xterm.js) and file uploads (SHA-256) will be unavailable"
  exit 0
fi
echo "==> vendoring uPlot, xterm.js and @noble/hashes for the console"
(cd console && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p "$vendor"
cp console/node_modules/uplot/dist/uPlot.esm.js console/node_modules/uplot/dist/uPlot.min.css "$vendor/"
cp console/node_modules/@xterm/xterm/lib/xterm.mjs console/node_modules/@xterm/xterm/css/xterm.css \
  console/node_modules/@xterm/addon-fit/lib/addon-fit.mjs "$vendor/"
# Incremental SHA-256 for file uploads (WebCrypto only hashes a whole buffer): the ES modules sha2.js needs.
mkdir -p "$vendor/noble-hashes"
cp console/node_modules/@noble/hashes/{sha2,_md,_u64,utils}.js console/node_modules/@noble/hashes/LICENSE \
  "$vendor/noble-hashes/"
