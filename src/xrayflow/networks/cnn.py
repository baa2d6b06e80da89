"""Convolutional networks that predict vectors from images: tags and short-range-order encodings.

:class:`ConvTrunk` is the shared feature extractor: an optional strided stem brings large
detector images (256² … 2000²) down to at most ``work_size`` per side, then levels of
(conv 3, norm, ReLU) × ``convs`` + max-pool 2 (pooling stops once a side is below 4, so
small maps such as Fourier–Bessel coefficients keep a size), then either global average and
max pooling (translation invariant) or average pooling to a ``grid`` × ``grid`` map, flattened
(keeps where in the image a feature lies, at a parameter count independent of the size).

:class:`TagClassifier` gives multi-label tag logits for X-ray scattering images from the
image, from its Fourier–Bessel coefficients, or from both (the double view of Guan et al.,
BMVC 2018); :class:`EncodingRegressor` gives the short-range-order encoding of a
disordered crystal from its diffuse-scattering image (``small`` ≈ 0.19 M parameters, the
seed's better network, or ``large`` ≈ 6.9 M). Both have the attributes that the train stage
reads from a network (``heads``, ``ndim``, ``input_size``, ``output_size``,
``activation_bytes``). Norm layers come from :func:`~.layers.norm_layer`, so ``batch``
takes its statistics over all ranks.

Losses are per sample, (B,), like :mod:`.losses`: :func:`multilabel_bce` (with
:func:`balanced_pos_weight` for rare tags) and :func:`regression_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from xrayflow.errors import ConfigError
from xrayflow.networks.layers import norm_layer
from xrayflow.networks.losses import error

__all__ = [
    "REGRESSOR_SIZES",
    "VIEWS",
    "ConvTrunk",
    "EncodingRegressor",
    "TagClassifier",
    "balanced_pos_weight",
    "multilabel_bce",
    "regression_loss",
]

#: Inputs of a :class:`TagClassifier`.
VIEWS = ("image", "coefficients", "joint")

#: :class:`EncodingRegressor` sizes: trunk channels, convs per level, hidden widths.
REGRESSOR_SIZES = {
    "small": {"channels": (16, 32, 64, 64), "convs": 1, "hidden": (128,)},
    "large": {"channels": (32, 64, 128, 256), "convs": 2, "hidden": (1024, 1024, 512)},
}

# Stored activations of one layer: (tensors kept for the backward pass, elements of each).
Tensors = list[tuple[int, int]]


def _conv_norm_relu(cin: int, cout: int, norm: str, stride: int = 1) -> list[nn.Module]:
    """Conv (kernel 3, or stride + 1 when strided; bias only without norm), norm, ReLU."""
    k = 3 if stride == 1 else stride + 1
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=norm == "none"),
        norm_layer(norm, cout, 2),
        nn.ReLU(inplace=True),
    ]


def _stem_strides(size: int, work_size: int) -> list[int]:
    """Strides (4s, then at most one 2) that bring a side ``size`` to at most ``work_size``."""
    k = math.ceil(math.log2(size / work_size)) if size > work_size else 0
    return [4] * (k // 2) + [2] * (k % 2)


def _mlp(n_in: int, hidden: Sequence[int], n_out: int, dropout: float) -> nn.Sequential:
    """(Linear, ReLU[, dropout]) per hidden width, then a linear output."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = h
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def _mlp_tensors(n_in: int, hidden: Sequence[int], n_out: int) -> Tensors:
    return [(2, h) for h in hidden] + [(1, n_in), (1, n_out)]


def _bytes(tensors: Tensors, training: bool) -> int:
    """Float32 bytes: every kept tensor (training), else three of the largest (inference)."""
    if training:
        return int(4 * sum(k * e for k, e in tensors))
    return int(4 * 3 * max(e for _, e in tensors))


