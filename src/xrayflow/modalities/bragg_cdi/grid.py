"""The crystal box on the detector grid: a box of m voxels per axis sits in a grid of N at
start index ``N // 2 - m // 2``, as the simulator places the crystal."""

from __future__ import annotations

import numpy as np

__all__ = ["crop", "embed"]


def _box(big, small) -> tuple[slice, ...]:
    """Slices of the centred box of shape ``small`` in shape ``big``."""
    return tuple(
        slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(big, small, strict=True)
    )


def embed(a, shape, xp=np):
    """``a`` zero-padded into the centre of ``shape`` (same dtype)."""
    a = xp.asarray(a)
    if any(m > n for n, m in zip(shape, a.shape, strict=True)):
        raise ValueError(f"array {a.shape} does not fit into {tuple(shape)}")
    out = xp.zeros(tuple(shape), dtype=a.dtype)
    out[_box(shape, a.shape)] = a
    return out


def crop(a, shape):
    """The centred box of ``shape`` from ``a`` (inverse of :func:`embed`)."""
    return a[_box(a.shape, shape)]
