#!/usr/bin/env bash
# One-time set-up: a virtual environment .venv with every pinned requirement (requirements.txt).
# Run again at any time; it only installs what is missing. Then: .venv/bin/snakemake --cores 8 all
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11), f"Python 3.11 or newer needed, found {sys.version}"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --disable-pip-version-check -q -r requirements.txt
.venv/bin/python -c 'import torch, cv2, mediapipe, scipy, snakemake; print(f"ready: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")'
