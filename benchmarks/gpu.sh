#!/usr/bin/env bash
# The GPU check, prepared: run on a CUDA machine from the repository root; prints ONE JSON line.
#   bash benchmarks/gpu.sh             # Swin-Base at 224 on the GPU (about 6 minutes on an H100)
#   bash benchmarks/gpu.sh --dry-run   # the same on the CPU at tiny size (the suite runs this)
# 1. benchmarks/gpu_check.py: step time and peak CUDA memory of ft and MoNA (second and first
#    order) in fp32/bf16/fp16, with and without gradient checkpointing, at the paper's 4 target /
#    32 source images; step ratios at batch 16; 1, 2 and 4 packed trials per GPU.
# 2. a 3-trial search of the paper space (Swin-Base with random weights, generated 85x85 Darcy,
#    2 stage-2 epochs) at a third of a GPU each: its GPU-fit check, packing and wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
DRY=()
[ "${1:-}" = "--dry-run" ] && DRY=(--dry-run)
out=${GPU_CHECK_OUT:-$(mktemp -d)}
mkdir -p "$out"

# a check.json already in GPU_CHECK_OUT (an earlier run's) is kept: only the search runs again
# GPU_CHECK_ARGS: more flags of gpu_check.py (e.g. "--steps 1 --pack-seconds 1")
[ -s "$out/check.json" ] || "$PY" benchmarks/gpu_check.py "${DRY[@]}" ${GPU_CHECK_ARGS:-} \
  --out "$out/check.json" >&2

# the paper space, shortened: 3 trials, 2 stage-2 epochs, 64 generated training samples
"$PY" - "$out" "${DRY[@]}" <<'EOF'
import sys
from pathlib import Path

import yaml

from mona_tune.search.space import resolve_space_path

out, dry = Path(sys.argv[1]), "--dry-run" in sys.argv
space = yaml.safe_load(resolve_space_path("darcy-paper", "darcy").read_text())
space["fixed"].update(epochs=2, n_train=64, n_test=16, probe_every=0, lr_warmup_epochs=1,
                      scale="toy")  # generated data and random weights, on purpose
space["searched"]["warmup_epochs"] = {"randint": [1, 3]}
space["budget"] = {"num_samples": 3, "max_concurrent": 3}
space["scheduler"] = {"kind": "asha", "grace_period": 1, "reduction_factor": 2}
if dry:  # the embedded model on the CPU: the plumbing, not the figures
    space["fixed"].update(precision="fp32", n_train=16, n_test=8, source_batch_size=8)
(out / "paper-short.yaml").write_text(yaml.safe_dump(space))
EOF

if [ ${#DRY[@]} -eq 0 ]; then
  W=$("$PY" -c "from mona_tune.models.checkpoints import random_weights_file as f; \
print(f('swin_base_patch4_window7_224'))")
  MODEL=(--source-model swin_base_patch4_window7_224 --weights "$W" --gpus-per-trial 0.33
         --cpus-per-trial 4)
else
  MODEL=(--cpus-per-trial 1 --max-concurrent 1)
fi
start=$(date +%s)
status=0
"$PY" -m mona_tune.cli search --task darcy --space "$out/paper-short.yaml" "${MODEL[@]}" \
  --storage "$out/runs" --tracking-uri "sqlite:///$out/mlflow.db" --name gpu-paper-3 \
  --no-register --quiet >"$out/search.log" 2>&1 || status=$?
wall=$(( $(date +%s) - start ))
[ $status -eq 0 ] || tail -30 "$out/search.log" >&2

"$PY" - "$out" "$wall" "$status" <<'EOF'
import json
import re
import sys
from pathlib import Path

out, wall, status = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
result = json.loads((out / "check.json").read_text())
log = (out / "search.log").read_text()
fit = re.search(r"one trial measured on .*?: ([\d.]+) GiB", log)
result["search"] = {"trials": 3, "wall_s": wall, "exit_status": status,
                    "trial_peak_gib": float(fit.group(1)) if fit else None,
                    "summary": log.strip().splitlines()[-3:],
                    "log": str(out / "search.log")}
print(json.dumps(result))
EOF
