"""Speckle-illuminated X-ray fluorescence (Li et al., PNAS 2023, "NxSCI"): ``xrf_speckle``.

K positions of sandpaper diffusers upstream of the sample (:mod:`.diffusers`, each diffuser
moved to its own random offset per pattern) give K speckle illuminations ``I_k`` (photons per
object pixel). The full-field detector records each with the sample out of the beam
(Poisson counts on the object grid, pixel ``geometry.pixel_size / xrf_speckle.magnification``,
real-space frames, ``centred`` False); an energy-dispersive detector records per pattern the
counts of each element's fluorescence line and of the diffusers' own lines
(:mod:`.fluorescence`; self-absorption neglected):

    y_ke = s_e·Σ_r I_k(r)·c_e(r) + β_e·Σ_j d_kj        (sample lines, Poisson)
    d_kj = ν·s_j·Σ_r I_in(r)·c_j(r)                      (diffuser lines, Poisson)

with the diffusers' areal mass ``c_j`` of their line element in the beam, ``ν`` the view
factor ``xrf_speckle.background.view_factor`` and ``β_e`` the spill
``xrf_speckle.background.spill``. The first term is
:class:`xrayflow.operators.PatternProjection` (the reconstruction's operator). The dose:
``N`` photons per pattern at the sample, ``noise.photons_per_probe`` (or
``noise.photons_per_m2`` × the field of view), on average over the diffuser positions. Also
recorded: the sample's transmission image ``|t|²`` (flat-field normalised, Poisson at the
flat field ``N/(ny·nx)`` per pixel). Truth: the element maps, a raster-scan XRF map at equal
total dose (``K·N/(ny·nx)`` photons per pixel, no diffusers), the measured and expected
speckle sizes. ``docs/data-format.md`` lists the file.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from xrayflow.errors import PhysicsError
from xrayflow.geometry import Geometry
from xrayflow.io.cxi import DiffractionData
from xrayflow.modalities import simulation as C
from xrayflow.modalities.xrf_speckle import fluorescence as fl
from xrayflow.modalities.xrf_speckle.diffusers import (
    FEPA_P_GRIT_D50_M,
    Diffuser,
    SpeckleIllumination,
    SpeckleSize,
    expected_speckle_size,
    sheet_size,
)
from xrayflow.operators import PatternProjection
from xrayflow.optics.constants import wavelength

SECTION = "xrf_speckle"


def speckle_geometry(cfg: dict) -> Geometry:
    """Detector geometry with the object pixel ``geometry.pixel_size / magnification``."""
    geo = C.detector_geometry(cfg)
    m = float(cfg[SECTION]["magnification"])
    pixel = (geo.pixel_size[0] / m, geo.pixel_size[1] / m)
    return dataclasses.replace(geo, far_field=False, object_pixel=pixel)


def n_patterns(cfg: dict) -> int:
    """K: ``n_patterns``, else ``pattern_fraction`` of the map's pixels (at least 1)."""
    x = cfg[SECTION]
    if x["n_patterns"] is not None:
        return int(x["n_patterns"])
    ny, nx = C.pair(cfg["geometry"]["shape"])
    return max(1, round(float(x["pattern_fraction"]) * int(ny) * int(nx)))


def photons_per_pattern(cfg: dict, shape, pixel: float) -> float:
    """``N``: photons per pattern at the sample (the field of view ``shape`` × ``pixel``²)."""
    kind, value = C.photon_scaling(cfg)
    return value * shape[0] * shape[1] * pixel * pixel if kind == "fluence" else value


def make_diffusers(cfg: dict) -> list[Diffuser]:
    return [Diffuser(**d) for d in cfg[SECTION]["diffusers"]]


def _object_pixel(cfg: dict) -> float:
    return max(C.pair(cfg["geometry"]["pixel_size"])) / float(cfg[SECTION]["magnification"])


