#!/usr/bin/env bash
# Build .venv-tv: a virtual environment in which REAL torchvision imports, beside ADT (issue 19 item 6).
#
#     bash research/torchvision/setup_venv.sh          # from the repository root; about 5.6 GB
#
# Why a second venv: the project's .venv pins the CPU build torch==2.13.0 (constraints.txt), and PyPI's
# Linux torchvision wheels are built against CUDA torch, so `import torchvision` there fails with
# "operator torchvision::nms does not exist"; PyPI has no torchvision sdist to build against the CPU
# torch. torch 2.14.1 + torchvision 0.29.1 (a matched CUDA build, runs on the CPU) do import. This
# venv is for research/torchvision/families.py only; CI never builds it (research/zoo.py's fixtures
# follow torchvision's layer structure instead). See research/torchvision/README.md.
#
# The project is installed WITHOUT constraints.txt (which would pull torch back to 2.13.0): its other
# dependencies are read from pyproject.toml and installed under a constraint that holds torch and
# torchvision where they are, then ADT itself goes in editable with --no-deps.
set -euo pipefail

TORCH=2.14.1
TORCHVISION=0.29.1
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${ADT_TV_VENV:-$ROOT/.venv-tv}"
PYTHON="${PYTHON:-python3}"
NICE=(nice -n 10)   # a shared machine: builds and installs yield to test runs

cd "$ROOT"
[ -x "$VENV/bin/python" ] || "${NICE[@]}" "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"${NICE[@]}" "$PY" -m pip install -q --upgrade pip

# 1. torch + torchvision, a matched pair.
"${NICE[@]}" "$PY" -m pip install "torch==$TORCH" "torchvision==$TORCHVISION"

# 2. ADT's own dependencies (base + extras onnx, export, dev), torch and torchvision held in place.
HOLD="$(mktemp)"
trap 'rm -f "$HOLD"' EXIT
printf 'torch==%s\ntorchvision==%s\n' "$TORCH" "$TORCHVISION" > "$HOLD"
mapfile -t DEPS < <("$PY" - <<'PY'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = list(p["dependencies"])
for extra in ("onnx", "export", "dev"):
    deps += p["optional-dependencies"][extra]
for d in dict.fromkeys(deps):          # keep order, drop repeats; torch itself is already there
    if d.split(">")[0].split("=")[0].split("<")[0].strip() not in ("torch", "torchvision"):
        print(d)
PY
)
"${NICE[@]}" "$PY" -m pip install -c "$HOLD" "${DEPS[@]}"

# 3. ADT itself, editable, no dependency resolution (so nothing can replace torch).
"${NICE[@]}" "$PY" -m pip install --no-deps --no-build-isolation -e ".[onnx,export,dev]"

# 4. The check: versions as pinned, torchvision's ops registered, a model builds and runs.
"${NICE[@]}" "$PY" - "$TORCH" "$TORCHVISION" <<'PY'
import sys
import torch, torchvision
import adt.exporter, adt.runtime  # noqa: F401  (the project imports beside them)
want_t, want_tv = sys.argv[1], sys.argv[2]
assert torch.__version__.split("+")[0] == want_t, f"torch {torch.__version__}, expected {want_t}"
assert torchvision.__version__.split("+")[0] == want_tv, f"torchvision {torchvision.__version__}, expected {want_tv}"
m = torchvision.models.resnet18(num_classes=10).eval()
with torch.no_grad():
    y = m(torch.randn(1, 3, 64, 64))
assert tuple(y.shape) == (1, 10), y.shape
print(f"ok: torch {torch.__version__}, torchvision {torchvision.__version__}, resnet18 -> {tuple(y.shape)}")
PY
