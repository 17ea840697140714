#!/usr/bin/env bash
# board_check.sh - prove the torch-free ADT runtime works on an ARM board's Debian, on an x86_64 machine.
#
# Usage: bash research/boards/board_check.sh --arch arm64|armhf --suite bookworm|trixie --file M.adt [options]
#        (--help lists all; one command per board is in research/boards/README.md)
#
# What it does
#  1. Prepares an emulated Debian userland OUTSIDE the repository, in
#     ${ADT_BOARDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/adt-boards}/<arch>-<suite> (reused when present,
#     --fresh rebuilds): installs Debian's qemu-user-static and mmdebstrap if missing (apt-get; needs root),
#     unpacks Debian's own python3, python3-numpy, python3-bitarray, python3-tqdm (the base install's three
#     dependencies), python3-pytest, python3-hypothesis for
#     <arch> with `mmdebstrap --variant=extract` (no maintainer scripts run, so this script makes the
#     merged-/usr links bin, lib, sbin -> usr/... and the BLAS/LAPACK alternative links itself).
#     numpy and bitarray are apt's: bookworm ships numpy 1.24 + bitarray 2.7.3 (Raspberry Pi OS 12),
#     trixie numpy 2.2 + bitarray 2.9. Nothing from PyPI goes into the userland.
#  2. Builds the project's wheel here and installs it into the userland with `pip install --no-deps
#     --target /opt/adt-site` (the host's pip: no PyPI access from the userland is needed). The wheel holds
#     adt.runtime/adt.tools; the checkout (tests, research/: this check's driver), the MNIST files and
#     the model are copied into the userland, which is entered with chroot (see sync_inputs).
#  3. Runs the runtime's torch-free tests (tests/runtime, tests/format, tests/test_format*.py; marker
#     "not slow"; tests needing torch or onnxruntime skip themselves) under `chroot ROOT qemu-<arch>-static`.
#  4. End to end: decodes the .adt (--file; without it a seeded random-weight LeNet-5-shaped fallback,
#     development only), classifies the first --n MNIST test images (default all 10,000, in batches of
#     --batch) with the NumPy engine here and under emulation, and writes results/<name>.json + .md:
#     SHA-256 of all decoded symbols on both machines (must be identical), output differences, same
#     predictions, versions, timings, and a "targets" list (research/boards/report.py collects it).
# Exit status 0 only if the tests pass and the comparison passes.
# Emulated CPU load is kept modest: one BLAS thread, nice 10. Not part of .ci/run: it needs the Debian
# mirror once, and one board takes 20-60 minutes of emulation on a 2-core machine.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ARCH=""
SUITE=bookworm
DATA="${ADT_DATA:-}"
FILE=""
N=10000
BATCH=500
REPEATS=1
RESULTS="$REPO/results"
NAME=""
MIRROR=""
FRESH=0
DO_TESTS=1
DO_E2E=1
PYTEST_ARGS="-m 'not slow'"
MODEL_SOURCE=""
TEST_TIMEOUT=3600
CACHE_BASE="${ADT_BOARDS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/adt-boards}"
CACHE=""
PACKAGES=(python3 python3-numpy python3-bitarray python3-tqdm python3-pytest python3-hypothesis)

