"""Optional dependencies (pyproject.toml's extras): a feature whose package is missing says so in
one line that names the extra installing it, before Ray starts where the feature is asked for."""

from __future__ import annotations

import importlib.util

from mona_tune.errors import MonaError

# module -> (the extra that installs it, the feature that needs it)
EXTRAS = {
    "ot": ("orca", "orca's OTDD (exact optimal transport, POT)"),
    "transformers": ("language", "a language source model (transformers)"),
}


def missing(module: str) -> MonaError:
    extra, feature = EXTRAS[module]
    return MonaError(f"{feature} needs the package {module!r}, which is not installed here: "
                     f"pip install 'mona-tune[{extra}]'")


def require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise missing(module)


def check_extras(cfg) -> None:
    """The packages a training config (a ``TrainConfig``) needs beside the core ones."""
    if cfg.method == "orca" and cfg.orca_distance == "otdd":
        require("ot")
    if cfg.source_model is not None:
        import timm

        if not timm.is_model(cfg.source_model):
            require("transformers")
