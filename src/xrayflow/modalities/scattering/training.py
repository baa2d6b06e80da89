"""Training hooks of tagged scattering images: multi-label classification by an image CNN, a
CNN on Fourier–Bessel coefficients, or both (the interface is
:class:`xrayflow.train.hooks.TrainingHooks`; imported by the train stage).

Training data (config section ``data.scattering``): detector images of
:func:`.generator.generate` on the detector of ``energy_ev`` and ``geometry`` (a square
image of ``geometry.shape`` px), as the simulate stage makes them, with their tags (the
labels: ``scattering.tags``, default all of :data:`.tags.TAGS`). The counts level is
``scattering.counts``; ``data.photons``, ``data.noise`` and ``data.read_noise`` are not used.

Network inputs (the hook :func:`measure`, also applied by ``xrayflow train --infer`` to
detector images): the image ``log(1 + counts) / log(full_scale)`` with the masked pixels
(module gaps, beamstop) at 0, and the view ``coefficients``, the Fourier–Bessel features
about each image's beam centre (:meth:`.fourier_bessel.FourierBessel.features`,
``fourier_bessel.m_orders`` × ``n_orders``, masked pixels in-painted per ring) of the counts
and (``log_image``) of the normalised image, their m = 0 rows signed (``signed``). Shards
record the tag names (attribute ``tag_names``) and these settings (``fourier_bessel``,
``full_scale``) so that inference prepares images the same way.

Network (``network.scattering.view``): :class:`~xrayflow.networks.TagClassifier` on the
image, the coefficients or both (joint). Loss: binary cross-entropy per tag with logits,
averaged over the tags; ``training.loss.scattering.class_weights: balanced`` weighs the
positives of tag t by negatives/positives over the training shards (clipped to
``max_weight``), so rare tags count.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch

from xrayflow.errors import ConfigError, DataError
from xrayflow.io.cxi import read_cxi, read_cxi_meta, read_signal_rows
from xrayflow.modalities.predictions import check_whole_output
from xrayflow.modalities.scattering.fourier_bessel import FourierBessel
from xrayflow.modalities.scattering.generator import generate
from xrayflow.modalities.scattering.simulate import (
    IMAGE_BYTES_PER_PIXEL,
    SECTION,
    SIMULATE_SECTIONS,
    base_geometry,
    check_section,
    tag_names,
)
from xrayflow.networks import TagClassifier, balanced_pos_weight, multilabel_bce

_POSITIVE = {"type": "number", "exclusiveMinimum": 0}

#: JSON schema of the config section ``data.scattering``.
DATA_SECTION = {
    "type": "object", "default": {}, "additionalProperties": False,
    "description": "tagged SAXS/WAXS detector images (the simulate stage's physics) and their "
    "network inputs; the counts level is scattering.counts (data.photons, data.noise and "
    "data.read_noise are not used)",
    "properties": {
        "energy_ev": {**_POSITIVE, "default": 8898.4, "description": "photon energy, eV"},
        "geometry": {
            "type": "object", "default": {}, "additionalProperties": False,
            "properties": {
                "shape": {"type": "integer", "minimum": 32, "default": 256,
                          "description": "image side, px (square detector images)"},
                "pixel_size": {**_POSITIVE, "default": 172.0e-6, "description": "m"},
                "distance": {**_POSITIVE, "default": 5.0, "description": "sample-detector, m"},
                "saturation": {"type": ["number", "null"], "exclusiveMinimum": 0,
                               "default": None,
                               "description": "counts at which every pixel saturates"},
            },
        },
        SECTION: copy.deepcopy(SIMULATE_SECTIONS[SECTION]),
        "fourier_bessel": {
            "type": "object", "default": {}, "additionalProperties": False,
            "properties": {
                "m_orders": {"type": "integer", "minimum": 1, "default": 20,
                             "description": "angular orders m = 0..M-1"},
                "n_orders": {"type": "integer", "minimum": 1, "default": 30,
                             "description": "radial orders n = 1..N"},
                "phase": {"type": "boolean", "default": False,
                          "description": "add the rotation-invariant relative-phase channel"},
                "signed": {"type": "boolean", "default": True,
                           "description": "the m = 0 row carries the sign of its (real) "
                           "coefficients"},
                "log_image": {"type": "boolean", "default": True,
                              "description": "add the coefficients of the log-scaled image "
                              "(the image view's input) as channels"},
            },
        },
        "full_scale": {**_POSITIVE, "default": 65536.0,
                       "description": "counts mapped to 1 by log(1 + counts)/log(full_scale)"},
    },
}  # fmt: skip
#: JSON schema of the config section ``network.scattering``.
NETWORK_SECTION = {
    "type": "object", "default": {}, "additionalProperties": False,
    "description": "the tag classifier (network.channels: the image trunk's channels)",
    "properties": {
        "view": {"enum": ["image", "coefficients", "joint"], "default": "joint",
                 "description": "the image, its Fourier-Bessel coefficients, or both"},
        "coefficient_channels": {"type": "array", "items": {"type": "integer", "minimum": 1},
                                 "minItems": 1, "default": [32, 64, 128]},
        "hidden": {"type": "integer", "minimum": 1, "default": 256},
        "work_size": {"type": "integer", "minimum": 16, "default": 128,
                      "description": "largest image side after the image trunk's stem, px"},
    },
}  # fmt: skip
#: JSON schema of the config section ``training.loss.scattering``.
LOSS_SECTION = {
    "type": "object", "default": {}, "additionalProperties": False,
    "properties": {
        "class_weights": {"enum": ["balanced", "none"], "default": "balanced",
                          "description": "balanced: positives of each tag weighted by "
                          "negatives/positives over the training shards"},
        "max_weight": {"type": "number", "minimum": 1, "default": 100.0},
    },
}  # fmt: skip
#: The unit of the log-scaled image's coefficient magnitudes (its full scale is 1).
LOG_IMAGE_UNIT = 1e-3
FORMER_NAMES: tuple[str, ...] = ()
PATTERN_NDIM = 2
TARGETS = ("tags",)
LOSS_EXTRAS: tuple[str, ...] = ()


def _section(data: dict) -> dict:
    return data.get(SECTION) or {}


def _simulate_like(s: dict) -> dict:
    """The keys of a simulate config that the generator reads, from ``data.scattering``."""
    g = s["geometry"]
    return {
        "energy_ev": s["energy_ev"],
        "geometry": {
            "shape": [g["shape"], g["shape"]],
            "pixel_size": g["pixel_size"],
            "distance": g["distance"],
        },
        SECTION: s[SECTION],
    }


def _fourier_bessel(attrs: dict) -> tuple[FourierBessel, dict]:
    """The transform and the feature options of shard attributes; shards written before
    ``signed`` and ``log_image`` existed had neither."""
    fb = attrs["fourier_bessel"]
    fb = json.loads(fb) if isinstance(fb, str) else fb
    options = {
        "phase": bool(fb["phase"]),
        "signed": bool(fb.get("signed", False)),
        "log_image": bool(fb.get("log_image", False)),
    }
    return FourierBessel(int(fb["m_orders"]), int(fb["n_orders"])), options


def _layout_attrs(s: dict) -> dict:
    return {
        "tag_names": list(tag_names(_simulate_like(s))),
        "fourier_bessel": dict(s["fourier_bessel"]),
        "full_scale": float(s["full_scale"]),
        "pattern_size": int(s["geometry"]["shape"]),
        "noise_model": "poisson, zingers, saturation (scattering.artefacts)",
        "input_transform": "log(1 + counts)/log(full_scale), masked pixels 0",
        "centred": False,
    }


# ----------------------------------------------------------------------------- shards
def shard_layout(data: dict):
    """(input and view shapes, target shapes, shard attrs, extra datasets); the section is
    checked first (ConfigError naming the key)."""
    s = _section(data)
    check_section(_simulate_like(s), f"train.data.{SECTION}")
    n = int(s["geometry"]["shape"])
    fb = s["fourier_bessel"]
    channels = (1 + fb["phase"]) * (1 + fb["log_image"])
    coeffs = (channels, int(fb["m_orders"]), int(fb["n_orders"]))
    attrs = _layout_attrs(s)
    return (
        {"input": (n, n), "coefficients": coeffs},
        {"tags": (len(attrs["tag_names"]),)},
        attrs,
        {},
    )


def simulate(
    data: dict, extras: dict, sizes: Sequence[int], rng: np.random.Generator, backend
) -> Iterator[tuple[dict, dict]]:
    """Blocks of measured images (counts, good-pixel masks, beam centres) and their tags,
    one per entry of ``sizes``; all randomness from ``rng`` (the generator's Poisson noise
    and artefacts included, so :func:`measure` draws nothing)."""
    s = _section(data)
    geom = base_geometry(_simulate_like(s))
    sat = s["geometry"]["saturation"]
    for k in sizes:
        images = list(
            generate(s[SECTION], geom, int(k), rng, detector_max=None if sat is None else sat)
        )
        block = {
            "counts": np.stack([im.counts for im in images]),
            "masks": np.stack([im.mask for im in images]),
            "centers": np.array([im.beam_center for im in images], dtype=np.float64),
        }
        yield block, {"tags": np.stack([im.tags for im in images]).astype(np.float32)}


def transform_views(
    counts: np.ndarray, good: np.ndarray, full_scale: float, log_image: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The normalised images ``log(1 + counts) / log(full_scale)`` (k, ny, nx), 0 on bad
    pixels, and the images whose coefficients make the coefficient view (k, K, ny, nx):
    the counts, then with ``log_image`` the normalised images."""
    image = np.where(good, np.log1p(np.maximum(counts, 0.0)), 0.0) / np.log(full_scale)
    views = np.stack([counts, image], axis=1) if log_image else counts[:, None]
    return image, views


