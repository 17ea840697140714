#!/usr/bin/env bash
# aarch64_check.sh - prove the torch-free ADT runtime works on aarch64, on an x86_64 machine.
#
# Usage: bash research/boards/aarch64_check.sh [--file model.adt] [--data MNIST_DIR] [options]   (--help lists all)
#
# What it does
#  1. Prepares an emulated aarch64 Debian bookworm OUTSIDE the repository, in
#     ${ADT_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/adt-arm64} (reused when present, --fresh rebuilds):
#     installs Debian's qemu-user-static and mmdebstrap if missing (apt-get; needs root), unpacks
#     python3.11 + libstdc++6 + zlib1g for arm64 with `mmdebstrap --variant=extract` from the Debian
#     mirror that this machine's apt already uses (read from `apt-cache policy`, or --mirror URL),
#     installs the aarch64 wheels (numpy bitarray tqdm onnxruntime onnx pytest hypothesis, pinned to
#     the host venv's versions when those resolve) with the host's pip in one call, and writes a small
#     fake /proc/cpuinfo and /sys/devices/system/cpu/{possible,present,online} (onnxruntime reads
#     them; with the real /sys it segfaults under qemu). About 250 MB, under a minute.
#     The repository's runtime/ and tools/ are linked as adt.runtime and adt.tools, and research/ as
#     research, into a folder on the emulated PYTHONPATH; exporter/ is not: there is no torch on the device.
#  2. Runs the runtime's torch-free tests (tests/runtime, tests/format, tests/test_format*.py where
#     they exist; marker "not slow"; tests needing torch must skip themselves, e.g. importorskip) with the aarch64 Python under `QEMU_CPU=cortex-a72 qemu-aarch64-static -L ROOT`.
#  3. End to end: decodes a LeNet-5 .adt (--file; without it a seeded random-weight LeNet-5-shaped
#     file from `python -m research.boards.aarch64_e2e fallback`, for development only), classifies the first --n MNIST
#     test images with the numpy and onnxruntime engines natively (host venv) and under emulation,
#     and writes results/arm64.json + results/arm64.md: SHA-256 of all decoded symbols on both
#     machines (must be identical), max abs/rel output difference (tolerance in the files), same
#     predictions, versions, timings.
# Exit status 0 only if the tests pass and the comparison passes.
# Emulated CPU load is kept modest: one BLAS/onnxruntime thread, nice 10, a few hundred images.
# Not part of the default test run (.ci/run): it needs network access to Debian and PyPI once.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${ADT_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/adt-arm64}"
DATA="${ADT_DATA:-}"
FILE=""
N=500
REPEATS=3
RESULTS="$REPO/results"
MIRROR=""
FRESH=0
DO_TESTS=1
DO_E2E=1
PYTEST_ARGS="-m 'not slow'"
MODEL_SOURCE=""
TEST_TIMEOUT=1800
SUITE=bookworm
QEMU_CPU_MODEL=cortex-a72
WHEELS=(numpy bitarray tqdm onnxruntime onnx pytest hypothesis)

usage() {
  cat <<EOF
Usage: bash research/boards/aarch64_check.sh [options]

Runs the torch-free ADT runtime on an emulated aarch64 Debian (qemu-user) and compares it with this
x86_64 machine: runtime tests under emulation, then decode + classify MNIST with a LeNet-5 .adt on
both, writing results/arm64.json and results/arm64.md.

Options:
  --file PATH        LeNet-5 .adt to check (default: a random-weight LeNet-5-shaped fallback file,
                     development only; the results then say "fallback")
  --data DIR         MNIST IDX folder (default: \$ADT_DATA, else shared/data/mnist beside the checkout)
  --n N              MNIST test images to classify, the first N (default $N)
  --repeats R        timing repeats, medians reported (default $REPEATS)
  --results DIR      where arm64.json / arm64.md go (default: <repo>/results)
  --model-source TXT how to describe the model in the results (default: derived from --file)
  --cache DIR        environment folder (default: \${ADT_ARM64_CACHE:-\${XDG_CACHE_HOME:-\$HOME/.cache}/adt-arm64})
  --mirror URL       Debian mirror for mmdebstrap (default: the one apt uses here, from apt-cache policy)
  --fresh            delete and rebuild the aarch64 environment
  --prepare-only     only prepare the environment
  --no-tests         skip the emulated pytest run
  --no-e2e           skip the end-to-end comparison (no results files written)
  --pytest-args STR  arguments for the emulated pytest run (default: $PYTEST_ARGS); paths given
                     here replace the default tests/runtime tests/format tests/test_format*.py
  --test-timeout S   kill the emulated pytest run after S seconds (default $TEST_TIMEOUT)
  -h, --help         this text

Environment: ADT_ARM64_CACHE (cache folder), ADT_DATA (MNIST folder), ADT_ARM64_MAX_EXAMPLES
(Hypothesis examples per property under emulation, default 20).
EOF
}

