"""Networks: PtychoNN-style 2D encoder with amplitude and phase decoders; 3D CDI network.

Both take the *measured diffraction amplitude* (sqrt of counts, centred, as stored in the
shards and in CXI files) and normalise it internally (``input_norm``), so a trained model can
be applied to raw data. ``max``/``mean`` divide each pattern by its maximum/mean, which
discards the photon scale; ``none`` keeps it, and with it the object's transmission (2D:
held-out amplitude SSIM 0.855 → 0.893 after 12 epochs, benchmarks/train_2d.py), for data at
the training fluence. Outputs (all of shape ``output_size`` per axis):

* ``Ptycho2DNet``: ``amplitude`` (sigmoid × ``amplitude_max``) and ``phase`` (tanh × ``phase_max``);
* ``CDI3DNet``: ``support`` (sigmoid, crystal shape) and ``phase`` (tanh × ``phase_max``).

Blocks: encoder level = (conv 3, norm, ReLU) × 2 + max-pool 2; decoder level = (conv 3, norm,
ReLU) × 2 + upsample 2 (nearest or bilinear/trilinear). The number of decoder levels is
``len(channels) - log2(input_size / output_size)``, so 64 → 32 (AutoPhaseNN's oversampling 2)
uses one level fewer. Batch norm is :class:`GlobalBatchNorm`: statistics over the *global*
batch under torch.distributed (SyncBatchNorm does not run on CPU), so that 2 ranks train the
same weights as 1 rank.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from xrayflow.errors import ConfigError

__all__ = ["CDI3DNet", "GlobalBatchNorm", "Ptycho2DNet", "build_network", "count_parameters"]


def _dist_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """SUM all-reduce whose backward is the SUM all-reduce of the incoming gradients."""

    @staticmethod
    def forward(ctx, t):
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g


def _allreduce(t: torch.Tensor) -> torch.Tensor:
    if not _dist_active():
        return t
    return _AllReduceSum.apply(t)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are taken over all ranks (two-pass, autograd-aware).

    In training mode the same arithmetic runs with one rank or many (sums all-reduced across
    ranks), so results agree across rank counts up to rounding. Eval mode uses running stats.
    """

    def __init__(self, num_features: int, ndim: int, **kw):
        super().__init__(num_features, **kw)
        self._ndim = ndim

    def _check_input_dim(self, x):
        if x.dim() != self._ndim + 2:
            raise ValueError(f"expected {self._ndim + 2}D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        n_local = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
        s = _allreduce(torch.cat([x.sum(dims), n_local]))
        n = s[-1]
        mean = s[:c] / n
        shape = [1, c] + [1] * (x.dim() - 2)
        xc = x - mean.view(shape)
        var = _allreduce((xc * xc).sum(dims)) / n
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                # momentum None: cumulative average over the tracked batches (as torch)
                m = self.momentum
                if m is None:
                    m = 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / torch.clamp(n - 1, min=1))
                self.running_mean.mul_(1 - m).add_(m * mean.detach())
                self.running_var.mul_(1 - m).add_(m * unbiased.detach())
        return y


def _norm(kind: str, c: int, ndim: int) -> nn.Module:
    if kind == "batch":
        return GlobalBatchNorm(c, ndim)
    if kind == "group":
        return nn.GroupNorm(min(8, c), c)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"train.network.norm: unknown {kind!r} (batch | group | none)")


def _block(cin: int, cout: int, ndim: int, norm: str) -> list[nn.Module]:
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    return [
        conv(cin, cout, 3, padding=1, bias=norm == "none"),
        _norm(norm, cout, ndim),
        nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1, bias=norm == "none"),
        _norm(norm, cout, ndim),
        nn.ReLU(inplace=True),
    ]


class _Upsample(nn.Module):
    def __init__(self, ndim: int, mode: str):
        super().__init__()
        self.mode = {"linear": "bilinear" if ndim == 2 else "trilinear", "nearest": "nearest"}[mode]

    def forward(self, x):
        kw = {"align_corners": False} if self.mode != "nearest" else {}
        return F.interpolate(x, scale_factor=2, mode=self.mode, **kw)


