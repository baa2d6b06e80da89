"""Building blocks shared by the modalities: geometry, semantic checks, probe, scan,
phantom, slices, detector and photon scaling.

Everything physical comes from the optics / illumination / scans / detector / phantoms
modules; this module only turns config sections into their arguments and checks what the
schema cannot (each failure is a ConfigError naming the key).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import inspect
import logging
import math

import numpy as np

from xrayflow import illumination as ill
from xrayflow import scans
from xrayflow.backend import fftshift
from xrayflow.detector import Detector, make_mask
from xrayflow.errors import ConfigError, PhysicsError
from xrayflow.geometry import ATTR_NAMES, LEGACY_ATTR_NAMES, Geometry, recorded_geometry
from xrayflow.io.cxi import DiffractionData, StreamedFrames
from xrayflow.operators import transmission as tr
from xrayflow.optics.constants import xray_energy_problem
from xrayflow.optics.gaussian import gaussian_beam
from xrayflow.optics.materials import get_material, material_names
from xrayflow.optics.propagation import critical_distance
from xrayflow.phantoms import PHANTOMS
from xrayflow.phantoms import make_phantom as mk
from xrayflow.progress import Throttle, eta

log = logging.getLogger(__name__)

#: Share of probe power allowed in the outer eighth of the window on each side.
PROBE_EDGE_POWER = 0.05
#: Default photons per exposure when neither photons_per_probe nor photons_per_m2 is given.
DEFAULT_PHOTONS = 1e6


def kerr(path: str, problem: str) -> ConfigError:
    return ConfigError(f"simulate.{path}: {problem}")


def pair(v) -> tuple:
    if isinstance(v, list | tuple):
        return tuple(v)
    return (v, v)


def rng_streams(rng: np.random.Generator, names: tuple[str, ...]) -> dict[str, np.random.Generator]:
    """Independent generators, one per name, in a fixed order (deterministic for a seed)."""
    return dict(zip(names, rng.spawn(len(names)), strict=True))


# --------------------------------------------------------------------------- geometry
def detector_geometry(cfg: dict, distances=None, source_distance=None) -> Geometry:
    """:meth:`Geometry.from_config` (near field: with the sample–detector ``distances`` and
    the cone beam's ``source_distance``), the binning checked against the detector shape."""
    geo = Geometry.from_config(cfg, distances, source_distance)
    b = geo.binning
    if geo.shape[0] % b or geo.shape[1] % b:
        raise kerr("geometry.binning", f"{b} does not divide the detector shape {geo.shape}")
    return geo


def source_distance(cfg: dict) -> float | None:
    """The cone beam's source (focus)–sample distance z1, m (``geometry.source_distance``);
    None: plane wave."""
    z1 = cfg["geometry"]["source_distance"]
    return None if z1 is None else float(z1)


def far_field_geometry(cfg: dict) -> Geometry:
    """Detector geometry with the far-field object pixel ``λz/(N p)`` per axis."""
    return detector_geometry(cfg)


def check_voxel_size(cfg: dict, object_pixel: tuple[float, float], relation: str) -> float:
    """The phantom voxel size: the configured one if it matches ``object_pixel``, else error."""
    v = cfg["phantom"]["voxel_size"]
    if abs(object_pixel[0] - object_pixel[1]) > 1e-9 * object_pixel[0]:
        raise kerr(
            "geometry.pixel_size",
            f"object pixels differ along y and x ({object_pixel[0]:.4g} vs "
            f"{object_pixel[1]:.4g} m); phantoms need cubic voxels: use square pixels and a "
            "square detector",
        )
    px = float(object_pixel[1])
    if v is None:
        return px
    if abs(float(v) - px) > 1e-6 * px:
        raise kerr(
            "phantom.voxel_size",
            f"{float(v):.6g} m differs from the object pixel {px:.6g} m given by {relation}; "
            "set phantom.voxel_size to null (derived) or change the geometry",
        )
    return px


def detector_mask(cfg: dict, shape) -> np.ndarray | None:
    g = cfg["geometry"]
    gaps = [(gp["axis"], gp["start"], gp["width"]) for gp in g["gaps"]]
    for i, gp in enumerate(g["gaps"]):
        n = shape[gp["axis"]]
        if gp["start"] >= n:
            raise kerr(f"geometry.gaps[{i}].start", f"{gp['start']} is outside the {n} pixels")
    if not gaps and not g["beamstop_radius_px"]:
        return None
    return make_mask(shape, gaps=gaps, beamstop_radius_px=float(g["beamstop_radius_px"]))


def make_detector(cfg: dict, geo: Geometry, centred: bool = False, mask=True):
    g = cfg["geometry"]
    m = detector_mask(cfg, geo.shape) if mask else None
    try:
        return Detector(
            shape=geo.shape,
            pixel_size=geo.pixel_size,
            distance=geo.distance,
            binning=geo.binning,
            mask=m,
            saturation=g["saturation"],
            read_noise=float(g["read_noise"]),
            centred=centred,
        )
    except PhysicsError as exc:
        raise kerr("geometry", str(exc)) from None


def detect(cfg: dict, detector, expected, rng) -> np.ndarray:
    """Counts (or expected counts without Poisson noise) from expected intensities."""
    if cfg["noise"]["poisson"]:
        return detector.measure(expected, rng)
    return detector.expected_binned(expected).astype(np.float32)


# --------------------------------------------------------------------------- photons
def photon_scaling(cfg: dict):
    """``("photons", N)`` or ``("fluence", photons_per_m2)`` from the noise section."""
    n = cfg["noise"]
    if n["photons_per_probe"] is not None and n["photons_per_m2"] is not None:
        raise kerr(
            "noise.photons_per_m2",
            "give either noise.photons_per_probe or noise.photons_per_m2, not both",
        )
    if n["photons_per_m2"] is not None:
        return "fluence", float(n["photons_per_m2"])
    return "photons", float(n["photons_per_probe"] or DEFAULT_PHOTONS)


def scale_modes(cfg: dict, modes, pixel_size):
    kind, value = photon_scaling(cfg)
    if kind == "fluence":
        return ill.scale_to_fluence(modes, value, pixel_size)
    return ill.scale_to_photons(modes, value)


# --------------------------------------------------------------------------- probe
_PROBE_SIZE_KEY = {
    "gaussian": "probe.gaussian.waist",
    "zone_plate": "probe.zone_plate.defocus",
    "pinhole": "probe.pinhole.diameter",
    "diffuser": "probe.diffuser.envelope_diameter",
}


def probe_size_key(cfg: dict) -> str:
    """The config key that sets the probe's size (named in probe-size errors)."""
    return _PROBE_SIZE_KEY[cfg["probe"]["kind"]]


def make_probe(
    cfg: dict, shape, pixel_size: float, wavelength: float, rng, fits: bool = True
) -> np.ndarray:
    """Probe modes ``(M, n, n)`` complex128, scaled to the configured photons; ``fits``:
    checked to fit in the window (less than 5 % of the power in the outer eighth on each
    side; False for a near-field beam that fills the detector)."""

    p = cfg["probe"]
    kind = p["kind"]
    shape = tuple(int(s) for s in shape)
    r_probe, r_modes = rng.spawn(2)
    try:
        if kind == "gaussian":
            s = p["gaussian"]
            probe = gaussian_beam(shape, pixel_size, wavelength, s["waist"], z=s["defocus"])
        elif kind == "zone_plate":
            s = p["zone_plate"]
            probe = ill.zone_plate_probe(
                shape,
                pixel_size,
                wavelength,
                s["diameter"],
                s["outer_zone_width"],
                central_stop=s["central_stop"],
                defocus=s["defocus"],
            )
        elif kind == "pinhole":
            s = p["pinhole"]
            probe = ill.pinhole_probe(shape, pixel_size, wavelength, s["diameter"], s["distance"])
        elif kind == "diffuser":
            s = p["diffuser"]
            probe = ill.diffuser_probe(
                shape,
                pixel_size,
                wavelength,
                s["grain_size"],
                s["strength"],
                r_probe,
                envelope=s["envelope_diameter"],
                distance=s["distance"],
            )
        else:  # pragma: no cover - schema enum
            raise kerr("probe.kind", f"unknown probe kind {kind!r}")
    except PhysicsError as exc:
        raise kerr(f"probe.{kind}", str(exc)) from None
    probe = np.asarray(probe, dtype=np.complex128)
    if fits:
        check_probe_fits(probe, _PROBE_SIZE_KEY[kind], pixel_size)
    m = int(p["modes"])
    try:
        modes = ill.coherent_modes(probe, m, float(p["coherence_fraction"]), rng=r_modes)
    except PhysicsError as exc:
        raise kerr("probe.modes", str(exc)) from None
    modes = np.asarray(modes, dtype=np.complex128).reshape(-1, *shape)
    return np.asarray(scale_modes(cfg, modes, pixel_size), dtype=np.complex128)


def check_probe_fits(probe: np.ndarray, key: str, pixel_size: float) -> None:
    """ConfigError if the probe does not fit in the window (detector grid)."""
    a = np.abs(np.asarray(probe)) ** 2
    a = a.reshape(-1, *a.shape[-2:]).sum(axis=0)
    total = a.sum()
    if not np.isfinite(total) or total <= 0:
        raise kerr(key, "the probe has no power on the simulation grid")
    ny, nx = a.shape
    by, bx = max(1, ny // 8), max(1, nx // 8)
    inner = a[by : ny - by, bx : nx - bx].sum()
    edge = 1.0 - inner / total
    if edge > PROBE_EDGE_POWER:
        raise kerr(
            key,
            f"the probe does not fit in the {ny}x{nx} detector grid: {100 * edge:.0f} % of its "
            f"power lies in the outer eighth of the {ny * pixel_size:.3g} m x "
            f"{nx * pixel_size:.3g} m window (object pixel {pixel_size:.3g} m); make the probe "
            "smaller or the window larger (more detector pixels, longer distance or "
            "smaller detector pixels)",
        )


# --------------------------------------------------------------------------- scan
def make_scan(cfg: dict, rng) -> np.ndarray:
    s = cfg["scan"]
    try:
        if s["kind"] == "raster":
            pos = scans.raster_scan(s["n_y"], s["n_x"], s["step"], snake=s["snake"])
        else:
            pos = scans.fermat_spiral(s["n_points"], s["step"])
        if s["jitter"] > 0:
            pos = scans.add_jitter(pos, s["jitter"], rng)
    except PhysicsError as exc:
        raise kerr("scan", str(exc)) from None
    return np.asarray(pos, dtype=np.float64)


def rotation_angles(cfg: dict) -> np.ndarray:
    r = cfg["scan"]["rotation"]
    return np.asarray(
        scans.rotation_series(r["n_angles"], r["start_deg"], r["stop_deg"], r["endpoint"]),
        dtype=np.float64,
    )


# --------------------------------------------------------------------------- phantom
def _check_material(name, key: str) -> None:
    names = [name] if isinstance(name, str) else list(name)
    for n in names:
        try:
            get_material(n)
        except PhysicsError:
            known = material_names()
            close = difflib.get_close_matches(str(n), known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise kerr(key, f"unknown material {n!r}{hint} (known: {', '.join(known)})") from None


_MATERIAL_PARAMS = ("material", "background", "binder", "carbon", "pore_material")


def check_phantom_config(cfg: dict) -> None:
    """Phantom type, generator parameters and material names (ConfigError naming the key)."""

    ph = cfg["phantom"]
    t = ph["type"]
    if t not in PHANTOMS:
        close = difflib.get_close_matches(t, list(PHANTOMS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise kerr("phantom.type", f"unknown phantom {t!r}{hint} (known: {', '.join(PHANTOMS)})")
    sig = inspect.signature(PHANTOMS[t])
    allowed = [n for n in sig.parameters if n not in ("shape", "voxel_size", "rng")]
    for k in ph["params"]:
        if k not in allowed:
            close = difflib.get_close_matches(k, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise kerr(
                f"phantom.params.{k}",
                f"unknown parameter of phantom {t!r}{hint} (known: {', '.join(allowed)})",
            )
    if ph["material"] is not None:
        if "material" not in allowed:
            raise kerr(
                "phantom.material",
                f"phantom {t!r} has no single material; set its materials in phantom.params",
            )
        _check_material(ph["material"], "phantom.material")
    for k in _MATERIAL_PARAMS:
        if k in ph["params"]:
            _check_material(ph["params"][k], f"phantom.params.{k}")
    if "fractions" in ph["params"] and isinstance(ph["params"]["fractions"], dict):
        for name in ph["params"]["fractions"]:
            _check_material(name, f"phantom.params.fractions.{name}")


def make_phantom(cfg: dict, shape, voxel: float, rng):
    ph = cfg["phantom"]
    kw = dict(ph["params"])
    if ph["material"] is not None:
        kw["material"] = ph["material"]
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}
    try:
        return mk(ph["type"], tuple(int(s) for s in shape), voxel, rng=rng, **kw)
    except PhysicsError as exc:
        raise kerr("phantom", str(exc)) from None
    except TypeError as exc:
        raise kerr("phantom.params", str(exc)) from None


def lateral_shape(cfg: dict, positions, voxel: float, probe_shape) -> tuple[int, int]:
    """Object (Ny, Nx): configured, or the smallest that holds the scan (+4 px margin)."""

    sh = cfg["phantom"]["shape"]
    auto = scans.object_shape_for_scan(positions, voxel, probe_shape, margin_px=4)
    ny = int(sh[1]) if sh[1] is not None else auto[0]
    nx = int(sh[2]) if sh[2] is not None else auto[1]
    return ny, nx


def check_scan_fits(positions, voxel, object_shape, probe_shape) -> np.ndarray:
    corners = scans.positions_to_pixels(positions, voxel, object_shape, probe_shape)
    try:
        scans.check_positions_fit(corners, object_shape, probe_shape)
    except PhysicsError as exc:
        raise kerr(
            "phantom.shape",
            f"{exc} (phantom lateral size {object_shape[0]}x{object_shape[1]} voxels; "
            "set phantom.shape entries to null to derive them from the scan)",
        ) from None
    return corners


# --------------------------------------------------------------------------- slices
def n_slices_for(cfg: dict, nz: int, vz: float) -> int:
    ms = cfg["multislice"]
    if ms["slice_thickness"] is not None:
        n = max(1, int(round(nz * vz / float(ms["slice_thickness"]))))
        if n > nz:
            raise kerr(
                "multislice.slice_thickness",
                f"{ms['slice_thickness']:.4g} m is thinner than one voxel ({vz:.4g} m)",
            )
        return n
    n = int(ms["n_slices"])
    if n > nz:
        raise kerr("multislice.n_slices", f"{n} slices but the phantom has only {nz} voxels in z")
    return n


def slabs(delta, beta, n_slices: int, vz: float):
    """Average δ, β over ``n_slices`` z slabs (Phantom.slices on arrays): (S,Y,X)x2, (S,)."""
    nz = delta.shape[0]
    edges = np.linspace(0, nz, n_slices + 1).round().astype(int)
    counts = np.diff(edges)
    d_s = np.add.reduceat(delta, edges[:-1], axis=0) / counts[:, None, None]
    b_s = np.add.reduceat(beta, edges[:-1], axis=0) / counts[:, None, None]
    return d_s, b_s, counts * vz


def slab_truth(phantom, pixel: float, thickness, d_s, b_s) -> dict:
    """Ground-truth entries shared by the slab modalities: ``pixel_size`` (m),
    ``slice_thickness`` (S,) m, per-slab ``delta``/``beta`` (float32), the projected
    ``support`` (Y, X) and the ``materials``."""
    return {
        "pixel_size": pixel,
        "slice_thickness": thickness,
        "delta": d_s.astype(np.float32),
        "beta": b_s.astype(np.float32),
        "support": phantom.support().any(axis=0),
        "materials": list(phantom.materials),
    }


def depth_of_field(pixel: float, wavelength: float) -> float:
    """``2 Δx² / λ``: thickness over which a feature of one pixel stays in focus."""
    return 2.0 * pixel * pixel / wavelength


def check_slices(
    cfg: dict,
    thickness,
    pixel: float,
    wavelength: float,
    n_window: int,
    key: str = "multislice.slice_thickness",
    hint: str | None = None,
) -> None:
    """Slices must be thinner than the depth of field and the propagator's validity."""

    t = float(np.max(thickness))
    zc = critical_distance(n_window, pixel, wavelength)
    if t > zc:
        raise kerr(
            key,
            f"slices of {t:.4g} m exceed the {cfg['multislice']['propagator']} propagator's "
            f"validity N*dx^2/lambda = {zc:.4g} m; use more slices",
        )
    if not cfg["multislice"]["check_validity"]:
        return
    dof = depth_of_field(pixel, wavelength)
    if t > dof:
        need = math.ceil(float(np.sum(thickness)) / dof)
        hint = hint or f"use at least {need} slices (multislice.n_slices)"
        raise kerr(
            key,
            f"slices of {t:.4g} m are thicker than the depth of field 2*dx^2/lambda = "
            f"{dof:.4g} m (dx = {pixel:.4g} m): the slice approximation is not valid; "
            f"{hint} or set multislice.check_validity: false",
        )


def transmission(delta, beta, thickness, wavelength, backend):
    th = np.asarray(thickness, dtype=np.float64).reshape(-1, 1, 1)
    return tr(
        backend.asarray(delta),
        backend.asarray(beta),
        wavelength,
        backend.asarray(th),
        xp=backend.xp,
        dtype=backend.complex_dtype,
    )


def batched_intensities(cfg, model, corners, detector, rng, out, offset=0, centre=False):
    """Run ``model.intensities`` in batches of ``batch_size`` and detect into ``out``
    (an array or the output file's :class:`StreamedFrames`); ``centre``: ``fftshift`` each
    batch (the stored layout) before it is put into ``out``."""
    bs = int(cfg["batch_size"])
    backend = model.backend
    n = len(corners)
    clock = Throttle()
    for start in range(0, n, bs):
        stop = min(start + bs, n)
        expected = backend.to_numpy(model.intensities(corners[start:stop]))
        frames = detect(cfg, detector, expected, rng)
        if centre:
            frames = fftshift(frames, axes=(-2, -1))
        out[offset + start : offset + stop] = frames
        if clock.due(last_step=stop == n):
            log.info(f"simulate: {stop}/{n} frames, {eta(stop, n, clock.elapsed)}")
    return out


# --------------------------------------------------------------------------- frames
#: The output file's stream while ``xrayflow simulate`` writes (see :func:`streaming`).
_STREAM: contextvars.ContextVar = contextvars.ContextVar("xrayflow_simulate_stream", default=None)
#: Share of good pixels at the saturation value above which the data are refused.
SATURATED_SHARE = 0.99


@contextlib.contextmanager
def streaming(stream):
    """Within the block, :func:`frame_buffer` creates the frames in ``stream``
    (:class:`xrayflow.io.cxi.CXIStream`) instead of memory."""
    token = _STREAM.set(stream)
    try:
        yield stream
    finally:
        _STREAM.reset(token)


def saturation_level(cfg: dict) -> float | None:
    """Counts of a (binned) pixel whose physical pixels all saturated, or None when no
    saturation is applied (no ``geometry.saturation``, or expected intensities stored)."""
    sat = cfg["geometry"]["saturation"]
    if sat is None or not cfg["noise"]["poisson"]:
        return None
    b = int(cfg["geometry"]["binning"])
    return float(sat) * b * b * (1.0 - 1e-6)


def frame_buffer(cfg: dict, n: int, shape) -> np.ndarray | StreamedFrames:
    """Where a modality puts its ``n`` detected frames of ``shape`` (stored layout): the
    output file's dataset while streaming (memory then does not grow with the number of
    frames), else a float32 array."""
    shape = tuple(int(s) for s in shape)
    stream = _STREAM.get()
    if stream is None:
        return np.empty((int(n), *shape), dtype=np.float32)
    return stream.create_frames(int(n), *shape, saturation=saturation_level(cfg))


def check_frames(cfg: dict, data: DiffractionData) -> None:
    """Refuse simulated data that are all zero or essentially all saturated (PhysicsError
    naming the likely cause); ``data.data`` is an array or streamed frames."""
    frames = data.data
    level = saturation_level(cfg)
    if isinstance(frames, StreamedFrames):
        total, n_sat = frames.total, frames.n_saturated
    else:
        arr = np.asarray(frames)
        total = float(arr.sum(dtype=np.float64))
        n_sat = int(np.count_nonzero(arr >= level)) if level is not None else 0
    n_frames = int(frames.shape[0])
    if n_frames and total <= 0:
        kind, value = photon_scaling(cfg)
        photons = (
            f"noise.photons_per_probe = {value:g} per exposure"
            if kind == "photons"
            else f"noise.photons_per_m2 = {value:g}"
        )
        raise PhysicsError(
            f"all {n_frames} simulated frames are zero (no counts): too few photons "
            f"({photons}), a sample that absorbs everything at energy_ev = "
            f"{float(cfg['energy_ev']):g}, or a detector too far away (geometry.distance = "
            f"{float(cfg['geometry']['distance']):g} m); nothing was written"
        )
    if level is not None and n_frames:
        n_good = int(data.good_mask().sum()) * n_frames
        if n_good and n_sat >= SATURATED_SHARE * n_good:
            raise PhysicsError(
                f"{100.0 * n_sat / n_good:.1f} % of the good detector pixels are "
                f"saturated (geometry.saturation = {cfg['geometry']['saturation']:g} counts): "
                "the data hold no diffraction information; lower the photons "
                "(noise.photons_per_probe / photons_per_m2) or raise geometry.saturation; "
                "nothing was written"
            )


def package(
    cfg: dict, geo: Geometry, detector, data, truth: dict, attrs: dict, centred: bool, **kw
):
    """The simulated frames as :class:`DiffractionData` (binned pixel size, mask, truth if kept).

    The object pixel and slice spacing the modality recorded in ``attrs`` or ``truth`` (any
    name :func:`~xrayflow.geometry.recorded_geometry` reads) replace ``geo``'s; the
    geometry goes into the attributes under its own names (:meth:`Geometry.attrs`), also
    when the truth is not kept. ``kw`` passes the modality's extra fields (``positions``,
    ``angles``).
    """
    rec = recorded_geometry(attrs, truth)
    geo = dataclasses.replace(
        geo,
        object_pixel=rec["object_pixel"] or geo.object_pixel,
        slice_spacing=rec["slice_spacing"] or geo.slice_spacing,
    )
    names = ATTR_NAMES + LEGACY_ATTR_NAMES
    attrs = {**{k: v for k, v in attrs.items() if k not in names}, **geo.attrs()}
    return DiffractionData(
        data=data if isinstance(data, StreamedFrames) else np.asarray(data, dtype=np.float32),
        energy_ev=geo.energy_ev,
        distance=geo.distance,
        pixel_size=geo.frame_pixel_size,
        centred=centred,
        mask=detector.good_pixels(centred=True) if detector.mask is not None else None,
        truth=truth if cfg["output"]["store_truth"] else {},
        attrs=attrs,
        **kw,
    )


# --------------------------------------------------------------------------- physical ranges
#: Photon energies of X-rays, eV (soft to hard; outside, optical constants and the
#: paraxial far-field model do not apply).
#: Detector pixel pitch, m (0.1 µm, the finest imaging cameras, to 10 mm).
PIXEL_RANGE_M = (1e-7, 1e-2)
#: Sample-detector distance of a far-field detector (``geometry.distance``), m (the
#: longest beamlines put detectors at ~150 m).
DISTANCE_RANGE_M = (1e-3, 200.0)
#: Near-field distances (``holography.distances``, ``geometry.source_distance``), m.
NEAR_DISTANCE_RANGE_M = (1e-6, 200.0)
#: Largest scattering angle N·p/(2z) (rad) that the paraxial far-field FFT model covers.
MAX_FAR_FIELD_ANGLE = 0.25
#: Largest Fresnel number a²/(λz) of the illuminated width a accepted as far field.
MAX_FAR_FIELD_FRESNEL = 1.0

_LENGTH_UNITS = ((1e-3, "mm"), (1e-6, "µm"), (1e-2, "cm"), (1e-9, "nm"))


def _length_hint(value: float, lo: float, hi: float, units=_LENGTH_UNITS) -> str:
    for factor, name in units:
        v = value * factor
        if lo <= v <= hi:
            return f"; did you mean {v:.6g} m ({value:g} {name})?"
    return ""


def _check_length(key: str, value, lo: float, hi: float, what: str, units=_LENGTH_UNITS):
    v = float(value)
    if not lo <= v <= hi:
        raise kerr(
            key,
            f"{v:g} m is outside the physical range of {what}, {lo:g} to {hi:g} m"
            + _length_hint(v, lo, hi, units),
        )


def check_length(key: str, value, lo: float, hi: float, what: str) -> None:
    """ConfigError naming ``key`` unless ``lo <= value <= hi`` (m), with a unit-slip hint."""
    _check_length(key, value, lo, hi, what)


def check_physical_ranges(cfg: dict, far_field: bool) -> None:
    """Energy, distances and pixel sizes in physical ranges (with unit-slip hints), and, for
    a far-field detector, its geometry within the paraxial model (ConfigError naming the
    key)."""

    problem = xray_energy_problem(cfg["energy_ev"])
    if problem:
        raise kerr("energy_ev", problem)
    g = cfg["geometry"]
    pixel_units = ((1e-6, "µm"), (1e-3, "mm"), (1e-9, "nm"))
    for i, p in enumerate(pair(g["pixel_size"])):
        key = "geometry.pixel_size" + (f"[{i}]" if isinstance(g["pixel_size"], list) else "")
        _check_length(key, p, *PIXEL_RANGE_M, "detector pixel sizes", pixel_units)
    _check_length("geometry.distance", g["distance"], *DISTANCE_RANGE_M, "detector distances")
    if g["source_distance"] is not None:
        if far_field:
            raise kerr(
                "geometry.source_distance",
                f"{cfg['modality']} is a far-field modality: the cone-beam source distance "
                "applies to near-field frames (holography, nearfield_ptycho); set the probe's "
                "focus with probe.<kind>.defocus, or null",
            )
        _check_length(
            "geometry.source_distance",
            g["source_distance"],
            *NEAR_DISTANCE_RANGE_M,
            "source distances",
        )
    if far_field:
        shape = pair(g["shape"])
        for n, p in zip(shape, pair(g["pixel_size"]), strict=True):
            angle = float(n) * float(p) / (2.0 * float(g["distance"]))
            if angle > MAX_FAR_FIELD_ANGLE:
                raise kerr(
                    "geometry.distance",
                    f"{float(g['distance']):g} m is too close for the {int(n)} pixels of "
                    f"{float(p):g} m: the detector edge is at a scattering angle "
                    f"N*p/(2z) = {angle:.3g} rad, beyond the paraxial far-field model "
                    f"(<= {MAX_FAR_FIELD_ANGLE:g} rad); increase geometry.distance or use "
                    "fewer or smaller pixels",
                )


def probe_extent(probe: np.ndarray, pixel_size: float) -> float:
    """Illuminated width of the probe modes, m: 4 × the larger rms radius of the total
    intensity (the 1/e² diameter 2w of a Gaussian beam)."""
    a = (np.abs(np.asarray(probe)) ** 2).reshape(-1, *probe.shape[-2:]).sum(axis=0)
    total = float(a.sum())
    ny, nx = a.shape
    y = np.arange(ny) - (ny - 1) / 2.0
    x = np.arange(nx) - (nx - 1) / 2.0
    py, px = a.sum(axis=1) / total, a.sum(axis=0) / total
    cy, cx = float(py @ y), float(px @ x)
    sy = math.sqrt(max(float(py @ (y - cy) ** 2), 0.0))
    sx = math.sqrt(max(float(px @ (x - cx) ** 2), 0.0))
    return 4.0 * max(sy, sx) * pixel_size


def check_far_field(cfg: dict, geo: Geometry, probe: np.ndarray, key: str) -> None:
    """The probe must span at least two object pixels (else the frames carry no
    ptychographic information) and satisfy the Fraunhofer condition
    ``F = a²/(λz) <= MAX_FAR_FIELD_FRESNEL`` for its illuminated width ``a``."""
    px = float(geo.object_pixel[1])
    a = probe_extent(probe, px)
    if a < 2.0 * px:
        raise kerr(
            key,
            f"the probe ({a:.3g} m wide) is narrower than two object pixels of "
            f"lambda*z/(N*p) = {px:.3g} m (geometry.distance = {geo.distance:g} m, "
            f"geometry.pixel_size = {geo.pixel_size[1]:g} m): make the object pixel smaller "
            "(shorter distance, larger or more detector pixels) or the probe larger",
        )
    fresnel = a * a / (geo.wavelength * geo.distance)
    if fresnel > MAX_FAR_FIELD_FRESNEL:
        raise kerr(
            "geometry.distance",
            f"{geo.distance:g} m is not in the far field of the {a:.3g} m wide probe: Fresnel "
            f"number a^2/(lambda*z) = {fresnel:.3g} > {MAX_FAR_FIELD_FRESNEL:g} "
            "(Fraunhofer needs << 1); increase geometry.distance, make the probe smaller, "
            "or use modality holography (near field)",
        )


# --------------------------------------------------------------------------- memory
def nbytes(*shape, itemsize: float) -> float:
    """Bytes of an array of ``shape`` with ``itemsize`` bytes per element."""
    return float(math.prod(int(s) for s in shape)) * itemsize


#: Peak bytes per voxel of generating a phantom and its delta/beta volumes (tracemalloc).
_PHANTOM_BYTES = {"battery_cathode": 100.0}
_PHANTOM_BYTES_DEFAULT = 24.0


def phantom_bytes(cfg: dict, shape) -> float:
    """Peak bytes of generating the configured phantom of ``shape`` and its δ/β volumes."""
    per_voxel = _PHANTOM_BYTES.get(cfg["phantom"]["type"], _PHANTOM_BYTES_DEFAULT)
    return nbytes(*shape, itemsize=per_voxel)
