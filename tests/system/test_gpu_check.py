"""``benchmarks/gpu.sh --dry-run``: the GPU check runs end to end on the CPU at tiny size (every
variant, the step ratios, packing, and the 3-trial paper-space search), so that it is known to
work before a GPU is at hand; its one JSON line holds every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_prints_one_json_line(tmp_path):
    env = {**os.environ, "PY": sys.executable, "GPU_CHECK_OUT": str(tmp_path),
           "GPU_CHECK_ARGS": "--steps 1 --pack-seconds 1"}
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["device"] == "cpu" and r["batch"] == 2 and r["source_batch"] == 4
    steps = {(v["step"], v["precision"], v["checkpointing"]) for v in r["variants"]}
    assert len(steps) == 18 and all(v["seconds"] > 0 for v in r["variants"])
    for order in ("second_order", "first_order"):
        assert r["step_ratio"]["fp32"]["equal"][order] > 1
    assert [p["trials"] for p in r["packing"]] == [1, 2, 4]
    assert all(p["samples_per_s"] > 0 for p in r["packing"])
    assert r["search"]["exit_status"] == 0, (tmp_path / "search.log").read_text()[-3000:]
    assert "trials" in " ".join(r["search"]["summary"])
