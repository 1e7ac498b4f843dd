"""PDEBench Darcy files are read by slices: only the samples a trial uses, every k-th cell."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import darcy_arrays, write_pdebench

from mona_tune.config import TrainConfig
from mona_tune.tasks import get_task

N, R = 40, 32  # test part: samples 0-3 (the first 10%), training part: 4-39


@pytest.fixture
def poisoned(tmp_path):
    """A file whose samples beyond those asked for (2 test, 8 training) hold NaN: reading any of
    them would fail the reader's finiteness check."""
    a, u = darcy_arrays(N, R, seed=11)
    a = np.where(a > 5, 1.0, 0.1)
    used = np.zeros(N, bool)
    used[[0, 1, *range(4, 12)]] = True
    a[~used], u[~used] = np.nan, np.nan
    return write_pdebench(tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5", a, u)


def _load(path):
    return get_task("pdebench-darcy").load(TrainConfig(
        task="pdebench-darcy", data_dir=str(path.parent), n_train=8, n_test=2, resolution=16,
        val_fraction=0.25))


def test_only_the_samples_used_are_read(poisoned):
    data = _load(poisoned)
    with h5py.File(poisoned, "r") as f:  # the whole file, subsampled by hand
        u = f["tensor"][:, 0, ::2, ::2]
    assert np.isnan(u).any()  # the unused samples would fail the check
    np.testing.assert_array_equal(data.y_test[:, 0].numpy(), u[0:2])
    np.testing.assert_array_equal(data.y_train[:, 0].numpy(), u[4:10])
    np.testing.assert_array_equal(data.y_val[:, 0].numpy(), u[10:12])


def test_the_read_selection_is_bounded(poisoned, h5py_reads):
    _load(poisoned)
    # nu and tensor: 10 samples of 16 x 16 cells each; the two coordinates: 16 each
    assert sum(h5py_reads) == 2 * 10 * 16 * 16 + 2 * 16
    assert sum(h5py_reads) < 2 * N * R * R / 10  # under a tenth of the values of nu and tensor
