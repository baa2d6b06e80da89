"""The simulate stage of ``diffuse``: diffuse-scattering images of disordered 2D crystals.

``diffuse.n_samples`` images; for each a target encoding of dimension
``diffuse.dimension`` (:func:`.lattice.random_encoding`), ``lattice.n_lattices`` Monte Carlo
lattices reaching it (:func:`.lattice.monte_carlo`), their diffuse intensity on the
``image.size``² grid of ``h, k ∈ [−h_max, h_max)`` (:func:`.diffraction.diffuse_intensity`,
form factors of ``species``), scaled to ``counts`` expected photons over the unmasked pixels
with Poisson noise (``noise.poisson``), the Bragg pixels masked (``image.bragg_mask``).
Sample ``i`` draws from its own generator (``rng`` spawned per sample), so an image does
not depend on how many come before it.

Frames: photon counts, ``centred`` (h = k = 0 at pixel ``size/2``), written batch by batch
(``batch_size``) while streaming; ``mask``: the Bragg pixels (False). Signals: the achieved
``encoding`` (the label: the correlations of the lattices that made the image), the
``target_encoding``, ``encoding_names``, ``neighbour_vectors``, and per image the Monte
Carlo's ``converged``, ``max_error`` and ``sweeps``. Truth: the final ``interactions`` J
(kT) per image. Attribute ``diffuse``: the physics (JSON), so that predicted encodings can
be re-simulated (:func:`physics_from_attrs`, :func:`.diffraction.expected_image`).
``docs/data-format.md`` lists the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xrayflow.errors import ConfigError
from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.modalities.diffuse.diffraction import (
    DiffuseConfig,
    bragg_mask,
    form_factor_contrast,
    lattice_image,
    sampling,
)
from xrayflow.modalities.diffuse.encoding import neighbour_vectors
from xrayflow.modalities.diffuse.lattice import (
    MCResult,
    check_reachable,
    class_periods,
    random_encoding,
)

SECTION = "diffuse"
#: The simulate-config section ``diffuse``.
SIMULATE_SECTIONS = json.loads(
    (Path(__file__).parent / "simulate.schema.json").read_text(encoding="utf-8")
)
#: Peak bytes per lattice site and neighbour mate of one Monte Carlo run (the neighbour
#: table, int64) plus per site (occupancies, fields, FFT work arrays).
MC_BYTES_PER_SITE_MATE = 8.0
MC_BYTES_PER_SITE = 96.0


def vectors_of(section: Mapping) -> np.ndarray:
    """The neighbour vectors ``(dim, 2)`` of ``section["dimension"]``."""
    return neighbour_vectors(int(section["dimension"]))


def encoding_names(vectors) -> list[str]:
    """Column names ``a(m,n)`` of an encoding."""
    return [f"a({m},{n})" for m, n in np.asarray(vectors).tolist()]


def physics(section: Mapping) -> DiffuseConfig:
    """The :class:`~.diffraction.DiffuseConfig` of a ``diffuse`` section (simulate config or
    ``train.data.diffuse``)."""
    lat, img, sp, mc = (
        section["lattice"],
        section["image"],
        section["species"],
        section["monte_carlo"],
    )
    return DiffuseConfig(
        shape=tuple(int(s) for s in lat["shape"]),
        n_lattices=int(lat["n_lattices"]),
        concentration=float(section["concentration"]),
        tolerance=float(mc["tolerance"]),
        max_sweeps=int(mc["max_sweeps"]),
        gain=float(mc["gain"]),
        sweeps_per_round=int(mc["sweeps_per_round"]),
        f_a=sp["a"],
        f_b=sp["b"],
        lattice_constant=None if lat["constant"] is None else float(lat["constant"]),
        size=int(img["size"]),
        h_max=float(img["h_max"]),
        counts=float(section["counts"]),
    )


def physics_attrs(section: Mapping) -> dict:
    """What re-simulation needs, JSON-able: the :class:`DiffuseConfig` fields, the
    dimension, the neighbour vectors and whether Bragg pixels are masked."""
    cfg = physics(section)
    return {
        "dimension": int(section["dimension"]),
        "neighbour_vectors": vectors_of(section).tolist(),
        "shape": list(cfg.shape),
        "n_lattices": cfg.n_lattices,
        "concentration": cfg.concentration,
        "tolerance": cfg.tolerance,
        "max_sweeps": cfg.max_sweeps,
        "f_a": cfg.f_a,
        "f_b": cfg.f_b,
        "lattice_constant": cfg.lattice_constant,
        "size": cfg.size,
        "h_max": cfg.h_max,
        "counts": cfg.counts,
        "bragg_mask": bool(section["image"]["bragg_mask"]),
    }


def physics_from_attrs(attrs) -> tuple[DiffuseConfig, np.ndarray, np.ndarray]:
    """``(DiffuseConfig, neighbour vectors (dim, 2), mask (size, size) bool, True: masked)``
    from :func:`physics_attrs` (a dict or its JSON text)."""
    a = json.loads(attrs) if isinstance(attrs, str | bytes) else dict(attrs)
    fields = {k: a[k] for k in DiffuseConfig.__dataclass_fields__ if k in a}
    fields["shape"] = tuple(int(s) for s in fields["shape"])
    cfg = DiffuseConfig(**fields)
    mask = (
        bragg_mask(cfg.size, cfg.h_max)
        if a.get("bragg_mask", True)
        else np.zeros((cfg.size,) * 2, bool)
    )
    return cfg, np.asarray(a["neighbour_vectors"], dtype=np.int64), mask


def image_mask(section: Mapping) -> np.ndarray:
    """``(size, size)`` bool, True at the masked (Bragg) pixels; none masked without
    ``image.bragg_mask``."""
    img = section["image"]
    size = int(img["size"])
    if not img["bragg_mask"]:
        return np.zeros((size, size), bool)
    return bragg_mask(size, float(img["h_max"]))


def structure(
    section: Mapping,
    cfg: DiffuseConfig,
    vectors,
    mask,
    rng: np.random.Generator,
    target=None,
) -> tuple[np.ndarray, np.ndarray, MCResult]:
    """One sample without noise: ``(expected counts (size, size), target encoding, the
    Monte Carlo result)``; the ``target`` encoding (None: a random one, section
    ``encoding``), its lattices, their diffuse intensity scaled to ``counts`` over the
    unmasked pixels (masked pixels 0)."""
    if target is None:
        enc = section["encoding"]
        target = random_encoding(
            vectors,
            rng,
            scale=float(enc["scale"]),
            concentration=cfg.concentration,
            max_peak=float(enc["max_peak"]),
        )
    expected, mc = lattice_image(target, vectors, cfg, rng, mask)
    return expected, target, mc


def simulate(config: dict, rng, backend) -> DiffractionData:
    """The images, targets, achieved encodings and Monte Carlo records of ``config``
    (module docstring); NumPy on the CPU whatever the backend; deterministic for a seed."""
    x = config[SECTION]
    cfg = physics(x)
    v = vectors_of(x)
    n, size, dim = int(x["n_samples"]), cfg.size, len(v)
    mask = image_mask(x)
    poisson = bool(config["noise"]["poisson"])
    frames = C.frame_buffer(config, n, (size, size))
    achieved, targets = np.empty((n, dim)), np.empty((n, dim))
    interactions, max_error = np.empty((n, dim)), np.empty(n)
    converged, sweeps = np.empty(n, np.uint8), np.empty(n, np.int32)
    bs = int(config["batch_size"])
    batch = np.empty((min(bs, n), size, size), dtype=np.float32)
    given = x["encoding"]["values"]
    streams = C.rng_streams(rng, ("samples",))["samples"].spawn(n)
    for i, r in enumerate(streams):
        target = None if given is None else np.asarray(given[i % len(given)], dtype=float)
        expected, targets[i], mc = structure(x, cfg, v, mask, r, target)
        batch[i % bs] = r.poisson(expected) if poisson else expected
        achieved[i], interactions[i] = mc.achieved, mc.interactions
        converged[i], sweeps[i], max_error[i] = mc.converged, mc.sweeps, mc.max_error
        if i % bs == bs - 1 or i == n - 1:
            start = i - i % bs
            frames[start : i + 1] = batch[: i + 1 - start]
    g = config["geometry"]
    attrs = {
        "modality": SECTION,
        "poisson": poisson,
        SECTION: json.dumps(physics_attrs(x)),
        "image_axes": "axis 0: h, axis 1: k (reciprocal lattice units), pixel i at "
        "-h_max + i*2*h_max/size; h = k = 0 at pixel size/2",
        "note": "frames: diffuse-scattering photon counts of binary occupancy lattices, Bragg "
        "pixels masked (mask False, counts 0); labels in signals encoding (achieved "
        "Warren-Cowley coefficients, columns encoding_names, vectors neighbour_vectors)",
    }
    signals = {
        "encoding": achieved,
        "target_encoding": targets,
        "encoding_names": np.array(encoding_names(v)),
        "neighbour_vectors": v,
        "converged": converged,
        "max_error": max_error,
        "sweeps": sweeps,
    }
    truth = {"interactions": interactions} if config["output"]["store_truth"] else {}
    return DiffractionData(
        data=frames,
        energy_ev=float(config["energy_ev"]),
        distance=float(g["distance"]),
        pixel_size=tuple(float(p) for p in C.pair(g["pixel_size"])),
        centred=True,
        mask=~mask if mask.any() else None,
        truth=truth,
        attrs=attrs,
        signals=signals,
    )


def sample_bytes(section: Mapping) -> float:
    """Peak bytes of making one sample (Monte Carlo of ``n_lattices`` lattices and the
    diffraction of the image)."""
    cfg = physics(section)
    sites = cfg.n_lattices * cfg.shape[0] * cfg.shape[1]
    mates = 4 * len(vectors_of(section))
    return sites * (MC_BYTES_PER_SITE + MC_BYTES_PER_SITE_MATE * mates) + 64.0 * cfg.size**2


def memory_parts(cfg: dict, streaming: bool = True) -> dict[str, float]:
    """Estimated large allocations (description -> bytes) of simulating ``cfg``."""
    x = cfg[SECTION]
    n, size = int(x["n_samples"]), int(x["image"]["size"])
    b = min(n, int(cfg["batch_size"]))
    parts = {
        "Monte Carlo and diffraction of one sample": sample_bytes(x),
        f"batch of {b} frames": C.nbytes(b, size, size, itemsize=4),
        f"{n} encodings and Monte Carlo records": C.nbytes(n, int(x["dimension"]), itemsize=32),
    }
    if not streaming:
        parts[f"{n} frames"] = C.nbytes(n, size, size, itemsize=4)
    return parts


# --------------------------------------------------------------------------- checks
def check_config(cfg: dict) -> None:
    """What the schema cannot say (ConfigError naming the key): the detector and photon
    keys this modality does not use, then :func:`check_section`."""
    g = cfg["geometry"]
    for key, bad in (
        ("binning", g["binning"] != 1),
        ("gaps", bool(g["gaps"])),
        ("beamstop_radius_px", g["beamstop_radius_px"] != 0),
        ("read_noise", g["read_noise"] != 0),
        ("saturation", g["saturation"] is not None),
    ):
        if bad:
            raise C.kerr(
                f"geometry.{key}",
                "diffuse records photon counts on a reciprocal-space grid (diffuse.image) "
                "without binning, gaps, beamstop, read noise or saturation",
            )
    for key in ("photons_per_probe", "photons_per_m2"):
        if cfg["noise"][key] is not None:
            raise C.kerr(f"noise.{key}", "diffuse sets the photons per image with diffuse.counts")
    check_section(cfg[SECTION], f"simulate.{SECTION}")


def check_section(x: Mapping, prefix: str) -> None:
    """Checks of a ``diffuse`` section beyond the schema, ConfigError naming the key below
    ``prefix`` (e.g. ``simulate.diffuse``): lattice sides above twice the reach of the
    neighbour vectors and fitting the image sampling, both species present at the
    concentration, form factors that exist (element symbols need ``lattice.constant``)."""

    def err(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{prefix}.{key}: {problem}")

    v = vectors_of(x)
    shape = tuple(int(s) for s in x["lattice"]["shape"])
    try:
        class_periods(shape, v)
    except ConfigError as exc:
        raise err(
            "lattice.shape",
            f"{list(shape)} is too small for the neighbour vectors of dimension "
            f"{int(x['dimension'])} (up to {tuple(v.max(axis=0).tolist())}): {exc}",
        ) from None
    img = x["image"]
    for side in shape:
        try:
            sampling(int(img["size"]), float(img["h_max"]), side)
        except ConfigError as exc:
            raise err("lattice.shape", f"does not fit image.size and image.h_max: {exc}") from None
    c, n_sites = float(x["concentration"]), shape[0] * shape[1]
    if not 0 < round(c * n_sites) < n_sites:
        raise err("concentration", f"{c:g} leaves no site of one species on {list(shape)} sites")
    for i, values in enumerate(x["encoding"].get("values") or []):
        key = f"encoding.values[{i}]"
        if len(values) != len(v):
            raise err(key, f"{len(values)} values for an encoding of dimension {len(v)}")
        a = np.asarray(values, dtype=float)
        if not np.all(np.isfinite(a)) or np.any(np.abs(a) > 1):
            j = int(np.flatnonzero(~(np.abs(a) <= 1))[0])
            raise err(f"{key}[{j}]", f"{values[j]!r}: a correlation coefficient is in [-1, 1]")
        try:
            check_reachable(a, v, c)
        except ConfigError as exc:
            raise err(key, str(exc).removeprefix("encoding: ")) from None
    sp, a = x["species"], x["lattice"]["constant"]
    for key in ("a", "b"):
        f = sp[key]
        if isinstance(f, str) and a is None:
            raise err(
                "lattice.constant",
                f"is needed for the element form factor of species.{key} = {f!r} (m, e.g. 3.0e-10)",
            )
        try:
            form_factor_contrast(f, 0.0, [0.5], [0.5], a)
        except ConfigError as exc:
            raise err(f"species.{key}", str(exc)) from None
    contrast = form_factor_contrast(sp["a"], sp["b"], [0.0, 0.5], [0.0, 0.5], a)
    if not np.all(contrast > 0):
        raise err("species", f"A and B scatter alike ({sp['a']!r}, {sp['b']!r}): no contrast")
