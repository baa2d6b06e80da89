"""A SIREN coordinate network fitted per sample to structured-illumination measurements.

:class:`Siren` (Sitzmann et al., NeurIPS 2020: sine activations ``sin(ω₀ (W x + b))``,
ω₀ = 30, their initialisation) maps pixel coordinates ``(x, y) ∈ [−1, 1]²`` to E values,
one per map. :func:`fit_siren` fits it to the bucket signals of K illumination patterns
(the NxSCI reconstruction of Li et al., PNAS 2023: self-supervised, one fit per sample, no
training set)::

    y[k, e] ≈ s_e · Σ_r P_k(r) · c_e(r)  +  Σ_j β_ej · d[k, j]

``P_k`` the patterns (photons per pixel), ``c_e`` the maps (g/cm²), ``s_e`` the
sensitivities (counts per photon per g/cm²), ``d`` optional background signals (e.g. the
diffusers' own fluorescence lines, counts) with spills ``β_ej >= 0`` fitted jointly. The
first term is :class:`xrayflow.operators.PatternProjection` through
:func:`xrayflow.networks.physics.torch_function` (values and gradients by the operator and
its adjoint; no copy of the physics in torch). Objective: the data term (Gaussian
``½ Σ (ŷ − y)² / ȳ_e`` or Poisson ``Σ ŷ − y log ŷ``, less its minimum) plus
``prior_weight · Σ_e Σ_r |∇c̃_e − g_e ∇T|₁`` (gradient matching to a transmission image T,
``g_e`` fitted by least squares at every step; ``c̃`` the map in normalised units, below),
minimised by Adam; the result is the iterate of least objective among the last
``keep_last`` steps. After the first tenth of the steps, a step whose objective exceeds
``SPIKE`` times the lowest so far (or is NaN) puts the network back to the parameters of
that lowest point and halves the learning rate (``rollbacks`` in the history): at 64² with
K = 100 % a constant rate of 1e-3 diverged after 1,100 of 1,500 steps, and a cosine decay of
the rate, which avoids that, converged too slowly at K = 25 %. With ``positivity`` the
maps are a softplus of the network's output (>= 0, as the AD solver's projection).

ω₀ sets the band of the first layer: with ``(x, y) ∈ [−1, 1]²`` whatever the map size, ω₀ =
30 (SIREN, NxSCI at 128² maps) reaches proportionally higher frequencies per pixel on a
smaller map; at 64² ω₀ ≈ 10 with lr 1e-3 fitted the speckle-XRF phantom best
(benchmarks/README.md), ω₀ = 30 there needs lr <= 1e-4.

Units: the network's output ``c̃_e`` is the map in units of ``c̄_e = ȳ_e / (s_e · P̄)``
(``ȳ_e`` the line's mean counts, ``P̄`` the patterns' mean total photons: the uniform map
that gives the mean counts); the output layer's bias starts at 1, i.e. at that uniform map,
so that learning rate and prior weight do not depend on the dose.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from torch import nn

from xrayflow import ad
from xrayflow.backend import BackendError, get_backend, gpu_available
from xrayflow.errors import ConfigError
from xrayflow.networks.physics import torch_function
from xrayflow.operators import PatternProjection

__all__ = ["SIREN_DEFAULTS", "Siren", "fit_siren", "grid_coordinates", "project", "torch_device"]

#: The settings :func:`fit_siren` reads (the reconstruct schema's ``linear_inverse.siren``
#: sub-object, with ``loss``, ``prior_weight`` and ``positivity`` from ``linear_inverse``).
SIREN_DEFAULTS = {
    "hidden_width": 128,
    "hidden_layers": 3,
    "omega_0": 30.0,
    "steps": 1500,
    "lr": 1e-4,
    "loss": "gaussian",
    "prior_weight": 0.0,
    "positivity": True,
    "keep_last": 50,
}
#: After the first tenth of the steps, a step whose objective exceeds this factor times the
#: lowest so far is a divergence.
SPIKE = 2.0
#: Sharpness of the softplus that keeps the maps >= 0 (``positivity``): it departs from
#: the identity by less than 5e-3 normalised units above 0.5.
SOFTPLUS_BETA = 10.0


class _SineLayer(nn.Module):
    """``sin(ω₀ (W x + b))`` with SIREN's initialisation: W ~ U(−1/n, 1/n) in the first
    layer, U(−√(6/n)/ω₀, √(6/n)/ω₀) after it (n inputs); b ~ U(−1/√n, 1/√n)."""

    def __init__(self, n_in: int, n_out: int, omega_0: float, first: bool, gen: torch.Generator):
        super().__init__()
        self.omega_0 = float(omega_0)
        self.linear = nn.Linear(n_in, n_out)
        bound = 1.0 / n_in if first else math.sqrt(6.0 / n_in) / self.omega_0
        _uniform(self.linear, bound, gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.omega_0 * self.linear(x))


def _uniform(layer: nn.Linear, bound: float, gen: torch.Generator) -> None:
    """Weights ~ U(−bound, bound), biases ~ U(−1/√n, 1/√n) (PyTorch's), from ``gen``."""
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=gen)
        b = 1.0 / math.sqrt(layer.in_features)
        layer.bias.uniform_(-b, b, generator=gen)


