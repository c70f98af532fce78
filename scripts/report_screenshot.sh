#!/usr/bin/env bash
# Open an `inferencelab plot` report in headless Chromium and take a screenshot of it.
#
# Usage: scripts/report_screenshot.sh REPORT_HTML [OUT_PNG] [WIDTH,HEIGHT]
#   REPORT_HTML  e.g. outputs/plots/report.html
#   OUT_PNG      default: the report's directory/report_screenshot.png
#   WIDTH,HEIGHT default 1400,2000 (the window; the screenshot shows its top)
# Environment:
#   CHROMIUM     the browser binary (default: chromium, else chromium-browser, google-chrome)
#
# Fails (non-zero) when Chromium is missing or fails, when the page logs a JavaScript error,
# when the page requests anything over the network (every host name resolves to nothing, and
# Chromium's network log is checked for http(s) requests other than the browser's own service
# calls), or when the screenshot is missing or empty.
# Debian: apt-get install -y chromium
set -euo pipefail

if [[ $# -lt 1 || $# -gt 3 ]]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
report="$1"
if [[ ! -s "$report" ]]; then
    echo "error: $report: no such report (run inferencelab plot first)" >&2
    exit 2
fi
report_abs="$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
out="${2:-$(dirname "$report_abs")/report_screenshot.png}"
size="${3:-1400,2000}"

browser="${CHROMIUM:-}"
if [[ -z "$browser" ]]; then
    for b in chromium chromium-browser google-chrome; do
        if command -v "$b" >/dev/null 2>&1; then
            browser="$b"
            break
        fi
    done
fi
if [[ -z "$browser" ]]; then
    echo "error: no Chromium found (Debian: apt-get install -y chromium; or set CHROMIUM=...)" >&2
    exit 2
fi

profile="$(mktemp -d)"
log="$(mktemp)"
netlog="$(mktemp)"
trap 'rm -rf "$profile" "$log" "$netlog"' EXIT
rm -f "$out"

status=0
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-default-apps --disable-extensions \
    --host-resolver-rules="MAP * ~NOTFOUND" \
    --enable-logging=stderr --v=0 --log-net-log="$netlog" \
    --user-data-dir="$profile" --window-size="$size" \
    --screenshot="$out" "file://$report_abs" >"$log" 2>&1 || status=$?

if [[ $status -ne 0 ]]; then
    echo "error: $browser exited with status $status; its output:" >&2
    cat "$log" >&2
    exit 1
fi
# Console messages of the page (JS errors, failed loads) are logged as CONSOLE lines.
if grep -E "CONSOLE|Uncaught|Failed to load resource|ERR_NAME_NOT_RESOLVED" "$log" >&2; then
    echo "error: the report logged errors in $browser (above)" >&2
    exit 1
fi
# Network requests made while loading: Chromium's own (time sync, account and search
# prefetches) are expected; anything else came from the page.
fetched=$(grep -oE '"url":"https?://[^"]*"' "$netlog" | sort -u |
    grep -vE '"url":"https?://(clients[0-9]*\.google\.com/time/|accounts\.google\.com/ListAccounts|www\.google\.com/async/)' || true)
if [[ -n "$fetched" ]]; then
    echo "error: the report made network requests:" >&2
    echo "$fetched" >&2
    exit 1
fi
if [[ ! -s "$out" ]]; then
    echo "error: $browser wrote no screenshot to $out; its output:" >&2
    cat "$log" >&2
    exit 1
fi
# A PNG starts with \x89PNG; an all-white page compresses to a few hundred bytes.
if [[ "$(head -c 4 "$out" | od -An -c | tr -d ' ')" != "211PNG" ]]; then
    echo "error: $out is not a PNG" >&2
    exit 1
fi
bytes=$(wc -c <"$out")
if [[ $bytes -lt 5000 ]]; then
    echo "error: $out is only $bytes bytes: the page looks empty" >&2
    exit 1
fi
echo "screenshot: $out ($bytes bytes)"
