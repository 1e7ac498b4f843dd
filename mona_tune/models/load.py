"""Which source model a name means, loaded: the embedded Swin (no name), a timm Swin (a timm
name), or a language model through ``transformers`` (any other name); and the ``--weights``
check made before anything loads."""

from __future__ import annotations

from pathlib import Path

from mona_tune.errors import MonaError
from mona_tune.models.checkpoints import read_state_dict, read_swin_checkpoint
from mona_tune.models.language import load_language_model
from mona_tune.models.source import (SourceData, SourceModel, embedded_source_model,
                                     timm_source_model)


def load_source_model(source_model: str | None, weights: str | None,
                      data: SourceData) -> SourceModel:
    """The embedded model (trained on ``data`` once, cached), a timm Swin by name, or a language
    model through ``transformers`` (:mod:`mona_tune.models.language`) for any other name.

    The source data must be of the model's modality: images for the Swins, text for a language
    model (its outer loss and probe embed the source data with the model's own embedding).
    """
    image = source_model is None or _is_timm_model(source_model)
    modality = "image" if image else "text"
    if data.modality != modality:  # before any model loads
        needs = ("labelled text (--source-data text:FILE)" if modality == "text" else
                 "labelled images (digits, fractals, cifar10:DIR)")
        raise MonaError(f"source data {data.name} is {data.modality}, but the source model "
                        f"{source_model or 'embedded'} takes {modality}: give it {needs}")
    if source_model is None:
        return embedded_source_model(data)
    if image:
        return timm_source_model(source_model, weights)
    return load_language_model(source_model, weights)


def check_weights(weights: str, source_model: str | None) -> None:
    """A ``--weights`` path, before anything loads: for a timm name a Swin checkpoint in one of
    the layouts :mod:`mona_tune.models.checkpoints` maps (a file, or a ``save_pretrained``
    directory); otherwise (a language model, or no name) a ``save_pretrained`` directory or a
    file that reads as a state dict."""
    path = Path(weights).expanduser()
    if source_model is not None and _is_timm_model(source_model):
        read_swin_checkpoint(path)
        return
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MonaError(f"--weights {path} is a directory without config.json (a language "
                            "model's weights are a directory written by save_pretrained)")
        return
    read_state_dict(path)


def _is_timm_model(name: str) -> bool:
    import timm

    return bool(timm.is_model(name))