class ConvTrunk(nn.Module):
    """Images (B, H, W) or (B, C, H, W) -> features (B, ``out_features``).

    Args:
        size: side, or (H, W), of the inputs the stem and ``activation_tensors`` are sized for
            (other sizes run while the pooled maps stay non-empty).
        channels: channels per level (one max-pool each while both sides are at least 4).
        in_channels: C.
        convs: (conv 3, norm, ReLU) per level.
        norm: ``batch`` (global batch norm), ``group`` or ``none``.
        work_size: the stem (strided convs with ``channels[0]`` channels: stride 4, then 2)
            brings the larger side to at most this.
        pooling: ``global`` (average and max over the map: 2 · channels[-1] features) or
            ``grid`` (average to ``grid`` × ``grid``, flattened: channels[-1] · grid²).
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        channels: Sequence[int] = (16, 32, 64, 128),
        in_channels: int = 1,
        convs: int = 2,
        norm: str = "batch",
        work_size: int = 128,
        pooling: str = "global",
        grid: int = 4,
    ):
        super().__init__()
        h, w = (size, size) if isinstance(size, int) else size
        if not channels or convs < 1 or min(h, w) < 1 or work_size < 1:
            raise ConfigError(
                f"network: needs channels, convs >= 1, a positive size and work_size "
                f"(channels {list(channels)}, convs {convs}, size {size}, work_size {work_size})"
            )
        if pooling not in ("global", "grid"):
            raise ConfigError(f"network pooling: unknown {pooling!r} (global | grid)")
        self.pooling, self.grid = pooling, grid
        self._tensors: Tensors = [(2, in_channels * h * w)]
        layers: list[nn.Module] = []
        cin = in_channels
        for s in _stem_strides(max(h, w), work_size):
            layers += _conv_norm_relu(cin, channels[0], norm, stride=s)
            h, w = (h - 1) // s + 1, (w - 1) // s + 1
            cin = channels[0]
            self._tensors.append((3, cin * h * w))
        for c in channels:
            for _ in range(convs):
                layers += _conv_norm_relu(cin, c, norm)
                cin = c
                self._tensors.append((3, c * h * w))
            if min(h, w) >= 4:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
                self._tensors.append((1, c * h * w))
        self.layers = nn.Sequential(*layers)
        self.feature_size = (h, w)
        self.out_features = 2 * cin if pooling == "global" else cin * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        z = self.layers(x)
        if self.pooling == "global":
            return torch.cat([z.mean(dim=(2, 3)), z.amax(dim=(2, 3))], dim=1)
        return F.adaptive_avg_pool2d(z, self.grid).flatten(1)

    def activation_tensors(self) -> Tensors:
        """(tensors kept, elements) per layer for one sample of the configured size."""
        return [*self._tensors, (1, self.out_features)]


class _ImageToVector(nn.Module):
    """A network from 2D images to one vector per sample (``output_size`` values)."""

    ndim = 2
    output_size: int

    @property
    def output_numel(self) -> int:
        """Elements of the output of one sample (the inference memory estimate)."""
        return self.output_size


class TagClassifier(_ImageToVector):
    """Scattering image (B, H, W) and/or its coefficients -> ``{"tags": logits (B, n_tags)}``.

    Views: ``image`` (a :class:`ConvTrunk` on the image, already normalised by the data
    pipeline), ``coefficients`` (a trunk without stem on the Fourier–Bessel coefficient map
    (C, M, N), M angular × N radial orders; the image is ignored) or ``joint`` (both, their
    features concatenated). A head MLP (one hidden layer) gives the logits; ``output_size``
    is ``n_tags``. Global pooling makes the image features translation invariant (the beam
    centre moves from image to image).

    Args:
        view: one of :data:`VIEWS`.
        n_tags: number of tags (outputs).
        image_size: image side the stem is chosen for (``input_size``).
        coefficient_shape: (C, M, N); needed by ``coefficients`` and ``joint``.
        channels, coefficient_channels: trunk channels per level (image, coefficients).
        hidden: the head's hidden width.
        norm: ``batch`` (global batch norm), ``group`` or ``none``.
        dropout: before the head's output layer (0: none).
        work_size: the image trunk's largest side after its stem.
    """

    heads = ("tags",)

    def __init__(
        self,
        view: str,
        n_tags: int,
        image_size: int,
        coefficient_shape: tuple[int, int, int] | None = None,
        channels: Sequence[int] = (16, 32, 64, 128),
        coefficient_channels: Sequence[int] = (32, 64, 128),
        hidden: int = 256,
        norm: str = "batch",
        dropout: float = 0.0,
        work_size: int = 128,
    ):
        super().__init__()
        if view not in VIEWS:
            raise ConfigError(f"network view: unknown {view!r} ({' | '.join(VIEWS)})")
        if view != "image" and coefficient_shape is None:
            raise ConfigError(f"network view {view!r} needs the coefficient shape (C, M, N)")
        if n_tags < 1:
            raise ConfigError(f"network: n_tags must be positive, not {n_tags}")
        self.view, self.input_size, self.output_size = view, image_size, n_tags
        self.image = self.coefficients = None
        n_features = 0
        if view != "coefficients":
            self.image = ConvTrunk(image_size, channels, norm=norm, work_size=work_size)
            n_features += self.image.out_features
        if view != "image":
            c, m, n = coefficient_shape
            self.coefficients = ConvTrunk(
                (m, n), coefficient_channels, in_channels=c, norm=norm, work_size=max(m, n)
            )
            n_features += self.coefficients.out_features
        self._head_sizes = (n_features, (hidden,), n_tags)
        self.head = _mlp(n_features, (hidden,), n_tags, dropout)

    def forward(
        self, input: torch.Tensor | None, coefficients: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        features = []
        if self.image is not None:
            if input is None:
                raise ValueError(f"view {self.view!r} needs the image")
            features.append(self.image(input))
        if self.coefficients is not None:
            if coefficients is None:
                raise ValueError(f"view {self.view!r} needs the coefficients")
            features.append(self.coefficients(coefficients))
        return {"tags": self.head(torch.cat(features, dim=1))}

    def activation_bytes(self, training: bool = True) -> int:
        """Rough float32 bytes of one sample's activations (memory guard, not exact).

        Training keeps every conv, norm and ReLU output (and pooling) of both trunks for the
        backward pass; inference holds about three tensors of the largest layer at a time.
        """
        tensors = _mlp_tensors(*self._head_sizes)
        for trunk in (self.image, self.coefficients):
            if trunk is not None:
                tensors += trunk.activation_tensors()
        return _bytes(tensors, training)


class EncodingRegressor(_ImageToVector):
    """Diffuse-scattering image (B, H, W) -> ``{"encoding": (B, n_outputs)}`` (linear output).

    A :class:`ConvTrunk` with grid pooling (4 × 4: the encoding depends on where in
    reciprocal space the intensity lies) and a ReLU MLP, plus a linear read-out of the image
    averaged to ``readout`` × ``readout`` cells: a diffuse intensity is linear in the
    Warren–Cowley coefficients (one cosine mode per neighbour vector), and the convolutional
    features alone missed the diagonal vectors' modes (held-out R² 0.02–0.6 for (1, 1),
    (2, 1), (1, 2), (2, 2) against 0.99 for the axial ones, dimension 8, 2,048 images), which
    a linear read-out resolves while ``readout`` samples a mode of the largest vector at
    least twice per period. :data:`REGRESSOR_SIZES` gives ``small`` (≈ 0.2 M parameters) and
    ``large`` (≈ 6.9 M), independent of the image size. ``output_size`` is ``n_outputs``.

    Args:
        n_outputs: encoding dimension (3, 8 or 15 in the seed).
        image_size: image side (``input_size``; above ``work_size`` a strided stem is added).
        size: ``small`` or ``large``.
        norm: ``batch`` (global batch norm), ``group`` or ``none``.
        dropout: after each hidden layer (0: none).
        work_size: the trunk's largest side after its stem.
        readout: cells per side of the linear read-out (at most the image side).
    """

    heads = ("encoding",)

    def __init__(
        self,
        n_outputs: int,
        image_size: int,
        size: str = "small",
        norm: str = "batch",
        dropout: float = 0.0,
        work_size: int = 128,
        readout: int = 32,
    ):
        super().__init__()
        if size not in REGRESSOR_SIZES:
            raise ConfigError(f"network size: unknown {size!r} ({' | '.join(REGRESSOR_SIZES)})")
        if n_outputs < 1:
            raise ConfigError(f"network: n_outputs must be positive, not {n_outputs}")
        spec = REGRESSOR_SIZES[size]
        self.size, self.input_size, self.output_size = size, image_size, n_outputs
        self.trunk = ConvTrunk(
            image_size,
            spec["channels"],
            convs=spec["convs"],
            norm=norm,
            work_size=work_size,
            pooling="grid",
        )
        self._head_sizes = (self.trunk.out_features, spec["hidden"], n_outputs)
        self.head = _mlp(*self._head_sizes, dropout)
        self.readout = min(int(readout), int(image_size))
        if self.readout < 1:
            raise ConfigError(f"network: readout must be positive, not {readout}")
        self.linear = nn.Linear(self.readout**2, n_outputs)

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
        x = input if input.dim() == 4 else input.unsqueeze(1)
        cells = F.adaptive_avg_pool2d(x, self.readout).flatten(1)
        cells = cells - cells.mean(dim=1, keepdim=True)  # the modulation, not the mean level
        return {"encoding": self.head(self.trunk(x)) + self.linear(cells)}

    def activation_bytes(self, training: bool = True) -> int:
        """Rough float32 bytes of one sample's activations (as for :class:`TagClassifier`)."""
        return _bytes(self.trunk.activation_tensors() + _mlp_tensors(*self._head_sizes), training)


