"""Expose a function built from ``xrayflow.ad`` primitives to PyTorch autograd.

Tensors cross the boundary through DLPack, without copies: a CPU torch tensor becomes a
NumPy array on the same memory (a CUDA tensor a CuPy array), and the result comes back
the same way. Both sides use the same complex-gradient convention (PyTorch's), so the
gradients pass through unchanged. Typical use: a physics loss on a network's output::

    loss_fn = as_torch_function(lambda obj: ad.sum((ad.abs(ad.fft2(obj * probe)) - amp) ** 2))
    loss = loss_fn(net(x))          # torch scalar
    loss.backward()
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .core import Tensor, backward

__all__ = ["as_torch_function", "to_xp", "from_xp"]


def to_xp(t):
    """torch tensor -> NumPy (CPU) or CuPy (CUDA) array sharing its memory."""
    t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    if t.device.type == "cpu":
        if t.is_conj():
            t = t.resolve_conj()
        return np.from_dlpack(t)
    import cupy  # optional GPU dependency

    return cupy.from_dlpack(t.resolve_conj())


def from_xp(a):
    """NumPy/CuPy array -> torch tensor sharing its memory (copies only read-only or
    non-contiguous arrays, which DLPack cannot export)."""
    import torch  # optional dependency (the train extra)

    if isinstance(a, np.ndarray):
        if not a.flags.writeable or not a.flags.c_contiguous:
            a = np.ascontiguousarray(a).copy()
        return torch.from_dlpack(a)
    return torch.from_dlpack(a)


def as_torch_function(fn: Callable) -> Callable:
    """Wrap ``fn(*Tensors) -> Tensor`` (built from ``xrayflow.ad``) as a differentiable
    function of torch tensors (a ``torch.autograd.Function``). Non-tensor arguments are
    passed through unchanged; gradients flow to every torch input with
    ``requires_grad``."""
    import torch  # optional dependency (the train extra)

    class _XrayflowFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *args):
            ad_args, targets, where = [], [], []
            for i, a in enumerate(args):
                if isinstance(a, torch.Tensor):
                    need = a.requires_grad
                    t = Tensor(to_xp(a), requires_grad=need)
                    if need:
                        targets.append(t)
                        where.append(i)
                    ad_args.append(t)
                else:
                    ad_args.append(a)
            with torch.no_grad():
                out = fn(*ad_args)
            if not isinstance(out, Tensor):
                out = Tensor(out)
            ctx.ad_out = out
            ctx.ad_targets = targets
            ctx.where = where
            ctx.n_args = len(args)
            return from_xp(out.data)

        @staticmethod
        def backward(ctx, grad_out):
            grads = [None] * ctx.n_args
            out, targets = ctx.ad_out, ctx.ad_targets
            if targets and out.requires_grad:
                g = to_xp(grad_out)
                # retain: torch may call backward again (gradcheck, retain_graph=True)
                gs = backward(out, grad=g, targets=targets, retain_graph=True)
                for i, gi in zip(ctx.where, gs, strict=True):
                    grads[i] = from_xp(gi)
            return tuple(grads)

    def wrapped(*args):
        return _XrayflowFunction.apply(*args)

    wrapped.__name__ = getattr(fn, "__name__", "xrayflow_function")
    wrapped.__doc__ = fn.__doc__
    return wrapped
