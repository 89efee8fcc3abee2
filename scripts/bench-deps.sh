#!/usr/bin/env bash
# Debian packages the benchmarks use (bench/*.py) beyond what the tests need, installed only when
# missing: `wrk`, HTTP load for bench/console_sse.py.
set -euo pipefail
exec "$(dirname "$0")/system-deps.sh" wrk