def sample_lines(cfg: dict) -> list[fl.FluorescenceLine]:
    """The line ``xrf_speckle.line`` of every element (ConfigError naming the entry)."""
    x = cfg[SECTION]
    out = []
    for i, name in enumerate(x["elements"]):
        key = f"{SECTION}.elements[{i}]"
        try:
            line = fl.fluorescence_line(name, x["line"], float(cfg["energy_ev"]), x["detector"])
        except PhysicsError as exc:
            raise C.kerr(key, str(exc)) from None
        if line.element in [m.element for m in out]:
            raise C.kerr(key, f"{line.element} is listed twice")
        out.append(line)
    return out


def diffuser_lines(cfg: dict, diffusers) -> list[fl.FluorescenceLine]:
    """The Kα line of each abrasive's element (one per material, in order); sensitivity as
    for the sample (the view factor is applied to the counts)."""
    x = cfg[SECTION]
    out = []
    for d in diffusers:
        el = d.abrasive.line_element
        if el in [m.element for m in out]:
            continue
        try:
            out.append(
                fl.fluorescence_line(el, "Ka", float(cfg["energy_ev"]), x["detector"], fl.DIFFUSER)
            )
        except PhysicsError:  # beam below the abrasive's K edge: it does not fluoresce
            continue
    return out


def diffuser_line_mass(lines, diffusers) -> np.ndarray:
    """(D, J): areal mass (g/cm²) of diffuser line d's element per metre of diffuser j."""
    out = np.zeros((len(lines), len(diffusers)))
    for j, d in enumerate(diffusers):
        m = d.abrasive.material
        w = fl.mass_fractions(m.formula)
        for i, line in enumerate(lines):
            out[i, j] = 100.0 * m.density * w.get(line.element, 0.0)
    return out


def spill(cfg: dict, elements) -> np.ndarray:
    """``β_e`` (E,): ``background.spill`` for every element, or per element (default 0)."""
    s = cfg[SECTION]["background"]["spill"]
    if isinstance(s, dict):
        return np.array([float(s.get(el, 0.0)) for el in elements])
    return np.full(len(elements), float(s))


