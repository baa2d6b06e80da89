"""Training hooks of 2D far-field ptychography: PtychoNN-style inversion of single patterns
(the interface is :class:`xrayflow.train.hooks.TrainingHooks`; imported by the train stage).

Training data (config section ``data.ptycho2d``): a random thin object
``O = exp(-i·k·t·(δ - iβ))`` from a random projected thickness map (soft-edged blobs on a
smooth background, :func:`random_object`), patches of it under a Gaussian probe
(:func:`make_probe`, ``Σ|P|² = photons``), far field ``Ψ = F{P·O}`` (the
:class:`~xrayflow.operators.propagation.FarField` operator, ortho, so
``Σ I = photons × Σ|P O|²/Σ|P|²``). Network input: sqrt(counts), centred; targets: patch
amplitude and phase (rad); the probe is stored in every shard (dataset ``probe``).

Network: 2D :class:`~xrayflow.networks.EncoderDecoder` with heads ``amplitude`` and
``phase``. Losses (:func:`losses`): supervised, per head against the centre of the target
patch; physics-consistency ``far_field``, ``|F{P·A e^{iφ}}|`` of the prediction (the same
operator, through :mod:`xrayflow.ad`) against the measured amplitude at the absolute photon
scale, which needs the whole patch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from scipy import ndimage

from xrayflow import ad
from xrayflow.backend import get_backend
from xrayflow.errors import ConfigError, DataError
from xrayflow.illumination import scale_to_photons
from xrayflow.networks import EncoderDecoder, network_options
from xrayflow.networks.losses import centre_crop, error, loss_terms, spatial_dims
from xrayflow.networks.physics import torch_function
from xrayflow.operators import Patches
from xrayflow.operators.propagation import FarField
from xrayflow.optics.constants import wavelength
from xrayflow.optics.gaussian import gaussian_beam
from xrayflow.optics.materials import refractive_index

_NUMBER = {"type": "number", "exclusiveMinimum": 0}

#: JSON schema of the config section ``data.ptycho2d``.
DATA_SECTION = {
    "type": "object", "default": {}, "additionalProperties": False,
    "description": "2D patterns of random thin objects under a Gaussian probe; data.photons: "
    "probe photons per pattern (sum |P|^2)",
    "properties": {
        "size": {"type": "integer", "minimum": 8, "default": 64,
                 "description": "pattern and object patch size, px"},
        "object_size": {"type": "integer", "minimum": 8, "default": 256,
                        "description": "side of each random object, px; patches are cut from it"},
        "patches_per_object": {"type": "integer", "minimum": 1, "default": 16},
        "probe": {
            "type": "object", "default": {}, "additionalProperties": False,
            "properties": {
                "energy_ev": {**_NUMBER, "default": 8000.0},
                "pixel_size": {**_NUMBER, "default": 1.0e-8, "description": "object pixel, m"},
                "waist_px": {**_NUMBER, "default": 8.0,
                             "description": "Gaussian waist (1/e^2 intensity radius), px"},
                "defocus": {"type": "number", "default": 0.0,
                            "description": "distance from the waist, m (curved wavefront)"},
            },
        },
        "object": {
            "type": "object", "default": {}, "additionalProperties": False,
            "properties": {
                "phase_max": {"type": "number", "minimum": 0, "maximum": 3.14159, "default": 1.0,
                              "description": "largest phase shift magnitude, rad (phase is "
                              "negative, delta > 0)"},
                "amplitude_min": {**_NUMBER, "maximum": 1, "default": 0.8,
                                  "description": "transmission amplitude at full thickness "
                                  "(no material given)"},
                "material": {"type": ["string", "null"], "default": None,
                             "description": "if set, amplitude from beta/delta of this "
                             "material (optics.materials)"},
                "feature_px": {**_NUMBER, "default": 6.0},
                "edge_width": {**_NUMBER, "default": 0.3},
            },
        },
    },
}  # fmt: skip
#: Names the shards and model files of this modality were written with before.
FORMER_NAMES: tuple[str, ...] = ()
#: Axes of one diffraction pattern.
PATTERN_NDIM = 2
#: Network heads and shard targets.
TARGETS = ("amplitude", "phase")
#: Shard datasets the physics-consistency loss needs.
LOSS_EXTRAS = ("probe",)


# ----------------------------------------------------------------------------- physics
def make_probe(n: int, pcfg: dict, photons: float) -> np.ndarray:
    """Gaussian probe (n, n) complex64 with Σ|P|² = photons (``pcfg``: energy_ev, pixel_size
    (m), waist_px, defocus (m))."""
    px = float(pcfg.get("pixel_size", 10e-9))
    p = gaussian_beam(
        (n, n),
        px,
        wavelength(float(pcfg.get("energy_ev", 8000.0))),
        float(pcfg.get("waist_px", n / 8)) * px,
        z=float(pcfg.get("defocus", 0.0)),
    )
    return scale_to_photons(np.asarray(p, dtype=np.complex128), photons).astype(np.complex64)


def random_object(
    shape, ocfg: dict, rng: np.random.Generator, delta_beta: tuple[float, float] | None = None
) -> np.ndarray:
    """Random thin-object transmission (complex64): one material, random projected thickness.

    Thickness map f ∈ [0, 1]: soft-edged blobs (thresholded smooth noise, feature size
    ``feature_px``) plus a weak smooth background. Phase = -phase_max·f (rad; δ > 0 gives a
    negative phase, docs/physics.md); amplitude = exp(-(β/δ)·phase_max·f) with β/δ from the
    material, or = amplitude_min**f when no material is given.
    """
    feat = float(ocfg.get("feature_px", 6.0))
    g = ndimage.gaussian_filter(rng.standard_normal(shape), feat, mode="wrap")
    g /= g.std() + 1e-12
    edge = float(ocfg.get("edge_width", 0.3))
    thr = rng.uniform(-0.5, 0.8)
    f = 1.0 / (1.0 + np.exp(-(g - thr) / edge))
    bg = ndimage.gaussian_filter(rng.standard_normal(shape), 4 * feat, mode="wrap")
    bg = (bg - bg.min()) / (np.ptp(bg) + 1e-12)
    f = np.clip(0.8 * f + 0.2 * bg, 0.0, 1.0)
    phase_max = float(ocfg.get("phase_max", 1.0)) * rng.uniform(0.5, 1.0)
    phase = -phase_max * f
    if delta_beta is not None:
        delta, beta = delta_beta
        log_amp = -(beta / delta) * phase_max * f
    else:
        log_amp = math.log(float(ocfg.get("amplitude_min", 0.8))) * f
    return (np.exp(log_amp) * np.exp(1j * phase)).astype(np.complex64)


def ptycho_patterns(probe: np.ndarray, patches: np.ndarray, backend=None) -> np.ndarray:
    """Expected far-field intensities (B, n, n), photons, of ``probe × patches``, DC at the
    corner."""
    backend = backend or get_backend("cpu", workers=1)
    F = FarField(backend.workers).fwd(probe[None] * patches)
    return (F.real**2 + F.imag**2).astype(np.float64)


# ----------------------------------------------------------------------------- shards
def shard_layout(data: dict):
    """(pattern shape, target shapes, shard attrs, extra datasets) of ``data``'s shards."""
    p = data.get("ptycho2d", {})
    size = int(p.get("size", 64))
    if int(p.get("object_size", 4 * size)) < size:
        raise ConfigError("train.data.ptycho2d.object_size must be >= size")
    probe = make_probe(size, p.get("probe", {}), float(data["photons"]))
    targets = {t: (size, size) for t in TARGETS}
    return (size, size), targets, {"pattern_size": size}, {"probe": probe}


