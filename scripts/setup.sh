#!/usr/bin/env bash
# Make this checkout ready to run: system packages (when root and missing), a venv, tinyconv in it
# with the extras asked for. Sourced by scripts/demo.sh (extras "demo": numpy training, no
# TensorFlow or PyTorch) and scripts/test.sh (every extra); safe to run again (it only does what
# is missing).
#   source scripts/setup.sh [EXTRAS]     EXTRAS: comma-separated pyproject extras, also
#                                        $TINYCONV_EXTRAS; default (or "all"): every one
#   TINYCONV_SETUP_DRY_RUN=1             print what would be installed, install nothing, stop
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TINYCONV_VENV:-$ROOT/.venv}"
ALL_EXTRAS="test,demo,torch,keras,tflite,oracles,farm"
EXTRAS="${1:-${TINYCONV_EXTRAS:-all}}"
[ "$EXTRAS" = all ] && EXTRAS="$ALL_EXTRAS"

need_apt=()
command -v gcc >/dev/null || need_apt+=(gcc libc6-dev)
command -v make >/dev/null || need_apt+=(make)
command -v arm-none-eabi-gcc >/dev/null || need_apt+=(gcc-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need_apt+=(qemu-system-arm)
if [[ ",$EXTRAS," == *",test,"* ]]; then  # the fuzz tests only
  command -v clang >/dev/null || need_apt+=(clang)
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a >/dev/null 2>&1 || \
    need_apt+=(libclang-rt-14-dev)
fi
if [[ ",$EXTRAS," == *",farm,"* ]]; then  # labgrid's exporter serves serial ports through it
  command -v ser2net >/dev/null || need_apt+=(ser2net)
fi
if [ -n "${TINYCONV_SETUP_DRY_RUN:-}" ]; then
  echo "setup: would install system packages: ${need_apt[*]:-none}" >&2
  echo "setup: would install into $VENV: pip install -e $ROOT[$EXTRAS]" >&2
  exit 0
fi
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
stamp="$VENV/.tinyconv-installed"  # the extras installed so far, one per line
missing=()
for extra in ${EXTRAS//,/ }; do
  grep -qx "$extra" "$stamp" 2>/dev/null || missing+=("$extra")
done
if [ ! -f "$stamp" ] || [ ${#missing[@]} -gt 0 ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "setup: installing tinyconv with the extras $EXTRAS into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$EXTRAS]" \
    2> >(grep -v "^WARNING: Location 'file://" >&2)
  { cat "$stamp" 2>/dev/null || true; tr ',' '\n' <<<"$EXTRAS"; } | sort -u > "$stamp.new"
  mv "$stamp.new" "$stamp"
fi
export PATH="$VENV/bin:$PATH"