def simulate(config: dict, rng, backend) -> DiffractionData:
    """Patterns, fluorescence counts, transmission image and truth of ``config`` (module
    docstring); deterministic for a seed on a given device and precision."""
    cfg = config
    x = cfg[SECTION]
    streams = C.rng_streams(
        rng, ("phantom", "diffusers", "offsets", "frames", "counts", "transmission", "raster")
    )
    C.check_phantom_config(cfg)
    geo = speckle_geometry(cfg)
    pixel = C.check_voxel_size(cfg, geo.object_pixel, "geometry.pixel_size / magnification")
    n = geo.shape
    energy = float(cfg["energy_ev"])
    # sample: element maps (g/cm²) and transmission
    sh = cfg["phantom"]["shape"]
    nz, ny, nx = int(sh[0] or 16), int(sh[1] or n[0]), int(sh[2] or n[1])
    if (ny, nx) != n:
        raise C.kerr("phantom.shape", f"the map must be the detector grid {n}, got {(ny, nx)}")
    phantom = C.make_phantom(cfg, (nz, ny, nx), pixel, streams["phantom"])
    lines = sample_lines(cfg)
    elements = [line.element for line in lines]
    maps = fl.element_maps(phantom, elements)
    for i, el in enumerate(elements):
        if not maps[i].any():
            raise C.kerr(
                f"{SECTION}.elements[{i}]",
                f"{el} is in none of the phantom's materials ({', '.join(phantom.materials)})",
            )
    beta_proj = phantom.projected(energy)[1]
    transmission = np.exp(-4.0 * math.pi * beta_proj / float(wavelength(energy)))
    # illumination
    diffusers = make_diffusers(cfg)
    sheet = sheet_size(diffusers, n, pixel, energy)
    ill = SpeckleIllumination(diffusers, n, pixel, energy, sheet, streams["diffusers"], backend)
    k_total = n_patterns(cfg)
    offsets = streams["offsets"].integers(0, sheet, size=(k_total, len(diffusers), 2))
    photons = photons_per_pattern(cfg, n, pixel)
    flat = photons / (n[0] * n[1])  # photons per pixel at the sample, mean
    incident = flat / ill.mean_transmission  # photons per pixel of the beam before the diffusers
    dlines = diffuser_lines(cfg, ill.diffusers)
    mass = diffuser_line_mass(dlines, ill.diffusers)
    s_sample = np.array([line.sensitivity for line in lines])
    s_diff = np.array([line.sensitivity for line in dlines]) * float(x["background"]["view_factor"])
    beta = spill(cfg, elements)
    detector = C.make_detector(cfg, geo, centred=True)
    frames = C.frame_buffer(cfg, k_total, n)
    expected = np.empty((k_total, len(lines) + len(dlines)))
    speckle = SpeckleSize(n)
    bs = int(cfg["batch_size"])
    for start in range(0, k_total, bs):
        stop = min(start + bs, k_total)
        intensity, exposure = ill.intensities(offsets[start:stop])
        patterns = flat * intensity
        frames[start:stop] = C.detect(cfg, detector, patterns, streams["frames"])
        d = s_diff * (incident * exposure @ mass.T)  # (B, D)
        y = PatternProjection(patterns, s_sample).fwd(maps) + d.sum(axis=1)[:, None] * beta
        expected[start:stop] = np.concatenate([y, d], axis=1)
        speckle.add(intensity)
    noisy = bool(cfg["noise"]["poisson"])
    counts = fl.poisson(streams["counts"], expected, noisy)
    t_meas = fl.poisson(streams["transmission"], flat * transmission, noisy) / np.float32(flat)
    all_lines = [*lines, *dlines]
    signals = {
        "counts": counts,
        "line_names": [line.name for line in all_lines],
        "line_energies_ev": np.array([line.energy_ev for line in all_lines]),
        "line_elements": [line.element for line in all_lines],
        "line_kind": [line.kind for line in all_lines],
        "sensitivity": np.concatenate([s_sample, np.zeros(len(dlines))]),
        "transmission": t_meas.astype(np.float32),
    }
    truth = {
        "element_maps": maps.astype(np.float32),
        "elements": elements,
        "background_spill": np.repeat(beta[:, None], len(dlines), axis=1),
        "speckle_size_m": speckle.fwhm(pixel),
        "speckle_size_expected_m": expected_speckle_size(diffusers, energy, x["beam_width"]),
        "materials": list(phantom.materials),
    }
    if x["raster"]:
        per_point = k_total * photons / (n[0] * n[1])
        truth["raster_counts"], truth["raster_maps"] = fl.raster_scan(
            maps, s_sample, per_point, streams["raster"], noisy
        )
    attrs = {
        "modality": "xrf_speckle",
        "space": "real",
        "photons_per_pattern": photons,
        "photons": C.photon_scaling(cfg)[1],
        "photon_scaling": C.photon_scaling(cfg)[0],
        "n_patterns": k_total,
        "poisson": noisy,
        "magnification": float(x["magnification"]),
        "diffuser_grits": [d.grit for d in diffusers],
        "diffuser_materials": [d.material for d in diffusers],
        "diffuser_distances": [d.distance for d in diffusers],
        "diffuser_thicknesses": [d.mean_thickness for d in diffusers],
        "diffuser_sheet_px": sheet,
        "note": "frames: illumination patterns at the sample (sample out of the beam), "
        "photons per object pixel",
    }
    return C.package(cfg, geo, detector, frames, truth, attrs, centred=False, signals=signals)


