#!/usr/bin/env bash
# Make this checkout ready to run: system packages (when root and missing), a venv, tinyconv in it.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (it only does what is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TINYCONV_VENV:-$ROOT/.venv}"

need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v make >/dev/null || need_apt+=(make)
command -v arm-none-eabi-gcc >/dev/null || need_apt+=(gcc-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
command -v clang >/dev/null || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 || \
  need_apt+=(libclang-rt-14-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing ${need_apt[*]} (not root, so not installing; tests needing them skip)" >&2
  fi
fi

PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.tinyconv-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "setup: installing tinyconv and its test/demo/torch/keras/tflite/oracles extras into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -e "$ROOT[test,demo,torch,keras,tflite,oracles]" \
    2> >(grep -v "^WARNING: Location 'file://" >&2)
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
