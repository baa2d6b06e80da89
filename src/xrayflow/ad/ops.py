"""Differentiable primitives (VJPs in PyTorch's complex convention).

Each function accepts Tensors, ``xp`` arrays or Python scalars; non-Tensor operands are
constants. Shapes broadcast like NumPy; the engine sum-reduces gradients back.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from xrayflow.backend import array_module
from xrayflow.operators.fourier import DFT

from .core import Tensor, linear, make_node

__all__ = [
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "power",
    "exp",
    "log",
    "sqrt",
    "sin",
    "cos",
    "abs",
    "abs2",
    "conj",
    "real",
    "imag",
    "angle",
    "sum",
    "mean",
    "reshape",
    "transpose",
    "moveaxis",
    "broadcast_to",
    "getitem",
    "pad",
    "crop",
    "stack",
    "concatenate",
    "where",
    "clip",
    "maximum",
    "fft2",
    "ifft2",
    "fftn",
    "ifftn",
    "fft",
    "ifft",
    "polar",
    "expi",
]


def _d(x):
    return x.data if isinstance(x, Tensor) else x


def _xp(*xs):
    for x in xs:
        d = _d(x)
        if hasattr(d, "shape"):
            return array_module(d)
    return np


def _conj(v):
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, complex):
        return v.conjugate()
    xp = array_module(v)
    return v.conj() if xp.iscomplexobj(v) else v


# ---------------------------------------------------------------- elementwise arithmetic
def add(a, b) -> Tensor:
    return make_node(_d(a) + _d(b), ((a, lambda g: g), (b, lambda g: g)), "add")


def sub(a, b) -> Tensor:
    return make_node(_d(a) - _d(b), ((a, lambda g: g), (b, lambda g: -g)), "sub")


def mul(a, b) -> Tensor:
    A, B = _d(a), _d(b)
    return make_node(A * B, ((a, lambda g: g * _conj(B)), (b, lambda g: g * _conj(A))), "mul")


def div(a, b) -> Tensor:
    A, B = _d(a), _d(b)
    y = A / B
    return make_node(y, ((a, lambda g: g / _conj(B)), (b, lambda g: -g * _conj(y / B))), "div")


def neg(a) -> Tensor:
    return make_node(-_d(a), ((a, lambda g: -g),), "neg")


def power(a, p) -> Tensor:
    """``a ** p`` for a real scalar ``p`` (or ``p ** a`` via :meth:`Tensor.__rpow__`)."""
    if isinstance(p, Tensor):
        raise TypeError("power: the exponent must be a real scalar")
    p = float(p)
    A = _d(a)
    y = A**p
    if p == 2.0:
        return make_node(y, ((a, lambda g: g * (2.0 * _conj(A))),), "pow")
    return make_node(y, ((a, lambda g: g * _conj(p * A ** (p - 1.0))),), "pow")


def _rpow(a, base) -> Tensor:
    A = _d(a)
    y = base**A
    lnb = np.log(complex(base)) if base <= 0 else math.log(base)
    return make_node(y, ((a, lambda g: g * _conj(y * lnb)),), "rpow")


def exp(a) -> Tensor:
    xp = _xp(a)
    y = xp.exp(_d(a))
    return make_node(y, ((a, lambda g: g * _conj(y)),), "exp")


def expi(phi) -> Tensor:
    """``exp(i*phi)`` for a real tensor ``phi`` (complex result)."""
    xp = _xp(phi)
    P = _d(phi)
    y = xp.exp(1j * P)
    # d/dphi: L real -> dL/dphi = Re(conj(g) * i y) = Re(g * conj(i y)); engine takes Re.
    return make_node(y, ((phi, lambda g: g * _conj(1j * y)),), "expi")


def polar(amplitude, phase) -> Tensor:
    """``amplitude * exp(i*phase)`` (both real)."""
    return mul(amplitude, expi(phase))


def log(a) -> Tensor:
    xp = _xp(a)
    A = _d(a)
    return make_node(xp.log(A), ((a, lambda g: g / _conj(A)),), "log")


def sqrt(a) -> Tensor:
    xp = _xp(a)
    y = xp.sqrt(_d(a))
    return make_node(y, ((a, lambda g: g / (2.0 * _conj(y))),), "sqrt")


def sin(a) -> Tensor:
    xp = _xp(a)
    A = _d(a)
    return make_node(xp.sin(A), ((a, lambda g: g * _conj(xp.cos(A))),), "sin")


def cos(a) -> Tensor:
    xp = _xp(a)
    A = _d(a)
    return make_node(xp.cos(A), ((a, lambda g: -g * _conj(xp.sin(A))),), "cos")


def abs(a) -> Tensor:
    """``|a|``; the gradient at 0 is 0 (subgradient)."""
    xp = _xp(a)
    A = _d(a)
    y = xp.abs(A)

    def vjp(g):
        safe = xp.where(y == 0, 1, y)
        return g * (A / safe)

    return make_node(y, ((a, vjp),), "abs")


def abs2(a) -> Tensor:
    """``|a|^2`` (real), computed without a square root."""
    xp = _xp(a)
    A = _d(a)
    if xp.iscomplexobj(A):
        y = A.real * A.real + A.imag * A.imag
    else:
        y = A * A
    return make_node(y, ((a, lambda g: (2.0 * g) * A),), "abs2")


def conj(a) -> Tensor:
    A = _d(a)
    return make_node(_conj(A), ((a, lambda g: _conj(g)),), "conj")


def real(a) -> Tensor:
    xp = _xp(a)
    A = _d(a)
    return make_node(xp.real(A), ((a, lambda g: g),), "real")


def imag(a) -> Tensor:
    xp = _xp(a)
    A = _d(a)
    return make_node(xp.imag(A), ((a, lambda g: 1j * g),), "imag")


def angle(a) -> Tensor:
    """Phase ``atan2(Im a, Re a)``; gradient 0 where ``a == 0``."""
    xp = _xp(a)
    A = _d(a)
    y = xp.angle(A)

    def vjp(g):
        r2 = A.real * A.real + A.imag * A.imag if xp.iscomplexobj(A) else A * A
        r2 = xp.where(r2 == 0, xp.inf, r2)
        return g * (1j * A / r2)

    return make_node(y, ((a, vjp),), "angle")


def where(cond, a, b) -> Tensor:
    """``cond ? a : b`` with a constant boolean mask."""
    xp = _xp(cond, a, b)
    C = _d(cond)
    if isinstance(C, Tensor):
        C = C.data
    y = xp.where(C, _d(a), _d(b))
    return make_node(
        y,
        ((a, lambda g: xp.where(C, g, 0)), (b, lambda g: xp.where(C, 0, g))),
        "where",
    )


def clip(a, lo=None, hi=None) -> Tensor:
    """Clamp a real tensor; the gradient passes only where the value is inside [lo, hi]."""
    xp = _xp(a)
    A = _d(a)
    y = xp.clip(A, lo, hi)

    def vjp(g):
        m = xp.ones(A.shape, dtype=bool)
        if lo is not None:
            m &= A >= lo
        if hi is not None:
            m &= A <= hi
        return xp.where(m, g, 0)

    return make_node(y, ((a, vjp),), "clip")


def maximum(a, b) -> Tensor:
    """Elementwise maximum of real tensors (ties send the gradient to ``a``)."""
    xp = _xp(a, b)
    A, B = _d(a), _d(b)
    m = A >= B
    y = xp.where(m, A, B)
    return make_node(
        y, ((a, lambda g: xp.where(m, g, 0)), (b, lambda g: xp.where(m, 0, g))), "maximum"
    )


# ---------------------------------------------------------------- reductions
def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


def sum(a, axis=None, keepdims: bool = False) -> Tensor:
    xp = _xp(a)
    A = _d(a)
    shape = A.shape
    axes = _norm_axes(axis, A.ndim)
    y = A.sum(axis=axes, keepdims=keepdims)

    def vjp(g):
        if not keepdims:
            g = xp.expand_dims(g, axes) if axes else g
        return xp.broadcast_to(g, shape)

    return make_node(xp.asarray(y), ((a, vjp),), "sum")


def mean(a, axis=None, keepdims: bool = False) -> Tensor:
    A = _d(a)
    axes = _norm_axes(axis, A.ndim)
    n = 1
    for ax in axes:
        n *= A.shape[ax]
    return mul(sum(a, axis=axis, keepdims=keepdims), 1.0 / max(n, 1))


# ---------------------------------------------------------------- shape
def reshape(a, *shape) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    A = _d(a)
    old = A.shape
    return make_node(A.reshape(shape), ((a, lambda g: g.reshape(old)),), "reshape")


def transpose(a, axes=None) -> Tensor:
    A = _d(a)
    if axes is None:
        axes = tuple(reversed(range(A.ndim)))
    axes = tuple(ax % A.ndim for ax in axes)
    inv = tuple(np.argsort(axes))
    return make_node(A.transpose(axes), ((a, lambda g: g.transpose(inv)),), "transpose")


def moveaxis(a, source, destination) -> Tensor:
    xp = _xp(a)
    A = _d(a)
    return make_node(
        xp.moveaxis(A, source, destination),
        ((a, lambda g: xp.moveaxis(g, destination, source)),),
        "moveaxis",
    )


def broadcast_to(a, shape) -> Tensor:
    xp = _xp(a)
    # the engine sum-reduces the gradient to the input's shape
    return make_node(xp.broadcast_to(_d(a), tuple(shape)), ((a, lambda g: g),), "broadcast_to")


def _is_basic_index(idx) -> bool:
    items = idx if isinstance(idx, tuple) else (idx,)
    return all(i is None or i is Ellipsis or isinstance(i, (int, slice)) for i in items)


def getitem(a, idx) -> Tensor:
    """Indexing; basic (slices, ints, None, ...) or advanced (scatter-add VJP)."""
    xp = _xp(a)
    A = _d(a)
    if isinstance(idx, Tensor):
        idx = idx.data
    y = A[idx]
    basic = _is_basic_index(idx)

    def vjp(g):
        out = xp.zeros(A.shape, dtype=g.dtype)
        if basic:
            out[idx] = g
        elif xp is np:
            np.add.at(out, idx, g)
        else:
            import cupyx  # optional GPU dependency

            cupyx.scatter_add(out, idx, g)
        return out

    return make_node(y, ((a, vjp),), "getitem")


def _pad_width(pad_width, ndim):
    pw = (
        np.broadcast_to(np.asarray(pad_width, dtype=int), (ndim, 2))
        if np.ndim(pad_width) < 2
        else None
    )
    if pw is None:
        pw = list(pad_width)
        # pad_width for the last len(pw) axes
        pw = [(0, 0)] * (ndim - len(pw)) + [tuple(int(v) for v in p) for p in pw]
        return tuple(pw)
    return tuple((int(p[0]), int(p[1])) for p in pw)


def pad(a, pad_width, value: float = 0.0) -> Tensor:
    """Constant padding. ``pad_width``: an int, or ``((before, after), ...)`` for the last
    ``len(pad_width)`` axes (leading axes are not padded)."""
    xp = _xp(a)
    A = _d(a)
    pw = _pad_width(pad_width, A.ndim)
    y = xp.pad(A, pw, mode="constant", constant_values=value)
    sl = tuple(slice(b, b + n) for (b, _), n in zip(pw, A.shape, strict=True))
    return make_node(y, ((a, lambda g: g[sl]),), "pad")


def crop(a, shape: Sequence[int], start: Sequence[int] | None = None) -> Tensor:
    """Crop the last ``len(shape)`` axes to ``shape`` from ``start`` (default: centred,
    the inverse of a symmetric :func:`pad`). The VJP zero-pads."""
    A = _d(a)
    k = len(shape)
    full = A.shape[-k:]
    if start is None:
        start = [(f - s) // 2 for f, s in zip(full, shape, strict=True)]
    for f, s, b in zip(full, shape, start, strict=True):
        if b < 0 or b + s > f:
            raise ValueError(f"crop window {tuple(start)}+{tuple(shape)} outside {tuple(full)}")
    idx = (Ellipsis,) + tuple(
        slice(int(b), int(b) + int(s)) for b, s in zip(start, shape, strict=True)
    )
    return getitem(a, idx)


def stack(tensors: Sequence, axis: int = 0) -> Tensor:
    xp = _xp(*tensors)
    datas = [_d(t) for t in tensors]
    y = xp.stack(datas, axis=axis)
    ax = axis % y.ndim
    parents = []
    for i, t in enumerate(tensors):
        parents.append((t, lambda g, i=i: xp.take(g, i, axis=ax)))
    return make_node(y, parents, "stack")


def concatenate(tensors: Sequence, axis: int = 0) -> Tensor:
    xp = _xp(*tensors)
    datas = [_d(t) for t in tensors]
    y = xp.concatenate(datas, axis=axis)
    ax = axis % y.ndim
    bounds = np.cumsum([0] + [d.shape[ax] for d in datas])
    parents = []
    for i, t in enumerate(tensors):
        sl = (slice(None),) * ax + (slice(int(bounds[i]), int(bounds[i + 1])),)
        parents.append((t, lambda g, sl=sl: g[sl]))
    return make_node(y, parents, "concatenate")


# ---------------------------------------------------------------- FFT
def _workers(backend):
    """CPU FFT threads: the backend's, or (None) the module default of :mod:`xrayflow.backend`."""
    return None if backend is None else backend.workers


