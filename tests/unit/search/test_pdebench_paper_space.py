"""The packaged paper-scale PDEBench Darcy space: it parses for its task, every field is a
TrainConfig field, and it fixes the paper's settings."""

from __future__ import annotations

import yaml

from mona_tune.config import TrainConfig
from mona_tune.search.space import load_space, packaged_spaces, resolve_space_path, to_param_space
from mona_tune.tasks import get_task
from mona_tune.tasks.darcy import PDEBENCH_BETA, PDEBENCH_RESOLUTION


def test_the_space_parses_with_train_config_fields_only():
    path = packaged_spaces()["pdebench-darcy-paper"]
    assert resolve_space_path("pdebench-darcy-paper", "pdebench-darcy") == path
    space = load_space(path, "pdebench-darcy")
    raw = yaml.safe_load(path.read_text())
    assert set(raw["searched"]) | set(raw["fixed"]) <= set(TrainConfig.model_fields)
    assert set(space.searched) == {"lam", "inner_lr", "warmup_epochs"}
    fixed = space.fixed
    assert (fixed["beta"], fixed["resolution"]) == (PDEBENCH_BETA, PDEBENCH_RESOLUTION) == (0.1, 64)
    assert get_task("pdebench-darcy").in_shape == (64, 64)
    assert (fixed["batch_size"], fixed["source_batch_size"], fixed["bf16"]) == (4, 32, True)
    assert (fixed["epochs"], fixed["lr"], fixed["weight_decay"]) == (100, 1e-3, 5e-3)
    assert "task" not in fixed and "n_train" not in fixed  # chosen by --task; all samples
    # every sample of the space is a valid TrainConfig of the task
    params = to_param_space(space, "pdebench-darcy", {"device": "cpu"})
    for _ in range(5):
        cfg = TrainConfig(**{k: v.sample() if hasattr(v, "sample") else v
                             for k, v in params.items()})
        assert cfg.task == "pdebench-darcy" and cfg.bf16


def test_the_comment_gives_the_full_command():
    text = packaged_spaces()["pdebench-darcy-paper"].read_text()
    for flag in ("--task pdebench-darcy", "--space pdebench-darcy-paper",
                 "--source-model swin_base_patch4_window7_224.ms_in22k", "--weights ",
                 "--data-dir ", "--source-data cifar10:"):
        assert flag in text, flag
    assert yaml.safe_load(text)["fixed"]["scale"] == "paper"  # no silent toy
