#!/usr/bin/env bash
# Debian packages the tests use as real peers. Installed only when missing (needs root or sudo).
set -euo pipefail
# Extra packages may be named on the command line (scripts/bench-deps.sh does).
packages=(sip-tester kamailio chromium fonts-wqy-microhei "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
