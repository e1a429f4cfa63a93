#!/usr/bin/env bash
# Vendor the console's third-party libraries (uPlot, xterm.js; pinned in console/package-lock.json)
# into console/static/vendor/ (git-ignored). Skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=console/static/vendor
if [ -f "$vendor/uPlot.esm.js" ] && [ -f "$vendor/uPlot.min.css" ] && [ -f "$vendor/xterm.mjs" ] \
    && [ -f "$vendor/xterm.css" ] && [ -f "$vendor/addon-fit.mjs" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "==> npm not found: the console's health charts (uPlot) and shell terminal (xterm.js) will be unavailable"
  exit 0
fi
echo "==> vendoring uPlot and xterm.js for the console"
(cd console && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p "$vendor"
cp console/node_modules/uplot/dist/uPlot.esm.js console/node_modules/uplot/dist/uPlot.min.css "$vendor/"
cp console/node_modules/@xterm/xterm/lib/xterm.mjs console/node_modules/@xterm/xterm/css/xterm.css \
  console/node_modules/@xterm/addon-fit/lib/addon-fit.mjs "$vendor/"
