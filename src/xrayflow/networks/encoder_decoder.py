"""The encoder-decoder network: one encoder, one decoder per head (2D or 3D).

It takes the *measured diffraction amplitude* (sqrt of counts, centred, as stored in the
training shards and in CXI files) and normalises it internally (``input_norm``), so a
trained model can be applied to raw data. ``max``/``mean`` divide each pattern by its
maximum/mean, which discards the photon scale; ``none`` keeps it, and with it the object's
transmission (2D: held-out amplitude SSIM 0.855 → 0.893 after 12 epochs,
benchmarks/train_2d.py), for data at the training fluence.

Heads are physical quantities (:data:`HEADS`), each of shape ``output_size`` per axis:
``amplitude`` (sigmoid × ``amplitude_max``), ``support`` (sigmoid: probability of being
inside the object) and ``phase`` (tanh × ``phase_max``, rad). A modality's training hooks
choose the number of axes and the heads (PtychoNN-style 2D: amplitude and phase; 3D Bragg
CDI, AutoPhaseNN-like: support and phase).

Blocks: encoder level = (conv 3, norm, ReLU) × 2 + max-pool 2; decoder level = (conv 3,
norm, ReLU) × 2 + upsample 2 (nearest or bilinear/trilinear). The number of decoder levels
is ``len(channels) - log2(input_size / output_size)``, so 64 → 32 (AutoPhaseNN's
oversampling 2) uses one level fewer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from xrayflow.errors import ConfigError
from xrayflow.networks.layers import Upsample, conv_block

__all__ = ["HEADS", "EncoderDecoder", "count_parameters", "network_options"]

#: Output of each head: its activation and the option that scales it (None: unscaled).
HEADS = {
    "amplitude": (torch.sigmoid, "amplitude_max"),
    "support": (torch.sigmoid, None),
    "phase": (torch.tanh, "phase_max"),
}


class EncoderDecoder(nn.Module):
    """Diffraction amplitude (B, n, ...) -> ``{head: (B, m, ...)}``, ``ndim`` spatial axes.

    Args:
        ndim: spatial axes of a pattern (2 or 3).
        heads: output names, keys of :data:`HEADS`, in the order the decoders are built.
        input_size: pattern side n, divisible by ``2 ** len(channels)``.
        output_size: predicted side m = n / 2^k, k <= len(channels) (None: n).
        channels: encoder channels per level (one max-pool each).
        norm: ``batch`` (global batch norm), ``group`` or ``none``.
        upsample: ``nearest`` or ``linear``.
        input_norm: per-pattern normalisation of the input: ``max``, ``mean`` or ``none``.
        phase_max: phase head range, rad; amplitude_max: amplitude head range.
        dropout: dropout after the encoder (0: none).
    """

    def __init__(
        self,
        ndim: int,
        heads: Sequence[str],
        input_size: int,
        output_size: int | None = None,
        channels=(32, 64, 128),
        norm: str = "batch",
        upsample: str = "nearest",
        input_norm: str = "max",
        phase_max: float = math.pi,
        amplitude_max: float = 1.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        unknown = [h for h in heads if h not in HEADS]
        if unknown or not heads:
            raise ConfigError(f"network heads {list(heads)}: each must be one of {list(HEADS)}")
        output_size = output_size or input_size
        channels = list(channels)
        k = len(channels)
        ratio = input_size / output_size
        m = int(round(math.log2(ratio))) if ratio >= 1 else -1
        if m < 0 or 2**m != ratio or input_size % (2**k) or m > k:
            raise ConfigError(
                f"train.network: input_size {input_size} must be divisible by 2^{k} "
                f"(len(channels)) and output_size {output_size} must be input_size / 2^m, "
                f"m <= {k}"
            )
        if input_norm not in ("max", "mean", "none"):
            raise ConfigError(f"train.network.input_norm: unknown {input_norm!r}")
        self.ndim, self.heads = ndim, tuple(heads)
        self.input_size, self.output_size, self.channels = input_size, output_size, channels
        self.input_norm, self.phase_max, self.amplitude_max = input_norm, phase_max, amplitude_max
        pool = nn.MaxPool2d if ndim == 2 else nn.MaxPool3d
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        cin = 1
        for c in channels:
            layers += [*conv_block(cin, c, ndim, norm), pool(2)]
            cin = c
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.encoder = nn.Sequential(*layers)
        n_up = k - m
        dec_ch = list(reversed(channels))[:n_up] if n_up else []
        self.decoders = nn.ModuleDict()
        for h in self.heads:
            d: list[nn.Module] = []
            c_prev = channels[-1]
            for c in dec_ch:
                d += [*conv_block(c_prev, c, ndim, norm), Upsample(ndim, upsample)]
                c_prev = c
            d.append(conv(c_prev, 1, 3, padding=1))
            self.decoders[h] = nn.Sequential(*d)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` divided per pattern by its maximum or mean (``input_norm``)."""
        dims = tuple(range(1, x.dim()))
        if self.input_norm == "max":
            return x / x.amax(dim=dims, keepdim=True).clamp_min(1e-12)
        if self.input_norm == "mean":
            return x / x.mean(dim=dims, keepdim=True).clamp_min(1e-12)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output for patterns (B, n, ...) or (B, 1, n, ...)."""
        if x.dim() == self.ndim + 1:
            x = x.unsqueeze(1)
        return self.encoder(self.normalise(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.features(x)
        out = {}
        for h in self.heads:
            activation, scale = HEADS[h]
            y = activation(self.decoders[h](z)).squeeze(1)
            out[h] = y * getattr(self, scale) if scale else y
        return out

    def activation_bytes(self, training: bool = True) -> int:
        """Rough float32 bytes of one sample's activations (memory guard, not exact).

        Training keeps every block's conv, norm and ReLU outputs for the backward pass (six
        tensors of ``c · n^ndim`` per block, plus pooling/upsampling); inference holds about
        three tensors of the largest layer at a time.
        """
        d, heads = self.ndim, len(self.heads)
        m = max(0, int(round(math.log2(max(self.input_size / max(self.output_size, 1), 1.0)))))
        layers: list[float] = [2.0 * self.input_size**d]
        n = float(self.input_size)
        for c in self.channels:
            layers += [6.0 * c * n**d, c * (n / 2) ** d]
            n /= 2
        for c in list(reversed(self.channels))[: max(0, len(self.channels) - m)]:
            layers += [heads * 6.0 * c * n**d, heads * c * (2 * n) ** d]
            n *= 2
        layers.append(heads * 3.0 * n**d)
        if training:
            return int(4 * sum(layers))
        return int(4 * 3 * max(layers) / 6)


def network_options(net_cfg: dict, output_size: int | None = None) -> dict:
    """:class:`EncoderDecoder` keyword arguments from a ``network`` config section
    (``output_size`` from the section, else the one given)."""
    return {
        "output_size": net_cfg.get("output_size") or output_size,
        "channels": [int(c) for c in net_cfg.get("channels", [32, 64, 128])],
        "norm": net_cfg.get("norm", "batch"),
        "upsample": net_cfg.get("upsample", "nearest"),
        "input_norm": net_cfg.get("input_norm", "max"),
        "phase_max": float(net_cfg.get("phase_max", math.pi)),
        "amplitude_max": float(net_cfg.get("amplitude_max", 1.0)),
        "dropout": float(net_cfg.get("dropout", 0.0)),
    }


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of ``model``."""
    return sum(p.numel() for p in model.parameters())
