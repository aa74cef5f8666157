#!/usr/bin/env bash
# Installs the Debian tools the test suite drives (promtool from `prometheus`,
# `docker-compose` v1 to validate docker-compose.yml offline, and `chromium` for the console's
# browser tests) when they are missing.
set -euo pipefail
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v docker-compose >/dev/null || missing+=(docker-compose)
[ -x "${CHROMIUM:-/usr/bin/chromium}" ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; else
  echo "the tests need ${missing[*]} (Debian packages); install them or run as root" >&2
  exit 1
fi
echo "installing ${missing[*]} (Debian packages) for the tests"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
