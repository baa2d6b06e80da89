"""Training hooks of 3D Bragg CDI: 3D-CDI-NN / AutoPhaseNN-style inversion of one 3D
pattern (the interface is :class:`xrayflow.train.hooks.TrainingHooks`; imported by the
train stage).

Training data (config section ``data.bragg_cdi``): a random faceted crystal
(:func:`crystal_support`) with a smooth strain phase inside (:func:`strain_phase`, the
simulate stage's displacement-field model), zero-padded by ``oversampling`` (2: 32³ crystal
box, 64³ pattern), ``I = |F{ρ}|²`` (the :class:`~xrayflow.operators.farfield3d.FarField3D`
operator) scaled to ``photons`` in total (:func:`bragg_patterns`). Network input: the
diffraction amplitude sqrt(counts), centred; targets: support (0/1) and phase (rad, 0
outside the support) of the crystal box.

Network: 3D :class:`~xrayflow.networks.EncoderDecoder` with heads ``support`` and ``phase``.
Losses (:func:`losses`): supervised and twin-invariant; physics-consistency ``far_field``,
the predicted crystal's far field (the same operator, through :mod:`xrayflow.ad`) against
the measured amplitude, with a least-squares scale per sample.

Inference (``xrayflow train --infer``) on patterns of another size than the network's:
:func:`fit_input_size` crops or zero-pads them about the zero frequency.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage

from xrayflow import ad
from xrayflow.backend import get_backend
from xrayflow.modalities.bragg_cdi.grid import crop, embed
from xrayflow.modalities.bragg_cdi.simulate import strain_phase as displacement_phase
from xrayflow.networks import EncoderDecoder, network_options
from xrayflow.networks.losses import centre_crop, error, loss_terms, spatial_dims
from xrayflow.networks.physics import torch_function
from xrayflow.operators.farfield3d import FarField3D
from xrayflow.phantoms import faceted_crystals

#: JSON schema of the config section ``data.bragg_cdi``.
DATA_SECTION = {
    "type": "object", "default": {}, "additionalProperties": False,
    "description": "strained faceted crystals; data.photons: expected photons per 3D pattern",
    "properties": {
        "size": {"type": "integer", "minimum": 4, "default": 32,
                 "description": "crystal box side m, px; targets are m^3"},
        "oversampling": {"type": "integer", "minimum": 1, "default": 2,
                         "description": "pattern side = m * oversampling (zero padding)"},
        "radius": {"type": "array", "minItems": 2, "maxItems": 2, "default": [0.2, 0.45],
                   "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                   "description": "range of the {111} facet distance as a fraction of m "
                   "(phantoms.faceted_crystals; the crystal always fits the box)"},
        "jitter": {"type": "number", "minimum": 0, "maximum": 0.9, "default": 0.1,
                   "description": "relative random change of every facet distance"},
        "extra_facets": {"type": "integer", "minimum": 0, "default": 2,
                         "description": "random extra cutting planes"},
        "phase_max": {"type": "number", "minimum": 0, "maximum": 3.14159, "default": 1.0,
                      "description": "largest strain phase, rad: max |phase| = U(0.3, 1) x this"},
        "strain_scale": {"type": "number", "exclusiveMinimum": 0, "default": 0.25,
                         "description": "correlation length of the displacement field, "
                         "fraction of m"},
    },
}  # fmt: skip
#: Names the shards (``bragg_cdi3d``) and model files (network ``cdi3d``) of this modality
#: were written with before; read as this modality.
FORMER_NAMES = ("bragg_cdi3d", "cdi3d")
#: Axes of one diffraction pattern.
PATTERN_NDIM = 3
#: Network heads and shard targets.
TARGETS = ("support", "phase")
#: Shard datasets the physics-consistency loss needs (none: the scale is fitted).
LOSS_EXTRAS: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- physics
def crystal_support(m: int, rng: np.random.Generator, ccfg: dict) -> np.ndarray:
    """Binary support (m, m, m) float32 of one random faceted crystal inside the box.

    Uses ``phantoms.faceted_crystals`` (truncated octahedron: {111} and {100} facets, random
    rotation, jittered facet distances, ``extra_facets`` random planes) with the {111} facet
    distance drawn from ``radius`` × m voxels, then rolled so that its centre of mass lies
    within half a voxel of the box centre ``(m - 1) / 2``: a diffraction intensity does not
    see translations, so a network can only learn crystals at a fixed place (and the twin
    ``rho(-r)`` about that centre, see :func:`losses`).
    """
    lo, hi = ccfg.get("radius", [0.2, 0.45])
    ph = faceted_crystals(
        (m, m, m),
        1.0,
        1,
        rng,
        radius_range=(float(lo) * m, float(hi) * m),
        facet_jitter=float(ccfg.get("jitter", 0.1)),
        extra_facets=int(ccfg.get("extra_facets", 2)),
    )
    sup = (ph.labels > 0).astype(np.float32)
    com = ndimage.center_of_mass(sup)
    shift = [int(round((m - 1) / 2 - c)) for c in com]
    return np.roll(sup, shift, axis=(0, 1, 2))


def strain_phase(support: np.ndarray, rng: np.random.Generator, ccfg: dict) -> np.ndarray:
    """Strain phase (rad) float32 inside ``support``, 0 outside: ``Q·u`` of a smooth random
    displacement field ``u`` (the simulate stage's model,
    :func:`xrayflow.modalities.bragg_cdi.simulate.strain_phase`: correlation length
    ``strain_scale`` × m voxels, Q along the first axis), shifted to mean 0 inside and scaled
    to max |φ| = U(0.3, 1) × ``phase_max``."""
    inside = support > 0
    if not inside.any():
        return np.zeros(support.shape, np.float32)
    length = float(ccfg.get("strain_scale", 0.25)) * support.shape[0]  # voxels
    strain = {"amplitude": 1.0, "correlation_length": length}
    bragg = {"strain": strain, "q_direction": [1.0, 0.0, 0.0], "d_spacing": 2 * np.pi}
    _, g, _ = displacement_phase(inside, 1.0, {"bragg": bragg}, rng)
    g = g - g[inside].mean()
    g /= np.abs(g[inside]).max() + 1e-12
    amp = float(ccfg.get("phase_max", 1.0)) * rng.uniform(0.3, 1.0)
    return (amp * g * inside).astype(np.float32)


def bragg_patterns(rho: np.ndarray, oversampling: int, photons: float, backend=None):
    """Expected intensities (..., N, N, N), N = m·oversampling, of crystals ρ (..., m, m, m)
    zero-padded (start ``(N - m) // 2``), DC at the corner, each scaled to ``photons`` in
    total (ortho FFT)."""
    backend = backend or get_backend("cpu", workers=1)
    m = rho.shape[-1]
    n = m * int(oversampling)
    lo = (n - m) // 2
    box = np.zeros((*rho.shape[:-3], n, n, n), np.complex128)
    box[..., lo : lo + m, lo : lo + m, lo : lo + m] = rho
    F = FarField3D(backend.workers).fwd(box, out=box)
    inten = F.real**2 + F.imag**2
    total = inten.sum(axis=(-3, -2, -1), keepdims=True)
    return inten * (photons / np.maximum(total, 1e-300))


# ----------------------------------------------------------------------------- shards
def shard_layout(data: dict):
    """(pattern shape, target shapes, shard attrs, extra datasets) of ``data``'s shards."""
    c = data.get("bragg_cdi", {})
    m = int(c.get("size", 32))
    ov = int(c.get("oversampling", 2))
    n = m * ov
    return (n, n, n), {t: (m, m, m) for t in TARGETS}, {"oversampling": ov}, {}


def simulate(
    data: dict, extras: dict, sizes: Sequence[int], rng: np.random.Generator, backend
) -> Iterator[tuple[np.ndarray, dict]]:
    """Expected intensities and targets, one block of rows per entry of ``sizes``: random
    crystals with strain, their patterns computed together."""
    c = data.get("bragg_cdi", {})
    m = int(c.get("size", 32))
    ov = int(c.get("oversampling", 2))
    for rows in sizes:
        sup = np.stack([crystal_support(m, rng, c) for _ in range(rows)])
        ph = np.stack([strain_phase(x, rng, c) for x in sup])
        expected = bragg_patterns(sup * np.exp(1j * ph), ov, float(data["photons"]), backend)
        yield expected, {"support": sup, "phase": ph}


def task_memory(data: dict, rows: int) -> dict[str, float]:
    """Estimated peak bytes of simulating one block of ``rows`` patterns, by part."""
    c = data.get("bragg_cdi", {})
    m = float(c.get("size", 32))
    n = m * int(c.get("oversampling", 2))
    return {
        f"{rows} padded crystals and their FFT ({int(n)}^3 complex128)": 16.0 * 3 * rows * n**3,
        f"{rows} patterns, counts and amplitudes ({int(n)}^3 float64)": 8.0 * 4 * rows * n**3,
        f"{rows} supports and phases ({int(m)}^3)": 8.0 * 6 * rows * m**3,
    }


# ----------------------------------------------------------------------------- network
def check(config: dict, target_size: int, output_size: int) -> None:
    """Nothing beyond the schema: any predicted centre is zero-padded for the far field."""


def network(net_cfg: dict, input_size: int, output_size: int | None = None) -> EncoderDecoder:
    """The 3D encoder-decoder with heads support and phase (``network`` config section)."""
    return EncoderDecoder(3, TARGETS, input_size, **network_options(net_cfg, output_size))


# ----------------------------------------------------------------------------- losses
def _far_field(support, phase, n: int) -> ad.Tensor:
    """``|F{ρ}|`` (B, n, n, n), DC at the corner, of ``ρ = S e^{iφ}`` (B, m, m, m)
    zero-padded to n per axis (start ``(n - m) // 2``) (FarField3D operator, CPU FFT
    threads: torch's, ``training.threads``)."""
    rho = ad.polar(support, phase)
    pad = n - rho.shape[-1]
    if pad:
        rho = ad.pad(rho, ((pad // 2, pad - pad // 2),) * 3)
    return ad.abs(ad.linear(FarField3D(torch.get_num_threads()), rho))


#: ``far_field_amplitude(support, phase, n)``: :func:`_far_field` on torch tensors.
far_field_amplitude = torch_function(_far_field)


def _twin(t: torch.Tensor) -> torch.Tensor:
    """``t(-r)`` about the box centre: every spatial axis of (B, m, ...) reversed."""
    return torch.flip(t, dims=spatial_dims(t))


def _supervised(out: dict, s: torch.Tensor, ph: torch.Tensor, metric: str, dims) -> dict:
    """Support error, and phase error inside the true support ``s``."""
    return {
        "support": error(out["support"], s, metric).mean(dims),
        "phase": (error(out["phase"], ph, metric) * s).sum(dims) / s.sum(dims).clamp_min(1.0),
    }


def losses(out: dict, batch: dict, loss_cfg: dict, extras: dict) -> dict[str, torch.Tensor]:
    """Per-sample loss terms (B,) and their weighted ``total``
    (:func:`xrayflow.networks.losses.loss_terms`).

    Supervised (targets centre-cropped to the output size, phase only inside the true
    support) and twin-invariant: a crystal ``rho(r)`` and its twin ``conj(rho(-r))`` have
    the same diffraction intensity, so each sample is scored against whichever of the two
    its prediction is closer to (support and phase terms together). ``far_field``: the
    predicted crystal zero-padded to the pattern size, its far field scaled by the
    least-squares factor per sample, against the measured amplitude ``batch["input"]`` =
    sqrt(counts), relative to the mean squared measurement. ``extras``: unused.
    """
    dims = spatial_dims(out["phase"])

    def supervised(metric: str, w: dict) -> dict:
        m = out["phase"].shape[-1]
        s, ph = centre_crop(batch["support"], m), centre_crop(batch["phase"], m)
        a = _supervised(out, s, ph, metric, dims)
        b = _supervised(out, _twin(s), -_twin(ph), metric, dims)
        first = w["support"] * a["support"] + w["phase"] * a["phase"] <= (
            w["support"] * b["support"] + w["phase"] * b["phase"]
        )
        return {h: torch.where(first, a[h], b[h]) for h in TARGETS}

    def far_field() -> torch.Tensor:
        meas = batch["input"]
        amp = far_field_amplitude(out["support"], out["phase"], meas.shape[-1])
        pred = torch.fft.fftshift(amp, dim=(-3, -2, -1))
        sdims = spatial_dims(pred)
        scale = (pred * meas).sum(sdims) / pred.pow(2).sum(sdims).clamp_min(1e-12)
        norm = meas.pow(2).mean(sdims).clamp_min(1e-12)
        return (scale.view((-1,) + (1,) * len(sdims)) * pred - meas).pow(2).mean(sdims) / norm

    return loss_terms(loss_cfg, supervised, far_field)


# ----------------------------------------------------------------------------- inference
def fit_input_size(inputs: np.ndarray, size: int) -> tuple[np.ndarray, dict]:
    """Centred amplitudes (B, Z, Y, X) brought to the network's ``size`` per axis: each axis
    cropped or zero-padded about the zero frequency (index ``n // 2`` before and after, the
    box of :mod:`.grid`); returns them and the output attributes that record it.

    Cropping or padding keeps the reciprocal-space sampling Δq, hence the real-space field
    of view 2π/Δq and the oversampling of the crystal in it, which is what the network
    learnt; what changes is the real-space voxel, 2π/(n·Δq): the prediction's voxel along
    an axis is the data's object voxel × (data side / ``size``) (attribute ``voxel_scale``,
    (z, y, x)). A crop drops the high-q shell (coarser voxels, lower resolution); padding
    adds an unmeasured shell of zeros (finer voxels, no more resolution than the data).
    The crystal then fills the network's box as in training only if the data's oversampling
    is the training's (``data.bragg_cdi.oversampling``), which neither changes.
    Interpolating the amplitude onto ``size`` points instead would keep the voxel but change
    Δq, i.e. the oversampling: shrinking a pattern undersamples it (the crystal's
    autocorrelation no longer fits the field of view), and interpolated speckle is not the
    diffraction pattern of any object.
    """
    b, *shape = inputs.shape
    kept = crop(inputs, (b, *(min(n, size) for n in shape)))
    out = embed(kept, (b, *(size,) * len(shape)))
    scale = [n / size for n in shape]
    verb = " and ".join(
        v
        for v, used in (("cropped", max(shape) > size), ("zero-padded", min(shape) < size))
        if used
    )
    how = (
        f"patterns {tuple(shape)} {verb} to the network's {(size,) * len(shape)} about the "
        f"zero frequency: same reciprocal-space sampling and field of view, prediction voxel "
        f"= data object voxel x {tuple(round(v, 4) for v in scale)} (z, y, x)"
    )
    return out, {"resampled": how, "data_pattern_shape": list(shape), "voxel_scale": scale}
