"""Test-only fault injection into training runs; inert unless ``$MONA_TUNE_FAULT`` is set.

The fault suite (``tests/system/test_faults.py``) sets ``MONA_TUNE_FAULT`` to a JSON list of faults, or
to the path of a file holding one (read at every epoch, so a running Ray cluster's workers see a
new list without a restart). Never set it outside tests. Each fault is a dict:

- ``at``: ``[stage, epoch]``, the epoch about to run (1-based within its stage);
- ``kind``: ``pause`` (until ``until`` (a glob) matches ``count`` paths, default 1, or for
  ``seconds``), ``raise`` (a ``RuntimeError`` naming the fault), ``nan`` (the training loss
  becomes NaN, ``inf`` with ``value``), ``kill`` (SIGKILL of the own process), ``touch``
  (creates ``path`` with ``{run}`` replaced by a digest of the run's config, ``{pid}`` by the
  process id);
- which runs: ``match`` (config fields and values, floats compared to 1e-9 relative), ``claim``
  (a file: the first run to arrive that holds no other claim in that folder takes the fault, and
  every later attempt of the same config gets it too), ``once`` (a file: the fault fires once in
  all, e.g. a kill that a retry survives).
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path

ENV = "MONA_TUNE_FAULT"
PAUSE_LIMIT_S = 600.0  # a pause that nothing ends does not hang a test run for ever


def _faults() -> list[dict]:
    """The faults in effect: the one place that reads ``$MONA_TUNE_FAULT``."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return []
    text = value if value[0] in "[{" else Path(value).read_text() if Path(value).exists() else "[]"
    data = json.loads(text)
    return [data] if isinstance(data, dict) else list(data)


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return str(a) == str(b)


def _take(path: str, content: str) -> bool:
    """Create ``path`` holding ``content``; False if it exists already."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    return True


def _applies(fault: dict, cfg: dict, run: str) -> bool:
    if any(k not in cfg or not _same(cfg[k], v) for k, v in fault.get("match", {}).items()):
        return False
    if "claim" in fault:
        claim = Path(fault["claim"])
        claim.parent.mkdir(parents=True, exist_ok=True)
        held = {p for p in claim.parent.iterdir() if p.read_text().strip() == run}
        if claim not in held and (held or not _take(str(claim), run)):
            return False
    if "once" in fault:
        return _take(fault["once"], run)
    return True


def _fire(fault: dict, run: str, where: str) -> float | None:
    kind = fault["kind"]
    if kind == "pause":
        deadline = time.monotonic() + float(fault.get("seconds", PAUSE_LIMIT_S))
        want = int(fault.get("count", 1))
        while time.monotonic() < deadline:
            if "until" in fault and len(glob.glob(fault["until"])) >= want:
                break
            time.sleep(0.1)
    elif kind == "touch":
        path = Path(fault["path"].replace("{run}", run).replace("{pid}", str(os.getpid())))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif kind == "raise":
        raise RuntimeError(f"injected fault at {where}")
    elif kind == "nan":
        return float(fault.get("value", math.nan))
    elif kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise ValueError(f"{ENV}: unknown fault kind {kind!r}")
    return None


def at_epoch(cfg, stage: int, epoch: int) -> float | None:
    """Fire the faults set for (``stage``, ``epoch``) on this run; returns an injected training
    loss (a ``nan`` fault) or None."""
    faults = _faults()
    if not faults:
        return None
    values = cfg.model_dump(mode="json")
    run = hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
    loss = None
    for fault in faults:
        if list(fault.get("at", [])) == [stage, epoch] and _applies(fault, values, run):
            injected = _fire(fault, run, f"stage {stage} epoch {epoch}")
            loss = injected if injected is not None else loss
    return loss
