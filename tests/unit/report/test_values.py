"""How the report shows a value: formatted text, and a number or nothing."""

from __future__ import annotations

import math

from mona_tune.report import values


def test_values_fmt_and_num():
    assert values.fmt(0.123456) == "0.1235" and values.fmt(3) == "3" and values.fmt("x") == "x"
    assert values.num(2) == 2.0 and values.num(0.5) == 0.5
    assert values.num(True) is None and values.num("0.5") is None and values.num(None) is None
    assert values.num(math.inf) is None and values.num(-math.inf) is None
    assert values.num(math.nan) is None
