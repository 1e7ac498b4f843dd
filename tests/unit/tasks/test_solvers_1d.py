"""PDEBench's 1D schemes against solutions computed here independently of them.

Advection: the exactly translated profile. Burgers: the Cole–Hopf solution (a heat equation
solved by its Fourier series). Diffusion-reaction: the logistic solution of a uniform state and the
decay of a Fourier mode by the discrete Laplacian's eigenvalue. Diffusion-sorption: a steady state,
the maximum principle and convergence to a fine-grid run. Each also checks the order of accuracy
where the scheme has one.
"""

from __future__ import annotations

import numpy as np
import pytest

from mona_tune.tasks import solvers_1d as s
from mona_tune.tasks.generate import sample_rng


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def smooth(x):
    return np.sin(2 * np.pi * x) + 0.5 * np.cos(4 * np.pi * x)


# ================================================================= grid and times
def test_grid_and_pdebench_time_axis():
    np.testing.assert_allclose(s.cell_centres(4), [0.125, 0.375, 0.625, 0.875])
    assert s.n_saves(2.0, 0.01) == 201 and s.n_saves(1.0, 0.01) == 101
    assert s.n_saves(0.3, 0.01) == 31  # 0.3 / 0.01 is 29.999999999999996 in floating point
    t = s.save_times(2.0, 0.01)
    assert t.shape == (202,) and t[200] == pytest.approx(2.0)
    np.testing.assert_allclose(s.diffusion_sorption_times(), np.arange(101) * 5.0)


# ================================================================= advection
def advected(nx: int, beta: float = 0.4, fin: float = 2.0):
    x = s.cell_centres(nx)
    # the exact cell averages of the profile, so that only the scheme's error is measured
    def average(shift):
        lo, hi = x - 0.5 / nx - shift, x + 0.5 / nx - shift
        def prim(z):
            return -np.cos(2 * np.pi * z) / (2 * np.pi) + 0.5 * np.sin(4 * np.pi * z) / (4 * np.pi)
        return (prim(hi) - prim(lo)) * nx
    u = s.advection(average(0.0)[None], beta, fin_time=fin)
    times = np.arange(u.shape[1]) * 0.01
    exact = np.stack([average(beta * t) for t in times])
    return u[0], exact


def test_advection_translates_the_profile_with_second_order_accuracy():
    u256, exact256 = advected(256)
    u512, exact512 = advected(512)
    e256 = max(rel_l2(u256[k], exact256[k]) for k in (50, 100, 200))
    e512 = max(rel_l2(u512[k], exact512[k]) for k in (50, 100, 200))
    assert e256 < 5e-3, e256
    assert e256 / e512 > 2.8, f"error ratio 256 -> 512 cells: {e256 / e512:.2f}"


def test_advection_conserves_mass_and_keeps_bounds():
    x = s.cell_centres(128)
    u0 = np.stack([s.initial_conditions(sample_rng(0, 0, i), x) for i in range(4)])
    u = s.advection(u0, 1.0, fin_time=0.5)
    np.testing.assert_allclose(u[:, -1].sum(1), u0.sum(1), atol=1e-3)
    assert (u.max(axis=(1, 2)) <= u0.max(1) + 1e-6).all()  # the limiter adds no new maxima


# ================================================================= Burgers
def cole_hopf(x: np.ndarray, times: np.ndarray, nu: float, fine: int = 4096) -> np.ndarray:
    """u = −2κ φ_x / φ, φ_t = κ φ_xx, φ(0) = exp(−∫ u0 / 2κ), κ = ν/π, for u0 = sin(2πx),
    by φ's Fourier series on a fine periodic grid, then sampled at the cell centres."""
    kappa = nu / np.pi
    z = np.arange(fine) / fine
    # ∫0^z sin(2πs) ds = (1 − cos 2πz) / 2π
    phi0 = np.exp(-(1 - np.cos(2 * np.pi * z)) / (2 * np.pi) / (2 * kappa))
    k = 2 * np.pi * np.fft.fftfreq(fine, d=1.0 / fine)
    hat = np.fft.fft(phi0)
    out = []
    for t in times:
        h = hat * np.exp(-kappa * k**2 * t)
        phi = np.fft.ifft(h).real
        phi_x = np.fft.ifft(1j * k * h).real
        u = -2 * kappa * phi_x / phi
        out.append(np.interp(x, z, u, period=1.0))
    return np.array(out)


@pytest.mark.parametrize("nu, fin", [(0.1, 0.3), (1.0, 0.05)])
def test_burgers_matches_cole_hopf(nu, fin):
    errors = {}
    for nx in (64, 128):
        x = s.cell_centres(nx)
        u = s.burgers(np.sin(2 * np.pi * x)[None], nu, fin_time=fin)[0]
        times = np.arange(u.shape[0]) * 0.01
        exact = cole_hopf(x, times, nu)
        errors[nx] = max(rel_l2(u[k], exact[k]) for k in range(1, u.shape[0]))
    assert errors[128] < 5e-3, errors
    # the point values of the smooth solution against cell values: second order both ways
    assert errors[64] / errors[128] > 2.5, errors


