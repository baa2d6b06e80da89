"""Displacement and strain fields of a reconstructed Bragg CDI crystal.

Convention: the phase of the reconstructed density ρ (Z, Y, X) measured at the reflection of
reciprocal-lattice vector G (|G| = 2π/d) is **φ(r) = −G·u(r)** (``phase_sign = -1``): the
scattered amplitude is ∫ρ(r) exp(−i q·r) dr, numpy's forward FFT, as in
:class:`~xrayflow.modalities.bragg_cdi.model.BraggCDIModel`, with the project's wave
``exp(+i(kz − ωt))``; an atom displaced by u then contributes exp(−iG·u). Codes with the
opposite kernel write φ = +G·u, as does the simulate stage's ground truth
(:func:`xrayflow.modalities.bragg_cdi.simulate.strain_phase`: ``phase = Q·u``): pass
``phase_sign = +1`` for those. Hence

* displacement along G: ``u_G = ĝ·u = phase_sign · φ / |G|`` (after unwrapping φ inside the
  support), defined up to a constant (a rigid translation and the global phase of a
  reconstruction are not measured): shifted to zero mean inside the support;
* strain along G: ``ε = ∂u_G/∂x_G = ĝ·∇u_G`` (dimensionless), computed from the phase
  differences between neighbouring voxels wrapped to (−π, π], so it needs no unwrapping
  (valid where φ changes by less than π per voxel, also near a dislocation whose phase
  vortex defeats unwrapping).

G and the arrays share one frame: G's components are (z, y, x), in 1/m with ``voxel_size``
(z, y, x) or one number, in m; or in 1/voxel with ``voxel_size`` None (displacement then in
voxels). Outside
the support both fields are NaN; so is the strain at a voxel with no neighbour inside along
an axis G has a component on. A phase ramp left in the reconstruction (Bragg peak off the
array centre) reads as a uniform strain; the conjugate twin ``conj(ρ(−r))`` gives ``−u_G(−r)``
and the same strain ``ε(−r)``.
"""

from __future__ import annotations

import numpy as np
from skimage.restoration import unwrap_phase

__all__ = ["amplitude_support", "displacement", "g_vector", "strain", "strain_entries"]


def g_vector(d_spacing: float, direction) -> np.ndarray:
    """Reciprocal-lattice vector G (z, y, x) of length 2π/``d_spacing`` along ``direction``
    (z, y, x; any length): 1/m for ``d_spacing`` in m."""
    q = np.asarray(direction, dtype=np.float64)
    norm = np.linalg.norm(q)
    if q.shape != (3,) or not norm > 0 or not float(d_spacing) > 0:
        raise ValueError(f"need d_spacing > 0 and a nonzero (z, y, x) direction, got {direction}")
    return 2 * np.pi / float(d_spacing) * q / norm


def amplitude_support(rho, fraction: float = 0.2, support=None) -> np.ndarray:
    """Voxels where |ρ| exceeds ``fraction`` of its maximum (inside ``support`` when given),
    bool: where the phase means something."""
    amp = np.abs(np.asarray(rho))
    inside = amp > fraction * amp.max()
    return inside if support is None else inside & np.asarray(support, bool)


def _checked(rho, support, g, voxel_size, phase_sign):
    """(ρ complex128, support bool, G float64 (3,), voxel (3,) or ones); ValueError for
    wrong shapes or a ``phase_sign`` other than ±1."""
    rho = np.asarray(rho, dtype=np.complex128)
    support = np.asarray(support, dtype=bool)
    g = np.asarray(g, dtype=np.float64)
    voxel = np.ones(3) if voxel_size is None else np.broadcast_to(np.asarray(voxel_size, float), 3)
    if rho.ndim != 3 or support.shape != rho.shape or g.shape != (3,) or not np.any(g):
        raise ValueError(
            f"need rho (Z, Y, X), a support of its shape and a nonzero G (3,); got {rho.shape}, "
            f"{support.shape}, {g.shape}"
        )
    if phase_sign not in (-1, 1):
        raise ValueError(f"phase_sign must be -1 or +1, got {phase_sign}")
    return rho, support, g, voxel


def displacement(rho, support, g, voxel_size=None, phase_sign: int = -1) -> np.ndarray:
    """Displacement along G, ``u_G = phase_sign · φ / |G|`` (m, or voxels without
    ``voxel_size``), φ unwrapped inside ``support`` (``skimage.restoration.unwrap_phase``;
    one connected crystal), zero mean inside, NaN outside; float64 (Z, Y, X). Conventions
    and units in the module docstring."""

    rho, support, g, _ = _checked(rho, support, g, voxel_size, phase_sign)
    out = np.full(rho.shape, np.nan)
    if support.any():
        phase = unwrap_phase(np.ma.masked_array(np.angle(rho), mask=~support))
        u = phase_sign * np.ma.getdata(phase)[support] / np.linalg.norm(g)
        out[support] = u - u.mean()
    return out


def strain(rho, support, g, voxel_size=None, phase_sign: int = -1) -> np.ndarray:
    """Strain along G, ``ε = ĝ·∇u_G`` (dimensionless) from the wrapped phase differences
    between neighbours inside ``support`` (central where both neighbours are inside,
    one-sided where one is), NaN outside; float64 (Z, Y, X). Conventions in the module
    docstring."""
    rho, support, g, voxel = _checked(rho, support, g, voxel_size, phase_sign)
    gnorm = np.linalg.norm(g)
    eps = np.where(support, 0.0, np.nan)
    for axis in np.flatnonzero(g):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        step = np.angle(rho[hi] * np.conj(rho[lo]))  # φ(i+1) − φ(i), wrapped
        pair = support[hi] & support[lo]
        total = np.zeros(rho.shape)
        count = np.zeros(rho.shape)
        for side in (lo, hi):  # a pair is the forward difference of i, the backward of i+1
            total[side] += np.where(pair, step, 0.0)
            count[side] += pair
        with np.errstate(invalid="ignore", divide="ignore"):
            dphi = total / count / voxel[axis]  # NaN without a neighbour inside
        eps += g[axis] / gnorm * dphi
    return phase_sign * eps / gnorm


def strain_entries(
    rho, g, voxel_size=None, support=None, fraction: float = 0.2, phase_sign: int = -1
) -> dict:
    """The result file's strain group, a :func:`xrayflow.io.hdf5.write_h5` tree:
    ``displacement`` (m, or voxels), ``strain``, float32 (Z, Y, X), NaN outside ``mask``
    (bool: :func:`amplitude_support` of ``fraction`` within ``support``), ``g_vector``
    (z, y, x), and attributes stating the convention and units."""
    mask = amplitude_support(rho, fraction, support)
    unit = "voxel" if voxel_size is None else "m"
    return {
        "displacement": displacement(rho, mask, g, voxel_size, phase_sign).astype(np.float32),
        "strain": strain(rho, mask, g, voxel_size, phase_sign).astype(np.float32),
        "mask": mask,
        "g_vector": np.asarray(g, dtype=np.float64),
        "@phase_convention": f"phase = {'-' if phase_sign < 0 else '+'}G.u",
        "@displacement_units": unit,
        "@g_vector_units": f"1/{unit}, (z, y, x)",
        "@strain_definition": "du_G/dx_G along the unit vector of G, dimensionless",
        "@mask_fraction": float(fraction),
    }
