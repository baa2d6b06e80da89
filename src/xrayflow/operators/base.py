"""What every operator shares: the ``fwd``/``adj`` protocol, its error and broadcasting.

A linear operator ``A`` maps ``xp`` arrays (NumPy or CuPy) with ``fwd(x) = A x`` and
``adj(y) = Aᴴ y``, the exact adjoint for ``<a, b> = Σ conj(a)·b``:
``<A x, y> = <x, Aᴴ y>``. For a complex-linear ``A`` the vector-Jacobian product of a real
loss in PyTorch's convention (``∂L/∂Re + i ∂L/∂Im``, used by :mod:`xrayflow.ad`) is
``Aᴴ g``, so :func:`xrayflow.ad.linear` builds a graph node from ``fwd`` and ``adj`` alone.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from xrayflow.backend import array_module
from xrayflow.errors import PhysicsError

__all__ = ["LinearOperator", "OperatorError", "unbroadcast"]


@runtime_checkable
class LinearOperator(Protocol):
    """``fwd(x) = A x`` and ``adj(y) = Aᴴ y`` on ``xp`` arrays."""

    def fwd(self, x): ...

    def adj(self, y): ...


class OperatorError(PhysicsError, ValueError):
    """Inputs that an operator cannot take (shapes, corners outside the object, a missing
    transfer function): a :class:`~xrayflow.errors.PhysicsError` for the CLI and a
    ``ValueError`` for array code."""


def unbroadcast(g, shape: tuple):
    """Sum-reduce ``g`` to ``shape`` (the adjoint of NumPy broadcasting)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    nlead = g.ndim - len(shape)
    if nlead > 0:
        g = g.sum(axis=tuple(range(nlead)))
    axes = tuple(
        i for i, (gs, s) in enumerate(zip(g.shape, shape, strict=True)) if s == 1 and gs != 1
    )
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if tuple(g.shape) != shape:  # e.g. zero-size corner cases
        g = array_module(g).broadcast_to(g, shape)
    return g