def network_inputs(
    counts: np.ndarray, masks: np.ndarray, centers: np.ndarray, attrs: dict
) -> dict[str, np.ndarray]:
    """``{"input": normalised images, "coefficients": Fourier–Bessel features}`` of (k, ny,
    nx) counts with their good-pixel masks and beam centres (px, (y, x)); ``attrs``: the
    shard attributes ``fourier_bessel`` and ``full_scale``.

    The coefficient view: the features of the counts' coefficients, then (``log_image``)
    those of the normalised image's, ``|c|`` in units of :data:`LOG_IMAGE_UNIT` of its
    full scale 1 (weak terms far from the beam, halos and backgrounds, which the counts'
    coefficients bury under the intense low-q terms)."""
    fb, options = _fourier_bessel(attrs)
    full_scale = float(attrs["full_scale"])
    good = masks.astype(bool)
    image, views = transform_views(counts, good, full_scale, options["log_image"])
    coeffs = fb.coefficients(views, centers, good)
    phase, signed = options["phase"], options["signed"]
    features = [fb.features(coeffs[:, 0], phase, full_scale, signed=signed)]
    if options["log_image"]:
        features.append(
            fb.features(coeffs[:, 1], phase, full_scale=1.0, unit=LOG_IMAGE_UNIT, signed=signed)
        )
    return {
        "input": image.astype(np.float32),
        "coefficients": np.concatenate(features, axis=1),
    }


