#!/usr/bin/env bash
# benchmarks/gpu_check.py on a machine that has torch but not rfad's other needs (the project's H100
# machine: see the script's docstring for the wheels to carry in .whl/ and how to download them).
#
#     bash benchmarks/gpu_check.sh [gpu_check.py flags]      e.g. --results-dir "$OUT" --deadline-s 480
#
# 1. the carried wheels (.whl/*.whl, if any) go into .site/ (no index, no dependency resolution:
#    the wheels were chosen to complete what the machine has);
# 2. rfad itself goes there too: its four top-level folders map to one import root (pyproject's
#    package-dir), so the tree cannot simply be put on the path (setuptools builds it, offline);
# 3. .site/ first on PYTHONPATH, then the check. Its exit status is the script's.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
SITE="${RFAD_SITE:-.site}"
export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
shopt -s nullglob
wheels=(.whl/*.whl)
if (( ${#wheels[@]} )); then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
fi
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .
# -P: not the working tree's rfad (whose stage folders are not mapped) but the one installed above.
"$PYTHON" -P - <<'PY'
import importlib
for name in ("torch", "diffusers", "transformers", "accelerate", "rfad", "rfad.trainer.rfft.train"):
    module = importlib.import_module(name)
    print(f"{name} {getattr(module, '__version__', '')} from {module.__file__}")
import torch
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
exec "$PYTHON" benchmarks/gpu_check.py "$@"
