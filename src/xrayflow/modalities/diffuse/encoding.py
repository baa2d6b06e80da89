"""The encoding of short-range order: Warren–Cowley pair correlations on neighbour vectors.

Lattice convention: a lattice is an array ``s[i, j]`` of occupancies (1: species A, 0:
species B) on a periodic square lattice; a neighbour vector ``(m, n)`` is the displacement by
``m`` sites along axis 0 and ``n`` sites along axis 1.

Warren–Cowley coefficient of displacement ``r``: ``α(r) = <σ_i σ_{i+r}> / (c(1−c))`` with
``σ = s − c``, the average over all sites ``i`` (periodic boundaries) and over the lattices
of a set, ``c`` each lattice's own concentration and ``c(1−c)`` its mean over the set;
``α(0, 0) = 1`` and ``α(−r) = α(r)``.

Neighbour vectors (:func:`neighbour_vectors`): the 15 vectors ``0 ≤ m, n ≤ 3`` except the
origin, sorted by length and, at equal length, the larger ``m`` first::

    (1,0) (0,1) (1,1) (2,0) (0,2) (2,1) (1,2) (2,2) (3,0) (0,3) (3,1) (1,3) (3,2) (2,3) (3,3)

The encodings of dimension 3 and 8 are the first 3 and 8 of them: all of ``0 ≤ m, n ≤ 1``
and ``0 ≤ m, n ≤ 2`` (the 2×2 and 3×3 corners of the seed's 4×4 table).

Symmetry: the ordering is mirror symmetric (point group 2mm of the square lattice's
rectangular subgroup): the variable of ``(m, n)`` is the common value of ``α(m, n)``,
``α(m, −n)``, ``α(−m, n)`` and ``α(−m, −n)`` (:func:`symmetry_mates`), so the quadrant
table describes the whole pattern. :func:`measure_correlations` measures it as the mean of
``α(m, n)`` and ``α(m, −n)`` (the other two equal these by inversion). ``(1, 0)`` and
``(0, 1)`` are independent variables (no fourfold axis).
"""

from __future__ import annotations

import numpy as np

from xrayflow.backend import fft2, ifft2
from xrayflow.errors import ConfigError, DataError

#: Encoding dimensions.
DIMENSIONS = (3, 8, 15)
#: Side of the seed's correlation table (``0 ≤ m, n < TABLE_SIDE``).
TABLE_SIDE = 4


def neighbour_vectors(dim: int) -> np.ndarray:
    """The ``(dim, 2)`` int array of neighbour vectors ``(m, n)`` of an encoding of dimension
    ``dim`` ∈ {3, 8, 15}, in the order of the module docstring."""
    if dim not in DIMENSIONS:
        raise ConfigError(f"encoding dimension must be one of {DIMENSIONS}, got {dim!r}")
    quadrant = [(m, n) for m in range(TABLE_SIDE) for n in range(TABLE_SIDE) if (m, n) != (0, 0)]
    quadrant.sort(key=lambda v: (v[0] ** 2 + v[1] ** 2, -v[0]))
    return np.array(quadrant[:dim], dtype=np.int64)


def check_vectors(vectors) -> np.ndarray:
    """``vectors`` as a ``(dim, 2)`` int array of distinct quadrant vectors ``m, n ≥ 0``, not
    the origin; ConfigError otherwise."""
    v = np.asarray(vectors)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) == 0 or not np.issubdtype(v.dtype, np.integer):
        raise ConfigError(f"neighbour vectors must be a (dim, 2) integer array, got {v.tolist()}")
    if (v < 0).any() or (~v.any(axis=1)).any():
        raise ConfigError(f"neighbour vectors must have m, n >= 0, not (0, 0): {v.tolist()}")
    if len({tuple(x) for x in v.tolist()}) != len(v):
        raise ConfigError(f"neighbour vectors must be distinct: {v.tolist()}")
    return v.astype(np.int64)


def check_encoding(encoding, vectors) -> np.ndarray:
    """``encoding`` as a float array of one value per vector, each in [−1, 1]; ConfigError
    naming the offending vector otherwise."""
    a = np.asarray(encoding, dtype=np.float64)
    if a.shape != (len(vectors),):
        raise ConfigError(
            f"encoding must have one value per neighbour vector ({len(vectors)}), "
            f"got shape {a.shape}"
        )
    bad = ~(np.abs(a) <= 1.0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"encoding: target correlation α{tuple(vectors[i].tolist())} = {a[i]} "
            "is outside [-1, 1]"
        )
    return a


