#!/usr/bin/env bash
# The main demo end to end: train, export, build the device, verify it over serial.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh" demo  # numpy training: no TensorFlow, no PyTorch
cd "$ROOT"
exec tinyconv demo "$@"
