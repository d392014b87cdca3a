#!/usr/bin/env bash
# Screenshots of each section of a report page, for docs/reports.md:
#   scripts/report-screenshots.sh REPORT_DIR [OUT_DIR] [WIDTH]
# Needs /usr/bin/chromium. Each shot is taken from a copy of index.html that hides the other
# sections, at WIDTH pixels (default 1024), as tall as the section: a first load measures it
# (a script in the copy writes the height into the title), the second takes the picture.
set -euo pipefail
report=${1:?usage: scripts/report-screenshots.sh REPORT_DIR [OUT_DIR] [WIDTH]}
out=${2:-docs/img}
width=${3:-1024}
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for section in leaderboard facexbench parse-failures efficiency fairness confusion published runs; do
  grep -q "<section id=\"$section\">" "$report/index.html" || continue
  page="$report/shot-$section.html"
  sed -e "s|</style>|section:not(#$section),nav,.meta,.notes,h1,footer{display:none !important}</style>|" \
    -e "s|</body>|<script>document.title='height='+Math.ceil(document.documentElement.scrollHeight)</script></body>|" \
    "$report/index.html" >"$page"
  height=$(timeout 120 chromium --headless --no-sandbox --disable-gpu --user-data-dir="$tmp/profile" \
    --window-size="$width,800" --dump-dom "file://$(realpath "$page")" 2>/dev/null |
    sed -n 's|.*<title>height=\([0-9]*\)</title>.*|\1|p' | head -1)
  # Long sections (fairness has a figure per task) are shown from their top.
  height=${height:-2400}
  if [ "$height" -gt 2400 ]; then height=2400; fi
  timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --user-data-dir="$tmp/profile" --window-size="$width,$height" \
    --screenshot="$out/report-$section.png" "file://$(realpath "$page")" >/dev/null 2>&1
  rm -f "$page"
  echo "$out/report-$section.png"
done