def symmetry_mates(vectors) -> tuple[np.ndarray, np.ndarray]:
    """The distinct vectors ``(±m, ±n)`` of each quadrant vector: ``(mates (U, 2), owner
    (U,))`` with ``owner[u]`` the index in ``vectors`` whose variable ``α`` applies to
    ``mates[u]`` (2 mates for an axis vector, 4 otherwise)."""
    v = check_vectors(vectors)
    mates, owner = [], []
    for i, (m, n) in enumerate(v.tolist()):
        for u in dict.fromkeys([(m, n), (m, -n), (-m, n), (-m, -n)]):
            mates.append(u)
            owner.append(i)
    return np.array(mates, dtype=np.int64), np.array(owner, dtype=np.int64)


def correlation_table(encoding, vectors) -> np.ndarray:
    """The seed's 4×4 table ``T[m, n] = α(m, n)``: 1 at ``(0, 0)``, the encoding at its
    vectors, NaN where not encoded."""
    v = check_vectors(vectors)
    a = check_encoding(encoding, v)
    if (v >= TABLE_SIDE).any():
        raise ConfigError(f"neighbour vectors must be < {TABLE_SIDE} for the table: {v.tolist()}")
    table = np.full((TABLE_SIDE, TABLE_SIDE), np.nan)
    table[0, 0] = 1.0
    table[v[:, 0], v[:, 1]] = a
    return table


def as_lattices(lattices) -> np.ndarray:
    """``lattices`` as a ``(K, L0, L1)`` float array of 0/1 occupancies; DataError otherwise."""
    s = np.asarray(lattices)
    if s.ndim == 2:
        s = s[None]
    if s.ndim != 3 or s.size == 0:
        raise DataError(f"lattices must be (L0, L1) or (K, L0, L1), got shape {s.shape}")
    if not np.isin(s, (0, 1)).all():
        raise DataError("lattices must hold occupancies 0 or 1")
    return s.astype(np.float64)


def correlation_map(lattices) -> np.ndarray:
    """``α(m, n)`` of every periodic displacement ``0 ≤ m < L0, 0 ≤ n < L1`` (unsymmetrised),
    shape ``(L0, L1)``, ``α[0, 0] = 1``; from the autocorrelation of ``σ`` by FFT
    (Wiener–Khinchin), averaged over the lattices of ``(L0, L1)`` or ``(K, L0, L1)``."""
    s = as_lattices(lattices)
    c = s.mean(axis=(1, 2))
    laue = float(np.mean(c * (1 - c)))
    if laue == 0.0:
        raise DataError("lattices hold one species only: correlations are undefined")
    sigma = s - c[:, None, None]
    f = fft2(sigma, norm="ortho")
    auto = ifft2(np.abs(f) ** 2, norm="backward").real  # site mean of σ_i σ_{i+r}
    return auto.mean(axis=0) / laue


def measure_correlations(lattices, vectors) -> np.ndarray:
    """The encoding ``(dim,)`` measured on ``lattices``: for each ``(m, n)`` the mean of
    ``α(m, n)`` and ``α(m, −n)`` (module docstring), periodic boundaries."""
    v = check_vectors(vectors)
    amap = correlation_map(lattices)
    l0, l1 = amap.shape
    return 0.5 * (amap[v[:, 0] % l0, v[:, 1] % l1] + amap[v[:, 0] % l0, -v[:, 1] % l1])


def multiplicities(vectors) -> np.ndarray:
    """Number of distinct symmetry mates of each vector ``(dim,)``: 2 on an axis, else 4."""
    return np.bincount(symmetry_mates(vectors)[1], minlength=len(vectors))


def zone_modes(vectors, grid: int = 32) -> np.ndarray:
    """``φ_v(h, k) = cos(2πhm) cos(2πkn)`` ``(grid, grid, dim)`` on ``h, k = i/grid`` (one
    zone): the mean of ``cos 2π(hm' + kn')`` over the mates of ``v``, so that
    ``Σ_r α(r) cos 2π(h·r) = 1 + Σ_v mult_v α_v φ_v`` (:func:`multiplicities`)."""
    v = check_vectors(vectors)
    h = np.arange(grid) / grid
    return np.cos(2 * np.pi * h[:, None, None] * v[:, 0]) * np.cos(
        2 * np.pi * h[None, :, None] * v[:, 1]
    )


def zone_spectrum(encoding, vectors, grid: int = 32) -> np.ndarray:
    """The Warren–Cowley sum ``1 + Σ_v mult_v α_v φ_v(h, k)`` of an encoding over one zone
    ``(grid, grid)``: the diffuse intensity in Laue units truncated to the encoded vectors."""
    v = check_vectors(vectors)
    return 1.0 + zone_modes(v, grid) @ (multiplicities(v) * np.asarray(encoding, dtype=float))
