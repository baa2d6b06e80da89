"""Rotation of a volume in one plane by bilinear interpolation, as a sparse linear operator.

The matrix ``A`` of one plane (``(a0·a1) × (a0·a1)``, the plane flattened in C order) is
built once per (shape, angle, dtype) and cached, with its exact transpose ``Aᵀ``; both
act on all planes at once. The weights are real, so ``Aᴴ = Aᵀ``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import scipy.sparse

from xrayflow.backend import array_module

from .base import OperatorError

__all__ = ["Rotation", "rotation_operator"]


@lru_cache(maxsize=64)
def _coo(a0: int, a1: int, angle: float):
    c0, c1 = (a0 - 1) / 2.0, (a1 - 1) / 2.0
    p, q = np.meshgrid(
        np.arange(a0, dtype=np.float64), np.arange(a1, dtype=np.float64), indexing="ij"
    )
    y0, y1 = p - c0, q - c1
    ca, sa = math.cos(angle), math.sin(angle)
    # out(r) = in(R^-1 r), R rotates from axis 0 towards axis 1 by ``angle``
    s0 = ca * y0 + sa * y1 + c0
    s1 = -sa * y0 + ca * y1 + c1
    i0 = np.floor(s0).astype(np.int64)
    i1 = np.floor(s1).astype(np.int64)
    f0 = s0 - i0
    f1 = s1 - i1
    rows_all, cols_all, w_all = [], [], []
    out_idx = (np.arange(a0)[:, None] * a1 + np.arange(a1)[None, :]).ravel()
    for d0, d1, w in (
        (0, 0, (1 - f0) * (1 - f1)),
        (1, 0, f0 * (1 - f1)),
        (0, 1, (1 - f0) * f1),
        (1, 1, f0 * f1),
    ):
        j0 = (i0 + d0).ravel()
        j1 = (i1 + d1).ravel()
        ww = w.ravel()
        ok = (j0 >= 0) & (j0 < a0) & (j1 >= 0) & (j1 < a1) & (ww != 0)
        rows_all.append(out_idx[ok])
        cols_all.append(j0[ok] * a1 + j1[ok])
        w_all.append(ww[ok])
    return np.concatenate(rows_all), np.concatenate(cols_all), np.concatenate(w_all)


_OPS: dict = {}


def rotation_operator(a0: int, a1: int, angle: float, xp=np, dtype=np.float64):
    """``(A, Aᵀ)`` as CSR matrices acting on an ``(a0, a1)`` plane flattened in C order."""
    key = (a0, a1, float(angle), xp.__name__, np.dtype(dtype).str)
    if key in _OPS:
        return _OPS[key]
    rows, cols, w = _coo(a0, a1, float(angle))
    sp = scipy.sparse
    if xp is not np:
        import cupyx.scipy.sparse as sp  # optional GPU dependency

        rows, cols, w = xp.asarray(rows), xp.asarray(cols), xp.asarray(w)
    A = sp.coo_matrix((w.astype(dtype), (rows, cols)), shape=(a0 * a1, a0 * a1)).tocsr()
    AT = A.T.tocsr()
    if len(_OPS) > 64:
        _OPS.clear()
    _OPS[key] = (A, AT)
    return A, AT


def _apply(M, V, axes):
    xp = array_module(V)
    ax0, ax1 = axes
    moved = xp.moveaxis(V, (ax0, ax1), (0, 1))
    a0, a1 = moved.shape[:2]
    rest = moved.shape[2:]
    flat = xp.ascontiguousarray(moved).reshape(a0 * a1, -1)
    out = M @ flat
    out = xp.asarray(out).reshape((a0, a1) + rest)
    return xp.ascontiguousarray(xp.moveaxis(out, (0, 1), (ax0, ax1)))


class Rotation:
    """Rotate by ``angle`` radians in the plane of ``axes`` (default (0, 2): (z, x), i.e.
    about the y axis of a (z, y, x) volume), about the array centre ((N − 1)/2), bilinear
    interpolation, zeros outside; positive angles turn axis ``axes[0]`` towards
    ``axes[1]``.

    Args:
        shape: shape of the volumes (any number of axes ≥ 2).
        angle: radians. axes: the plane. xp: namespace. dtype: dtype of the volumes
            (real weights in its precision; CuPy's sparse product wants one dtype).
    """

    def __init__(self, shape, angle: float, axes=(0, 2), xp=np, dtype=np.float64):
        nd = len(shape)
        self.axes = (axes[0] % nd, axes[1] % nd)
        if self.axes[0] == self.axes[1]:
            raise OperatorError("rotation: axes must differ")
        wdt = np.result_type(dtype, np.float32)
        if xp is np:
            wdt = np.finfo(wdt).dtype
        a0, a1 = shape[self.axes[0]], shape[self.axes[1]]
        self.A, self.AT = rotation_operator(a0, a1, float(angle), xp, wdt)

    def fwd(self, x):
        return _apply(self.A, x, self.axes)

    def adj(self, y):
        return _apply(self.AT, y, self.axes)
