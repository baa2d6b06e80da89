"""Windows of an array at integer top-left corners (gather) and its adjoint (scatter-add).

Corners are ``(B, 2)`` integer ``(y, x)`` pixel indices of the window's top-left sample
(docs/physics.md: a scan position's fractional part is a probe shift, not a window shift).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xrayflow.backend import array_module, to_numpy

from .base import OperatorError

__all__ = ["Patches", "flat_index", "integer_corners", "scatter_add_patches"]


def _window_shape(shape) -> tuple[int, int]:
    """``(h, w)`` from an int ``n`` (square) or a shape ending in ``(h, w)``."""
    if np.ndim(shape) == 0:
        return int(shape), int(shape)
    shape = tuple(int(s) for s in shape)
    return shape[-2], shape[-1]


def integer_corners(corners) -> np.ndarray:
    """Corners as a host ``(B, 2)`` int64 array; raises :class:`OperatorError` for another
    shape or non-integer values (their sub-pixel part belongs to a Fourier shift)."""
    c = np.asarray(to_numpy(corners))
    if c.ndim != 2 or c.shape[1] != 2:
        raise OperatorError(f"corners must have shape (B, 2), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise OperatorError("corners must be finite")
    ci = np.rint(c).astype(np.int64)
    if not np.array_equal(ci, c):
        raise OperatorError("corners must be integers (shift the probe for sub-pixel parts)")
    return ci


def _check_inside(ci: np.ndarray, full, window) -> None:
    ny, nx = full
    py, px = window
    bad = np.flatnonzero(
        (ci[:, 0] < 0) | (ci[:, 1] < 0) | (ci[:, 0] + py > ny) | (ci[:, 1] + px > nx)
    )
    if bad.size:
        raise OperatorError(
            f"{bad.size} probe window(s) of {py}x{px} px fall outside the {ny}x{nx} object "
            f"(first: corner {tuple(int(v) for v in ci[bad[0]])}); enlarge the object or "
            f"shrink the scan"
        )


def flat_index(ci: np.ndarray, window, nx: int, xp):
    """``(B, h, w)`` indices of the windows' samples in a plane ``(…, nx)`` flattened in C
    order, on ``xp``."""
    h, w = window
    idx = (ci[:, 0, None, None] + np.arange(h)[None, :, None]) * nx + (
        ci[:, 1, None, None] + np.arange(w)[None, None, :]
    )
    return xp.asarray(idx)


def scatter_add_patches(out, patches, ci) -> None:
    """In place: ``out[..., y:y+h, x:x+w] += patches[..., b, :, :]`` for every corner
    ``ci[b] = (y, x)`` (integer ``(B, 2)``), in order (overlaps accumulate)."""
    xp = array_module(out)
    h, w = patches.shape[-2:]
    if xp is np:
        for b in range(ci.shape[0]):
            r, c = ci[b]
            view = out[..., r : r + h, c : c + w]
            view += patches[..., b, :, :]
        return
    import cupyx  # optional GPU dependency

    Ny, Nx = out.shape[-2:]
    idx = flat_index(ci, (h, w), Nx, xp).ravel()
    lead = int(np.prod(out.shape[:-2], dtype=np.int64))
    o2 = out.reshape(lead, Ny * Nx)
    p2 = patches.reshape(lead, idx.size)
    if xp.iscomplexobj(out):  # scatter_add takes real arrays: real and imaginary parts
        o2 = o2.view(out.real.dtype).reshape(lead, Ny * Nx, 2)
        p2 = p2.view(patches.real.dtype).reshape(lead, idx.size, 2)
        for i in range(lead):
            for k in range(2):
                cupyx.scatter_add(o2[i, :, k], idx, p2[i, :, k])
        return
    for i in range(lead):
        cupyx.scatter_add(o2[i], idx, p2[i])


class Patches:
    """Windows ``(..., B, h, w)`` of an array ``(..., Ny, Nx)`` at integer top-left corners.

    Args:
        corners: ``(B, 2)`` integer ``(y, x)`` corners.
        shape: window ``(h, w)`` or an int ``n`` for ``(n, n)``.
        full_shape: shape ``(..., Ny, Nx)`` of the arrays ``fwd`` takes and ``adj`` returns.

    ``fwd`` copies the windows out (one vectorised gather); ``adj`` scatter-adds windows
    into zeros (overlapping windows accumulate). Raises :class:`OperatorError` for
    non-integer corners or windows outside ``(Ny, Nx)``.
    """

    def __init__(self, corners, shape: int | Sequence[int], full_shape: Sequence[int]):
        self.shape = _window_shape(shape)
        self.full_shape = tuple(int(s) for s in full_shape)
        self.ci = integer_corners(corners)
        _check_inside(self.ci, self.full_shape[-2:], self.shape)

    def fwd(self, x):
        xp = array_module(x)
        if xp is np:
            win = np.lib.stride_tricks.sliding_window_view(x, self.shape, axis=(-2, -1))
            return win[..., self.ci[:, 0], self.ci[:, 1], :, :]
        ny, nx = x.shape[-2:]
        idx = flat_index(self.ci, self.shape, nx, xp)
        return xp.take(x.reshape(x.shape[:-2] + (ny * nx,)), idx, axis=-1)

    def adj(self, y):
        out = array_module(y).zeros(self.full_shape, dtype=y.dtype)
        scatter_add_patches(out, y, self.ci)
        return out