usage() {
  cat <<EOF
Usage: bash research/boards/board_check.sh --arch arm64|armhf [--suite bookworm|trixie] [options]

Runs the torch-free ADT runtime on an emulated Debian (qemu-user, Debian's own python3-numpy and
python3-bitarray, the project installed with pip --no-deps) and compares it with this x86_64 machine:
runtime tests under emulation, then decode + classify MNIST with a .adt on both, writing
results/<name>.json and .md.

One command per board (MNIST in \$ADT_DATA):
  Raspberry Pi OS 12, 64-bit:  bash research/boards/board_check.sh --arch arm64 --suite bookworm --file results/adt/lenet5-ada-s0-paper.adt
  Raspberry Pi OS 12, 32-bit:  bash research/boards/board_check.sh --arch armhf --suite bookworm --file results/adt/lenet5-ada-s0-paper.adt
  Debian 13 / Pi OS 13, 32-bit: bash research/boards/board_check.sh --arch armhf --suite trixie --file results/adt/lenet5-ada-s0-paper.adt

Options:
  --arch A           arm64 (aarch64) or armhf (armv7l)  [required]
  --suite S          Debian suite: bookworm (default) or trixie
  --file PATH        .adt to check (a 1x28x28-input classifier; default: a random-weight LeNet-5-shaped
                     fallback file, development only; the results then say "fallback")
  --data DIR         MNIST IDX folder (default: \$ADT_DATA, else shared/data/mnist beside the checkout)
  --n N              MNIST test images to classify, the first N (default $N)
  --batch B          images per Model.run call (default $BATCH)
  --repeats R        timing repeats, medians reported (default $REPEATS)
  --results DIR      where the results files go (default: <repo>/results)
  --name NAME        results file name without extension (default: arm64 for arm64-bookworm,
                     else armv7l-<suite> / arm64-<suite>)
  --model-source TXT how to describe the model in the results (default: derived from --file)
  --cache DIR        environment folder (default: \$ADT_BOARDS_CACHE/<arch>-<suite>, \$ADT_BOARDS_CACHE
                     defaulting to \${XDG_CACHE_HOME:-\$HOME/.cache}/adt-boards)
  --mirror URL       Debian mirror (default: the one apt uses here for the suite, else http://deb.debian.org/debian)
  --fresh            delete and rebuild the environment
  --prepare-only     only prepare the environment
  --no-tests         skip the emulated pytest run
  --no-e2e           skip the end-to-end comparison (no results files written)
  --pytest-args STR  arguments for the emulated pytest run (default: $PYTEST_ARGS); paths given
                     here replace the default tests/runtime tests/format tests/test_format*.py
  --test-timeout S   kill the emulated pytest run after S seconds (default $TEST_TIMEOUT)
  -h, --help         this text

Environment: ADT_BOARDS_CACHE (cache folder), ADT_DATA (MNIST folder), ADT_ARM64_MAX_EXAMPLES
(Hypothesis examples per property under emulation, default 20), ADT_TIMEOUT_SCALE (factor on the tests'
subprocess timeouts under emulation, default 30).
EOF
}

PREPARE_ONLY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --suite) SUITE="$2"; shift 2 ;;
    --file) FILE="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --n) N="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
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
    *) echo "board_check.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "board_check.sh: error: $*" >&2; exit 1; }
log() { echo "== [$ARCH-$SUITE] $*" >&2; }

case "$ARCH" in
  arm64) MACHINE=aarch64; TRIPLET=aarch64-linux-gnu; QEMU=qemu-aarch64-static; QEMU_CPU_MODEL=cortex-a72 ;;
  armhf) MACHINE=armv7l; TRIPLET=arm-linux-gnueabihf; QEMU=qemu-arm-static; QEMU_CPU_MODEL=cortex-a7 ;;
  "") die "--arch is required (arm64 or armhf; see --help)" ;;
  *) die "--arch $ARCH: expected arm64 or armhf" ;;
esac
case "$SUITE" in bookworm|trixie) ;; *) die "--suite $SUITE: expected bookworm or trixie" ;; esac
if [[ -z "$NAME" ]]; then
  if [[ $ARCH == arm64 && $SUITE == bookworm ]]; then NAME=arm64; else NAME="$MACHINE-$SUITE"; fi
  [[ $ARCH == arm64 && $SUITE != bookworm ]] && NAME="arm64-$SUITE"
