"""PDEBench's 1D data-generation schemes, vectorised over samples (numpy and scipy only).

Every solver takes a batch of initial states and returns float32 states ``(n_samples, n_saves,
nx)``, computed in float64. The recipes are PDEBench's (its ``data_gen_NLE`` finite-volume
generators and its diffusion-sorption simulator):

- **Grid.** [0, 1] split into ``nx`` cells, values at the cell centres (:func:`cell_centres`);
  periodic boundaries for advection, Burgers and diffusion-reaction, through ghost cells.
- **Saves.** State k at t = k·dt_save, k = 0 … ``ceil(fin_time/dt_save)`` (:func:`n_saves`
  states; the last passes fin_time when it is no multiple of dt_save), as PDEBench's
  ``t-coordinate`` has them. No step passes a save time: each step is shortened to ``min(dt,
  next save − t)``, and a step of 10⁻⁸ or less is skipped.
- **Advection** u_t + β u_x = 0 and **Burgers** u_t + (u²/2)_x = (ν/π) u_xx: finite volumes with
  MUSCL face values, the slope of each cell limited by van Leer's monotonised-central limiter
  ``lim(a, b, c) = sign(c) (½ + ½ sign(ab)) min(2 min(|a|, |b|), |c|)`` of its backward, forward
  and central differences. Fluxes: upwind (advection); local Lax–Friedrichs with the speed
  |u_L + u_R|/2 plus the central viscous flux −(ν/π)(u_{i+1} − u_i)/dx of the cell values
  (Burgers). Two stages: u* = u − (dt/2)/dx ΔF(u), then u ← u − dt/dx ΔF(u*). Steps:
  0.4 dx/|β| (advection); min(0.25 dx/max|u|, 0.25 · ½dx²/(ν/π)) with each sample's own max|u|,
  so that every sample keeps its own time and steps (Burgers).
- **Diffusion-reaction** u_t = ν u_xx + ρ u(1 − u): the same two stages with operator splitting;
  a stage of length h from (u, w) advances the reaction exactly from u (the logistic solution) and
  then applies the diffusion flux −ν(w_{i+1} − w_i)/dx of w. u* = stage(u, u, dt/2), u ← stage(u,
  u*, dt); dt = 0.25 · ½dx²/ν.
- **Diffusion-sorption** u_t = D/R(u) u_xx with the Freundlich retardation R: method of lines
  integrated by RK45 (:func:`diffusion_sorption`).

Initial conditions are PDEBench's random sums of sines (:func:`initial_conditions`, for the first
three) and a uniform U(0, 0.2) concentration (diffusion-sorption). :func:`draw_initial_conditions`
and :func:`draw_sorption_initial` draw sample i from its own generator
``SeedSequence(seed, spawn_key=(part, i))``, so a sample depends on the seed and its index only.

Departures, none in the schemes: the counts of saved states tolerate the rounding of
``fin_time/dt_save`` (0.07/0.01 is 7.000000000000001: 8 states, not 9), and the batched
diffusion-sorption run divides RK45's tolerances by √n_samples and evaluates the retardation at
max(u, 0), where the integration error leaves a concentration slightly below 0 (see
:func:`diffusion_sorption`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from mona_tune.tasks.generate import sample_rng

SMALLEST_STEP = 1e-8  # PDEBench skips steps this short or shorter
GHOSTS = 2  # periodic ghost cells on each side: the MUSCL slope of a ghost cell needs one more
EPS = 1e-8  # PDEBench's guard in the denominators of the step-size formulas
SORPTION_FLOOR = 1e-6  # Freundlich's (u + 1e-6): R stays finite at u = 0

Step = Callable[[np.ndarray], None]


# ---------------------------------------------------------------- grid and times
def cell_centres(nx: int, x_left: float = 0.0, x_right: float = 1.0) -> np.ndarray:
    """x_left + (i + ½) dx, i = 0 … nx − 1, dx = (x_right − x_left)/nx."""
    dx = (x_right - x_left) / nx
    return x_left + (np.arange(nx) + 0.5) * dx


def n_saves(fin_time: float, dt_save: float) -> int:
    """States saved over [0, fin_time]: ``ceil(fin_time/dt_save) + 1`` (201 for 2 and 0.01).

    A ratio within 10⁻⁹ (relative) of an integer counts as that integer, so that the rounding of
    the division cannot add a state.
    """
    ratio = fin_time / dt_save
    nearest = round(ratio)
    if abs(ratio - nearest) <= 1e-9 * max(1.0, abs(ratio)):
        return int(nearest) + 1
    return math.ceil(ratio) + 1


def save_times(fin_time: float, dt_save: float) -> np.ndarray:
    """PDEBench's ``t-coordinate``: ``arange(n_saves + 1) · dt_save``.

    It has one entry more than there are saved states, as in PDEBench's own files: entry k is the
    time of state k, and the last entry lies one dt_save past the final state.
    """
    return np.arange(n_saves(fin_time, dt_save) + 1) * dt_save


# ---------------------------------------------------------------- initial conditions
def initial_conditions(rng: np.random.Generator, xc: np.ndarray, k_tot: int = 4,
                       num_choice_k: int = 2, normalise: bool = False) -> np.ndarray:
    """One sample (nx,) of PDEBench's random initial condition on the cell centres ``xc``.

    ``num_choice_k`` wave indices are drawn from 0 … k_tot − 1 with replacement; index j, chosen
    s_j times, gets the wavenumber k_j = 2π (j + 1) s_j / (xc[-1] − xc[0]). The divisor is the
    span of the centres, 1 − dx, not the period 1, as PDEBench has it. u = Σ_j A_j sin(k_j x +
    φ_j) over all k_tot indices, A_j ~ U(0, 1), φ_j ~ U(0, 2π), so an index never chosen adds
    the constant A_j sin φ_j (also PDEBench's). Then: with probability 0.1, u ← |u|; u times a
    random sign; with probability 0.1, u times the window ½[tanh((x − x_L)/0.01) − tanh((x −
    x_R)/0.01)], x_L ~ U(0.1, 0.45), x_R ~ U(0.55, 0.9). ``normalise`` (diffusion-reaction):
    u ← (u − min u) / max(u − min u), onto [0, 1].
    """
    xc = np.asarray(xc, dtype=np.float64)
    chosen = rng.integers(0, k_tot, size=num_choice_k)
    counts = np.bincount(chosen, minlength=k_tot)
    k = 2.0 * np.pi * np.arange(1, k_tot + 1) * counts / (xc[-1] - xc[0])
    amplitude = rng.uniform(0.0, 1.0, size=k_tot)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=k_tot)
    u = amplitude @ np.sin(k[:, None] * xc[None, :] + phase[:, None])
    if rng.uniform() < 0.1:
        u = np.abs(u)
    u = u * (1.0 if rng.uniform() < 0.5 else -1.0)
    if rng.uniform() < 0.1:
        x_l, x_r = rng.uniform(0.1, 0.45), rng.uniform(0.55, 0.9)
        u = u * 0.5 * (np.tanh((xc - x_l) / 0.01) - np.tanh((xc - x_r) / 0.01))
    if normalise:
        u = u - u.min()
        u = u / u.max()
    return u


def draw_initial_conditions(seed: int, part: int, n: int, xc: np.ndarray,
                            normalise: bool = False, start: int = 0) -> np.ndarray:
    """Samples ``start`` … ``start + n − 1`` as (n, nx); sample i from ``sample_rng(seed, part,
    i)``, so that it does not depend on n or on the other samples."""
    return np.stack([initial_conditions(sample_rng(seed, part, i), xc, normalise=normalise)
                     for i in range(start, start + n)])


def diffusion_sorption_initial(rng: np.random.Generator) -> float:
    """PDEBench's diffusion-sorption start: a uniform concentration drawn from U(0, 0.2)."""
    return float(rng.uniform(0.0, 0.2))


def draw_sorption_initial(seed: int, part: int, n: int, start: int = 0) -> np.ndarray:
    """Uniform starts (n,) of samples ``start`` … ``start + n − 1``, each from its own generator."""
    return np.array([diffusion_sorption_initial(sample_rng(seed, part, i))
                     for i in range(start, start + n)])


# ---------------------------------------------------------------- periodic finite volumes
# States live in padded buffers (nx + 2·GHOSTS, n): cells along axis 0, samples along axis 1, so
# that every stencil is a slice of contiguous rows and a per-sample step (n,) broadcasts.
def _padded(u0: np.ndarray) -> np.ndarray:
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim != 2:
        raise ValueError(f"initial states must be (n_samples, nx), got shape {u0.shape}")
    buf = np.empty((u0.shape[1] + 2 * GHOSTS, u0.shape[0]))
    buf[GHOSTS:-GHOSTS] = u0.T
    _fill_ghosts(buf)
    return buf


def _fill_ghosts(buf: np.ndarray) -> None:
    """Periodic ghost cells: the last GHOSTS cells before the first, the first ones after."""
    g = GHOSTS
    buf[:g] = buf[-2 * g:-g]
    buf[-g:] = buf[g:2 * g]


class _MusclFaces:
    """MUSCL face values of (nx + 2·GHOSTS, n) buffers, in work arrays allocated once.

    Called on a buffer, returns (u_R, u_L) at the nx + 1 faces, face j between cells j − 1 and
    j: u_R is the right-face value of cell j − 1, u_L the left-face value of cell j, each the
    cell value ± half its limited slope lim(a, b, c), a = u_i − u_{i−1}, b = u_{i+1} − u_i,
    c = (u_{i+1} − u_{i−1})/2 = (a + b)/2. Since sign(c) (½ + ½ sign(ab)) = ½ (sign a + sign b)
    wherever min(|a|, |b|) ≠ 0 (and lim = 0 where it is 0), the half slope is computed as
    ⅛ (sign a + sign b) · min(4 min(|a|, |b|), |a + b|). The arrays returned are overwritten by
    the next call; so is ``d``, the differences u_{p+1} − u_p of the buffer's cells.
    """

    def __init__(self, nx: int, n: int) -> None:
        self.d, self.sign, self.size = (np.empty((nx + 3, n)) for _ in range(3))
        self.half, self.both = np.empty((nx + 2, n)), np.empty((nx + 2, n))
        self.right, self.left = np.empty((nx + 1, n)), np.empty((nx + 1, n))

    def __call__(self, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.subtract(buf[1:], buf[:-1], out=self.d)  # d[p] = u[p + 1] − u[p]
        np.sign(d, out=self.sign)
        np.abs(d, out=self.size)
        # slopes of buffer cells 1 … nx + 2 (the real cells and one ghost each side): a = d[:-1]
        half = np.minimum(self.size[:-1], self.size[1:], out=self.half)
        half *= 4.0
        central = np.add(d[:-1], d[1:], out=self.both)
        np.abs(central, out=central)
        np.minimum(half, central, out=half)
        both = np.add(self.sign[:-1], self.sign[1:], out=self.both)
        both *= 0.125
        half *= both
        g = GHOSTS
        np.add(buf[g - 1:-g], half[:-1], out=self.right)  # cells −1 … nx − 1
        np.subtract(buf[g:-g + 1], half[1:], out=self.left)  # cells 0 … nx
        return self.right, self.left


def _advection_flux_difference(beta: float, nx: int,
                               n: int) -> Callable[[np.ndarray], np.ndarray]:
    faces, flux, du = _MusclFaces(nx, n), np.empty((nx + 1, n)), np.empty((nx, n))

    def difference(buf: np.ndarray) -> np.ndarray:
        """F_{i+½} − F_{i−½} (nx, n), F = ½ (β u_R + β u_L − |β| (u_L − u_R)) (upwind)."""
        u_right, u_left = faces(buf)
        f = np.add(u_right, u_left, out=flux)
        f *= beta
        u_left -= u_right
        u_left *= abs(beta)
        f -= u_left
        f *= 0.5
        return np.subtract(f[1:], f[:-1], out=du)
    return difference


def _burgers_flux_difference(nu: float, nx: int,
                             n: int) -> Callable[[np.ndarray], np.ndarray]:
    faces = _MusclFaces(nx, n)
    work, flux, du = np.empty((nx + 1, n)), np.empty((nx + 1, n)), np.empty((nx, n))
    viscous = (nu / np.pi) * nx  # (ν/π)/dx
    g = GHOSTS

    def difference(buf: np.ndarray) -> np.ndarray:
        """F_{i+½} − F_{i−½} (nx, n), F = ½ (u_R²/2 + u_L²/2) − ½ · ½|u_L + u_R| (u_L − u_R)
        − (ν/π)(u_{i+1} − u_i)/dx.

        With s = u_L + u_R and j = u_L − u_R, u_R² + u_L² = (s² + j²)/2, so the convective part
        is ⅛ (s² + j² − 2|s| j) = ⅛ (|s| − j)², the form computed.
        """
        u_right, u_left = faces(buf)
        f = np.add(u_left, u_right, out=flux)
        np.abs(f, out=f)
        f -= np.subtract(u_left, u_right, out=work)
        np.square(f, out=f)
        f *= 0.125
        # (ν/π)/dx · (u_i − u_{i−1}) at face i − ½, from the differences of the cell values
        f -= np.multiply(faces.d[g - 1:-g + 1], viscous, out=work)
        return np.subtract(f[1:], f[:-1], out=du)
    return difference


def _two_stage(difference: Callable[[np.ndarray], np.ndarray], dx: float,
               buf: np.ndarray) -> Step:
    """The two-stage step on ``buf`` in place: u* = u − (dt/2)/dx ΔF(u), u ← u − dt/dx ΔF(u*)."""
    g = GHOSTS
    u, predicted = buf[g:-g], np.empty_like(buf)

    def step(dt: np.ndarray) -> None:
        du = difference(buf)
        du *= 0.5 * dt / dx
        np.subtract(u, du, out=predicted[g:-g])
        _fill_ghosts(predicted)
        du = difference(predicted)
        du *= dt / dx
        u[...] -= du
        _fill_ghosts(buf)
    return step


def _march(buf: np.ndarray, step: Step, max_dt: Callable[[], np.ndarray | float],
           fin_time: float, dt_save: float) -> np.ndarray:
    """Advance every sample to each save time; return the saved states (n, n_saves, nx) float32.

    Each sample keeps its own time t: its step is ``min(max_dt, next save − t)``, and a sample
    whose step would be 10⁻⁸ or less waits (a step of 0 leaves its state unchanged) until all
    samples have reached the save.
    """
    g = GHOSTS
    nx, n = buf.shape[0] - 2 * g, buf.shape[1]
    saves = n_saves(fin_time, dt_save)
    out = np.empty((n, saves, nx), dtype=np.float32)
    out[:, 0] = buf[g:-g].T
    t = np.zeros(n)
    for k in range(1, saves):
        target = k * dt_save
        while True:
            dt = np.minimum(max_dt(), target - t)
            active = dt > SMALLEST_STEP
            if not active.any():
                break
            dt *= active
            step(dt)
            t += dt
        out[:, k] = buf[g:-g].T
    return out


def advection(u0: np.ndarray, beta: float, fin_time: float = 2.0, dt_save: float = 0.01,
              cfl: float = 0.4) -> np.ndarray:
    """u_t + β u_x = 0, periodic, from ``u0`` (n, nx); states (n, n_saves, nx) float32.

    Step cfl · dx/(|β| + 10⁻⁸), the same for every sample.
    """
    buf = _padded(u0)
    nx, n = buf.shape[0] - 2 * GHOSTS, buf.shape[1]
    dx = 1.0 / nx
    dt = cfl * dx / (abs(beta) + EPS)
    step = _two_stage(_advection_flux_difference(beta, nx, n), dx, buf)
    return _march(buf, step, lambda: dt, fin_time, dt_save)


def burgers(u0: np.ndarray, nu: float, fin_time: float = 2.0, dt_save: float = 0.01,
            cfl: float = 0.25) -> np.ndarray:
    """u_t + (u²/2)_x = (ν/π) u_xx, periodic (ν is PDEBench's ``Nu``); states (n, n_saves, nx).

    Each sample's step is min(cfl · dx/(max|u| + 10⁻⁸), cfl · ½dx²/(ν/π + 10⁻⁸)) with max|u|
    over its current state.
    """
    buf = _padded(u0)
    g = GHOSTS
    nx, n = buf.shape[0] - 2 * g, buf.shape[1]
    dx = 1.0 / nx
    dt_diffusion = cfl * 0.5 * dx**2 / (nu / np.pi + EPS)
    u, size = buf[g:-g], np.empty((nx, n))

    def max_dt() -> np.ndarray:
        largest = np.abs(u, out=size).max(axis=0)
        return np.minimum(cfl * dx / (largest + EPS), dt_diffusion)

    step = _two_stage(_burgers_flux_difference(nu, nx, n), dx, buf)
    return _march(buf, step, max_dt, fin_time, dt_save)


def reaction_diffusion(u0: np.ndarray, nu: float, rho: float, fin_time: float = 1.0,
                       dt_save: float = 0.01, cfl: float = 0.25) -> np.ndarray:
    """u_t = ν u_xx + ρ u(1 − u), periodic (Fisher–KPP); states (n, n_saves, nx) float32.

    A stage of length h from (u, w): u ← 1/(1 + e^{−ρh}(1 − u)/u), the exact logistic flow,
    written u/(e^{−ρh} + (1 − e^{−ρh}) u) so that u = 0 stays 0 with no division by 0; then
    u ← u − h/dx ΔF with the diffusion flux F = −ν(w_{i+1} − w_i)/dx of w. A step is u* =
    stage(u, u, dt/2), u ← stage(u, u*, dt), dt = cfl · ½dx²/(ν + 10⁻⁸), the same for every
    sample.
    """
    buf = _padded(u0)
    g = GHOSTS
    dx = 1.0 / (buf.shape[0] - 2 * g)
    dt = cfl * 0.5 * dx**2 / (nu + EPS)
    u, predicted = buf[g:-g], np.empty_like(buf)
    work, faces = np.empty_like(u), np.empty((u.shape[0] + 1, u.shape[1]))

    def stage(flux_state: np.ndarray, h: np.ndarray, out: np.ndarray) -> None:
        decay = np.exp(-rho * h)
        np.multiply(u, 1.0 - decay, out=work)
        np.add(work, decay, out=work)
        np.divide(u, work, out=work)  # the reaction over h from u: u / (e^{−ρh} + (1 − e^{−ρh}) u)
        w = flux_state
        jump = np.subtract(w[g:-g + 1], w[g - 1:-g], out=faces)  # w_i − w_{i−1} at face i − ½
        jump *= nu * h / dx**2  # F = −ν jump/dx, so − h/dx ΔF = ν h/dx² (jump_{i+1} − jump_i)
        np.add(work, jump[1:], out=out)
        out -= jump[:-1]  # u − h/dx (F_{i+½} − F_{i−½})

    def step(h: np.ndarray) -> None:
        stage(buf, 0.5 * h, predicted[g:-g])
        _fill_ghosts(predicted)
        stage(predicted, h, u)
        _fill_ghosts(buf)

    return _march(buf, step, lambda: dt, fin_time, dt_save)


# ---------------------------------------------------------------- diffusion-sorption
def diffusion_sorption_times(t_end: float = 500.0, n_t: int = 101) -> np.ndarray:
    """The saved times: ``linspace(0, t_end, n_t)`` (PDEBench's file: 101 over [0, 500] s)."""
    return np.linspace(0.0, t_end, n_t)


def diffusion_sorption(u0: np.ndarray, nx: int, t_end: float = 500.0, n_t: int = 101,
                       D: float = 5e-4, porosity: float = 0.29, rho_s: float = 2880.0,
                       k_f: float = 3.5e-4, n_f: float = 0.874, solubility: float = 1.0,
                       rtol: float = 1e-3, atol: float = 1e-6) -> np.ndarray:
    """u_t = D/R(u) u_xx on [0, 1], states (n, n_t, nx) float32 at :func:`diffusion_sorption_times`.

    ``u0``: uniform starts (n,), PDEBench's case, or whole profiles (n, nx). Method of lines on
    the cell centres: du/dt = D/R(u) · (L u + b), L the second difference (1, −2, 1)/dx² without
    wrap-around, R(u) = 1 + (1 − porosity)/porosity · ρ_s k_f n_f (u + 10⁻⁶)^(n_f − 1) the
    Freundlich retardation. Boundaries, by b: b_0 = solubility/dx² (the left neighbour of the
    first cell holds the solubility, a Dirichlet value) and b_{−1} = D (u_{−2} − u_{−1})/dx /
    dx², PDEBench's Cauchy-type outflow: the right neighbour of the last cell holds D (u_{−2} −
    u_{−1})/dx, a value near 0 for PDEBench's D, so the right end drains towards 0 (a uniform
    state at the solubility is not steady).

    R is evaluated at max(u, 0): the exact solution stays in [0, solubility], but RK45's error
    can take a concentration near 0 slightly below it, and below −10⁻⁶ the power is undefined.

    Integrated by RK45 (``scipy.integrate.solve_ivp``) with all samples stacked in one system, so
    they share the adaptive steps. RK45 measures the error by the root mean square over all
    components; that mean over n samples can be up to √n times smaller than the worst sample's
    own, so ``rtol`` and ``atol`` (RK45's defaults) are divided by √n: every step then meets
    them for each sample, and the sharing only tightens the error control.
    """
    from scipy.integrate import solve_ivp

    u0 = np.asarray(u0, dtype=np.float64)
    start = np.repeat(u0[:, None], nx, axis=1) if u0.ndim == 1 else u0.copy()
    if start.ndim != 2 or start.shape[1] != nx:
        raise ValueError(f"u0 must be (n,) or (n, {nx}), got shape {u0.shape}")
    n = start.shape[0]
    dx = 1.0 / nx
    sorption = (1.0 - porosity) / porosity * rho_s * k_f * n_f
    lap = np.empty((n, nx))

    def rhs(_t: float, y: np.ndarray) -> np.ndarray:
        u = y.reshape(n, nx)
        lap[:, 1:-1] = u[:, :-2] + u[:, 2:]  # the neighbours' sum, then − 2u
        lap[:, 0] = u[:, 1] + solubility
        lap[:, -1] = u[:, -2] + D * (u[:, -2] - u[:, -1]) / dx
        lap[...] -= 2.0 * u
        retardation = np.maximum(u, 0.0)  # see the docstring: R of a concentration ≥ 0
        retardation += SORPTION_FLOOR
        np.log(retardation, out=retardation)  # the power as exp((n_f − 1) log): faster
        retardation *= n_f - 1.0
        np.exp(retardation, out=retardation)
        retardation *= sorption
        retardation += 1.0
        return (lap * (D / dx**2) / retardation).reshape(-1)

    times = diffusion_sorption_times(t_end, n_t)
    scale = 1.0 / math.sqrt(n)
    sol = solve_ivp(rhs, (0.0, times[-1]), start.reshape(-1), method="RK45", t_eval=times,
                    rtol=rtol * scale, atol=atol * scale)
    if not sol.success:
        raise RuntimeError(f"diffusion-sorption integration failed: {sol.message}")
    return sol.y.reshape(n, nx, n_t).transpose(0, 2, 1).astype(np.float32)
