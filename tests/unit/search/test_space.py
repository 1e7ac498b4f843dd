"""Search space files: parsing, conversion to Ray Tune, and one-line errors (exit 2) before Ray."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from mona_tune.cli import main
from mona_tune.config import SearchSpace, TrainConfig
from mona_tune.errors import MonaError
from mona_tune.search.space import (
    dump_space,
    load_space,
    packaged_spaces,
    resolve_space_path,
    to_param_space,
)

GOOD = """
searched:
  lam: {uniform: [0, 1]}
  inner_lr: {loguniform: [1.0e-4, 1.0e-2]}
  warmup_epochs: {randint: [0, 3]}
  batch_size: {choice: [8, 16]}
  lr: {quniform: [1.0e-4, 1.0e-3, 1.0e-4]}
fixed:
  epochs: 3
  n_train: 64
budget: {num_samples: 4, max_concurrent: 2}
scheduler: {grace_period: 1, reduction_factor: 2}
"""


def _write(tmp_path, text, name="space.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_packaged_spaces_load_and_default_searches_the_mona_hyperparameters():
    from mona_tune.tasks import TASKS

    spaces = packaged_spaces()
    assert {"darcy", "darcy-paper", "pdebench-darcy"} <= set(spaces)
    assert set(TASKS) <= set(spaces)  # every task has its default search
    for name, path in spaces.items():
        task = name if name in TASKS else "darcy"
        space = load_space(path, task)
        assert {"lam", "inner_lr", "warmup_epochs"} <= set(space.searched), name
    assert resolve_space_path(None, "darcy") == spaces["darcy"]
    assert resolve_space_path("darcy-paper", "darcy") == spaces["darcy-paper"]


def test_good_space_to_tune_param_space(tmp_path):
    from ray import tune
    from ray.tune.search.sample import Categorical, Float, Integer

    space = load_space(_write(tmp_path, GOOD), "darcy")
    ps = to_param_space(space, "darcy", {"device": "cpu"})
    assert isinstance(ps["lam"], Float) and isinstance(ps["inner_lr"], Float)
    assert isinstance(ps["warmup_epochs"], Integer) and isinstance(ps["batch_size"], Categorical)
    assert ps["epochs"] == 3 and ps["task"] == "darcy" and ps["device"] == "cpu"
    assert space.max_stage2_epochs() == 3
    # randint excludes its upper bound, as tune.randint does
    assert ps["warmup_epochs"].lower == 0 and ps["warmup_epochs"].upper == 3
    samples = [tune.search.sample.Domain.sample(ps["lam"]) for _ in range(20)]
    assert all(0 <= s <= 1 for s in samples)
    # every sample of the space is a valid TrainConfig
    for _ in range(5):
        cfg = {k: (v.sample() if hasattr(v, "sample") else v) for k, v in ps.items()}
        TrainConfig(**cfg)
    # the dumped space reads back to the same model
    again = SearchSpace.model_validate(yaml.safe_load(dump_space(space)))
    assert again == space


def test_flag_fixing_a_searched_field_is_refused(tmp_path):
    space = load_space(_write(tmp_path, GOOD), "darcy")
    with pytest.raises(MonaError, match="searches lam"):
        to_param_space(space, "darcy", {"lam": 0.5})


BAD = [
    # (file body, expected fragments of the one-line message)
    ("searched:\n  lamda: {uniform: [0, 1]}\n", ["searched.lamda", "not a TrainConfig field"]),
    ("searched:\n  lam: {normal: [0, 1]}\n", ["searched.lam", "unknown distribution 'normal'"]),
    ("searched:\n  lam: {uniform: [1, 0.5]}\n", ["searched.lam", "low 1 must be below high 0.5"]),
    ("searched:\n  lam: {uniform: [0.5, 0.5]}\n", ["searched.lam", "must be below"]),
    ("searched:\n  inner_lr: {loguniform: [0, 1.0e-2]}\n",
     ["searched.inner_lr", "positive on a log scale"]),
    ("searched:\n  warmup_epochs: {randint: [0.5, 3]}\n",
     ["searched.warmup_epochs", "integers"]),
    ("searched:\n  lam: {uniform: [0, 1, 2]}\n", ["searched.lam", "takes [low, high]"]),
    ("searched:\n  lam: {uniform: [-1, 1]}\n", ["searched.lam", "greater than or equal to 0"]),
    ("searched:\n  lam: {choice: []}\n", ["searched.lam", "at least one value"]),
    ("fixed:\n  epoch: 3\n", ["fixed.epoch", "not a TrainConfig field"]),
    ("fixed:\n  epochs: 0\n", ["fixed.epochs", "greater than or equal to 1"]),
    ("fixed:\n  method: magic\n", ["fixed.method"]),
    ("searched:\n  lam: {uniform: [0, 1]}\nfixed:\n  lam: 0.5\n",
     ["searched.lam", "either searched or fixed"]),
    ("budget:\n  trials: 4\n", ["budget.trials", "unknown key"]),
    ("scheduler:\n  reduction_factor: 1\n", ["scheduler.reduction_factor", "greater than 1"]),
    ("searchd:\n  lam: {uniform: [0, 1]}\n", ["searchd", "unknown key"]),
    ("searched: [lam]\n", ["searched"]),
    ("searched:\n  lam: {uniform: [0, 1]\n", ["not valid YAML"]),
]


@pytest.mark.parametrize("body,fragments", BAD, ids=[b[1][0] + "|" + b[1][-1][:20] for b in BAD])
def test_bad_space_is_one_line_naming_file_key_and_fault_with_exit_2(tmp_path, capsys, body,
                                                                     fragments):
    import ray

    path = _write(tmp_path, body)
    code = main(["search", "--task", "darcy", "--space", str(path), "--storage",
                 str(tmp_path / "runs"), "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err, err
    assert err.startswith("mona-tune: error: ")
    assert str(path) in err
    for f in fragments:
        assert f in err, (f, err)
    assert not ray.is_initialized()
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["--space", "/nonexistent/space.yaml"], "--space /nonexistent/space.yaml: no such file"),
    (["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["--set", "epochz=3"], "epochz is not a TrainConfig field"),
    (["--set", "epochs=0"], "epochs"),
    (["--reduction-factor", "1"], "--reduction-factor 1"),
    (["--resume"], "--resume needs --name"),
    (["--resume", "--name", "nothing-here"], "no search 'nothing-here'"),
    (["--name", "bad name/with slash"], "--name"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_flags_exit_2(tmp_path, capsys, argv, fragment):
    code = main(["search", "--storage", str(tmp_path / "runs"), "--tracking-uri",
                 f"sqlite:///{tmp_path}/mlflow.db", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err
    assert fragment in err, err


def test_existing_name_without_resume_is_refused(tmp_path, capsys):
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    code = main(["search", "--storage", str(tmp_path / "runs"), "--name", "taken",
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--resume" in err


def test_the_sampler_of_a_search_saved_under_its_old_name():
    """Searches saved before ``SearchConfig.sampler`` had its name hold ``search``; --resume
    reads them as they are, and writes the new name."""
    from mona_tune.config import SearchConfig

    saved = {"space_file": "s.yaml", "name": "old", "storage": "/x", "tracking_uri": "u",
             "search": "random"}
    scfg = SearchConfig.model_validate(saved)
    assert scfg.sampler == "random"
    dumped = scfg.model_dump(mode="json")
    assert dumped["sampler"] == "random" and "search" not in dumped
    assert SearchConfig.model_validate(dumped).sampler == "random"