fi
CACHE="${CACHE:-$CACHE_BASE/$ARCH-$SUITE}"
ROOT="$CACHE/rootfs"
RUN="$CACHE/run"
SITE_REL=/opt/adt-site
STAMP="$ROOT/.adt-board-ready"
if [[ -x "$REPO/.venv/bin/python" ]]; then HOST_PY="$REPO/.venv/bin/python"; else HOST_PY="$(command -v python3)"; fi
if [[ -z "$DATA" && -d "$REPO/../shared/data/mnist" ]]; then DATA="$(cd "$REPO/../shared/data/mnist" && pwd)"; fi
[[ -n "$FILE" && ! -f "$FILE" ]] && die "--file $FILE does not exist"
[[ -n "$FILE" ]] && FILE="$(cd "$(dirname "$FILE")" && pwd)/$(basename "$FILE")"
if [[ $DO_E2E == 1 && $PREPARE_ONLY == 0 ]]; then
  [[ -n "$DATA" ]] || die "no MNIST folder: pass --data DIR or set ADT_DATA"
  [[ -d "$DATA" ]] || die "MNIST folder $DATA does not exist"
  DATA="$(cd "$DATA" && pwd)"
fi

# ---- 1. host tools and the userland ---------------------------------------------------------------
ensure_host_tools() {
  if command -v "$QEMU" >/dev/null && command -v mmdebstrap >/dev/null; then return; fi
  [[ $(id -u) == 0 ]] || die "qemu-user-static and mmdebstrap are missing; install them (apt-get, as root)"
  log "installing qemu-user-static and mmdebstrap (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static mmdebstrap >/dev/null
}

# The Debian mirror apt already uses for $SUITE/main, else deb.debian.org (a bookworm host lists no trixie).
apt_mirror() {
  local m
  m="$(apt-cache policy 2>/dev/null | sed -nE "s#^ *[0-9]+ (https?://[^ ]+) $SUITE/main .*#\1#p" | head -n1)"
  echo "${m:-http://deb.debian.org/debian}"
}

deb_version() {  # Debian version of package $1 in ROOT, from its changelog (--variant=extract leaves no
  # dpkg status)
  local f
  for f in "$ROOT/usr/share/doc/$1"/changelog.Debian*.gz; do
    [[ -f "$f" ]] && { gzip -dc "$f" | head -n1 | sed -nE 's/^[^ ]+ \(([^)]+)\).*/\1/p'; return; }
  done
  echo unknown
}

merge_usr() {  # bin, lib, sbin -> usr/... as a usrmerge'd Debian has them (bookworm's packages still
  # ship some files under /lib, e.g. the dynamic loader)
  local root="$1" d
  for d in bin sbin lib; do
    mkdir -p "$root/usr/$d"
    if [[ -d "$root/$d" && ! -L "$root/$d" ]]; then
      cp -a "$root/$d/." "$root/usr/$d/"
      rm -rf "${root:?}/$d"
    fi
    [[ -L "$root/$d" ]] || ln -s "usr/$d" "$root/$d"
  done
}

blas_links() {  # what update-alternatives would make: libblas.so.3 / liblapack.so.3 in the triplet dir
  local libdir="$1/usr/lib/$TRIPLET" lib sub found
  for lib in blas lapack; do
    found=""
    for sub in openblas-pthread openblas-openmp openblas-serial atlas "$lib"; do
      if [[ -e "$libdir/$sub/lib$lib.so.3" ]]; then found="$sub/lib$lib.so.3"; break; fi
    done
    [[ -n "$found" ]] || die "no lib$lib.so.3 under $libdir (python3-numpy's BLAS/LAPACK dependency)"
    ln -sfn "$found" "$libdir/lib$lib.so.3"
  done
}

