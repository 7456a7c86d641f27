#!/usr/bin/env bash
# Look at the Snakemake report in a real browser: headless Chromium (Debian's
# `chromium` package: apt-get install -y chromium) renders report.html, opens
# one result the way a click on its eye button does (category, then the
# image), checks that the figure is in the rendered page, and saves a
# screenshot.
#
#   bench/screenshot_report.sh report.html docs/predictions.png \
#       [RESULT (predictions_val.png)] [CATEGORY (Predictions)] [WIDTHxHEIGHT (2000x1150)]
#
# The report is a single-page app with no addresses per view: a copy of it
# gets a few lines of JavaScript that call the app's own navigation
# (app.showCategory, app.setView) once the page has loaded; the original file
# is not changed. Exit status 1 when the result is not in the report or its
# image is not in the rendered page. The screenshot is shrunk to at most 1600
# px wide and 256 colours (PIL), narrower until it is at most MAX_BYTES
# (300000) bytes, small enough for docs/.
set -euo pipefail
report=${1:?usage: $0 report.html out.png [result] [category] [WxH]}
out=${2:?usage: $0 report.html out.png [result] [category] [WxH]}
result=${3:-predictions_val.png}
category=${4:-Predictions}
size=${5:-2000x1150}
py=${PYTHON:-python3} # with PIL: the venv's
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  echo "error: chromium not found (apt-get install -y chromium)" >&2
  exit 2
fi
test -f "$report" || { echo "error: $report: report is missing" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT  # KEEP=1: keep it (page, DOM, Chromium log)
if [ -n "${KEEP:-}" ]; then trap 'echo "kept: $work" >&2' EXIT; fi
page="$work/report.html"
"$py" - "$report" "$page" "$result" "$category" << 'EOF'
import json, sys
src, dst, result, category = sys.argv[1:]
html = open(src, encoding="utf-8").read()
if "</body>" not in html:
    sys.exit(f"error: {src}: no </body>; not a Snakemake HTML report")
script = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var path = Object.keys(results).find(function (p) { return p.endsWith(%s); });
    if (!path) { document.title = "RESULT-NOT-FOUND"; return; }
    app.showCategory(%s);
    setTimeout(function () {
      app.setView({navbarMode: "resultinfo", resultPath: path, content: "img",
                   contentPath: results[path].data_uri});
      document.title = "SHOWN " + path;
    }, 300);
  }, 300);
});
</script>""" % (json.dumps(result), json.dumps(category))
head, tail = html.rsplit("</body>", 1)  # the last one: libraries embed the string too
open(dst, "w", encoding="utf-8").write(head + script + "</body>" + tail)
EOF

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
  --disable-background-networking --disable-component-update --disable-sync
  --hide-scrollbars --virtual-time-budget=10000 --user-data-dir="$work/profile")
started=$SECONDS
timeout 300 "$browser" "${flags[@]}" --dump-dom "file://$page" > "$work/dom.html" 2> "$work/chromium.log" || {
  cat "$work/chromium.log" >&2
  exit 1
}
if grep -q "<title>RESULT-NOT-FOUND" "$work/dom.html"; then
  echo "error: $report: no result named *$result" >&2
  exit 1
fi
images=$(grep -o '<img src="data:image/png' "$work/dom.html" | wc -l || true)
shown=$(grep -o '<title>SHOWN [^<]*' "$work/dom.html" | sed 's/<title>SHOWN //' || true)
if [ "$images" -lt 1 ] || [ -z "$shown" ]; then
  echo "error: $report: the rendered page shows no image for $result" >&2
  exit 1
fi
echo "rendered: $shown shown in category $category ($images embedded PNG image(s) in the page)"

timeout 300 "$browser" "${flags[@]}" --window-size="${size/x/,}" --screenshot="$work/shot.png" \
  "file://$page" > /dev/null 2>> "$work/chromium.log" || {
  cat "$work/chromium.log" >&2
  exit 1
}
"$py" - "$work/shot.png" "$out" "${MAX_BYTES:-300000}" << 'EOF'
import sys
from PIL import Image
import io
src, dst, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
shot = Image.open(src).convert("RGB")
width = min(shot.width, 1600)
while True:  # 256 colours; narrower until it fits the byte limit
    small = shot.resize((width, round(shot.height * width / shot.width)), Image.LANCZOS)
    buffer = io.BytesIO()
    small.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                   dither=Image.Dither.NONE).save(buffer, format="PNG", optimize=True)
    if buffer.tell() <= limit or width <= 400:
        break
    width = int(width * 0.9)
open(dst, "wb").write(buffer.getvalue())
EOF
echo "screenshot: $out ($(stat -c %s "$out") bytes, $((SECONDS - started)) s in Chromium)"
