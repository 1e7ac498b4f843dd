"""PDEBench's 1D solvers and initial conditions, vectorised over samples (numpy, scipy).

The schemes are PDEBench's data-generation schemes (``pdebench/data_gen/data_gen_NLE`` and
``src/sim_diff_sorp.py``), written here from their description:

- **Grid**: ``nx`` cells on [0, 1], values at the cell centres; periodic boundaries (advection,
  Burgers, diffusion-reaction).
- **Advection** u_t + β u_x = 0 and **Burgers** u_t + (u²/2)_x = (ν/π) u_xx: finite volumes,
  MUSCL reconstruction with the monotonised-central limiter
  ``lim(a, b, c) = sign(c) · [a·b > 0] · min(2 min(|a|, |b|), |c|)`` of the backward, forward and
  central differences, an upwind flux (advection) or a local Lax–Friedrichs flux with speed
  |u_L + u_R|/2 plus the central viscous flux (Burgers), and a two-stage step: the fluxes of the
  state predicted at half a step advance the full step. Time step: CFL 0.4 · dx/|β| (advection);
  the smaller of 0.25 · dx/max|u| (per sample) and 0.25 · dx²/(2ν/π) (Burgers).
- **Diffusion-reaction** u_t = ν u_xx + ρ u(1 − u): the same two-stage step with operator
  splitting; each stage advances the reaction exactly (the logistic solution over the stage)
  and then the diffusion by the central flux. Time step 0.25 · dx²/(2ν).
- **Diffusion-sorption** u_t = D/R(u) u_xx with the Freundlich retardation
  R(u) = 1 + (1 − φ)/φ · ρ_s k_f n_f (u + 10⁻⁶)^(n_f − 1): method of lines (central second
  differences) integrated by RK45 (``scipy.integrate.solve_ivp``, its default tolerances);
  u = solubility at the left boundary, PDEBench's outflow term at the right.
- **States are saved** at t = 0, dt_save, 2·dt_save, …: no step passes a save time (a step is
  shortened to land on it).

Initial conditions (advection, Burgers, diffusion-reaction) are PDEBench's random sums of sines
(:func:`initial_conditions`). Every solver computes in float64 and returns float32
``(n_samples, n_saves, nx)``.
"""

from __future__ import annotations

import math

import numpy as np

# ---------------------------------------------------------------- grid and times
SMALLEST_STEP = 1e-8  # PDEBench skips steps shorter than this


def cell_centres(nx: int, x_left: float = 0.0, x_right: float = 1.0) -> np.ndarray:
    dx = (x_right - x_left) / nx
    return x_left + (np.arange(nx) + 0.5) * dx


def n_saves(fin_time: float, dt_save: float) -> int:
    """States saved over [0, fin_time]: ``ceil(fin_time / dt_save) + 1`` (201 for 2 and 0.01)."""
    return math.ceil(fin_time / dt_save - 1e-9) + 1


def save_times(fin_time: float, dt_save: float) -> np.ndarray:
    """PDEBench's ``t-coordinate``: ``arange(n_saves + 1) · dt_save``, one entry more than the
    states saved, as its generators write it (the last entry is past the final state)."""
    return np.arange(n_saves(fin_time, dt_save) + 1) * dt_save


# ---------------------------------------------------------------- initial conditions
def initial_conditions(rng: np.random.Generator, xc: np.ndarray, k_tot: int = 4,
                       num_choice_k: int = 2, normalise: bool = False) -> np.ndarray:
    """One sample of PDEBench's random initial condition on the cell centres ``xc``.

    ``num_choice_k`` wave indices drawn from 0..k_tot−1 with replacement; index j's count s_j
    scales its wavenumber k_j = 2π (j+1) s_j / (xc[-1] − xc[0]) (PDEBench divides by the
    span of the centres, 1 − dx, not by the period; kept). u = Σ_j A_j sin(k_j x + φ_j),
    A_j ~ U(0, 1), φ_j ~ U(0, 2π), over every j (an unchosen j adds the constant A_j sin φ_j).
    Then, each with probability 0.1: |u|; a random sign; a smooth window
    ½[tanh((x − x_L)/0.01) − tanh((x − x_R)/0.01)], x_L ~ U(0.1, 0.45), x_R ~ U(0.55, 0.9).
    ``normalise`` (diffusion-reaction) maps u onto [0, 1].
    """
    counts = np.bincount(rng.integers(0, k_tot, size=num_choice_k), minlength=k_tot)
    k = 2.0 * np.pi * np.arange(1, k_tot + 1) * counts / (xc[-1] - xc[0])
    amp = rng.uniform(0.0, 1.0, size=k_tot)
    phase = 2.0 * np.pi * rng.uniform(0.0, 1.0, size=k_tot)
    u = (amp[:, None] * np.sin(k[:, None] * xc[None, :] + phase[:, None])).sum(0)
    if rng.uniform() < 0.1:
        u = np.abs(u)
    u = u * rng.choice((1.0, -1.0))
    if rng.uniform() < 0.1:
        x_l, x_r = rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.9)
        u = u * 0.5 * (np.tanh((xc - x_l) / 0.01) - np.tanh((xc - x_r) / 0.01))
    if normalise:
        u = u - u.min()
        u = u / u.max()
    return u


