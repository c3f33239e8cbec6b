#!/usr/bin/env bash
# Makes sure a headless Chromium is on PATH for the console's browser tests
# (proxy's TestConsoleInABrowser, driven by chromedp). On a fresh Debian
# machine, as root, it installs the chromium package when it is missing;
# elsewhere it says how. make test then sets STRANGLER_REQUIRE_BROWSER, so
# that a browser test fails rather than skips.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    echo "chromium.sh: $("$name" --version 2>/dev/null | head -n 1)" >&2
    exit 0
  fi
done
if [[ $(id -u) -ne 0 ]]; then
  echo "chromium.sh: chromium not found; install it (apt-get install chromium)" >&2
  exit 1
fi
echo "chromium.sh: installing chromium" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium >&2
command -v chromium >/dev/null 2>&1 || { echo "chromium.sh: chromium still missing after the install" >&2; exit 1; }
echo "chromium.sh: $(chromium --version 2>/dev/null | head -n 1)" >&2
