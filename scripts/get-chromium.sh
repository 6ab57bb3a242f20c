#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests (Playwright drives it; no browser download).
set -euo pipefail
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo -n"
echo "Installing Debian's chromium for the browser tests" >&2
$sudo apt-get update -qq
$sudo apt-get install -y -q chromium >/dev/null