# ================================================================= diffusion-reaction
def test_a_uniform_state_follows_the_logistic_solution():
    c = np.array([0.1, 0.5, 0.9, 0.0, 1.0])
    u = s.reaction_diffusion(np.repeat(c[:, None], 16, axis=1), nu=0.5, rho=2.0, fin_time=0.2)
    t = np.arange(u.shape[1]) * 0.01
    with np.errstate(divide="ignore"):
        exact = 1.0 / (1.0 + np.exp(-2.0 * t)[None] * ((1 - c) / c)[:, None])
    exact[3] = 0.0  # u = 0 stays 0
    np.testing.assert_allclose(u[:, :, 5], exact, rtol=2e-6, atol=1e-7)
    assert np.ptp(u, axis=2).max() < 1e-6  # and stays uniform


def test_pure_diffusion_decays_a_mode_by_the_discrete_eigenvalue_and_keeps_mass():
    nx, k = 64, 2 * np.pi * 3
    x = s.cell_centres(nx)
    u0 = 0.5 + 0.3 * np.sin(k * x)
    u = s.reaction_diffusion(u0[None], nu=0.01, rho=0.0, fin_time=0.5)[0]
    dx = 1.0 / nx
    lam = (2 * np.sin(k * dx / 2) / dx) ** 2  # eigenvalue of the central second difference
    t = np.arange(u.shape[0]) * 0.01
    exact = 0.5 + 0.3 * np.exp(-0.01 * lam * t)[:, None] * np.sin(k * x)[None]
    np.testing.assert_allclose(u, exact, atol=2e-6)
    np.testing.assert_allclose(u.sum(1), u0.sum(), rtol=1e-6)


def test_diffusion_reaction_converges_to_a_fine_grid():
    fine = 512
    xf = s.cell_centres(fine)
    u0 = s.initial_conditions(sample_rng(5, 0, 0), xf, normalise=True)
    ref = s.reaction_diffusion(u0[None], 0.5, 1.0, fin_time=0.02)[0, -1]
    errors = {}
    for nx in (64, 128):
        r = fine // nx
        coarse = s.reaction_diffusion(u0.reshape(nx, r).mean(1)[None], 0.5, 1.0,
                                      fin_time=0.02)[0, -1]
        errors[nx] = rel_l2(coarse, ref.reshape(nx, r).mean(1))
    assert errors[128] < errors[64] < 5e-2, errors


# ================================================================= diffusion-sorption
def test_sorption_without_sorption_matches_the_exact_linear_solution():
    """With k_f = 0 (R = 1) the semi-discrete system is linear, u' = A u + b: its exact solution
    exp(tA) u0 + A⁻¹ (exp(tA) − I) b, with A and b assembled here from PDEBench's boundaries
    (left neighbour = solubility; right neighbour replaced by D (u_{N−2} − u_{N−1}) / dx)."""
    from scipy.linalg import expm

    nx, D = 16, 5e-4
    dx = 1.0 / nx
    A = (np.diag(-2.0 * np.ones(nx)) + np.diag(np.ones(nx - 1), 1)
         + np.diag(np.ones(nx - 1), -1))
    A[-1, -2] += D / dx
    A[-1, -1] -= D / dx
    A *= D / dx**2
    b = np.zeros(nx)
    b[0] = D / dx**2 * 1.0
    u0 = np.full(nx, 0.05)
    u = s.diffusion_sorption(np.array([0.05]), nx, t_end=500.0, n_t=6, k_f=0.0)[0]
    for k, t in enumerate(np.linspace(0, 500, 6)):
        e = expm(t * A)
        exact = e @ u0 + np.linalg.solve(A, (e - np.eye(nx)) @ b)
        np.testing.assert_allclose(u[k], exact, atol=2e-3)  # RK45's default tolerances


def test_sorption_keeps_the_maximum_principle_and_converges():
    u0 = np.array([0.0, 0.1, 0.2])
    runs = {nx: s.diffusion_sorption(u0, nx, t_end=200.0, n_t=21) for nx in (32, 64, 128)}
    for u in runs.values():
        assert u.shape[1] == 21
        assert u.min() >= -1e-6 and u.max() <= 1.0 + 1e-6
        assert (u[:, -1, 0] > u[:, 0, 0]).all()  # the contaminant enters from the left
    ref = runs[128][:, -1]

    def err(nx):
        r = 128 // nx
        return rel_l2(runs[nx][:, -1], ref.reshape(3, nx, r).mean(2))

    assert err(64) < err(32), (err(32), err(64))


# ================================================================= initial conditions
def test_initial_conditions_are_per_sample_and_follow_pdebench_draws():
    x = s.cell_centres(64)
    a = s.initial_conditions(sample_rng(1, 0, 7), x)
    b = s.initial_conditions(sample_rng(1, 0, 7), x)
    np.testing.assert_array_equal(a, b)
    n = s.initial_conditions(sample_rng(1, 0, 7), x, normalise=True)
    assert n.min() == 0.0 and n.max() == 1.0
    draws = [s.initial_conditions(sample_rng(2, 0, i), x) for i in range(2000)]
    one_sign = np.mean([d.min() >= 0 or d.max() <= 0 for d in draws])
    assert one_sign > 0.08, one_sign  # at least the draws taking |u| (p = 0.1)
    signs = np.mean([np.sign(d.mean()) for d in draws])
    assert abs(signs) < 0.08, signs  # the random sign: as many negative as positive means
    windowed = np.mean([abs(d[0]) < 1e-6 and abs(d[-1]) < 1e-6 for d in draws])
    assert 0.06 < windowed < 0.14, windowed
