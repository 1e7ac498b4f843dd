"""What every command shares: the parser whose errors are one line, a YAML file of config
fields, and a number-or-none flag type."""

from __future__ import annotations

import argparse
from pathlib import Path

from mona_tune.errors import MonaError


class Parser(argparse.ArgumentParser):
    """argparse, but bad flags are a MonaError like every other bad input."""

    def error(self, message: str):
        raise MonaError(f"{self.prog}: {message}")


def read_yaml(path: Path) -> dict:
    """A YAML file of TrainConfig fields (a mapping); a missing or bad file is one line."""
    import yaml

    if not path.is_file():
        raise MonaError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise MonaError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise MonaError(f"config file {path} must hold a mapping of TrainConfig fields")
    return data


def float_or_none(text: str) -> float | None:
    """A float, or ``none`` for a field whose None switches something off (``--grad-clip none``)."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None
