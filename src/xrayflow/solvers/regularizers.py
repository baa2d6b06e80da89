"""Regularisers: real scalar Tensors added to the data term (gradients from :mod:`xrayflow.ad`).

* ``tv``: isotropic total variation ``sum sqrt(|dy x|^2 + |dx x|^2 + eps)`` over the last
  two axes (complex or real);
* ``l1``: smooth L1 ``sum sqrt(|x - x0|^2 + eps)``; ``x0 = 1`` for a complex transmission
  (penalises deviations from free space), ``0`` for real unknowns (delta, beta);
* ``positivity``: ``sum min(x, 0)^2`` (for beta, which must be >= 0).

Each is multiplied by its weight and by the batch's share of the positions, so that one
iteration (all batches) adds ``weight * R`` in total.
"""

from __future__ import annotations

from xrayflow import ad


def total_variation(x, eps: float = 1e-6):
    dy = x[..., 1:, :-1] - x[..., :-1, :-1]
    dx = x[..., :-1, 1:] - x[..., :-1, :-1]
    return ad.sum(ad.sqrt(ad.abs2(dy) + ad.abs2(dx) + eps))


def l1(x, eps: float = 1e-6):
    x0 = 1.0 if ad.as_tensor(x).xp.iscomplexobj(ad.as_tensor(x).data) else 0.0
    return ad.sum(ad.sqrt(ad.abs2(x - x0) + eps))


def positivity(x, eps: float = 0.0):
    return ad.sum(ad.abs2(ad.clip(x, hi=0.0)))


REGULARIZERS = {"tv": total_variation, "l1": l1, "positivity": positivity}


def regularization(params: dict, cfg_regs: dict, fraction: float):
    """Sum of the configured regularisers over ``params`` (dict name -> Tensor), or None."""
    total = None
    for name, fn in REGULARIZERS.items():
        rc = cfg_regs.get(name) or {}
        w = float(rc.get("weight", 0.0))
        if w <= 0:
            continue
        target = rc.get("param", "object")
        if target not in params:
            continue
        term = fn(params[target], rc.get("eps", 1e-6)) * (w * fraction)
        total = term if total is None else total + term
    return total