prepare_root() {
  if [[ $FRESH == 1 ]]; then rm -rf "$ROOT"; fi
  if [[ -f "$STAMP" ]]; then log "reusing environment $ROOT"; return; fi
  ensure_host_tools
  local mirror="${MIRROR:-$(apt_mirror)}" t0=$SECONDS tmp="$ROOT.partial" inc
  rm -rf "$tmp"; mkdir -p "$CACHE"
  inc="$(IFS=,; echo "${PACKAGES[*]}")"
  log "unpacking $ARCH Debian $SUITE from $mirror (mmdebstrap --variant=extract --include=$inc)"
  mmdebstrap --quiet --variant=extract --arch="$ARCH" --include="$inc" "$SUITE" "$tmp" "$mirror"
  merge_usr "$tmp"
  blas_links "$tmp"
  mkdir -p "$tmp$SITE_REL"
  printf 'prepare_s=%s\nmirror=%s\n' "$((SECONDS - t0))" "$mirror" > "$tmp/.adt-board-ready"
  mv "$tmp" "$ROOT"
  log "environment ready in $((SECONDS - t0)) s ($(du -sh "$ROOT" | cut -f1))"
}

install_project() {  # the project's wheel, pip install --no-deps (numpy and bitarray stay apt's)
  local whl="$CACHE/wheel"
  rm -rf "$whl" "$ROOT$SITE_REL"; mkdir -p "$whl" "$ROOT$SITE_REL"
  log "building the project's wheel and installing it with pip install --no-deps"
  "$HOST_PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$whl" "$REPO" >/dev/null
  "$HOST_PY" -m pip install -q --disable-pip-version-check --no-deps --no-compile --target "$ROOT$SITE_REL" "$whl"/adt-*.whl
}

# The emulated programs run in a chroot of the userland, not with `qemu -L ROOT`: qemu 7.2 does not
# apply -L to statx, the stat call of trixie's 64-bit-time_t armhf glibc, so Python there cannot see
# its own standard library through -L. So the checkout (without .venv, .git, build outputs), the MNIST
# files and the model are copied into the userland, and the results are read back from it.
sync_inputs() {
  # (never a folder /adt there: with the working directory "/", it would join the adt namespace package)
  rm -rf "$ROOT/adt" "$ROOT/checkout" "$ROOT/adt-run" "$ROOT/data"; mkdir -p "$ROOT/checkout" "$ROOT/adt-run" "$ROOT/data/mnist" "$ROOT/tmp" "$ROOT/root"
  chmod 1777 "$ROOT/tmp"
  tar -C "$REPO" --exclude=./.venv --exclude=./.git --exclude=./build --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.hypothesis --exclude=./results/logs -cf - . | tar -C "$ROOT/checkout" -xf -
  [[ -n "$DATA" ]] && cp -a "$DATA/." "$ROOT/data/mnist/"
  cp "$(command -v "$QEMU")" "$ROOT/usr/bin/$QEMU"
}

PYBIN=""
make_wrappers() {
  PYBIN="/usr/bin/$(readlink "$ROOT/usr/bin/python3" | xargs basename)"
  [[ -x "$ROOT$PYBIN" ]] || die "no python3 in $ROOT (try --fresh)"
  local bb
  bb="$(command -v busybox || true)"
  if [[ -z "$bb" ]]; then
    [[ $(id -u) == 0 ]] || die "busybox (static) is missing; install busybox-static (apt-get, as root)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
    bb="$(command -v busybox)"
  fi
  mkdir -p "$ROOT/usr/local/bin"
  cp "$bb" "$ROOT/usr/local/bin/busybox"
  # No binfmt_misc here: a test that starts sys.executable in a subprocess would exec an ARM binary
  # directly. The emulated python's sys.executable is this wrapper instead (qemu -0 sets argv[0]); the
  # host's static busybox runs it inside the chroot and starts another emulated python.
  printf '#!/usr/local/bin/busybox sh\nexec /usr/bin/%s -0 "$0" %s "$@"\n' "$QEMU" "$PYBIN" > "$ROOT/usr/local/bin/python3"
  printf '#!/usr/local/bin/busybox sh\nexec /usr/local/bin/python3 -m adt.tools.cli "$@"\n' > "$ROOT/usr/local/bin/adt"
  chmod +x "$ROOT/usr/local/bin/python3" "$ROOT/usr/local/bin/adt"
  ln -sf python3 "$ROOT/usr/local/bin/python"
}

