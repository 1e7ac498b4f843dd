"""Safe defaults: files that would run code when loaded are refused on every loading path.

The defaults that need running servers are checked in test_signals.py, where the servers run
anyway: `mona-tune ui` and `mona-tune tracking-server` listen on 127.0.0.1 only, a search's Ray
dashboard listens on 127.0.0.1 and answers 401 without the token, and secrets planted in the
environment and in a tracking URI's password reach no MLflow run, artifact or printed line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mona_tune.cli import main


class RunsCode:
    """Unpickled with full pickle, this creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil(path: Path, marker: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": RunsCode(marker)}, path)
    return path


LOADERS = {  # name -> (argv, text of the error line); {evil} is the planted file
    "--weights": (["train", "--source-model", "swin_tiny_patch4_window7_224", "--weights",
                   "{evil}"], "cannot read weights file"),
    "search --weights": (["search", "--source-model", "swin_tiny_patch4_window7_224",
                          "--weights", "{evil}", "--storage", "{tmp}/runs", "--tracking-uri",
                          "sqlite:///{tmp}/mlflow.db"], "cannot read weights file"),
    "train --resume (a trainer checkpoint)": (["train", "--out", "{tmp}/run", "--resume"],
                                              "cannot read checkpoint"),
    "--init-embedder": (["train", "--init-embedder", "{tmp}/embedder"],
                        "cannot read the embedder"),
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_pickle_that_runs_code_is_refused(loader, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "code-ran"
    evil = _evil(tmp_path / "evil.pt", marker)
    _evil(tmp_path / "run" / "checkpoint" / "trainer.pt", marker)
    _evil(tmp_path / "embedder" / "embedder.safetensors", marker)
    (tmp_path / "embedder" / "embedder.json").write_text("{}")
    argv, says = LOADERS[loader]
    code = main([a.format(evil=evil, tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err
    assert not marker.exists(), "the pickle ran code"


def test_trial_checkpoints_load_weights_only(tmp_path):
    """Trials restore through ``Trainer.from_checkpoint`` (search/trial.py)."""
    from mona_tune.errors import MonaError
    from mona_tune.train.trainer import CHECKPOINT_FILE, Trainer

    marker = tmp_path / "code-ran"
    _evil(tmp_path / "ckpt" / CHECKPOINT_FILE, marker)
    with pytest.raises(MonaError, match="cannot read checkpoint"):
        Trainer.from_checkpoint(tmp_path / "ckpt")
    assert not marker.exists()