def simulate(
    data: dict, extras: dict, sizes: Sequence[int], rng: np.random.Generator, backend
) -> Iterator[tuple[np.ndarray, dict]]:
    """Expected intensities and targets, one block of rows per entry of ``sizes``: one random
    object per ``patches_per_object`` rows, patches of it at random places."""
    p = data.get("ptycho2d", {})
    probe = extras["probe"]
    size = probe.shape[-1]
    ocfg = p.get("object", {})
    dbeta = None
    if ocfg.get("material"):
        dbeta = refractive_index(ocfg["material"], float(p.get("probe", {}).get("energy_ev", 8e3)))
    osz = int(p.get("object_size", 4 * size))
    per_obj = int(p.get("patches_per_object", 16))
    obj, obj_id, start = None, -1, 0
    for rows in sizes:
        ids = np.arange(start, start + rows) // per_obj
        patches = np.empty((rows, size, size), np.complex64)
        for oid in np.unique(ids):
            if oid != obj_id:
                obj, obj_id = random_object((osz, osz), ocfg, rng, dbeta), oid
            sel = np.flatnonzero(ids == oid)
            corners = rng.integers(0, osz - size + 1, (len(sel), 2))
            patches[sel] = Patches(corners, size, obj.shape).fwd(obj)
        yield (
            ptycho_patterns(probe, patches, backend),
            {"amplitude": np.abs(patches), "phase": np.angle(patches)},
        )
        start += rows