prepare_root
[[ $PREPARE_ONLY == 1 ]] && { log "environment prepared: $ROOT"; exit 0; }
install_project
sync_inputs
make_wrappers

# The emulated Python in the chroot with a clean environment (no host venv variables leak in), niced. The
# installed wheel first on its path, the copied checkout after it (research/ only: it has no adt/ folder).
ARM_PY=(env -i PATH="/usr/local/bin:/usr/bin:/bin" HOME=/root LANG=C.UTF-8
  QEMU_CPU="$QEMU_CPU_MODEL" PYTHONPATH="$SITE_REL:/checkout" PYTHONPYCACHEPREFIX=/tmp/pycache
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ADT_ARM64_MAX_EXAMPLES="${ADT_ARM64_MAX_EXAMPLES:-20}" ADT_DATA=/data/mnist
  ADT_TIMEOUT_SCALE="${ADT_TIMEOUT_SCALE:-30}"  # tests' subprocess timeouts, emulation is 20-50x slower
  "$(command -v nice)" -n 10 "$(command -v chroot)" "$ROOT" "/usr/bin/$QEMU" -0 /usr/local/bin/python3 "$PYBIN")
arm_python() { "${ARM_PY[@]}" "$@"; }
host_python() { PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$HOST_PY" "$@"; }

arm_python -c "import platform, numpy, bitarray, adt.runtime.format as f, sys; \
assert platform.machine().startswith('${MACHINE:0:5}'), platform.machine(); \
assert f.__file__.startswith('$SITE_REL'), f.__file__; \
print(platform.machine(), 'python', platform.python_version(), 'numpy', numpy.__version__, 'bitarray', bitarray.__version__, 'maxsize', sys.maxsize)" \
  || die "the emulated Python cannot import numpy/bitarray/adt.runtime (try --fresh)"
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
      [[ -e "$d" ]] && paths+=("${d#"$REPO"/}")
    done
  fi
  log "runtime tests under $QEMU: pytest ${extra[*]} ${paths[*]}"
  for i in "${!extra[@]}"; do [[ "${extra[$i]}" == tests* ]] && extra[$i]="/checkout/${extra[$i]}"; done
  t0=$SECONDS
  set +e
  timeout "$TEST_TIMEOUT" "${ARM_PY[@]}" -m pytest -q -rfEs -p no:cacheprovider \
     -p research.boards.aarch64_pytest_plugin --rootdir=/checkout -c /checkout/pyproject.toml "${extra[@]}" "${paths[@]/#//checkout/}" \
     2>&1 | tee "$RUN/pytest.log"
  TEST_RC=${PIPESTATUS[0]}
  set -e
  summary="$(grep -E '(passed|failed|error|no tests ran)' "$RUN/pytest.log" | tail -n1 | sed -E 's/^=+ //; s/ =+$//')"
  [[ $TEST_RC == 124 ]] && summary="timed out after $TEST_TIMEOUT s: $summary"
  # the failing tests' ids too (pytest -rfE lists them), without the /checkout prefix
  TESTS_JSON="$("$HOST_PY" -c 'import json, re, sys
failed = [f.replace("checkout/", "", 1) for f in re.findall(r"^(?:FAILED|ERROR) (\S+)", open(sys.argv[5]).read(), re.M)]
print(json.dumps({"summary": sys.argv[1], "exit_code": int(sys.argv[2]), "seconds": int(sys.argv[3]), "command": sys.argv[4], "failed": failed}))' \
    "$summary" "$TEST_RC" "$((SECONDS - t0))" "pytest -q -rfEs ${extra[*]/#\/checkout\//} ${paths[*]}" "$RUN/pytest.log")"
  log "emulated tests: $summary (exit $TEST_RC, $((SECONDS - t0)) s)"
fi

# ---- 3. end to end: x86_64 vs the board ------------------------------------------------------------
CMP_RC=0
if [[ $DO_E2E == 1 ]]; then
  if [[ -z "$FILE" ]]; then
    FILE="$RUN/fallback-lenet5.adt"
    host_python -m research.boards.aarch64_e2e fallback "$FILE"
    MODEL_SOURCE="${MODEL_SOURCE:-fallback: LeNet-5-shaped file with seeded random weights (research.boards.aarch64_e2e fallback), NOT a trained export}"
  fi
  case "$FILE" in "$REPO"/*) rel="${FILE#"$REPO"/}" ;; *) rel="$(basename "$FILE")" ;; esac
  MODEL_SOURCE="${MODEL_SOURCE:-committed file $rel}"
  mkdir -p "$ROOT/adt-model"; cp "$FILE" "$ROOT/adt-model/$(basename "$FILE")"
  rm -rf "$RUN/x86_64" "$RUN/$MACHINE"
  log "x86_64 run (host venv)"
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 host_python -m research.boards.aarch64_e2e infer --file "$FILE" \
    --data "$DATA" --n "$N" --batch-size "$BATCH" --repeats "$REPEATS" --engines numpy --out-dir "$RUN/x86_64"
  log "$MACHINE run (qemu)"
  arm_python -m research.boards.aarch64_e2e infer --file "/adt-model/$(basename "$FILE")" --data /data/mnist --n "$N" \
    --batch-size "$BATCH" --repeats "$REPEATS" --engines numpy --out-dir "/adt-run/$MACHINE"
  rm -rf "$RUN/$MACHINE"; cp -a "$ROOT/adt-run/$MACHINE" "$RUN/$MACHINE"
  qemu_version="$("$QEMU" --version | head -n1)"
  pyver="$(basename "$PYBIN")"
  emu="$("$HOST_PY" -c 'import json,sys; a=sys.argv; print(json.dumps({"qemu": a[1], "qemu_cpu": a[2], "arch": a[3], "suite": a[4], "debian": a[5], "debian_packages": json.loads(a[6]), "rootfs": a[7], "rootfs_size": a[8], "install": a[9], "threads": "OPENBLAS_NUM_THREADS=1"}))' \
    "$qemu_version" "$QEMU_CPU_MODEL" "$ARCH" "$SUITE" "$SUITE ($pyver $(deb_version "$pyver"), libc6 $(deb_version libc6))" \
    "$("$HOST_PY" -c 'import json,sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' \
       python3-numpy "$(deb_version python3-numpy)" python3-bitarray "$(deb_version python3-bitarray)" \
       python3-tqdm "$(deb_version python3-tqdm)" python3-pytest "$(deb_version python3-pytest)" \
       python3-hypothesis "$(deb_version python3-hypothesis)")" \
    "mmdebstrap --variant=extract --arch=$ARCH $SUITE $(sed -n 's/^mirror=//p' "$STAMP")" "$(du -sh "$ROOT" | cut -f1)" \
    "pip install --no-deps --target $SITE_REL adt-*.whl (host pip; numpy, bitarray, tqdm, pytest, hypothesis from apt)")"
  mkdir -p "$RESULTS"
  set +e
  host_python -m research.boards.aarch64_e2e compare --x86 "$RUN/x86_64" --arm "$RUN/$MACHINE" --label "$MACHINE-$SUITE" \
    --json "$RESULTS/$NAME.json" --md "$RESULTS/$NAME.md" --model-source "$MODEL_SOURCE" \
    --emulation "$emu" --command "bash research/boards/board_check.sh --arch $ARCH --suite $SUITE --file $rel --n $N" \
    ${TESTS_JSON:+--tests "$TESTS_JSON"}
  CMP_RC=$?
  set -e
fi

if [[ $TEST_RC != 0 || $CMP_RC != 0 ]]; then
  log "FAILED (tests exit $TEST_RC, comparison exit $CMP_RC)"
  exit 1
fi
log "OK"
