#!/usr/bin/env bash
# Vendor the console's one third-party library (uPlot, pinned in console/package-lock.json)
# into console/static/vendor/ (git-ignored). Skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."
vendor=console/static/vendor
if [ -f "$vendor/uPlot.esm.js" ] && [ -f "$vendor/uPlot.min.css" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "==> npm not found: the console's health charts (uPlot) will be unavailable"
  exit 0
fi
echo "==> vendoring uPlot for the console"
(cd console && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
mkdir -p "$vendor"
cp console/node_modules/uplot/dist/uPlot.esm.js console/node_modules/uplot/dist/uPlot.min.css "$vendor/"