class Siren(nn.Module):
    """Coordinates (P, 2) -> values (P, ``n_out``): ``hidden_layers + 1`` sine layers of
    ``hidden_width`` units, then a linear layer (SIREN initialisation, ``ω₀/√(6/n)`` bound;
    its bias starts at ``bias``). Deterministic for ``seed``."""

    def __init__(
        self,
        n_out: int,
        hidden_width: int = 128,
        hidden_layers: int = 3,
        omega_0: float = 30.0,
        seed: int = 0,
        bias: float = 0.0,
    ):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        widths = [2] + [int(hidden_width)] * (int(hidden_layers) + 1)
        self.body = nn.Sequential(
            *(
                _SineLayer(a, b, omega_0, i == 0, gen)
                for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))
            )
        )
        self.head = nn.Linear(widths[-1], int(n_out))
        _uniform(self.head, math.sqrt(6.0 / widths[-1]) / float(omega_0), gen)
        with torch.no_grad():
            self.head.bias.fill_(float(bias))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(coords))


def grid_coordinates(shape: tuple[int, int]) -> torch.Tensor:
    """Pixel centres (ny·nx, 2) as ``(x, y)`` in [−1, 1]², row-major (y slow, x fast)."""
    ny, nx = (int(n) for n in shape)
    y, x = torch.meshgrid(
        torch.linspace(-1.0, 1.0, ny), torch.linspace(-1.0, 1.0, nx), indexing="ij"
    )
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


def _project(maps, op) -> ad.Tensor:
    return ad.linear(op, maps)


#: ``project(maps, op)``: ``op.fwd(maps)`` of a :class:`~xrayflow.operators.PatternProjection`
#: on torch tensors (maps (E, ny, nx) -> (K, E)); its gradient is ``op.adj``.
project = torch_function(_project)


def torch_device(device: str) -> torch.device:
    """``cuda`` for ``gpu``/``cuda`` (BackendError without one) or ``auto`` with a GPU,
    else ``cpu``."""
    if device not in ("cpu", "gpu", "cuda", "auto"):
        raise BackendError(f"device must be cpu, gpu, cuda or auto, got {device!r}")
    if device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if device in ("gpu", "cuda"):
        raise BackendError(f"device: {device} was requested but torch sees no CUDA device")
    return torch.device("cpu")


