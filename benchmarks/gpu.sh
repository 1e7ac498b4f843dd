#!/usr/bin/env bash
# GPU check, prepared: run on a CUDA machine from the repository root.
#   bash benchmarks/gpu.sh            # installs into .venv if needed, then measures
# Prints stage-2 throughput of Swin-Base at 224×224 (float32, bf16 autocast), the MoNA step ratio
# there, the embedded trial's GPU memory and how many such trials one GPU holds, then runs a short
# embedded search with fractional GPUs to show the packing for real.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { make install >/dev/null; PY=.venv/bin/python; }
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

"$PY" benchmarks/gpu_check.py "$@"

# Packing for real: 8 embedded trials at a quarter GPU each -> up to 4 at once on one device.
out=$(mktemp -d)
start=$(date +%s)
"$PY" -m mona_tune.cli search --task darcy --gpus-per-trial 0.25 --cpus-per-trial 2 \
  --max-concurrent 4 --storage "$out/runs" --tracking-uri "sqlite:///$out/mlflow.db" \
  --name gpu-packing >"$out/search.log" 2>&1 || { tail -30 "$out/search.log"; exit 1; }
echo "embedded search, 4 trials per GPU: $(( $(date +%s) - start )) s (log: $out/search.log)"
