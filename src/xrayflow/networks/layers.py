"""Layers of the networks: batch norm over the global batch, conv blocks, upsampling.

:class:`GlobalBatchNorm` takes its training statistics over the *global* batch under
torch.distributed (SyncBatchNorm does not run on CPU), so that 2 ranks train the same
weights as 1 rank.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from xrayflow.errors import ConfigError

__all__ = ["GlobalBatchNorm", "Upsample", "conv_block", "norm_layer"]


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


def norm_layer(kind: str, c: int, ndim: int) -> nn.Module:
    """Normalisation of ``c`` channels: ``batch`` (global), ``group`` (≤ 8 groups) or ``none``."""
    if kind == "batch":
        return GlobalBatchNorm(c, ndim)
    if kind == "group":
        return nn.GroupNorm(min(8, c), c)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"train.network.norm: unknown {kind!r} (batch | group | none)")


def conv_block(cin: int, cout: int, ndim: int, norm: str) -> list[nn.Module]:
    """(conv 3, norm, ReLU) × 2 in ``ndim`` dimensions (conv bias only without norm)."""
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    return [
        conv(cin, cout, 3, padding=1, bias=norm == "none"),
        norm_layer(norm, cout, ndim),
        nn.ReLU(inplace=True),
        conv(cout, cout, 3, padding=1, bias=norm == "none"),
        norm_layer(norm, cout, ndim),
        nn.ReLU(inplace=True),
    ]


class Upsample(nn.Module):
    """Upsampling by 2: ``nearest`` or ``linear`` (bilinear / trilinear)."""

    def __init__(self, ndim: int, mode: str):
        super().__init__()
        self.mode = {"linear": "bilinear" if ndim == 2 else "trilinear", "nearest": "nearest"}[mode]

    def forward(self, x):
        kw = {"align_corners": False} if self.mode != "nearest" else {}
        return F.interpolate(x, scale_factor=2, mode=self.mode, **kw)
