#!/usr/bin/env bash
# The GPU check in one command (see benchmarks/gpu_check.py): run from anywhere in the
# checkout, on a machine with one GPU, after `make install` (or any venv with chatsft).
#   benchmarks/gpu_check.sh [--dry-run] [--out FILE]
# Optional parts need: pip install flash-attn --no-build-isolation bitsandbytes deepspeed
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
if ! "$python" -c "import torch, transformers, accelerate, chatsft" 2>/dev/null; then
  echo "gpu_check: $python cannot import torch/transformers/accelerate/chatsft: run 'make install' first" >&2
  exit 2
fi
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
# At most 10 minutes, whatever happens.
exec timeout 600 "$python" benchmarks/gpu_check.py "$@"