PREPARE_ONLY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --file) FILE="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --n) N="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    --model-source) MODEL_SOURCE="$2"; shift 2 ;;
    --cache) CACHE="$2"; shift 2 ;;
    --mirror) MIRROR="$2"; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --prepare-only) PREPARE_ONLY=1; shift ;;
    --no-tests) DO_TESTS=0; shift ;;
    --no-e2e) DO_E2E=0; shift ;;
    --pytest-args) PYTEST_ARGS="$2"; shift 2 ;;
    --test-timeout) TEST_TIMEOUT="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "aarch64_check.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "aarch64_check.sh: error: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

ROOT="$CACHE/rootfs"
PKG="$CACHE/pkg"
RUN="$CACHE/run"
STAMP="$ROOT/.adt-arm64-ready"
if [[ -x "$REPO/.venv/bin/python" ]]; then HOST_PY="$REPO/.venv/bin/python"; else HOST_PY="$(command -v python3)"; fi
# MNIST: --data, else $ADT_DATA, else shared/data/mnist beside the checkout (as tests/conftest.py).
if [[ -z "$DATA" && -d "$REPO/../shared/data/mnist" ]]; then DATA="$(cd "$REPO/../shared/data/mnist" && pwd)"; fi
[[ -n "$FILE" && ! -f "$FILE" ]] && die "--file $FILE does not exist"
[[ -n "$FILE" ]] && FILE="$(cd "$(dirname "$FILE")" && pwd)/$(basename "$FILE")"
if [[ $DO_E2E == 1 && $PREPARE_ONLY == 0 ]]; then
  [[ -n "$DATA" ]] || die "no MNIST folder: pass --data DIR or set ADT_DATA"
  [[ -d "$DATA" ]] || die "MNIST folder $DATA does not exist"
  DATA="$(cd "$DATA" && pwd)"
fi

# ---- 1. host tools ------------------------------------------------------------------------------
ensure_host_tools() {
  if command -v qemu-aarch64-static >/dev/null && command -v mmdebstrap >/dev/null; then return; fi
  [[ $(id -u) == 0 ]] || die "qemu-user-static and mmdebstrap are missing; install them (apt-get, as root)"
  log "installing qemu-user-static and mmdebstrap (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static mmdebstrap >/dev/null
}

# The Debian mirror apt already uses for $SUITE/main (never a hard-coded host).
apt_mirror() {
  apt-cache policy 2>/dev/null | sed -nE "s#^ *[0-9]+ (https?://[^ ]+) $SUITE/main .*#\1#p" | head -n1
}

host_pin() {  # "pkg==version" when the host venv has pkg, else "pkg"
  "$HOST_PY" - "$1" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(f"{sys.argv[1]}=={version(sys.argv[1])}")
except PackageNotFoundError:
    print(sys.argv[1])
EOF
}

deb_version() {  # Debian version of package $1 in ROOT, from its changelog (--variant=extract leaves
  # no dpkg status and no base-files)
  local f
  for f in "$ROOT/usr/share/doc/$1"/changelog.Debian*.gz; do
    [[ -f "$f" ]] && { gzip -dc "$f" | head -n1 | sed -nE 's/^[^ ]+ \(([^)]+)\).*/\1/p'; return; }
  done
  echo unknown
}

