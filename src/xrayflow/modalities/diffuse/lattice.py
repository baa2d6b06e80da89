"""Monte Carlo (Metropolis) binary lattices with prescribed pair correlations.

Model: occupancies ``s_i ∈ {0, 1}`` (1: species A) on a periodic ``L0 × L1`` lattice with
energy (units of kT) ``E = ½ Σ_i Σ_u J_u s_i s_{i+u}``, ``u`` running over the symmetry
mates ``(±m, ±n)`` of the encoded neighbour vectors (:func:`.encoding.symmetry_mates`), all
mates of a vector sharing its ``J``. At fixed composition this equals the same sum over
``σ = s − c`` up to a constant. ``J > 0`` disfavours A–A pairs at ``u`` (``α(u) < 0``).

Moves conserve the number of A sites exactly: **swaps** of an A and a B site of one update
class. A class is a set of sites no two of which interact: rows ``r ≡ a (mod P0)`` and, in
row ``r``, columns ``c ≡ b + o_r (mod P1)``, with ``P0, P1`` the smallest divisors of the
sides exceeding the interaction reach (max ``|m|``, max ``|n|``: period 4 for reach 3, i.e.
16 classes) and a random offset ``o_r`` per row, drawn anew each sweep; every other sweep
the roles of rows and columns swap (offsets per column). The classes of a sweep partition
the lattice (:func:`update_classes`); the random offsets let A sites move between the
fixed sublattices, which plain ``(r mod P0, c mod P1)`` classes would freeze. Within a
class, the A and B sites are paired at random and each pair swapped with Metropolis
probability ``min(1, exp(−ΔE))``, ``ΔE = h_B − h_A`` from the local fields
``h_i = Σ_u J_u s_{i+u}``: exact, since the class's sites do not interact, so all pairs
of a class are updated at once (vectorised over the class and the ``K`` lattices).

With ``J`` on the nearest neighbours only this is the square-lattice Ising model at zero
magnetisation (``c = ½``, Ising coupling ``K = −J/4``): its nearest-neighbour ``α`` follows
Onsager's exact energy (tested).

Feedback (:func:`monte_carlo`): ``J`` starts at the Krivoglaz–Clapp–Moss inverse of the
target (:func:`clapp_moss_interactions`); every ``sweeps_per_round`` sweeps the encoding is
measured on the ``K`` lattices together and ``J ← J + gain·P(α − α_target)`` with ``P`` the
inverse linear response at the target pattern (:func:`feedback_matrix`; a constant gain
``1/(c(1−c))`` overshoots modulated and near-ordering targets), until every
``|α − α_target| ≤ tolerance`` or ``max_sweeps``. The achieved ``α`` (measured on the
returned lattices) is the label, stored beside the target. Not every target is reachable
(binary lattices, pair interactions on the encoded vectors only, critical slowing down near
ordering); :func:`random_encoding` draws ones that are.

Cost (one core, NumPy): ``L = 64``, ``K = 3``, dimension 15 (16 classes, 48 mates):
about 7 ms a sweep, a median of ~36 sweeps to converge from random targets: ~0.2 s
a structure with its diffraction (dimension 8: ~0.15 s, dimension 3: ~0.08 s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xrayflow.errors import ConfigError
from xrayflow.modalities.diffuse.encoding import (
    check_encoding,
    check_vectors,
    measure_correlations,
    multiplicities,
    symmetry_mates,
    zone_modes,
    zone_spectrum,
)


@dataclass(frozen=True)
class MCResult:
    """A Monte Carlo run: ``lattices (K, L0, L1)`` uint8 occupancies (1: A),
    ``achieved`` and ``target`` encodings ``(dim,)``, the final ``interactions`` J
    ``(dim,)`` (kT), ``converged`` (all within ``tolerance``), ``sweeps`` done and
    ``max_error = max |achieved − target|``."""

    lattices: np.ndarray
    achieved: np.ndarray
    target: np.ndarray
    interactions: np.ndarray
    converged: bool
    sweeps: int
    max_error: float


def check_concentration(concentration: float) -> float:
    """``concentration`` (fraction of A sites) as a float in (0, 1); ConfigError otherwise."""
    c = float(concentration)
    if not 0.0 < c < 1.0:
        raise ConfigError(f"concentration must be in (0, 1), got {concentration!r}")
    return c


def pair_bound(concentration: float) -> float:
    """The lowest Warren–Cowley coefficient of a binary lattice at ``concentration``:
    ``−min(c, 1−c)/max(c, 1−c)`` (the pair probabilities ``P_AA = c² + c(1−c)α`` and
    ``P_BB = (1−c)² + c(1−c)α`` are ``≥ 0``); ``α ≤ 1`` from ``P_AB ≥ 0``."""
    c = check_concentration(concentration)
    return -min(c, 1 - c) / max(c, 1 - c)


def check_reachable(encoding, vectors, concentration: float) -> np.ndarray:
    """``encoding`` within the range a binary lattice of ``concentration`` can have
    (:func:`pair_bound` ``≤ α ≤ 1``); ConfigError naming the vector, its value and the
    concentration otherwise."""
    v = check_vectors(vectors)
    a = check_encoding(encoding, v)
    low = pair_bound(concentration)
    bad = np.flatnonzero(a < low - 1e-12)
    if bad.size:
        i = int(bad[0])
        raise ConfigError(
            f"encoding: target correlation α{tuple(v[i].tolist())} = {a[i]:.4g} is below "
            f"{low:.4g}, the lowest a binary lattice of concentration {concentration:g} can "
            "have (-min(c, 1-c)/max(c, 1-c)): inconsistent with the concentration"
        )
    return a


def class_periods(shape, vectors) -> tuple[int, int]:
    """``(P0, P1)``: per axis the smallest divisor of the side exceeding the reach of
    ``vectors`` (max ``m``, max ``n``); ConfigError if a side is not above twice the reach."""
    v = check_vectors(vectors)
    periods = []
    for axis, side in enumerate(shape):
        reach = int(v[:, axis].max())
        if side <= 2 * reach:
            raise ConfigError(
                f"shape: lattice side {side} must exceed twice the reach {reach} of the "
                "neighbour vectors"
            )
        periods.append(next(p for p in range(reach + 1, side + 1) if side % p == 0))
    return periods[0], periods[1]


def update_classes(shape, periods, offsets, axis: int) -> np.ndarray:
    """Flat site indices ``(P0·P1, K, L0·L1/(P0·P1))`` of the update classes of one sweep.

    ``axis = 0``: ``offsets (K, L0)`` per row, class of ``(r, c)`` =
    ``(r mod P0, (c − o_r) mod P1)``; ``axis = 1``: ``offsets (K, L1)`` per column, class
    ``((r − o_c) mod P0, c mod P1)``. Class ``a·P1 + b`` holds label ``(a, b)``.
    """
    l0, l1 = shape
    p0, p1 = periods
    a = np.arange(p0)[:, None, None, None, None]
    b = np.arange(p1)[None, :, None, None, None]
    k = np.arange(offsets.shape[0])[None, None, :, None, None]
    i = np.arange(l0 // p0)[None, None, None, :, None]
    j = np.arange(l1 // p1)[None, None, None, None, :]
    if axis == 0:
        rows = a + p0 * i
        cols = (b + offsets[k, rows] + p1 * j) % l1
    else:
        cols = b + p1 * j
        rows = (a + offsets[k, cols] + p0 * i) % l0
    flat = rows * l1 + cols
    return flat.reshape(p0 * p1, offsets.shape[0], -1)


def neighbour_table(shape, mates) -> np.ndarray:
    """``(L0·L1, U)`` flat index of site ``i + u`` for every site ``i`` and mate ``u``."""
    l0, l1 = shape
    r, c = np.divmod(np.arange(l0 * l1), l1)
    return ((r[:, None] + mates[:, 0]) % l0) * l1 + (c[:, None] + mates[:, 1]) % l1


class _Chains:
    """``K`` lattices under one set of interactions: occupancies ``s`` and local fields
    ``field = Σ_u J_u s_{i+u}``, both flat ``(K·N,)``, updated in place by :meth:`sweep`."""

    def __init__(self, vectors, shape, periods, n_a, n_lattices, rng):
        mates, self.owner = symmetry_mates(vectors)
        n_sites = shape[0] * shape[1]
        offsets = (np.arange(n_lattices) * n_sites)[:, None, None]
        self.table = (neighbour_table(shape, mates)[None] + offsets).reshape(-1, len(mates))
        self.shape, self.periods, self.n_lattices, self.rng = shape, periods, n_lattices, rng
        self.class_offsets = offsets[:, :, 0]
        s = np.zeros((n_lattices, n_sites))
        s[:, :n_a] = 1.0
        self.s = rng.permuted(s, axis=1).ravel()
        self.sweeps = 0

    def set_interactions(self, interactions) -> None:
        """J ``(dim,)`` per encoded vector; recomputes the fields."""
        self.j_mates = np.asarray(interactions, dtype=np.float64)[self.owner]
        self.field = self.s[self.table] @ self.j_mates

    def lattices(self) -> np.ndarray:
        """The occupancies as ``(K, L0, L1)`` floats (a view)."""
        return self.s.reshape(self.n_lattices, *self.shape)

    def sweep(self) -> None:
        """Every site once, class by class, with fresh random class offsets; rows and
        columns take turns to carry the offsets."""
        axis = self.sweeps % 2
        offsets = self.rng.integers(
            0, self.periods[1 - axis], size=(self.n_lattices, self.shape[axis])
        )
        for sites in update_classes(self.shape, self.periods, offsets, axis):
            self._update_class(sites + self.class_offsets)
        self.sweeps += 1

    def _update_class(self, sites) -> None:
        """Metropolis A–B swaps within one class (module docstring); ``sites (K, n)``."""
        s, field, rng = self.s, self.field, self.rng
        n = sites.shape[1]
        x = s[sites]
        order = np.argsort(rng.random(sites.shape) + x, axis=1)  # B first, in random order
        site_b = np.take_along_axis(sites, order, axis=1)
        n_b = n - x.sum(axis=1).astype(np.int64)
        pos = np.arange(n)
        valid = pos < np.minimum(n_b, n - n_b)[:, None]
        site_a = np.take_along_axis(site_b, np.minimum(n_b[:, None] + pos, n - 1), axis=1)
        d_e = field[site_b] - field[site_a]
        accept = valid & (rng.random(sites.shape) < np.exp(-np.maximum(d_e, 0.0)))
        flat_a, flat_b = site_a[accept], site_b[accept]
        s[flat_a] = 0.0
        s[flat_b] = 1.0
        change = np.concatenate([-np.ones(len(flat_a)), np.ones(len(flat_b))])
        neighbours = self.table[np.concatenate([flat_a, flat_b])]
        field += np.bincount(
            neighbours.ravel(), (change[:, None] * self.j_mates).ravel(), minlength=field.size
        )


def _chains(vectors, shape, concentration, n_lattices, rng) -> _Chains:
    """Validated arguments of a run, and its random starting lattices."""
    v = check_vectors(vectors)
    c = check_concentration(concentration)
    shape = tuple(int(x) for x in shape)
    if len(shape) != 2:
        raise ConfigError(f"shape must be (L0, L1), got {shape}")
    periods = class_periods(shape, v)
    if n_lattices < 1:
        raise ConfigError(f"n_lattices must be >= 1, got {n_lattices}")
    n_sites = shape[0] * shape[1]
    n_a = round(c * n_sites)
    if not 0 < n_a < n_sites:
        raise ConfigError(f"concentration {c} leaves no site of one species on {shape}")
    return _Chains(v, shape, periods, n_a, n_lattices, rng)


def sample_lattices(
    interactions,
    vectors,
    *,
    rng: np.random.Generator,
    shape=(64, 64),
    concentration: float = 0.5,
    n_lattices: int = 3,
    sweeps: int = 50,
) -> np.ndarray:
    """``(K, L0, L1)`` uint8 lattices after ``sweeps`` sweeps from random at fixed
    ``interactions`` J ``(dim,)`` (kT) on ``vectors`` (no feedback)."""
    chains = _chains(vectors, shape, concentration, n_lattices, rng)
    chains.set_interactions(interactions)
    for _ in range(sweeps):
        chains.sweep()
    return chains.lattices().astype(np.uint8)


def clapp_moss_interactions(target, vectors, concentration: float, floor: float = 0.1):
    """Interactions ``J (dim,)`` (kT) whose Krivoglaz–Clapp–Moss (spherical-model) pattern
    ``α̃(q) = D/(1 + c(1−c)J(q))`` has the target encoding: ``J_v = <φ_v/α̃>/(c(1−c)<1/α̃>)``
    over a zone, ``α̃`` the truncated target spectrum (:func:`.encoding.zone_spectrum`)
    clipped below at ``floor``. The starting point of :func:`monte_carlo`; it reduces to
    ``J = −α/(c(1−c))`` for weak order."""
    v = check_vectors(vectors)
    c = check_concentration(concentration)
    inverse = 1.0 / np.maximum(zone_spectrum(target, v), floor)
    modes = zone_modes(v)
    return np.einsum("hk,hkv->v", inverse, modes) / (c * (1 - c) * inverse.sum())


def feedback_matrix(target, vectors, concentration: float, floor: float = 0.1) -> np.ndarray:
    """``P (dim, dim)`` of the feedback ``J ← J + gain·P(α − α_target)``: minus the inverse
    of the response ``∂α_v/∂J_w = −c(1−c)·mult_w·<α̃² φ_v φ_w>`` (fluctuation–dissipation
    with Gaussian fluctuations, zone average) at the target pattern ``α̃`` (truncated
    spectrum clipped below at ``floor``). Near a peak of ``α̃`` the lattice responds
    strongly and the steps shrink; for weak order ``P = 1/(c(1−c))``."""
    v = check_vectors(vectors)
    c = check_concentration(concentration)
    pattern = np.maximum(zone_spectrum(target, v), floor)
    modes = zone_modes(v)
    m = np.einsum("hk,hkv,hkw->vw", pattern**2, modes, modes) / pattern.size
    return np.linalg.inv(m) / (c * (1 - c) * multiplicities(v)[:, None])


def monte_carlo(
    target,
    vectors,
    *,
    rng: np.random.Generator,
    shape=(64, 64),
    concentration: float = 0.5,
    n_lattices: int = 3,
    tolerance: float = 0.02,
    gain: float = 0.7,
    sweeps_per_round: int = 3,
    max_sweeps: int = 200,
) -> MCResult:
    """``n_lattices`` independent lattices of ``shape`` with ``round(c·L0·L1)`` A sites each,
    equilibrated under feedback-tuned ``J`` until their encoding on ``vectors`` is within
    ``tolerance`` of ``target`` (module docstring); seeded by ``rng`` alone."""
    v = check_vectors(vectors)
    alpha_t = check_encoding(target, v)
    check_reachable(alpha_t, v, concentration)
    for name, value in (("tolerance", tolerance), ("gain", gain)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value!r}")
    for name, value in (("sweeps_per_round", sweeps_per_round), ("max_sweeps", max_sweeps)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value!r}")
    chains = _chains(v, shape, concentration, n_lattices, rng)
    c = chains.lattices()[0].mean()
    j = clapp_moss_interactions(alpha_t, v, c)
    feedback = feedback_matrix(alpha_t, v, c)
    while True:
        chains.set_interactions(j)
        for _ in range(sweeps_per_round):
            chains.sweep()
        alpha = measure_correlations(chains.lattices(), v)
        error = alpha - alpha_t
        converged = bool(np.abs(error).max() <= tolerance)
        if converged or chains.sweeps >= max_sweeps:
            break
        j = j + gain * feedback @ error
    return MCResult(
        lattices=chains.lattices().astype(np.uint8),
        achieved=alpha,
        target=alpha_t,
        interactions=j,
        converged=converged,
        sweeps=chains.sweeps,
        max_error=float(np.abs(error).max()),
    )


def random_encoding(
    vectors,
    rng: np.random.Generator,
    scale: float = 1.0,
    concentration: float = 0.5,
    max_peak: float = 4.0,
) -> np.ndarray:
    """A realisable target encoding ``(dim,)``: the correlations of a positive spectrum.

    ``S(h, k) = exp(t·ρ Σ_v b_v φ_v(h, k))`` (:func:`.encoding.zone_modes`) with
    ``b_v ~ U(−scale, scale)`` and ``ρ = min(c, 1−c)/max(c, 1−c)``; ``α_v`` are the Fourier
    coefficients of ``S/mean(S)`` (64×64 grid over one zone). ``S > 0`` makes ``α`` (with
    ``α(0, 0) = 1``) a positive-definite, mirror-symmetric sequence, the correlations of
    some stationary field; ``ρ`` keeps negative ones above the pair bound ``−c/(1−c)`` of a
    binary lattice (``c ≤ ½``). ``t`` starts at 1 and shrinks by 0.8 until the truncated
    spectrum :func:`.encoding.zone_spectrum` peaks at most ``max_peak`` (Laue units):
    stronger peaks mean ordering or clustering near a transition, where :func:`monte_carlo`
    converges slowly or not at all. ``|α| ≲ scale/2``.
    """
    v = check_vectors(vectors)
    c = check_concentration(concentration)
    if not scale >= 0:
        raise ConfigError(f"scale must be >= 0, got {scale!r}")
    if not max_peak > 1:
        raise ConfigError(f"max_peak must be > 1, got {max_peak!r}")
    rho = min(c, 1 - c) / max(c, 1 - c)
    modes = zone_modes(v, 64)
    exponent = modes @ (rng.uniform(-scale, scale, size=len(v)) * rho)
    while True:
        spectrum = np.exp(exponent)
        alpha = np.einsum("hk,hkv->v", spectrum, modes) / spectrum.sum()
        if zone_spectrum(alpha, v).max() <= max_peak:
            return alpha
        exponent *= 0.8
