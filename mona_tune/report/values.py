"""How the report shows a value: :func:`fmt` for text, :func:`num` for a number or nothing."""

from __future__ import annotations

from typing import Any


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def num(v: Any) -> float | None:
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(float(v)) else None  # a diverged trial's ±inf: no value