prepare_root() {
  if [[ $FRESH == 1 ]]; then rm -rf "$ROOT"; fi
  if [[ -f "$STAMP" ]]; then log "reusing aarch64 environment $ROOT"; return; fi
  ensure_host_tools
  local mirror="$MIRROR" t0=$SECONDS tmp="$ROOT.partial"
  [[ -n "$mirror" ]] || mirror="$(apt_mirror)"
  if [[ -z "$mirror" ]]; then
    apt-get update -qq || true
    mirror="$(apt_mirror)"
  fi
  [[ -n "$mirror" ]] || die "no Debian $SUITE/main mirror in apt's configuration; pass --mirror URL"
  rm -rf "$tmp"; mkdir -p "$CACHE"
  log "unpacking arm64 Debian $SUITE (mmdebstrap --variant=extract)"
  mmdebstrap --quiet --variant=extract --arch=arm64 --include=python3,python3.11,libstdc++6,zlib1g \
    "$SUITE" "$tmp" "$mirror"
  # With -L ROOT, qemu resolves absolute paths inside ROOT first: ROOT/tmp would hide the host /tmp.
  rm -rf "$tmp/tmp"
  local site="$tmp/usr/local/lib/python3.11/dist-packages" pins=() p
  for p in "${WHEELS[@]}"; do pins+=("$(host_pin "$p")"); done
  local pipargs=(install -q --disable-pip-version-check --target "$site" --only-binary=:all:
    --implementation cp --python-version 3.11 --abi cp311 --platform manylinux2014_aarch64
    --platform manylinux_2_17_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64)
  log "installing aarch64 wheels: ${pins[*]}"
  if ! "$HOST_PY" -m pip "${pipargs[@]}" "${pins[@]}"; then
    log "pinned versions do not resolve for aarch64; installing the newest that do"
    rm -rf "$site"
    "$HOST_PY" -m pip "${pipargs[@]}" "${WHEELS[@]}"
  fi
  # onnxruntime's cpuinfo reads these; qemu finds them under ROOT before the host's (never expose
  # the real /sys: onnxruntime segfaults under qemu then). One CPU: one onnxruntime thread.
  mkdir -p "$tmp/proc" "$tmp/sys/devices/system/cpu/cpu0"
  printf 'processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' \
    > "$tmp/proc/cpuinfo"
  for f in possible present online; do echo 0 > "$tmp/sys/devices/system/cpu/$f"; done
  printf 'prepare_s=%s\n' "$((SECONDS - t0))" > "$tmp/.adt-arm64-ready"
  mv "$tmp" "$ROOT"
  log "aarch64 environment ready in $((SECONDS - t0)) s ($(du -sh "$ROOT" | cut -f1))"
}

link_repo() {  # the repository's torch-free packages as adt.runtime / adt.tools / research on PYTHONPATH
  rm -rf "$PKG" "$CACHE/bin"; mkdir -p "$PKG/adt" "$CACHE/bin" "$CACHE/home" "$CACHE/work"
  ln -s "$REPO/runtime" "$PKG/adt/runtime"
  ln -s "$REPO/tools" "$PKG/adt/tools"
  ln -s "$REPO/research" "$PKG/research"
  # No binfmt_misc here: a test that starts sys.executable (or `python3`, `adt`) in a subprocess
  # would get the host's x86 python. The emulated python's sys.executable is this wrapper instead
  # (qemu -0 sets argv[0]), which starts another emulated python with the same environment.
  printf '#!/bin/sh\nexec qemu-aarch64-static -0 "$0" -L "%s" "%s/usr/bin/python3.11" "$@"\n' \
    "$ROOT" "$ROOT" > "$CACHE/bin/python3.11"
  printf '#!/bin/sh\nexec "%s" -m adt.tools.cli "$@"\n' "$CACHE/bin/python3.11" > "$CACHE/bin/adt"
  chmod +x "$CACHE/bin/python3.11" "$CACHE/bin/adt"
  ln -s python3.11 "$CACHE/bin/python3"
  ln -s python3.11 "$CACHE/bin/python"
}

