"""benchmarks/results.json: one key per headline figure, merged by every benchmark that measures
one, each with its goal beside it, the machine and the date (RESULTS.md stays the readable
version).

    from results_json import record
    record("mona_step_ratio_b16", 2.91, goal="<= 3.0", command="python benchmarks/step_cost.py")
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

RESULTS_JSON = Path(__file__).resolve().parent / "results.json"


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0]
    return (f"{os.cpu_count()} cores ({platform.machine()}), {gpu}, torch {torch.__version__}, "
            f"load {load:.1f}")


def record(key: str, value, *, goal: str, command: str, path: Path = RESULTS_JSON,
           **extra) -> None:
    """Merge ``key`` into results.json (a value per seed may be a dict or a list; ``extra``:
    more fields beside it, e.g. a figure's CPU-bound projection)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = {"value": value, "goal": goal, "machine": machine(),
                 "date": dt.date.today().isoformat(), "command": command, **extra}
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
