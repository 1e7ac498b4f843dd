"""Alignment / uniformity and the Gaussian MMD against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mona_tune.train.losses import align_uniform, gaussian_mmd, median_bandwidth, sq_dists


def test_align_uniform_by_hand():
    f = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    align, uniform = align_uniform(f, labels, t=2.0)

    r = 1 / math.sqrt(2)
    z = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (r, r)]

    def d2(i, j):
        return (z[i][0] - z[j][0]) ** 2 + (z[i][1] - z[j][1]) ** 2

    same = [(0, 1), (2, 3)]
    diff = [(0, 2), (0, 3), (1, 2), (1, 3)]
    want_align = (d2(0, 1) + d2(2, 3)) / 2  # = (2 + 2 + √2) / 2
    want_uniform = math.log(sum(math.exp(-2 * d2(i, j)) for i, j in diff) / len(diff))
    assert same and want_align == pytest.approx(2 + r, abs=1e-12)
    assert align.item() == pytest.approx(want_align, abs=1e-12)
    assert uniform.item() == pytest.approx(want_uniform, abs=1e-12)


def test_align_uniform_scale_invariant_and_empty_pairs():
    f = torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])  # no same-class pair
    a1, u1 = align_uniform(f, labels)
    a2, u2 = align_uniform(3.0 * f, labels)
    assert a1.item() == 0.0 and torch.allclose(u1, u2)
    a3, u3 = align_uniform(f, torch.zeros(6, dtype=torch.long))  # no different-class pair
    assert u3.item() == 0.0 and a3.item() > 0


def test_align_uniform_twice_differentiable_with_duplicates():
    f = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.5, -1.0]], dtype=torch.float64,
                     requires_grad=True)
    a, u = align_uniform(f, torch.tensor([0, 0, 1]))
    (g,) = torch.autograd.grad(a + u, f, create_graph=True)
    (h,) = torch.autograd.grad(g.sum(), f)
    assert torch.isfinite(g).all() and torch.isfinite(h).all()


def test_mmd_by_hand():
    x = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    y = torch.tensor([[2.0]], dtype=torch.float64)
    k = lambda d2: math.exp(-d2 / 2.0)  # noqa: E731 - σ² = 1
    kxx = (k(0) + k(1) + k(1) + k(0)) / 4
    kyy = k(0)
    kxy = (k(4) + k(1)) / 2
    assert gaussian_mmd(x, y, sigma2=1.0).item() == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)
    # median heuristic: off-diagonal squared distances of {0, 1, 2} are 1, 4, 1 (twice) -> 1
    assert median_bandwidth(torch.cat([x, y])).item() == pytest.approx(1.0)
    assert gaussian_mmd(x, y).item() == pytest.approx(kxx + kyy - 2 * kxy, abs=1e-12)


def test_mmd_zero_for_equal_samples_and_positive_otherwise():
    x = torch.randn(8, 3, dtype=torch.float64)
    assert gaussian_mmd(x, x.clone()).item() == pytest.approx(0.0, abs=1e-12)
    assert gaussian_mmd(x, x + 2.0).item() > 0.1


def test_sq_dists():
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    assert torch.allclose(sq_dists(a, b), torch.cdist(a, b) ** 2)