def _dft(name, a, norm, backend, **axes) -> Tensor:
    """Node ``backend.<name>(a)``: :class:`xrayflow.operators.DFT` (VJP: the inverse
    transform with the adjoint norm). ``axes``: ``axes=`` (2D/nD) or ``axis=`` (1D)."""
    return linear(DFT(name, norm, _workers(backend), **axes), a, name)


def fft2(a, axes=(-2, -1), norm: str = "ortho", backend=None) -> Tensor:
    """2D FFT (default ``norm="ortho"``, the project convention)."""
    return _dft("fft2", a, norm, backend, axes=axes)


def ifft2(a, axes=(-2, -1), norm: str = "ortho", backend=None) -> Tensor:
    return _dft("ifft2", a, norm, backend, axes=axes)


def fftn(a, axes=None, norm: str = "ortho", backend=None) -> Tensor:
    return _dft("fftn", a, norm, backend, axes=axes)


def ifftn(a, axes=None, norm: str = "ortho", backend=None) -> Tensor:
    return _dft("ifftn", a, norm, backend, axes=axes)


def fft(a, axis: int = -1, norm: str = "ortho", backend=None) -> Tensor:
    return _dft("fft", a, norm, backend, axis=axis)


def ifft(a, axis: int = -1, norm: str = "ortho", backend=None) -> Tensor:
    return _dft("ifft", a, norm, backend, axis=axis)


