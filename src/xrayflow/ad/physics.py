"""Differentiable physics: nodes over the operators of :mod:`xrayflow.operators`.

The linear ones (patches, the image part of the Fourier shift, rotation) are
:func:`~xrayflow.ad.core.linear` nodes: value ``op.fwd(x)``, VJP ``op.adj``. The far-field
intensity's VJP is ``F⁻¹{2 g · F{ψ}}`` through :class:`~xrayflow.operators.FarField`; the
multislice nodes run :class:`~xrayflow.operators.Multislice` forward and its reversible
backward.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xrayflow.backend import array_module, fftfreq
from xrayflow.operators import (
    FarField,
    FourierShift,
    Multislice,
    ObjectWindows,
    OperatorError,
    Patches,
    PatchStack,
    Rotation,
    rotation_operator,
    scatter_add_patches,
)

from .core import Tensor, linear, make_node
from .ops import _d, _workers

__all__ = [
    "far_field_intensity",
    "fourier_shift",
    "gather_patches",
    "multislice",
    "multislice_object",
    "rotate_volume",
    "rotation_operator",
    "scatter_add_patches",
]


def gather_patches(obj, corners, shape: int | Sequence[int]) -> Tensor:
    """Patches of ``obj`` (..., Ny, Nx) at integer top-left ``corners`` (B, 2) ->
    (..., B, h, w); ``shape`` is (h, w) or an int n for (n, n). The VJP scatter-adds
    (overlapping patches accumulate). :class:`~xrayflow.operators.Patches`."""
    return linear(Patches(corners, shape, _d(obj).shape), obj, "gather_patches")


def fourier_shift(x, shifts, backend=None) -> Tensor:
    """Sub-pixel shift of the last two axes by ``shifts`` (..., 2) pixels (y, x):
    ``y[r] = x[r - s]`` (circular; positive shifts move content to larger indices).

    ``x`` (..., h, w) and ``shifts`` (..., 2) broadcast over the leading axes, e.g. a probe
    (M, n, n) with shifts (B, 1, 2) gives (B, M, n, n). Differentiable in ``x`` (the
    adjoint of :class:`~xrayflow.operators.FourierShift`) and in ``shifts`` (real; for
    position refinement).
    """
    X, S = _d(x), _d(shifts)
    xp = array_module(X)
    h, w = X.shape[-2:]
    op = FourierShift(S, X.shape, np.result_type(X.dtype, np.complex64), xp, _workers(backend))
    y = op.fwd(X)

    def vjp_s(g):
        # dy/ds_y = F^-1(-2 pi i fy Yf); dL/ds = Re sum conj(Gf) * dYf/ds
        c = op.dft.fwd(g).conj() * op.dft.fwd(y)
        c *= -2j * np.pi
        rdt = y.real.dtype
        dy = (c * xp.asarray(fftfreq(h), dtype=rdt)[:, None]).real.sum(axis=(-2, -1))
        dx = (c * xp.asarray(fftfreq(w), dtype=rdt)[None, :]).real.sum(axis=(-2, -1))
        return xp.stack([dy, dx], axis=-1)

    return make_node(y, ((x, op.adj), (shifts, vjp_s)), "fourier_shift")


def far_field_intensity(psi, mode_axis: int | None = -3, backend=None, recompute: bool = True):
    """Fused ``sum_m |fft2(psi)|^2`` (ortho) over ``mode_axis`` (None: no mode sum).

    ``psi`` (B, M, n, n) -> (B, n, n) by default. The VJP is
    ``psi_bar = ifft2(2 * g * fft2(psi))`` (:class:`~xrayflow.operators.FarField` ``adj``),
    computed in place in the far field. With ``recompute`` (default) the far field is
    recomputed in backward from ``psi`` (one extra FFT) instead of being kept, which saves
    one wavefield batch of memory between the forward and the backward pass;
    ``recompute=False`` keeps it (one FFT less).
    """
    X = _d(psi)
    xp = array_module(X)
    ff = FarField(_workers(backend))
    F = ff.fwd(X)
    # |F|^2 through |F|, as the reconstructions always had it (their numbers stay the same;
    # operators.intensity, the simulation's, squares the parts: equal to rounding)
    inten = xp.abs(F)
    xp.multiply(inten, inten, out=inten)
    if mode_axis is not None:
        inten = inten.sum(axis=mode_axis)
    saved = [] if recompute else [F]  # used once: a second VJP call recomputes
    del F

    def vjp(g):
        Fx = saved.pop() if saved else ff.fwd(X)
        g2 = xp.multiply(g, 2.0)
        xp.multiply(Fx, g2 if mode_axis is None else xp.expand_dims(g2, mode_axis), out=Fx)
        del g2
        return ff.adj(Fx, Fx)

    return make_node(inten, ((psi, vjp),), "far_field_intensity")


def rotate_volume(vol, angle: float, axes=(0, 2)) -> Tensor:
    """Rotate ``vol`` by ``angle`` radians in the plane of ``axes`` (default (0, 2): (z, x),
    i.e. about the y axis of a (z, y, x) volume), about the array centre ((N-1)/2),
    bilinear interpolation, zeros outside. Positive angles turn axis ``axes[0]`` towards
    axis ``axes[1]``. Differentiable in ``vol`` (not in ``angle``):
    :class:`~xrayflow.operators.Rotation`."""
    V = _d(vol)
    op = Rotation(V.shape, angle, axes, array_module(V), V.dtype)
    return linear(op, vol, "rotate_volume")


# ---------------------------------------------------------------- multislice
def _multislice_node(probe, other, slices, transfer, backend, options, record, name) -> Tensor:
    """Node of the exit waves of :class:`~xrayflow.operators.Multislice` for the probe and
    ``slices`` (read from ``other``); ``options``: ``(chunk, reversible,
    max_amplification)``. The VJPs in ``probe`` and ``other`` share one backward pass (run
    by whichever is asked first)."""
    P = _d(probe)
    cdt = np.result_type(P.dtype, slices.dtype, np.complex64)
    op = Multislice(slices, _d(transfer), P.shape, cdt, _workers(backend), *options)
    need_probe = isinstance(probe, Tensor) and probe.requires_grad
    need_other = isinstance(other, Tensor) and other.requires_grad
    y = op.fwd(P, keep=need_other)
    state: dict = {}

    def vjp(key):
        def f(g):
            if key not in state:
                state["probe"], state["other"] = op.vjp(g, need_probe, need_other, record)
            return state.pop(key)

        return f

    return make_node(y, ((probe, vjp("probe")), (other, vjp("other"))), name)


def multislice(
    probe,
    patches,
    transfer,
    backend=None,
    reversible: bool = True,
    max_amplification: float = 10.0,
    chunk: int | None = None,
    _record=None,
) -> Tensor:
    """Exit waves of a multislice object for every position and probe mode.

    Args:
        probe: (M, n, n) complex probe modes (Tensor or array; (n, n) means M = 1), or
            (B, M, n, n) probes per position (e.g. sub-pixel shifted).
        patches: (S, B, n, n) slice transmissions at the B positions.
        transfer: Fresnel/angular-spectrum transfer function (n, n), or (S-1, n, n) for
            unequal spacings; DC at index 0 (constant, no gradient). Ignored if S = 1.
        backend: :class:`xrayflow.backend.Backend` (its CPU FFT threads); default: the
            module-level FFT threads of :mod:`xrayflow.backend`.
        reversible: regenerate waves in backward instead of storing them
            (:mod:`xrayflow.operators.multislice`).
        max_amplification: checkpoint a slice when regeneration would amplify round-off by
            more than this (accumulated ``1/min|t|``).
        chunk: positions per chunk (default ``ceil(B / (8 * threads))``, threads = CPU FFT
            workers, 1 on the GPU): backward buffers (per thread) scale with it.

    Returns:
        (B, M, n, n) exit waves (complex); differentiable in ``probe`` and ``patches``.
    """
    P, T = _d(probe), _d(patches)
    if T.ndim != 4 or T.shape[-2:] != P.shape[-2:]:
        raise OperatorError(
            f"patches must have shape (S, B, n, n) matching the probe, got {T.shape}"
        )
    options = (chunk, reversible, max_amplification)
    return _multislice_node(
        probe, patches, PatchStack(T), transfer, backend, options, _record, "multislice"
    )


def multislice_object(
    probe,
    obj,
    corners,
    transfer,
    backend=None,
    reversible: bool = True,
    max_amplification: float = 10.0,
    chunk: int | None = None,
    _record=None,
) -> Tensor:
    """Like :func:`multislice` but with the object (S, Ny, Nx) and integer top-left
    ``corners`` (B, 2): patches are read from the object per chunk in forward and backward,
    and their gradient is scatter-added straight into the object gradient (no (S, B, n, n)
    array).

    Equals ``multislice(probe, gather_patches(obj, corners, (n, n)), transfer, ...)``.
    """
    windows = ObjectWindows(_d(obj), corners, _d(probe).shape[-2:])
    options = (chunk, reversible, max_amplification)
    return _multislice_node(
        probe, obj, windows, transfer, backend, options, _record, "multislice_object"
    )