def diffusion_sorption_initial(rng: np.random.Generator) -> float:
    """PDEBench's diffusion-sorption start: a uniform concentration drawn from U(0, 0.2)."""
    return float(rng.uniform(0.0, 0.2))


# ---------------------------------------------------------------- finite volumes (periodic)
def _faces(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MUSCL face values of every cell: (left face, right face), limited slopes, periodic."""
    left, right = np.roll(u, 1, axis=-1), np.roll(u, -1, axis=-1)
    a, b = u - left, right - u
    c = 0.5 * (right - left)
    slope = np.sign(c) * (a * b > 0) * np.minimum(2.0 * np.minimum(np.abs(a), np.abs(b)),
                                                  np.abs(c))
    return u - 0.5 * slope, u + 0.5 * slope


def _advection_flux(beta: float):
    def flux(u: np.ndarray) -> np.ndarray:
        """Upwind flux at each cell's right face, from the cell's right-face value and the
        next cell's left-face value."""
        u_left_face, u_right_face = _faces(u)
        ul, ur = u_right_face, np.roll(u_left_face, -1, axis=-1)
        return 0.5 * (beta * ul + beta * ur - abs(beta) * (ur - ul))
    return flux


def _burgers_flux(nu: float, dx: float):
    kappa = nu / np.pi

    def flux(u: np.ndarray) -> np.ndarray:
        u_left_face, u_right_face = _faces(u)
        ul, ur = u_right_face, np.roll(u_left_face, -1, axis=-1)
        convective = 0.5 * (0.5 * ul**2 + 0.5 * ur**2 - 0.5 * np.abs(ul + ur) * (ur - ul))
        return convective - kappa * (np.roll(u, -1, axis=-1) - u) / dx
    return flux


def _divergence(f: np.ndarray, dx: float) -> np.ndarray:
    """(F_{i+1/2} − F_{i−1/2}) / dx from the right-face fluxes F."""
    return (f - np.roll(f, 1, axis=-1)) / dx


def _march(u0: np.ndarray, step, max_dt, fin_time: float, dt_save: float) -> np.ndarray:
    """Advance every sample to each save time with its own steps; return the saved states.

    ``step(u, dt)`` advances states ``u`` (m, nx) by ``dt`` (m, 1); ``max_dt(u)`` gives each
    sample's stable step (m,). Samples whose next save time is reached wait for the others.
    """
    u = np.array(u0, dtype=np.float64)
    n, nx = u.shape
    saves = n_saves(fin_time, dt_save)
    out = np.empty((n, saves, nx), dtype=np.float32)
    out[:, 0] = u
    t = np.zeros(n)
    for k in range(1, saves):
        target = min(k * dt_save, fin_time)
        while True:
            dt = np.minimum(max_dt(u), target - t)
            active = dt > SMALLEST_STEP
            if not active.any():
                break
            if active.all():
                u = step(u, dt[:, None])
            else:
                u[active] = step(u[active], dt[active, None])
            t = np.where(active, t + dt, t)
        out[:, k] = u
    return out


def _two_stage(flux, dx: float):
    def step(u: np.ndarray, dt: np.ndarray) -> np.ndarray:
        half = u - 0.5 * dt * _divergence(flux(u), dx)
        return u - dt * _divergence(flux(half), dx)
    return step


def advection(u0: np.ndarray, beta: float, fin_time: float = 2.0, dt_save: float = 0.01,
              cfl: float = 0.4) -> np.ndarray:
    """u_t + β u_x = 0, periodic; states ``(n, n_saves, nx)``."""
    dx = 1.0 / u0.shape[-1]
    dt = cfl * dx / (abs(beta) + 1e-8)
    return _march(u0, _two_stage(_advection_flux(beta), dx),
                  lambda u: np.full(u.shape[0], dt), fin_time, dt_save)


def burgers(u0: np.ndarray, nu: float, fin_time: float = 2.0, dt_save: float = 0.01,
            cfl: float = 0.25) -> np.ndarray:
    """u_t + (u²/2)_x = (ν/π) u_xx, periodic; each sample's step from its own max |u|."""
    dx = 1.0 / u0.shape[-1]
    dt_diffusion = cfl * 0.5 * dx**2 / (nu / np.pi + 1e-8)

    def max_dt(u: np.ndarray) -> np.ndarray:
        return np.minimum(cfl * dx / (np.abs(u).max(axis=-1) + 1e-8), dt_diffusion)

    return _march(u0, _two_stage(_burgers_flux(nu, dx), dx), max_dt, fin_time, dt_save)


def reaction_diffusion(u0: np.ndarray, nu: float, rho: float, fin_time: float = 1.0,
                       dt_save: float = 0.01, cfl: float = 0.25) -> np.ndarray:
    """u_t = ν u_xx + ρ u(1 − u), periodic, by operator splitting inside the two-stage step."""
    dx = 1.0 / u0.shape[-1]
    dt = cfl * 0.5 * dx**2 / (nu + 1e-8)

    def reacted(u: np.ndarray, h: np.ndarray) -> np.ndarray:
        # the logistic solution 1 / (1 + e^{−ρh} (1 − u)/u), written without dividing by u
        decay = np.exp(-rho * h)
        return u / (u + decay * (1.0 - u))

    def stage(u: np.ndarray, flux_state: np.ndarray, h: np.ndarray) -> np.ndarray:
        f = -nu * (np.roll(flux_state, -1, axis=-1) - flux_state) / dx
        return reacted(u, h) - h * _divergence(f, dx)

    def step(u: np.ndarray, h: np.ndarray) -> np.ndarray:
        return stage(u, stage(u, u, 0.5 * h), h)

    return _march(u0, step, lambda u: np.full(u.shape[0], dt), fin_time, dt_save)


# ---------------------------------------------------------------- diffusion-sorption
def diffusion_sorption_times(t_end: float = 500.0, n_t: int = 101) -> np.ndarray:
    return np.linspace(0.0, t_end, n_t)


def diffusion_sorption(u0: np.ndarray, nx: int, t_end: float = 500.0, n_t: int = 101,
                       D: float = 5e-4, porosity: float = 0.29, rho_s: float = 2880.0,
                       k_f: float = 3.5e-4, n_f: float = 0.874,
                       solubility: float = 1.0) -> np.ndarray:
    """u_t = D/R(u) u_xx on [0, 1] from uniform starts ``u0`` (n,); states ``(n, n_t, nx)``.

    Boundaries as PDEBench's simulator: the left neighbour of the first cell holds the
    solubility (a Dirichlet value), and the last cell gets the term D (u_{−2} − u_{−1})/dx
    in place of its right neighbour (PDEBench's Cauchy-type outflow). All samples are one
    stacked system, so the adaptive RK45 step is shared: the error control applies to the
    worst sample, which only makes the others more accurate.
    """
    from scipy.integrate import solve_ivp

    u0 = np.asarray(u0, dtype=np.float64).reshape(-1)
    n = u0.shape[0]
    dx = 1.0 / nx
    sorption = (1.0 - porosity) / porosity * rho_s * k_f * n_f

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        u = y.reshape(n, nx)
        retardation = 1.0 + sorption * (u + 1e-6) ** (n_f - 1.0)
        lap = np.empty_like(u)
        lap[:, 1:-1] = u[:, :-2] - 2.0 * u[:, 1:-1] + u[:, 2:]
        lap[:, 0] = -2.0 * u[:, 0] + u[:, 1] + solubility
        outflow = (u[:, -2] - u[:, -1]) / dx * D
        lap[:, -1] = u[:, -2] - 2.0 * u[:, -1] + outflow
        return (D / retardation * lap / dx**2).reshape(-1)

    start = np.repeat(u0[:, None], nx, axis=1).reshape(-1)
    times = diffusion_sorption_times(t_end, n_t)
    sol = solve_ivp(rhs, (0.0, t_end), start, t_eval=times)
    if not sol.success:
        raise RuntimeError(f"diffusion-sorption integration failed: {sol.message}")
    return sol.y.T.reshape(n_t, n, nx).transpose(1, 0, 2).astype(np.float32)
