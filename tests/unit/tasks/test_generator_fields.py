"""The generators' coefficient fields against code written here from method.md:

- FNO: the Gaussian random field's spectrum, measured on many samples by projecting them on the
  cosine basis (built here), against the covariance (−Δ + 9I)^−2 (eigenvalues π²|k|² + 9);
- FNO: a = 12 where the field is ≥ 0 and 3 elsewhere, the field rebuilt here from the same draws;
- PDEBench: 5 Gaussian bumps with unit amplitude, thresholded at their mean to 1 (above) and 0.1.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cosine_basis

from mona_tune.tasks.generate import (fno_coefficient, grf_cosine, make_sample,
                                      pdebench_coefficient)

TAU2 = 9.0  # the shift of −Δ + 9I


def covariance_eigenvalues(s: int) -> np.ndarray:
    """Variance of the field's coefficient k = (k1, k2): (π²|k|² + 9)^−2, up to the scale
    τ^(2α−2)·s² = 9 s² of the expansion; the constant mode is removed (zero mean)."""
    k1, k2 = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    lam = TAU2 * s**2 * (np.pi**2 * (k1**2 + k2**2) + TAU2) ** -2.0
    lam[0, 0] = 0.0
    return lam


def test_random_field_spectrum_is_that_of_the_shifted_laplacian():
    s, n = 12, 3000
    rng = np.random.default_rng(123)
    phi = cosine_basis(s)
    coeffs = np.stack([phi @ grf_cosine(rng, s) @ phi.T for _ in range(n)])
    var = (coeffs**2).mean(0)  # zero-mean field: the second moment is the variance
    want = covariance_eigenvalues(s)
    assert np.abs(coeffs[:, 0, 0]).max() < 1e-10  # zero mean
    ratio = var[want > 0] / want[want > 0]
    # 3000 samples: each variance within ~2.6 % (1 sd); 143 of them
    assert np.abs(ratio - 1).max() < 0.15
    assert abs(ratio.mean() - 1) < 0.02
    # the decay itself: the variance falls by (π²·k² + 9)² from k = 1 to k = 10 along an axis
    assert var[10, 0] / var[1, 0] == pytest.approx(want[10, 0] / want[1, 0], rel=0.15)
    # distinct coefficients are uncorrelated (the basis diagonalises the covariance)
    a, b = coeffs[:, 1, 0], coeffs[:, 0, 1]
    assert abs((a * b).mean()) / np.sqrt(var[1, 0] * var[0, 1]) < 0.1


def test_random_field_length_scale():
    """The correlation of neighbouring points: a 10× shorter length scale would decorrelate them."""
    s = 32
    rng = np.random.default_rng(5)
    fields = np.stack([grf_cosine(rng, s) for _ in range(400)])
    phi = cosine_basis(s)
    # the covariance of points p and q: Σ_k λ_k φ_k1(p1) φ_k2(p2) φ_k1(q1) φ_k2(q2)
    lam = covariance_eigenvalues(s)
    centre, step = s // 2, 4

    def c(p, q):
        return float(np.einsum("kl,k,l,k,l->", lam, phi[:, p[0]], phi[:, p[1]], phi[:, q[0]],
                               phi[:, q[1]]))

    p, q = (centre, centre), (centre + step, centre)
    want = c(p, q) / np.sqrt(c(p, p) * c(q, q))
    got = np.corrcoef(fields[:, p[0], p[1]], fields[:, q[0], q[1]])[0, 1]
    assert want > 0.5  # the length scale of (−Δ + 9I)^−2 is about a third of the domain
    assert got == pytest.approx(want, abs=0.1)


def fno_field_here(rng: np.random.Generator, s: int) -> np.ndarray:
    """The GRF from the same standard normal draws, by the cosine expansion written here."""
    xi = rng.standard_normal((s, s))
    coef = np.sqrt(covariance_eigenvalues(s))
    phi = cosine_basis(s)
    return phi.T @ (coef * xi) @ phi


@pytest.mark.parametrize("s", [9, 16])
def test_fno_coefficient_values_and_where_they_go(s):
    for seed in range(5):
        field = fno_field_here(np.random.default_rng(seed), s)
        a = fno_coefficient(np.random.default_rng(seed), s)
        np.testing.assert_array_equal(a, np.where(field >= 0, 12.0, 3.0))
        assert set(np.unique(a)) == {3.0, 12.0}


def pdebench_here(rng: np.random.Generator, s: int) -> np.ndarray:
    """5 bumps exp(−|x − c|²/w), c ~ U([0,1]²), w = 0.5·U(0,1), on cell centres (x along axis 0);
    1 where the sum exceeds its mean, 0.1 elsewhere."""
    centres = rng.uniform(0.0, 1.0, size=(5, 2))
    widths = 0.5 * rng.uniform(0.0, 1.0, size=5)
    x = (np.arange(s) + 0.5) / s
    gx, gy = np.meshgrid(x, x, indexing="ij")
    total = sum(np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / w)
                for (cx, cy), w in zip(centres, widths))
    return np.where(total > total.mean(), 1.0, 0.1)


@pytest.mark.parametrize("s", [8, 20])
def test_pdebench_coefficient_values_and_where_they_go(s):
    for seed in range(5):
        want = pdebench_here(np.random.default_rng(seed), s)
        got = pdebench_coefficient(np.random.default_rng(seed), s)
        np.testing.assert_array_equal(got, want)
        assert set(np.unique(got)) == {0.1, 1.0}


def test_samples_draw_from_their_own_seed_sequence():
    """Sample (seed, part, index) uses SeedSequence(seed, spawn_key=(part, index))."""
    def rng(seed, part, index):
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(part, index)))

    a, _ = make_sample("fno", 3, 2, 5, 9)
    np.testing.assert_array_equal(a, np.where(fno_field_here(rng(3, 2, 5), 9) >= 0, 12.0, 3.0))
    a, _ = make_sample("pdebench", 3, 0, 4, 8, beta=0.1)
    np.testing.assert_array_equal(a, pdebench_here(rng(3, 0, 4), 8))
