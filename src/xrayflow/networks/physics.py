"""``xrayflow.ad`` physics as differentiable torch functions, for physics-consistency losses.

:func:`torch_function` wraps a function of ``xrayflow.ad`` Tensors with
:func:`xrayflow.ad.torch_bridge.as_torch_function` (values and gradients computed by the
operators of :mod:`xrayflow.operators` and the AD engine; tensors shared through DLPack). A
CUDA tensor crosses to CuPy; where CuPy is not installed the function runs on the CPU (the
inputs copied there, the result back; autograd follows the copies).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import torch

from xrayflow.ad.torch_bridge import as_torch_function

__all__ = ["torch_function"]

_CUPY = importlib.util.find_spec("cupy") is not None


def torch_function(fn: Callable) -> Callable:
    """``fn(*args) -> ad.Tensor`` as a differentiable function of torch tensors (other
    arguments passed through), on the tensors' device, or on the CPU for a GPU without CuPy."""
    f = as_torch_function(fn)

    @functools.wraps(fn)
    def wrapped(*args):
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), None)
        if device is None or device.type == "cpu" or _CUPY:
            return f(*args)
        return f(*(a.cpu() if isinstance(a, torch.Tensor) else a for a in args)).to(device)

    return wrapped
