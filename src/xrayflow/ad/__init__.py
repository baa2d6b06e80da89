"""Reverse-mode automatic differentiation over NumPy/CuPy (``xrayflow.ad``).

Complex gradients in PyTorch's convention (``dL/dRe z + i dL/dIm z``). A model is an
ordinary Python function of :class:`Tensor` objects::

    from xrayflow import ad

    def loss(obj, probe):
        psi = ad.fft2(obj * probe)                 # norm="ortho"
        return ad.sum((ad.abs(psi) - amp) ** 2)

    value, (g_obj, g_probe) = ad.value_and_grad(loss, argnums=(0, 1))(obj, probe)

See ``docs``-style docstrings of each primitive. Linear operators of
:mod:`xrayflow.operators` become nodes with :func:`linear` (VJP = the adjoint); the
physics nodes (patches, Fourier shift, far-field intensity, rotation, the fused multislice
with a memory-light reversible backward) are in :mod:`xrayflow.ad.physics`.
"""

from xrayflow.backend import set_fft_workers

from .core import (
    Tensor,
    as_tensor,
    backward,
    const,
    grad,
    linear,
    param,
    unbroadcast,
    value_and_grad,
)
from .ops import (
    abs,
    abs2,
    add,
    angle,
    broadcast_to,
    clip,
    concatenate,
    conj,
    cos,
    crop,
    div,
    exp,
    expi,
    fft,
    fft2,
    fftn,
    getitem,
    ifft,
    ifft2,
    ifftn,
    imag,
    log,
    maximum,
    mean,
    moveaxis,
    mul,
    neg,
    pad,
    polar,
    power,
    real,
    reshape,
    sin,
    sqrt,
    stack,
    sub,
    sum,
    transpose,
    where,
)
from .physics import (
    far_field_intensity,
    fourier_shift,
    gather_patches,
    multislice,
    multislice_object,
    rotate_volume,
    rotation_operator,
    scatter_add_patches,
)

__all__ = [
    "Tensor",
    "as_tensor",
    "backward",
    "const",
    "grad",
    "linear",
    "param",
    "unbroadcast",
    "value_and_grad",
    "abs",
    "abs2",
    "add",
    "angle",
    "broadcast_to",
    "clip",
    "concatenate",
    "conj",
    "cos",
    "crop",
    "div",
    "exp",
    "expi",
    "far_field_intensity",
    "fft",
    "fft2",
    "fftn",
    "fourier_shift",
    "gather_patches",
    "getitem",
    "ifft",
    "ifft2",
    "ifftn",
    "imag",
    "log",
    "maximum",
    "mean",
    "moveaxis",
    "mul",
    "multislice",
    "multislice_object",
    "neg",
    "pad",
    "polar",
    "power",
    "real",
    "reshape",
    "rotate_volume",
    "rotation_operator",
    "scatter_add_patches",
    "set_fft_workers",
    "sin",
    "sqrt",
    "stack",
    "sub",
    "sum",
    "transpose",
    "where",
]