def task_memory(data: dict, rows: int) -> dict[str, float]:
    """Estimated peak bytes of simulating one block of ``rows`` patterns, by part."""
    p = data.get("ptycho2d", {})
    size = float(p.get("size", 64))
    osz = float(p.get("object_size", 4 * size))
    return {
        f"random object ({int(osz)}^2, float64 intermediates)": 8.0 * 10 * osz**2,
        f"{rows} patches and patterns ({int(size)}^2)": 8.0 * 10 * rows * size**2,
    }


# ----------------------------------------------------------------------------- network
def network(net_cfg: dict, input_size: int, output_size: int | None = None) -> EncoderDecoder:
    """The 2D encoder-decoder with heads amplitude and phase (``network`` config section)."""
    return EncoderDecoder(2, TARGETS, input_size, **network_options(net_cfg, output_size))


def check(config: dict, target_size: int, output_size: int) -> None:
    """The far-field loss needs the whole patch: ConfigError for a smaller output."""
    mode = config["training"].get("loss", {}).get("mode", "supervised")
    if output_size != target_size and mode != "supervised":
        raise ConfigError(
            f"train.network.output_size: the 2D far-field loss (training.loss.mode {mode!r}) "
            f"needs the whole patch ({target_size}), got {output_size}"
        )


# ----------------------------------------------------------------------------- losses
def _far_field(amplitude, phase, probe) -> ad.Tensor:
    """``|F{P · A e^{iφ}}|`` (B, n, n), √photons, DC at the corner (FarField operator, CPU
    FFT threads: torch's, ``training.threads``)."""
    far_field = FarField(torch.get_num_threads())
    return ad.abs(ad.linear(far_field, ad.polar(amplitude, phase) * probe))


#: ``far_field_amplitude(amplitude, phase, probe)``: :func:`_far_field` on torch tensors.
far_field_amplitude = torch_function(_far_field)


def losses(out: dict, batch: dict, loss_cfg: dict, extras: dict) -> dict[str, torch.Tensor]:
    """Per-sample loss terms (B,) and their weighted ``total``
    (:func:`xrayflow.networks.losses.loss_terms`).

    Supervised: amplitude and phase against the targets centre-cropped to the output size.
    ``far_field``: the predicted patch's far field (probe ``extras["probe"]``, absolute
    photon scale, centred) against the measured amplitude ``batch["input"]`` = sqrt(counts),
    mean squared difference relative to the mean squared measurement.
    """
    dims = spatial_dims(out["phase"])

    def supervised(metric: str, weights: dict) -> dict:
        m = out["phase"].shape[-1]
        return {h: error(out[h], centre_crop(batch[h], m), metric).mean(dims) for h in TARGETS}

    def far_field() -> torch.Tensor:
        probe = extras.get("probe")
        if probe is None:
            raise DataError("the 2D far-field loss needs the probe (dataset 'probe' in shards)")
        meas = batch["input"]
        amp = far_field_amplitude(out["amplitude"], out["phase"], probe)
        pred = torch.fft.fftshift(amp, dim=(-2, -1))
        norm = meas.pow(2).mean(dims).clamp_min(1e-12)
        return (pred - meas).pow(2).mean(dims) / norm

    return loss_terms(loss_cfg, supervised, far_field)
