#!/usr/bin/env bash
# What the benchmarks use (bench/*.py) beyond what the tests need, installed only when missing:
# Debian's `wrk` (HTTP load for bench/console_sse.py) and the `bench` extra (py-spy, for
# bench/storm.py's BENCH_PROFILE).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/.venv/bin/python" -m pip install -q -e "$root[bench]"
exec "$root/scripts/system-deps.sh" wrk