def multilabel_bce(
    logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample (B,) mean over tags of binary cross-entropy with logits (B, T).

    ``targets`` are 0/1 (or soft) labels; ``pos_weight`` (T,) multiplies the positive term
    of each tag (see :func:`balanced_pos_weight`).
    """
    loss = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=pos_weight, reduction="none"
    )
    return loss.mean(dim=1)


def balanced_pos_weight(
    positives: np.ndarray | torch.Tensor | Sequence[int], n_samples: int, max_weight: float = 100.0
) -> torch.Tensor:
    """Per-tag positive weights negatives / positives, clipped to [1, ``max_weight``] (float32).

    Tags rarer than half the samples are up-weighted so that their positives count as much as
    their negatives; common tags keep weight 1; a tag without positives gets ``max_weight``.
    """
    p = torch.as_tensor(np.asarray(positives, dtype=np.float64))
    if torch.any(p < 0) or torch.any(p > n_samples):
        raise ValueError(f"positive counts must lie in [0, {n_samples}]")
    w = torch.where(p > 0, (n_samples - p) / p.clamp_min(1), torch.full_like(p, max_weight))
    return w.clamp(1.0, max_weight).float()


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Per-sample (B,) mean over outputs of the squared (``mse``) or absolute (``mae``) error."""
    if kind not in ("mse", "mae"):
        raise ConfigError(f"train.training.loss.kind: unknown {kind!r} (mse | mae)")
    return error(pred, target.to(pred.dtype), kind).flatten(1).mean(dim=1)
