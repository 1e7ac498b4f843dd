"""A trial's row as ``search.results.trial_rows`` makes it, for the report's tests."""

from __future__ import annotations

import pandas as pd
import pytest


def _row(trial_id, metrics, history=None, config=None):
    """history: (stage, value) per epoch, the global epochs counted from 1."""
    df = None
    if history is not None:
        df = pd.DataFrame({"stage": [s for s, _ in history],
                           "val_rel_l2": [v for _, v in history],
                           "global_epoch": list(range(1, len(history) + 1))})
    return {"trial_id": trial_id, "config": config or {"lam": 0.5}, "metrics": metrics,
            "error": None, "df": df, "path": None}


@pytest.fixture
def row():
    return _row