def memory_parts(cfg: dict, streaming: bool = True) -> dict[str, float]:
    """Estimated large allocations (description -> bytes) of simulating ``cfg``."""
    c = 16 if cfg["precision"] == "double" else 8  # complex itemsize
    n = tuple(int(s) for s in C.pair(cfg["geometry"]["shape"]))
    nz = int(cfg["phantom"]["shape"][0] or 16)
    diffusers = make_diffusers(cfg)
    sheet = sheet_size(diffusers, n, _object_pixel(cfg), float(cfg["energy_ev"]))
    k = n_patterns(cfg)
    b = min(k, int(cfg["batch_size"]))
    parts = {
        f"phantom ({nz}, {n[0]}, {n[1]})": C.phantom_bytes(cfg, (nz, *n)),
        f"{len(diffusers)} diffuser sheets of {sheet}²": C.nbytes(
            len(diffusers) + 1, sheet, sheet, itemsize=8 + c
        ),
        # field, rolled screens, FFT buffer; rolled thickness
        f"batch of {b} fields": C.nbytes(b, sheet, sheet, itemsize=8 + 3 * c),
        # intensity, patterns, detection; the speckle size's zero-padded FFTs (4x pixels)
        f"batch of {b} patterns": C.nbytes(b, *n, itemsize=32 + 4 * 24),
    }
    if not streaming:
        parts[f"{k} frames"] = C.nbytes(k, *n, itemsize=4)
    return parts


def check_config(cfg: dict) -> None:
    """What the schema cannot say (ConfigError naming the key): a detector that records
    the patterns on the object grid, FEPA grits, diffuser distances, elements xraydb knows
    whose line the beam excites, spills of listed elements, speckle sampled by two object
    pixels and within the near-field regime."""
    g = cfg["geometry"]
    for key, bad in (
        ("binning", g["binning"] != 1),
        ("gaps", bool(g["gaps"])),
        ("beamstop_radius_px", g["beamstop_radius_px"] != 0),
    ):
        if bad:
            raise C.kerr(
                f"geometry.{key}",
                "xrf_speckle records every pattern on the object grid: no binning, gaps or "
                "beamstop",
            )
    x = cfg[SECTION]
    for i, d in enumerate(x["diffusers"]):
        key = f"{SECTION}.diffusers[{i}]"
        if d["grit"] not in FEPA_P_GRIT_D50_M:
            near = min(FEPA_P_GRIT_D50_M, key=lambda g: abs(g - d["grit"]))
            raise C.kerr(
                f"{key}.grit",
                f"P{d['grit']} is not a FEPA P-grit; did you mean {near}? (known: "
                f"{', '.join(map(str, FEPA_P_GRIT_D50_M))})",
            )
        C.check_length(
            f"{key}.distance", d["distance"], *C.NEAR_DISTANCE_RANGE_M, "diffuser distances"
        )
    elements = [line.element for line in sample_lines(cfg)]
    if isinstance(x["background"]["spill"], dict):
        for el in x["background"]["spill"]:
            if el not in elements:
                raise C.kerr(
                    f"{SECTION}.background.spill.{el}",
                    f"{el} is not one of xrf_speckle.elements ({', '.join(elements)})",
                )
    diffusers = make_diffusers(cfg)
    energy = float(cfg["energy_ev"])
    pixel = _object_pixel(cfg)
    s_inf = expected_speckle_size(diffusers, energy, math.inf)
    if s_inf < 2.0 * pixel:
        raise C.kerr(
            f"{SECTION}.diffusers",
            f"the expected speckle size {s_inf:.3g} m is below two object pixels "
            f"(2 x {pixel:.3g} m): the patterns would be undersampled; use coarser grit, "
            "thinner paper or smaller object pixels (geometry.pixel_size / "
            "xrf_speckle.magnification)",
        )
    nearest = min(range(len(diffusers)), key=lambda i: diffusers[i].distance)
    far = float(wavelength(energy)) * diffusers[nearest].distance / float(x["beam_width"])
    if far > s_inf:
        raise C.kerr(
            f"{SECTION}.diffusers[{nearest}].distance",
            f"lambda*z/D = {far:.3g} m exceeds the near-field speckle size {s_inf:.3g} m "
            "(far regime, beam width xrf_speckle.beam_width): the periodic diffuser model "
            "does not cover it; move the diffuser closer or widen the beam",
        )