# ---------------------------------------------------------------- Tensor methods
def _attach():
    T = Tensor
    T.__add__ = lambda a, b: add(a, b)
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = lambda a, b: sub(a, b)
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = lambda a, b: mul(a, b)
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = lambda a, b: div(a, b)
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__neg__ = lambda a: neg(a)
    T.__pos__ = lambda a: a
    T.__pow__ = lambda a, p: power(a, p)
    T.__rpow__ = lambda a, base: _rpow(a, base)
    T.__getitem__ = lambda a, idx: getitem(a, idx)
    T.__abs__ = lambda a: abs(a)
    T.sum = lambda a, axis=None, keepdims=False: sum(a, axis, keepdims)
    T.mean = lambda a, axis=None, keepdims=False: mean(a, axis, keepdims)
    T.reshape = lambda a, *shape: reshape(a, *shape)
    T.transpose = lambda a, axes=None: transpose(a, axes)
    T.conj = lambda a: conj(a)
    T.abs = lambda a: abs(a)
    T.abs2 = lambda a: abs2(a)
    T.exp = lambda a: exp(a)
    T.log = lambda a: log(a)
    T.sqrt = lambda a: sqrt(a)
    T.real = property(lambda a: real(a))
    T.imag = property(lambda a: imag(a))
    T.T = property(lambda a: transpose(a))


_attach()
