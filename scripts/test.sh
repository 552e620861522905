#!/usr/bin/env bash
# Every test, on two cores. Does its own setup first (see scripts/setup.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" all
cd "$ROOT"
exec python -m pytest -n "${TINYCONV_TEST_WORKERS:-2}" "$@"