def measure(block: dict, data: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The network inputs of a block of :func:`simulate` (nothing random)."""
    return network_inputs(
        block["counts"], block["masks"], block["centers"], _layout_attrs(_section(data))
    )


def task_memory(data: dict, rows: int) -> dict[str, float]:
    """Estimated peak bytes of one block of ``rows`` images, by part."""
    s = _section(data)
    n = float(s["geometry"]["shape"])
    views = 1 + bool(s["fourier_bessel"]["log_image"])  # float64 images transformed per frame
    per_image = n * n * (4 + 1 + 8 + 4 + 8 * views)
    return {
        f"generating one {int(n)}^2 image": IMAGE_BYTES_PER_PIXEL * n * n,
        f"{rows} images, masks, coefficient views and network inputs": rows * per_image,
        "Fourier-Bessel polar grids of one image": 8.0 * (14 + 2 * views) * (2 * n) * 256,
    }


# ----------------------------------------------------------------------------- network
def network(
    net_cfg: dict, input_size: int, output_size: int | None = None, **views
) -> TagClassifier:
    """The tag classifier of ``network.scattering`` for images of side ``input_size`` and
    ``output_size`` tags; ``views["coefficients"]``: the coefficient map's (C, M, N)."""
    s = net_cfg.get(SECTION) or {}
    if output_size is None:
        raise ConfigError("train.network: the number of tags (output_size) is unknown")
    shape = views.get("coefficients")
    return TagClassifier(
        view=s.get("view", "joint"),
        n_tags=int(output_size),
        image_size=int(input_size),
        coefficient_shape=None if shape is None else tuple(int(v) for v in shape),
        channels=tuple(net_cfg.get("channels", (16, 32, 64, 128))),
        coefficient_channels=tuple(s.get("coefficient_channels", (32, 64, 128))),
        hidden=int(s.get("hidden", 256)),
        norm=net_cfg.get("norm", "batch"),
        dropout=float(net_cfg.get("dropout", 0.0)),
        work_size=int(s.get("work_size", 128)),
    )


def check(config: dict, target_size: int, output_size: int) -> None:
    """The network predicts every tag of the shards, supervised."""
    check_whole_output(config, target_size, output_size, "tags")


def loss_extras(shards: Sequence, loss_cfg: dict, device) -> dict[str, torch.Tensor]:
    """``pos_weight`` (per tag) of ``class_weights: balanced`` from the tags of all
    shards; none otherwise."""
    s = loss_cfg.get(SECTION) or {}
    if s.get("class_weights", "balanced") != "balanced":
        return {}
    positives, n = None, 0
    for path in shards:
        with h5py.File(path, "r") as f:
            tags = np.asarray(f["targets_tags"][()], dtype=np.float64)
        positives = tags.sum(axis=0) if positives is None else positives + tags.sum(axis=0)
        n += len(tags)
    weight = balanced_pos_weight(positives, n, float(s.get("max_weight", 100.0)))
    return {"pos_weight": weight.to(device)}


def losses(out: dict, batch: dict, loss_cfg: dict, extras: dict) -> dict[str, torch.Tensor]:
    """``bce`` (mean over tags, per sample) and ``total`` (the same)."""
    bce = multilabel_bce(out["tags"], batch["tags"], extras.get("pos_weight"))
    return {"bce": bce, "total": bce}


# ----------------------------------------------------------------------------- inference
def read_inputs(path, batch: int, meta: dict) -> Iterator[tuple[int, dict]]:
    """Blocks of network inputs of a CXI file of detector images (the simulate stage's
    layout: counts in ``entry_1/data_1/data``, per image ``entry_1/xrayflow_signals/
    beam_center`` (px, (y, x)) and optionally ``frame_mask`` (1 = good), else the detector
    mask), prepared as the training shards were (their attributes in ``meta``)."""
    path = Path(path)
    src = repr(str(path))
    attrs = meta["data_attrs"]
    n = int(read_cxi_meta(path)["n_frames"])
    for s in range(0, n, batch):
        rows = slice(s, min(n, s + batch))
        d = read_cxi(path, indices=rows, truth=False, check=True, signals=False)
        counts = np.asarray(d.data, dtype=np.float64)
        centers = read_signal_rows(path, "beam_center", rows)
        if centers is None:
            raise DataError(
                f"{src}: no beam centre per image (entry_1/xrayflow_signals/beam_center, px "
                "(y, x)); the Fourier-Bessel view needs it"
            )
        masks = read_signal_rows(path, "frame_mask", rows)
        if masks is None:
            good = np.ones(counts.shape[-2:], bool) if d.mask is None else d.mask
            masks = np.broadcast_to(good, counts.shape)
        centers = np.asarray(centers, dtype=np.float64).reshape(len(counts), 2)
        if not np.all(np.isfinite(centers)):
            raise DataError(
                f"{src}: beam_center of frames {rows.start}..{rows.stop - 1} not finite"
            )
        yield n, network_inputs(counts, np.asarray(masks), centers, attrs)


def infer_outputs(out: dict, meta: dict) -> dict[str, np.ndarray]:
    """Per-tag probabilities (sigmoid of the logits)."""
    return {"probabilities": torch.sigmoid(out["tags"]).float().cpu().numpy()}


def infer_constants(meta: dict) -> dict[str, np.ndarray]:
    """The tag names of the probabilities' columns."""
    names = meta["data_attrs"]["tag_names"]
    names = json.loads(names) if isinstance(names, str) else names
    return {"tag_names": np.array(names, dtype=object)}
