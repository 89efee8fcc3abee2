#!/usr/bin/env bash
# The whole check: lint, types, schema drift, then the tests on SQLite and PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export HYT_ENV=test
export HYT_SECRET_KEY=${HYT_SECRET_KEY:-test-secret-key-0123456789-abcdefghijklmnop}
echo "== ruff"; $BIN/ruff check . && $BIN/ruff format --check .
echo "== mypy"; $BIN/mypy
echo "== pytest"; $BIN/python -m pytest -n 2 "$@"
