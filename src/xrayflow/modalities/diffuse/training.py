"""Training hooks of diffuse scattering: regression of the short-range-order encoding of a
disordered crystal from its diffuse-scattering image by a CNN (the interface is
:class:`xrayflow.train.hooks.TrainingHooks`; imported by the train stage).

Training data (config section ``data.diffuse``, the simulate stage's section without
``n_samples``): per sample a random target encoding, Monte Carlo lattices that reach it and
their diffuse intensity, as :func:`.simulate.structure` makes them. Label (target
``encoding``): the **achieved** encoding, the Warren–Cowley coefficients measured on the
lattices that made the image (within ``monte_carlo.tolerance`` of the target when the run
converged). ``data.photons``, ``data.noise`` and ``data.read_noise`` are not used: the
counts are ``diffuse.counts`` per image, with Poisson noise.

Network inputs (the hook :func:`measure`, also applied by ``xrayflow train --infer`` to
CXI images, :func:`network_inputs`): the counts divided by their mean over the unmasked
pixels, then ``log(1 + ·)`` (``input_transform: log``, default) or as they are
(``normalised``); masked (Bragg) pixels 0. Shards record the physics (attribute
``diffuse``, :func:`.simulate.physics_attrs`), the column names (``encoding_names``) and the
neighbour vectors, so that inference prepares images the same way and evaluation can
re-simulate predicted encodings (:func:`.diffraction.expected_image`).

Network (``network.diffuse.size``): :class:`~xrayflow.networks.EncodingRegressor`,
``small`` (≈ 0.2 M parameters, the seed's better one) or ``large`` (≈ 7 M). Loss
(``training.loss.diffuse.kind``): squared (``mse``) or absolute (``mae``) error per
sample, averaged over the encoding's variables.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from xrayflow.errors import ConfigError, DataError
from xrayflow.io.cxi import read_cxi, read_cxi_meta
from xrayflow.modalities.diffuse.simulate import (
    SECTION,
    SIMULATE_SECTIONS,
    check_section,
    encoding_names,
    image_mask,
    physics,
    physics_attrs,
    physics_from_attrs,
    sample_bytes,
    structure,
    vectors_of,
)
from xrayflow.modalities.predictions import check_whole_output
from xrayflow.networks import EncodingRegressor, regression_loss

#: Network input transforms.
TRANSFORMS = ("log", "normalised")

_physics = copy.deepcopy(SIMULATE_SECTIONS[SECTION])
_physics["properties"].pop("n_samples")
_physics["properties"]["encoding"]["properties"].pop("values")  # training draws random targets
#: JSON schema of the config section ``data.diffuse``.
DATA_SECTION = {
    **_physics,
    "description": "diffuse scattering of disordered 2D crystals (the simulate stage's "
    "physics, section diffuse) and the network input; the counts are diffuse.counts per "
    "image (data.photons, data.noise and data.read_noise are not used)",
    "properties": {
        **_physics["properties"],
        "input_transform": {
            "enum": list(TRANSFORMS), "default": "log",
            "description": "log: log(1 + counts/mean); normalised: counts/mean (mean over "
            "the unmasked pixels); masked pixels 0",
        },
    },
}  # fmt: skip
#: JSON schema of the config section ``network.diffuse``.
NETWORK_SECTION = {
    "type": "object", "default": {}, "additionalProperties": False,
    "description": "the encoding regressor (network.norm and network.dropout apply)",
    "properties": {
        "size": {"enum": ["small", "large"], "default": "small",
                 "description": "small: about 0.2 M parameters; large: about 7 M"},
        "work_size": {"type": "integer", "minimum": 16, "default": 128,
                      "description": "largest image side after the trunk's strided stem, px"},
    },
}  # fmt: skip
#: JSON schema of the config section ``training.loss.diffuse``.
LOSS_SECTION = {
    "type": "object", "default": {}, "additionalProperties": False,
    "properties": {
        "kind": {"enum": ["mse", "mae"], "default": "mse",
                 "description": "squared or absolute error, mean over the variables"},
    },
}  # fmt: skip
FORMER_NAMES: tuple[str, ...] = ()
PATTERN_NDIM = 2
TARGETS = ("encoding",)
LOSS_EXTRAS: tuple[str, ...] = ()


def _section(data: dict) -> dict:
    return data.get(SECTION) or {}


def _layout_attrs(s: dict) -> dict:
    v = vectors_of(s)
    return {
        SECTION: json.dumps(physics_attrs(s)),
        "encoding_names": encoding_names(v),
        "neighbour_vectors": v.tolist(),
        "input_transform": str(s["input_transform"]),
        "pattern_size": int(s["image"]["size"]),
        "noise_model": "poisson at diffuse.counts expected photons per image",
        "photons": float(s["counts"]),
        "label": "achieved encoding (measured on the Monte Carlo lattices)",
        "centred": True,
    }


def _attr(meta_attrs: dict, name: str):
    value = meta_attrs[name]
    return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value


# ----------------------------------------------------------------------------- shards
def shard_layout(data: dict):
    """(input shape, target shapes, shard attrs, extra datasets); the section is checked
    first (ConfigError naming the key)."""
    s = _section(data)
    check_section(s, f"train.data.{SECTION}")
    n = int(s["image"]["size"])
    return (n, n), {"encoding": (int(s["dimension"]),)}, _layout_attrs(s), {}


def simulate(
    data: dict, extras: dict, sizes: Sequence[int], rng: np.random.Generator, backend
) -> Iterator[tuple[dict, dict]]:
    """Blocks of noise-free expected counts (``{"expected": (k, n, n), "mask": (n, n)``,
    True: masked) and their achieved encodings, one per entry of ``sizes``; all randomness
    from ``rng`` (:func:`measure` draws the Poisson noise from it)."""
    s = _section(data)
    cfg, v, mask = physics(s), vectors_of(s), image_mask(s)
    for k in sizes:
        expected, labels = [], []
        for _ in range(int(k)):
            e, _, mc = structure(s, cfg, v, mask, rng)
            expected.append(e)
            labels.append(mc.achieved)
        block = {"expected": np.stack(expected), "mask": mask}
        yield block, {"encoding": np.asarray(labels, dtype=np.float32)}


def network_inputs(counts, mask, transform: str) -> np.ndarray:
    """The network input ``(k, n, n)`` float32 of counts ``(k, n, n)`` with ``mask`` (bool,
    True: masked, broadcast to the counts): counts over their unmasked mean, then
    ``log(1 + ·)`` for ``transform == "log"``; masked pixels 0. DataError for an image
    without counts."""
    if transform not in TRANSFORMS:
        raise ConfigError(f"input_transform: unknown {transform!r} ({' | '.join(TRANSFORMS)})")
    x = np.asarray(counts, dtype=np.float64)
    keep = ~np.broadcast_to(np.asarray(mask, bool), x.shape)
    total = np.where(keep, x, 0.0).sum(axis=(1, 2))
    mean = total / np.maximum(keep.sum(axis=(1, 2)), 1)
    if np.any(mean <= 0):
        raise DataError(f"image {int(np.argmax(mean <= 0))} has no counts outside the mask")
    y = np.where(keep, x / mean[:, None, None], 0.0)
    if transform == "log":
        y = np.log1p(y)
    return y.astype(np.float32)


def measure(block: dict, data: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Poisson counts of a block of :func:`simulate`, drawn from ``rng``, as network
    inputs."""
    counts = rng.poisson(block["expected"]).astype(np.float64)
    s = _section(data)
    return {"input": network_inputs(counts, block["mask"], s["input_transform"])}


def task_memory(data: dict, rows: int) -> dict[str, float]:
    """Estimated peak bytes of one block of ``rows`` samples, by part; checks the section
    first (so that a bad one stops ``--generate`` before anything is written)."""
    s = _section(data)
    check_section(s, f"train.data.{SECTION}")
    n = float(s["image"]["size"])
    return {
        "Monte Carlo and diffraction of one sample": sample_bytes(s),
        f"{rows} images and network inputs": rows * n * n * (8 + 8 + 4),
    }


# ----------------------------------------------------------------------------- network
def network(
    net_cfg: dict, input_size: int, output_size: int | None = None, **views
) -> EncodingRegressor:
    """The encoding regressor of ``network.diffuse`` for images of side ``input_size`` and
    encodings of ``output_size`` variables."""
    s = net_cfg.get(SECTION) or {}
    if output_size is None:
        raise ConfigError("train.network: the encoding dimension (output_size) is unknown")
    return EncodingRegressor(
        n_outputs=int(output_size),
        image_size=int(input_size),
        size=s.get("size", "small"),
        norm=net_cfg.get("norm", "batch"),
        dropout=float(net_cfg.get("dropout", 0.0)),
        work_size=int(s.get("work_size", 128)),
    )


def check(config: dict, target_size: int, output_size: int) -> None:
    """The network predicts the whole encoding of the shards, supervised."""
    check_whole_output(config, target_size, output_size, "encoding variables")


def losses(out: dict, batch: dict, loss_cfg: dict, extras: dict) -> dict[str, torch.Tensor]:
    """The per-sample error (``mse`` or ``mae``, mean over the variables) and ``total``
    (the same)."""
    kind = (loss_cfg.get(SECTION) or {}).get("kind", "mse")
    term = regression_loss(out["encoding"], batch["encoding"], kind)
    return {kind: term, "total": term}


# ----------------------------------------------------------------------------- inference
def read_inputs(path, batch: int, meta: dict) -> Iterator[tuple[int, dict]]:
    """Blocks of network inputs of a CXI file of diffuse-scattering images (the simulate
    stage's layout: counts in ``entry_1/data_1/data``, (N, n, n), centred; the mask
    ``entry_1/instrument_1/detector_1/mask`` (good pixels), else the Bragg mask the model
    was trained with), prepared as the training shards were (their attributes in
    ``meta``). DataError naming the file for images of another size, non-finite or
    negative counts, or an image without counts."""
    path = Path(path)
    src = repr(str(path))
    attrs = meta["data_attrs"]
    cfg, _, trained_mask = physics_from_attrs(_attr(attrs, SECTION))
    size = int(meta["input_size"])
    transform = str(attrs.get("input_transform", "log"))
    info = read_cxi_meta(path)
    n = int(info["n_frames"])
    for s in range(0, n, batch):
        rows = slice(s, min(n, s + batch))
        d = read_cxi(path, indices=rows, truth=False, check=True, signals=False)
        counts = np.asarray(d.data, dtype=np.float64)
        if counts.shape[1:] != (size, size):
            raise DataError(
                f"{src}: images {counts.shape[1:]} do not match the model input size "
                f"{size}x{size} (the model was trained on {cfg.size}x{cfg.size} images)"
            )
        if not d.centred:
            raise DataError(
                f"{src}: images are stored uncentred; diffuse images have h = k = 0 at pixel "
                "size/2 (centred)"
            )
        mask = trained_mask if d.mask is None else ~np.asarray(d.mask, bool)
        try:
            x = network_inputs(counts, mask, transform)
        except DataError as exc:
            raise DataError(f"{src}: frames {rows.start}..{rows.stop - 1}: {exc}") from None
        yield n, {"input": x}


def infer_outputs(out: dict, meta: dict) -> dict[str, np.ndarray]:
    """The predicted encodings ``(k, dim)``."""
    return {"encoding": out["encoding"].float().cpu().numpy()}


def infer_constants(meta: dict) -> dict:
    """The encoding's column names and neighbour vectors ``(dim, 2)``, and the physics
    (JSON) for re-simulation."""
    attrs = meta["data_attrs"]
    return {
        "encoding_names": np.array(_attr(attrs, "encoding_names"), dtype=object),
        "neighbour_vectors": np.asarray(_attr(attrs, "neighbour_vectors"), dtype=np.int64),
        SECTION: json.dumps(_attr(attrs, SECTION)),
    }
