"""Projection of maps onto illumination patterns: the bucket signals of structured
illumination (single-pixel / ghost imaging, e.g. speckle-illuminated X-ray fluorescence)."""

from __future__ import annotations

from xrayflow.backend import array_module

from .base import OperatorError

__all__ = ["PatternProjection"]


class PatternProjection:
    """``y[k, e] = w_e · Σ_r P_k(r) · x_e(r)``: maps ``x`` (E, ny, nx) -> signals (K, E).

    Args:
        patterns: ``P`` (K, ny, nx), real, e.g. photons per pixel and exposure at the
            sample; their dtype sets the precision (the result's dtype is NumPy's promotion
            of ``patterns`` and ``x``).
        weights: ``w`` (E,) real per-map factors (e.g. a fluorescence line's counts per
            photon per g/cm²), or None (all 1); cast to the patterns' dtype.

    ``adj``: ``x_e(r) = w_e · Σ_k P_k(r) · y[k, e]`` (the patterns and weights are real).
    One matrix product per call over the flattened pixels.
    """

    def __init__(self, patterns, weights=None):
        if patterns.ndim != 3:
            raise OperatorError(f"patterns must be (K, ny, nx), got shape {patterns.shape}")
        xp = array_module(patterns)
        self.shape = tuple(int(n) for n in patterns.shape[1:])
        self.patterns = patterns.reshape(patterns.shape[0], self.shape[0] * self.shape[1])
        self.weights = None if weights is None else xp.asarray(weights, dtype=patterns.dtype)

    def _weigh(self, a):
        return a if self.weights is None else a * self.weights

    def fwd(self, x):
        if tuple(x.shape[1:]) != self.shape:
            raise OperatorError(f"maps must be (E, *{self.shape}), got shape {x.shape}")
        return self._weigh(self.patterns @ x.reshape(x.shape[0], -1).T)

    def adj(self, y):
        x = self._weigh(y).T @ self.patterns
        return x.reshape(y.shape[1], *self.shape)