# The aarch64 Python with a clean environment (no host venv variables leak in), niced.
ARM_PY=(env -i PATH="$CACHE/bin:/usr/local/bin:/usr/bin:/bin" HOME="$CACHE/home" LANG=C.UTF-8
  QEMU_CPU="$QEMU_CPU_MODEL" PYTHONPATH="$PKG" PYTHONPYCACHEPREFIX="$CACHE/pycache"
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ADT_ARM64_MAX_EXAMPLES="${ADT_ARM64_MAX_EXAMPLES:-20}")
[[ -n "$DATA" ]] && ARM_PY+=(ADT_DATA="$DATA")
ARM_PY+=(nice -n 10 qemu-aarch64-static -0 "$CACHE/bin/python3.11" -L "$ROOT" "$ROOT/usr/bin/python3.11")
arm_python() { "${ARM_PY[@]}" "$@"; }
# The host venv's Python with the repository root on its path (research/ is not installed).
host_python() { PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$HOST_PY" "$@"; }

prepare_root
link_repo
arm_python -c 'import platform, numpy, bitarray, adt.runtime.format as f; assert platform.machine() == "aarch64", platform.machine()' \
  || die "the emulated aarch64 Python cannot import numpy/bitarray/adt.runtime (try --fresh)"
[[ $PREPARE_ONLY == 1 ]] && { log "environment prepared: $ROOT"; exit 0; }
mkdir -p "$RUN"

# ---- 2. runtime tests under emulation ------------------------------------------------------------
TESTS_JSON=""
TEST_RC=0
if [[ $DO_TESTS == 1 ]]; then
  eval "extra=($PYTEST_ARGS)"
  paths=()
  has_path=0
  for a in "${extra[@]}"; do [[ "$a" == tests* || "$a" == /* ]] && has_path=1; done
  if [[ $has_path == 0 ]]; then
    for d in "$REPO"/tests/runtime "$REPO"/tests/format "$REPO"/tests/test_format*.py; do
      [[ -e "$d" ]] && paths+=("$d")
    done
    [[ ${#paths[@]} -gt 0 ]] || die "no tests/runtime, tests/format or tests/test_format*.py in $REPO"
  fi
  for i in "${!extra[@]}"; do [[ "${extra[$i]}" == tests* ]] && extra[$i]="$REPO/${extra[$i]}"; done
  log "runtime tests under qemu-aarch64: pytest ${extra[*]} ${paths[*]/#$REPO\//}"
  t0=$SECONDS
  set +e
  (cd "$CACHE/work" && timeout "$TEST_TIMEOUT" "${ARM_PY[@]}" -m pytest -q -rs -p no:cacheprovider \
     -p research.boards.aarch64_pytest_plugin --rootdir="$REPO" -c "$REPO/pyproject.toml" "${extra[@]}" "${paths[@]}") \
     2>&1 | tee "$RUN/pytest.log"
  TEST_RC=${PIPESTATUS[0]}
  set -e
  summary="$(grep -E '(passed|failed|error|no tests ran)' "$RUN/pytest.log" | tail -n1 | sed -E 's/^=+ //; s/ =+$//')"
  TESTS_JSON="$("$HOST_PY" -c 'import json,sys; print(json.dumps({"summary": sys.argv[1], "exit_code": int(sys.argv[2]), "seconds": int(sys.argv[3]), "command": sys.argv[4]}))' \
    "$summary" "$TEST_RC" "$((SECONDS - t0))" "pytest -q -rs ${extra[*]} ${paths[*]/#$REPO\//}")"
  log "emulated tests: $summary (exit $TEST_RC, $((SECONDS - t0)) s)"
fi

# ---- 3. end to end: x86_64 vs aarch64 ------------------------------------------------------------
CMP_RC=0
if [[ $DO_E2E == 1 ]]; then
  if [[ -z "$FILE" ]]; then
    FILE="$RUN/fallback-lenet5.adt"
    host_python -m research.boards.aarch64_e2e fallback "$FILE"
    MODEL_SOURCE="${MODEL_SOURCE:-fallback: LeNet-5-shaped file with seeded random weights (research.boards.aarch64_e2e fallback), NOT a trained export}"
  fi
  MODEL_SOURCE="${MODEL_SOURCE:-given with --file: $(basename "$FILE")}"
  rm -rf "$RUN/x86_64" "$RUN/aarch64"
  log "x86_64 run (host venv)"
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 host_python -m research.boards.aarch64_e2e infer --file "$FILE" \
    --data "$DATA" --n "$N" --repeats "$REPEATS" --out-dir "$RUN/x86_64"
  log "aarch64 run (qemu)"
  (cd "$CACHE/work" && arm_python -m research.boards.aarch64_e2e infer --file "$FILE" --data "$DATA" --n "$N" \
    --repeats "$REPEATS" --out-dir "$RUN/aarch64")
  qemu_version="$(qemu-aarch64-static --version | head -n1)"
  emu="$("$HOST_PY" -c 'import json,sys; print(json.dumps({"qemu": sys.argv[1], "qemu_cpu": sys.argv[2], "debian": sys.argv[3], "rootfs": sys.argv[4], "rootfs_size": sys.argv[5], "prepare_s": int(sys.argv[6] or -1), "threads": "OPENBLAS_NUM_THREADS=1, fake /proc/cpuinfo with 1 CPU"}))' \
    "$qemu_version" "$QEMU_CPU_MODEL" "$SUITE (python3.11 $(deb_version python3.11), libc6 $(deb_version libc6))" "mmdebstrap --variant=extract --arch=arm64" \
    "$(du -sh "$ROOT" | cut -f1)" "$(sed -n 's/^prepare_s=//p' "$STAMP")")"
  mkdir -p "$RESULTS"
  set +e
  host_python -m research.boards.aarch64_e2e compare --x86 "$RUN/x86_64" --arm "$RUN/aarch64" \
    --json "$RESULTS/arm64.json" --md "$RESULTS/arm64.md" --model-source "$MODEL_SOURCE" \
    --emulation "$emu" ${TESTS_JSON:+--tests "$TESTS_JSON"}
  CMP_RC=$?
  set -e
fi

if [[ $TEST_RC != 0 || $CMP_RC != 0 ]]; then
  log "FAILED (tests exit $TEST_RC, comparison exit $CMP_RC)"
  exit 1
fi
log "OK"
