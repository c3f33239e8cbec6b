#!/usr/bin/env bash
# Makes sure a headless Chromium is on PATH for the console's browser tests
# (proxy's TestConsoleInABrowser, driven by chromedp). On a fresh Debian
# machine, as root, it installs the chromium package when it is missing;
# elsewhere it says how. make test then sets STRANGLER_REQUIRE_BROWSER, so
# that a browser test fails rather than skips.
set -euo pipefail
source "$(dirname "$0")/apt.sh"

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "chromium.sh: $("$name" --version 2>/dev/null | head -n 1)" >&2
    exit 0
  fi
done
apt_install chromium.sh chromium
command -v chromium >/dev/null 2>&1 || { echo "chromium.sh: chromium still missing after the install" >&2; exit 1; }
echo "chromium.sh: $(chromium --version 2>/dev/null | head -n 1)" >&2
