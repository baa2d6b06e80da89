"""Data terms shared by the modalities' differentiable models (real scalar Tensors)."""

from __future__ import annotations

from xrayflow import ad
from xrayflow.backend import array_module

#: Data terms a model can fit (``loss.type`` of the reconstruct config).
LOSSES = ("gaussian", "poisson")


def loss_target(data, kind: str = "gaussian"):
    """What :func:`intensity_loss` compares with: ``sqrt(D)`` (gaussian) or ``D`` (poisson)."""
    xp = array_module(data)
    return xp.sqrt(data) if kind == "gaussian" else data


def intensity_loss(I, target, mask, kind: str = "gaussian", eps: float = 1e-6):
    """Data term summed over the batch (a real scalar Tensor).

    ``gaussian``: amplitude least squares ``sum m (sqrt(I + eps) - sqrt(D))^2``
    (variance-stabilised Poisson), ``target = sqrt(D)``; ``poisson``: negative
    log-likelihood ``sum m (I - D log(I + eps))`` (constants dropped), ``target = D``.
    ``mask`` (ny, nx) 1 = good pixel. Use :func:`loss_target` to make ``target``.
    """
    data = target
    if kind == "gaussian":
        r = ad.sqrt(I + eps) - data
        if mask is not None:
            r = r * mask
        return ad.sum(ad.abs2(r))
    if kind == "poisson":
        t = I - ad.log(I + eps) * data
        if mask is not None:
            t = t * mask
        return ad.sum(t)
    raise ValueError(f"unknown loss {kind!r}")
