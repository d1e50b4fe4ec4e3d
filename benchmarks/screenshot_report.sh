#!/usr/bin/env bash
# Headless Chromium screenshot of a report page, to check that it renders offline (5 s of
# virtual time first, so that the clusters' animations have drawn).
# Usage: bash benchmarks/screenshot_report.sh T/report.html [out.png] [width,height]
# Needs Debian's chromium (apt-get install -y chromium).
set -euo pipefail
page=$(realpath "${1:?usage: screenshot_report.sh REPORT.html [OUT.png] [W,H]}")
out=$(realpath -m "${2:-/tmp/report.png}")
size=${3:-1400,3000}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found (apt-get install -y chromium)" >&2; exit 3; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$out" --window-size="$size" \
  --virtual-time-budget=5000 \
  "file://$page" >/dev/null 2>&1
echo "$out"
