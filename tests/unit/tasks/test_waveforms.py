"""The embedded classification task: waveform shapes at random phase, in the arrays layout."""

from __future__ import annotations

import numpy as np
import pytest

from mona_tune.cli import main
from mona_tune.config import TrainConfig
from mona_tune.tasks import get_task
from mona_tune.tasks.waveforms import CLASSES, waveforms


def test_waveforms_are_the_named_shapes():
    """Without noise and at amplitude 1 each class is its textbook wave: checked at a sample
    whose frequency and phase are recomputed here from the same random draws."""
    x, y = waveforms(400, seed=3)
    assert x.shape == (400, 1, 128) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.bincount(y).tolist() == [100] * 4  # classes in turn, shuffled
    rng = np.random.default_rng(3)
    y2 = rng.permutation(np.arange(400) % 4)
    periods, phase, amp = (rng.uniform(2.0, 8.0, 400), rng.uniform(0.0, 1.0, 400),
                           rng.uniform(0.5, 1.5, 400))
    noise = 0.3 * rng.standard_normal((400, 128))
    assert np.array_equal(y, y2)
    for i in (0, 1, 2, 3, 57):
        t = np.arange(128) / 128 * periods[i] + phase[i]
        f = t % 1.0
        wave = {"sine": np.sin(2 * np.pi * t), "square": np.where(f < 0.5, 1.0, -1.0),
                "sawtooth": 2 * f - 1, "triangle": 1 - 4 * abs(f - 0.5)}[CLASSES[y[i]]]
        np.testing.assert_allclose(x[i, 0], amp[i] * wave + noise[i], atol=1e-5)
    # the random phase leaves no class a mean shape for a linear model to use
    # (its mean wave holds a few % of a wave's power, the sampling noise of 100 waves)
    for k in range(4):
        waves = x[y == k, 0]
        assert (waves.mean(0) ** 2).mean() < 0.05 * (waves ** 2).mean()


def test_waveforms_task_loads_the_generated_files(tmp_path, capsys):
    task = get_task("waveforms")
    assert (task.output, task.out_channels, task.metric, task.direction) == (
        "classes", 4, "error_rate", "min")
    data = task.load(TrainConfig(task="waveforms", n_train=100, n_test=40))
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (90, 10, 40)
    assert data.x_train.shape[1:] == (1, 128) and set(data.y_train.tolist()) == {0, 1, 2, 3}
    # data make writes the same layout, which task arrays reads as classes
    assert main(["data", "make", "waveforms", "--out", str(tmp_path), "--n-train", "60",
                 "--n-test", "20"]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "train.npz"),
                                               str(tmp_path / "test.npz")]
    arrays = get_task("arrays").configure(TrainConfig(task="arrays", data_dir=str(tmp_path)))
    assert (arrays.output, arrays.out_channels) == ("classes", 4)
    with np.load(tmp_path / "train.npz") as z:
        np.testing.assert_array_equal(z["x"], waveforms(60, 0)[0])
    assert main(["data", "make", "waveforms", "--out", str(tmp_path), "--nu", "1"]) == 2
    assert "--nu does not apply (it takes none of them)" in capsys.readouterr().err


@pytest.mark.parametrize("seed", [0, 1])
def test_logistic_regression_is_near_chance(seed):
    from sklearn.linear_model import LogisticRegression

    x, y = waveforms(800, seed)
    xt, yt = waveforms(200, seed + 10)
    error = 1 - LogisticRegression(C=0.1, max_iter=2000).fit(x[:, 0], y).score(xt[:, 0], yt)
    assert error > 0.6  # chance is 0.75
