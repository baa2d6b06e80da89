"""The simulate stage of ``scattering``: tagged SAXS/WAXS detector images, one per frame.

``scattering.n_images`` images from :func:`.generator.generate` on the detector of
``energy_ev`` and ``geometry`` (``shape``, ``pixel_size``, ``distance``; a flat detector
normal to the beam, no binning). Frames: photon counts (``noise.poisson``; clipped at
``geometry.saturation`` when set), real detector images (``centred`` False), written batch by
batch (``batch_size``) into the output file while streaming. ``mask``: the module gaps (the
same for every image). Signals: each image's good pixels, beam centre, tags and q range.
``docs/data-format.md`` lists the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xrayflow.errors import ConfigError
from xrayflow.geometry import Geometry
from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.modalities.scattering.detector import DetectorGeometry, gap_mask
from xrayflow.modalities.scattering.generator import (
    CENTRE_CLEAR_PX,
    DRAW_SHARE,
    MAX_INDEX,
    generate,
    visible_q,
)
from xrayflow.modalities.scattering.tags import TAGS, check_tags
from xrayflow.modalities.scattering.terms import LATTICES

SECTION = "scattering"
#: The simulate-config section ``scattering``.
SIMULATE_SECTIONS = json.loads(
    (Path(__file__).parent / "simulate.schema.json").read_text(encoding="utf-8")
)
#: Peak bytes per pixel of generating one image: float64 working arrays and the geometry's
#: maps (tracemalloc: 98 with every term present).
IMAGE_BYTES_PER_PIXEL = 120.0


def base_geometry(cfg: Mapping) -> DetectorGeometry:
    """The detector of ``cfg`` with the beam at the image centre."""
    g = cfg["geometry"]
    shape = tuple(int(n) for n in C.pair(g["shape"]))
    return DetectorGeometry(
        shape=shape,
        pixel_size=tuple(float(p) for p in C.pair(g["pixel_size"])),
        distance=float(g["distance"]),
        energy_ev=float(cfg["energy_ev"]),
        beam_center=(0.5 * (shape[0] - 1), 0.5 * (shape[1] - 1)),
    )


def static_mask(cfg: Mapping, shape) -> np.ndarray | None:
    """The module gaps (True = good pixel), None without gaps."""
    det = cfg[SECTION]["detector"]
    if det["module_shape"] is None:
        return None
    return gap_mask(shape, det["module_shape"], det["gap_width"])


def tag_names(cfg: Mapping) -> tuple[str, ...]:
    """The recorded tags: ``scattering.tags`` or all."""
    return tuple(cfg[SECTION]["tags"] or TAGS)


def simulate(config: dict, rng, backend) -> DiffractionData:
    """The images, masks, beam centres and tags of ``config`` (module docstring); NumPy on
    the CPU whatever the backend; deterministic for a seed."""
    cfg = config
    x = cfg[SECTION]
    geom = base_geometry(cfg)
    n = int(x["n_images"])
    names = tag_names(cfg)
    frames = C.frame_buffer(cfg, n, geom.shape)
    good = np.empty((n, *geom.shape), dtype=np.uint8)
    centres = np.empty((n, 2))
    tags = np.empty((n, len(names)), dtype=np.uint8)
    q_range = np.empty((n, 2))
    level = np.empty(n)
    bs = int(cfg["batch_size"])
    batch = np.empty((min(bs, n), *geom.shape), dtype=np.float32)
    sat = cfg["geometry"]["saturation"]
    images = generate(
        x,
        geom,
        n,
        C.rng_streams(rng, ("images",))["images"],
        detector_max=None if sat is None else float(sat),
        poisson=bool(cfg["noise"]["poisson"]),
    )
    for i, img in enumerate(images):
        batch[i % bs] = img.counts
        good[i], centres[i], tags[i], q_range[i], level[i] = (
            img.mask,
            img.beam_center,
            img.tags,
            img.q_range,
            img.level,
        )
        if i % bs == bs - 1 or i == n - 1:
            start = i - i % bs
            frames[start : i + 1] = batch[: i + 1 - start]
    rec = Geometry(geom.energy_ev, geom.distance, geom.pixel_size, shape=geom.shape, far_field=None)
    attrs = {
        **rec.attrs(),
        "modality": SECTION,
        "poisson": bool(cfg["noise"]["poisson"]),
        "note": "frames: detector images in photon counts (row y, column x), beam centre per "
        "image in signals beam_center; tags in signals tags (columns tag_names)",
    }
    signals = {
        "frame_mask": good,
        "beam_center": centres,
        "tags": tags,
        "tag_names": np.array(names),
        "q_range": q_range,
    }
    truth = {"mean_per_pixel": level} if cfg["output"]["store_truth"] else {}
    return DiffractionData(
        data=frames,
        energy_ev=geom.energy_ev,
        distance=geom.distance,
        pixel_size=geom.pixel_size,
        centred=False,
        mask=static_mask(cfg, geom.shape),
        truth=truth,
        attrs=attrs,
        signals=signals,
    )


def memory_parts(cfg: dict, streaming: bool = True) -> dict[str, float]:
    """Estimated large allocations (description -> bytes) of simulating ``cfg``."""
    ny, nx = (int(s) for s in C.pair(cfg["geometry"]["shape"]))
    n = int(cfg[SECTION]["n_images"])
    b = min(n, int(cfg["batch_size"]))
    parts = {
        f"working arrays of one {ny}x{nx} image": C.nbytes(ny, nx, itemsize=IMAGE_BYTES_PER_PIXEL),
        f"batch of {b} frames": C.nbytes(b, ny, nx, itemsize=4),
        f"{n} frame masks": C.nbytes(n, ny, nx, itemsize=1),
    }
    if not streaming:
        parts[f"{n} frames"] = C.nbytes(n, ny, nx, itemsize=4)
    return parts


# --------------------------------------------------------------------------- checks
def _kerr(prefix: str, path: str, problem: str) -> ConfigError:
    """ConfigError naming the key ``prefix.path`` (prefix: where the section sits, e.g.
    ``simulate`` or ``train.data.scattering``)."""
    return ConfigError(f"{prefix}.{path}: {problem}")


def _check_ranges(value, schema: Mapping, path: str, prefix: str) -> None:
    """``lo <= hi`` for every ``[lo, hi]`` range of the section (schema ``$comment``)."""
    if schema.get("$comment", "").startswith("range") and value is not None:
        if value[0] > value[1]:
            raise _kerr(prefix, path, f"range {list(value)} has lo > hi")
    for key, sub in schema.get("properties", {}).items():
        if isinstance(value, Mapping) and key in value:
            _check_ranges(value[key], sub, f"{path}.{key}", prefix)


def _centres(cfg: Mapping, geom: DetectorGeometry) -> tuple[list, str]:
    """The beam centres that bound every image's (the fixed one, or the corners of the
    range) and the key they come from."""
    bc = cfg[SECTION]["beam_center"]
    if bc["fixed"] is not None:
        return [tuple(float(v) for v in bc["fixed"])], f"{SECTION}.beam_center.fixed"
    ny, nx = geom.shape
    corners = [(fy * (ny - 1), fx * (nx - 1)) for fy in bc["y_range"] for fx in bc["x_range"]]
    return corners, f"{SECTION}.beam_center"


def _reach(geom: DetectorGeometry, centres) -> tuple[float, float]:
    """Smallest and largest q (nm⁻¹) at which a ring can be placed on some image, beam
    centres anywhere in the box spanned by ``centres``: from the clear radius around the
    nearest to the draw share of the farthest pixel distance."""
    lo_r = []
    for axis in (0, 1):
        c = [centre[axis] for centre in centres]
        gap = max(0.0, min(c) - (geom.shape[axis] - 1), -max(c))
        lo_r.append(gap * geom.pixel_size[axis])
    hi_r = max(geom.with_center(c).pixel_radius_range()[1] for c in centres)
    lo = float(geom.q_of_radius(max(math.hypot(*lo_r), CENTRE_CLEAR_PX * geom.pixel)))
    return lo, float(geom.q_of_radius(DRAW_SHARE * hi_r))


def _describe(geom: DetectorGeometry) -> str:
    ny, nx = geom.shape
    return (
        f"the {ny}x{nx} detector of {geom.pixel_size[1]:g} m pixels at {geom.distance:g} m, "
        f"{geom.energy_ev:g} eV"
    )


def _check_d(sec: Mapping, key: str, reach, where: str, prefix: str) -> None:
    lo, hi = reach
    if sec["d_spacings"] is not None:
        for i, d in enumerate(sec["d_spacings"]):
            q = 2.0 * math.pi / float(d)
            if not lo < q < hi:
                raise _kerr(
                    prefix,
                    f"{key}.d_spacings[{i}]",
                    f"d = {float(d):g} nm puts its ring at q = 2*pi/d = {q:.4g} nm^-1, which "
                    f"is nowhere on {where} (rings are placed at q = {lo:.4g} to {hi:.4g} "
                    "nm^-1)",
                )
    if sec["d_range"] is not None:
        d_lo, d_hi = (float(d) for d in sec["d_range"])
        if 2.0 * math.pi / d_hi >= hi or 2.0 * math.pi / d_lo <= lo:
            raise _kerr(
                prefix,
                f"{key}.d_range",
                f"d = {d_lo:g} to {d_hi:g} nm (q = {2 * math.pi / d_hi:.4g} to "
                f"{2 * math.pi / d_lo:.4g} nm^-1) is nowhere on {where} (rings are placed at "
                f"q = {lo:.4g} to {hi:.4g} nm^-1)",
            )


def _check_lattice(lat: Mapping, key: str, reach, where: str, prefix: str) -> None:
    if lat["constant"] is None:
        return
    a_lo, a_hi = (float(a) for a in lat["constant"])
    lo, hi = reach
    g1 = min(LATTICES[k][2] for k in lat["types"])
    if 2.0 * math.pi * g1 / a_hi >= hi:
        raise _kerr(
            prefix,
            f"{key}.constant",
            f"a up to {a_hi:g} nm puts the first reflection at q >= "
            f"{2 * math.pi * g1 / a_hi:.4g} nm^-1, beyond {where} (up to {hi:.4g} nm^-1)",
        )
    if a_lo * lo / (2.0 * math.pi) > MAX_INDEX:
        raise _kerr(
            prefix,
            f"{key}.constant",
            f"a = {a_lo:g} nm needs Miller indices above {MAX_INDEX} at q = {lo:.4g} nm^-1: "
            "too many reflections on the image; use smaller lattice constants",
        )


def check_config(cfg: dict) -> None:
    """What the schema cannot say (ConfigError naming the key): the detector keys this
    modality does not use, known tags, ranges with lo <= hi, and beam centres, d-spacings
    and lattice constants that put something on the detector."""
    g = cfg["geometry"]
    for key, bad in (
        ("binning", g["binning"] != 1),
        ("gaps", bool(g["gaps"])),
        ("beamstop_radius_px", g["beamstop_radius_px"] != 0),
        ("read_noise", g["read_noise"] != 0),
    ):
        if bad:
            raise C.kerr(
                f"geometry.{key}",
                "scattering records photon-counting detector images without binning or read "
                "noise; its gaps and beamstop are scattering.detector",
            )
    for key in ("photons_per_probe", "photons_per_m2"):
        if cfg["noise"][key] is not None:
            raise C.kerr(
                f"noise.{key}",
                "scattering sets the photons per image with scattering.counts.mean_per_pixel",
            )
    check_section(cfg, "simulate")


def check_section(cfg: Mapping, prefix: str) -> None:
    """Checks of the ``scattering`` section of ``cfg`` (which also holds ``energy_ev`` and
    ``geometry``: shape, pixel_size, distance) that the schema cannot make, the keys named
    below ``prefix``: known tags, ranges with lo <= hi, and beam centres, d-spacings and
    lattice constants that put something on the detector."""
    x = cfg[SECTION]
    if x["tags"] is not None:
        check_tags(x["tags"], f"{prefix}.{SECTION}.tags")
    _check_ranges(x, SIMULATE_SECTIONS[SECTION], SECTION, prefix)
    if x["counts"]["weak_below"] > x["counts"]["strong_above"]:
        raise _kerr(prefix, f"{SECTION}.counts.weak_below", "is above counts.strong_above")
    geom = base_geometry(cfg)
    centres, key = _centres(cfg, geom)
    where = _describe(geom)
    for c in centres:
        window = visible_q(geom.with_center(c), CENTRE_CLEAR_PX, DRAW_SHARE)
        if window[0] >= window[1]:
            raise _kerr(
                prefix,
                key,
                f"with the beam centre at ({c[0]:g}, {c[1]:g}) px (y, x) nothing can be placed "
                f"on {where}: the image spans no q range from {CENTRE_CLEAR_PX:g} px around the "
                f"beam to {DRAW_SHARE:g} of the farthest pixel; put the beam centre nearer",
            )
    reach = _reach(geom, centres)
    where = f"{where} with the beam centres of {key}"
    smp = x["sample"]
    for name in ("rings", "halo"):
        _check_d(smp[name], f"{SECTION}.sample.{name}", reach, where, prefix)
    _check_lattice(smp["lattice"], f"{SECTION}.sample.lattice", reach, where, prefix)
