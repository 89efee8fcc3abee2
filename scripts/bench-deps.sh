#!/usr/bin/env bash
# Debian packages the benchmarks use (bench/*.py), beyond what the tests need. Installed only when
# missing (needs root or sudo). `wrk`: HTTP load for bench/console_sse.py.
set -euo pipefail
"$(dirname "$0")/system-deps.sh"
packages=(wrk)
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