class _EncoderDecoders(nn.Module):
    """Shared encoder and one decoder per named head (generic over 2D/3D)."""

    heads: tuple[str, ...] = ()

    def __init__(
        self,
        ndim: int,
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
        self.ndim, self.input_size, self.output_size = ndim, input_size, output_size
        self.input_norm, self.phase_max, self.amplitude_max = input_norm, phase_max, amplitude_max
        pool = nn.MaxPool2d if ndim == 2 else nn.MaxPool3d
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        layers: list[nn.Module] = []
        cin = 1
        for c in channels:
            layers += [*_block(cin, c, ndim, norm), pool(2)]
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
                d += [*_block(c_prev, c, ndim, norm), _Upsample(ndim, upsample)]
                c_prev = c
            d.append(conv(c_prev, 1, 3, padding=1))
            self.decoders[h] = nn.Sequential(*d)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.dim()))
        if self.input_norm == "max":
            return x / x.amax(dim=dims, keepdim=True).clamp_min(1e-12)
        if self.input_norm == "mean":
            return x / x.mean(dim=dims, keepdim=True).clamp_min(1e-12)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == self.ndim + 1:
            x = x.unsqueeze(1)
        return self.encoder(self.normalise(x))


class Ptycho2DNet(_EncoderDecoders):
    """Diffraction amplitude (B, n, n) -> object patch amplitude and phase (B, m, m)."""

    heads = ("amplitude", "phase")

    def __init__(self, input_size: int, **kw):
        super().__init__(2, input_size, **kw)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.features(x)
        amp = torch.sigmoid(self.decoders["amplitude"](z)).squeeze(1) * self.amplitude_max
        ph = torch.tanh(self.decoders["phase"](z)).squeeze(1) * self.phase_max
        return {"amplitude": amp, "phase": ph}


class CDI3DNet(_EncoderDecoders):
    """3D diffraction amplitude (B, n, n, n) -> support and phase (B, m, m, m)."""

    heads = ("support", "phase")

    def __init__(self, input_size: int, **kw):
        super().__init__(3, input_size, **kw)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.features(x)
        sup = torch.sigmoid(self.decoders["support"](z)).squeeze(1)
        ph = torch.tanh(self.decoders["phase"](z)).squeeze(1) * self.phase_max
        return {"support": sup, "phase": ph}


def build_network(net_cfg: dict, input_size: int, output_size: int | None = None) -> nn.Module:
    """Build from the ``network`` config section (kind ptycho2d | cdi3d)."""
    kind = net_cfg.get("kind", "ptycho2d")
    kw = {
        "output_size": net_cfg.get("output_size") or output_size,
        "channels": net_cfg.get("channels", [32, 64, 128]),
        "norm": net_cfg.get("norm", "batch"),
        "upsample": net_cfg.get("upsample", "nearest"),
        "input_norm": net_cfg.get("input_norm", "max"),
        "phase_max": float(net_cfg.get("phase_max", math.pi)),
        "dropout": float(net_cfg.get("dropout", 0.0)),
    }
    if kind == "ptycho2d":
        return Ptycho2DNet(input_size, amplitude_max=float(net_cfg.get("amplitude_max", 1.0)), **kw)
    if kind == "cdi3d":
        return CDI3DNet(input_size, **kw)
    raise ConfigError(f"train.network.kind: unknown {kind!r} (ptycho2d | cdi3d)")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def estimate_parameters(net_cfg: dict, input_size: int, output_size: int | None = None) -> int:
    """Parameter count of :func:`build_network` without allocating (built on torch's meta
    device), for the memory guard."""
    with torch.device("meta"):
        return count_parameters(build_network(net_cfg, input_size, output_size))


def activation_bytes(
    net_cfg: dict, ndim: int, input_size: int, output_size: int | None = None, training=True
) -> int:
    """Rough float32 bytes of one sample's activations (memory guard, not exact).

    Training keeps every block's conv, norm and ReLU outputs for the backward pass (six
    tensors of ``c · n^ndim`` per block, plus pooling/upsampling); inference holds about
    three tensors of the largest layer at a time.
    """
    ch = [int(c) for c in net_cfg.get("channels", [32, 64, 128])]
    out = int(output_size or net_cfg.get("output_size") or input_size)
    m = max(0, int(round(math.log2(max(input_size / max(out, 1), 1.0)))))
    heads = 2
    layers: list[float] = [2.0 * input_size**ndim]
    n = float(input_size)
    for c in ch:
        layers += [6.0 * c * n**ndim, c * (n / 2) ** ndim]
        n /= 2
    for c in list(reversed(ch))[: max(0, len(ch) - m)]:
        layers += [heads * 6.0 * c * n**ndim, heads * c * (2 * n) ** ndim]
        n *= 2
    layers.append(heads * 3.0 * n**ndim)
    if training:
        return int(4 * sum(layers))
    return int(4 * 3 * max(layers) / 6)
