"""Per-sample loss terms of a training batch, shared by the modalities' training hooks.

A modality's ``losses`` hook names its supervised terms (one per target, compared with the
target centre-cropped to the output size) and its physics-consistency term ``far_field``
(the prediction's diffraction against the measured amplitude); :func:`loss_terms` picks
them by ``training.loss.mode`` and weights them. Every term is a (B,) tensor; ``total`` is
their weighted sum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from xrayflow.errors import ConfigError

__all__ = ["WEIGHTS", "centre_crop", "error", "loss_terms", "spatial_dims"]

#: Default weight of each term (``training.loss.weights`` overrides them).
WEIGHTS = {"amplitude": 1.0, "phase": 1.0, "support": 1.0, "far_field": 1.0}


def error(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """Element-wise error: ``(a - b)²`` for ``mse``, ``|a - b|`` for ``mae``."""
    d = a - b
    return d * d if metric == "mse" else d.abs()


def spatial_dims(t: torch.Tensor) -> tuple[int, ...]:
    """Every axis of a batch (B, n, ...) but the first."""
    return tuple(range(1, t.dim()))


def centre_crop(t: torch.Tensor, m: int) -> torch.Tensor:
    """The centred ``m`` box of every spatial axis of ``t`` (B, n, ...) (start ``(n - m) // 2``)."""
    n = t.shape[-1]
    if n == m:
        return t
    lo = (n - m) // 2
    return t[(slice(None),) + (slice(lo, lo + m),) * (t.dim() - 1)]


def loss_terms(
    loss_cfg: dict,
    supervised: Callable[[str, dict], dict[str, torch.Tensor]],
    far_field: Callable[[], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """The terms of ``loss_cfg["mode"]`` and their weighted ``total``.

    Args:
        loss_cfg: the ``training.loss`` section (``mode``, ``kind``, ``weights``).
        supervised: ``(metric, weights) -> {target: (B,) tensor}``, for mode ``supervised``
            or ``both``.
        far_field: ``() -> (B,) tensor``, the physics-consistency term, for mode
            ``unsupervised`` or ``both``.
    """
    mode = loss_cfg.get("mode", "supervised")
    w = {**WEIGHTS, **loss_cfg.get("weights", {})}
    terms: dict[str, torch.Tensor] = {}
    if mode in ("supervised", "both"):
        terms.update(supervised(loss_cfg.get("kind", "mse"), w))
    if mode in ("unsupervised", "both"):
        terms["far_field"] = far_field()
    if not terms:
        raise ConfigError(f"train.training.loss.mode: unknown {mode!r}")
    terms["total"] = sum(w[k] * v for k, v in terms.items())
    return terms
