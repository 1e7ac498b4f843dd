"""The one error type a user can cause, and a config's validation error as one line; ``cli``
turns both into one line on stderr and exit status 2."""

from __future__ import annotations


class MonaError(Exception):
    """Bad input: a missing or corrupt file, a wrong flag, an impossible combination.

    The message must name what is wrong and where (file, key, flag) in one line.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def validation_line(err, where: str = "config", *, first_only: bool = False,
                    prefix: str | None = None) -> str:
    """A pydantic error as one line: ``invalid <where>: <field>: <message>; ...`` (every error,
    or the first only); ``prefix`` replaces ``invalid <where>: ``."""
    parts = []
    for e in err.errors()[:1] if first_only else err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or where
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return (f"invalid {where}: " if prefix is None else prefix) + "; ".join(parts)