def fit_siren(
    patterns,
    counts,
    sensitivity,
    shape: tuple[int, int],
    prior=None,
    cfg: dict | None = None,
    device: str = "cpu",
    seed: int = 0,
    *,
    background=None,
) -> tuple[np.ndarray, dict]:
    """Fit a :class:`Siren` to the counts of K patterns (see the module docstring).

    Args:
        patterns: (K, ny, nx) illumination, photons per pixel.
        counts: (K, E) counts per pattern and map (element line).
        sensitivity: (E,) counts per photon per g/cm² (the operator's weights).
        shape: (ny, nx) of the maps.
        prior: (ny, nx) transmission image for the gradient-matching prior, or None.
        cfg: settings (:data:`SIREN_DEFAULTS` fills in what is missing): ``hidden_width``,
            ``hidden_layers``, ``omega_0``, ``steps``, ``lr`` (Adam), ``loss`` (``gaussian``
            | ``poisson``), ``prior_weight``, ``positivity``, ``keep_last``.
        device: ``cpu``, ``gpu``/``cuda`` or ``auto`` (the GPU when torch sees one).
        seed: initialisation seed (the fit is deterministic for it on the CPU).
        background: (K, D) background signals (counts), or None: spills β (E, D) >= 0
            are then fitted with the maps.

    Returns:
        ``(maps, history)``: maps (E, ny, nx) float64 in g/cm² (those of the kept
        iterate); history: ``loss`` (steps,) the objective, ``data`` and ``prior`` its
        terms, ``best_step`` (-1: the lowest point of the run), ``rollbacks``, ``spill``
        (E, D) counts per background count or None, ``time_s``, ``device``.
    """
    s = {**SIREN_DEFAULTS, **(cfg or {})}
    if s["loss"] not in ("gaussian", "poisson"):
        raise ValueError(f"loss must be 'gaussian' or 'poisson', got {s['loss']!r}")
    dev = torch_device(device)
    p = np.asarray(patterns, np.float64)
    y = np.asarray(counts, np.float64)
    sens = np.asarray(sensitivity, np.float64)
    ny, nx = (int(n) for n in shape)
    if p.ndim != 3 or p.shape[1:] != (ny, nx) or y.ndim != 2 or y.shape[0] != p.shape[0]:
        raise ValueError(
            f"patterns (K, {ny}, {nx}) and counts (K, E) do not fit: {p.shape}, {y.shape}"
        )
    if sens.shape != (y.shape[1],):
        raise ValueError(f"sensitivity must be ({y.shape[1]},), got {sens.shape}")
    # normalised units: the uniform map c̄_e gives the line's mean counts ȳ_e
    mean_counts = np.maximum(y.mean(axis=0), 1.0)
    unit = mean_counts / (sens * p.sum(axis=(1, 2)).mean())
    xp = get_backend("gpu").xp if dev.type == "cuda" and gpu_available() else np
    op = PatternProjection(xp.asarray(p), sens * unit)

    def tensor(a):
        return torch.as_tensor(np.asarray(a, np.float64), device=dev)

    target, var = tensor(y), tensor(mean_counts)
    net = Siren(y.shape[1], s["hidden_width"], s["hidden_layers"], s["omega_0"], seed, 1.0)
    net = net.to(dev)
    coords = grid_coordinates((ny, nx)).to(dev)
    params = list(net.parameters())
    spill = bkg = None
    if background is not None:
        d = np.asarray(background, np.float64).reshape(y.shape[0], -1)
        d_mean = np.maximum(d.mean(axis=0), 1.0)
        bkg = tensor((d / d_mean)[:, None, :] * mean_counts[None, :, None])  # (K, E, D)
        spill = torch.zeros((y.shape[1], d.shape[1]), dtype=torch.float64, device=dev)
        spill.requires_grad_(True)
        params.append(spill)
    prior_t = None if prior is None or s["prior_weight"] == 0 else tensor(prior)
    y_min = target - torch.xlogy(target, target)  # the Poisson term's minimum (at ŷ = y)
    steps, keep, lr = int(s["steps"]), max(1, int(s["keep_last"])), float(s["lr"])
    weight = float(s["prior_weight"])

    def objective():
        maps = net(coords).T.reshape(-1, ny, nx)
        if s["positivity"]:
            maps = nn.functional.softplus(maps, beta=SOFTPLUS_BETA)
        pred = project(maps.double(), op)
        if spill is not None:
            pred = pred + (bkg * spill).sum(dim=-1)
        if s["loss"] == "gaussian":
            data = 0.5 * ((pred - target) ** 2 / var).sum()
        else:
            data = (pred - target * torch.log(pred.clamp_min(1e-6)) - y_min).sum()
        reg = _gradient_prior(maps.double(), prior_t) if prior_t is not None else data * 0
        return data + weight * reg, data, reg, maps

    opt = torch.optim.Adam(params, lr=lr)
    hist = {k: np.zeros(steps) for k in ("loss", "data", "prior")}
    best, best_val, best_step = None, math.inf, -1
    lowest, saved, rollbacks = math.inf, None, 0
    t0 = time.perf_counter()
    for step in range(steps):
        total, data, reg, maps = objective()
        value = float(total.detach())
        hist["loss"][step], hist["data"][step] = value, float(data.detach())
        hist["prior"][step] = float(reg.detach())
        calm = step < steps // 10 and math.isfinite(value)  # early transients are no spikes
        if not (calm or value <= SPIKE * lowest):  # NaN or a spike: back to the lowest point
            if saved is None:
                raise ConfigError(f"siren lr: the objective is {value} at step {step + 1}")
            with torch.no_grad():
                for p, v in zip(params, saved, strict=True):
                    p.copy_(v)
            lr, rollbacks = lr / 2, rollbacks + 1
            opt = torch.optim.Adam(params, lr=lr)
            continue
        if value < lowest:
            lowest, saved = value, [p.detach().clone() for p in params]
        if step >= steps - keep and value < best_val:
            best, best_val, best_step = maps.detach().double().cpu().numpy(), value, step
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if spill is not None:
            with torch.no_grad():
                spill.clamp_(min=0.0)
    if best is None:  # the last steps were all spikes: the lowest point
        with torch.no_grad():
            for p, v in zip(params, saved, strict=True):
                p.copy_(v)
            best, best_val, best_step = objective()[3].double().cpu().numpy(), lowest, -1
    history = {
        **hist,
        "best_step": best_step,
        "rollbacks": rollbacks,
        "spill": None
        if spill is None
        else spill.detach().cpu().numpy() * (mean_counts[:, None] / d_mean[None, :]),
        "time_s": time.perf_counter() - t0,
        "device": str(dev),
    }
    return best * unit[:, None, None], history


def _gradient_prior(maps: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """``Σ_e Σ_r |∇m_e − g_e ∇T|`` (forward differences, L1), ``g_e`` the least-squares
    fit of ``∇m_e`` by ``∇T`` (held fixed in the step)."""
    ty, tx = image.diff(dim=0), image.diff(dim=1)
    dy, dx = maps.diff(dim=1), maps.diff(dim=2)
    with torch.no_grad():
        g = ((dy * ty).sum((1, 2)) + (dx * tx).sum((1, 2))) / max(
            float((ty * ty).sum() + (tx * tx).sum()), 1e-30
        )
    g = g[:, None, None]
    return (dy - g * ty).abs().sum() + (dx - g * tx).abs().sum()
