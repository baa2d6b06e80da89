"""Loading measured / simulated data for reconstruction, checked against the config.

Two file kinds, chosen by ``data.format`` (``auto``: by suffix):

* CXI (``.cxi``/``.h5``), read with :func:`xrayflow.io.cxi.read_cxi` — positions in metres
  (probe centre relative to the object centre), energy, detector distance and pixel size.
* NumPy archives (``.npz`` or ``.npz.bz2``) — arrays named by ``data.keys``; geometry in
  pixel units (``geometry.units: pixels``), patterns uncentred unless ``data.centred``.

Everything is returned as a :class:`ReconData`: patterns with the zero frequency at index
``(0, 0)`` (float32 counts), a good-pixel mask, top-left corners of the probe window on the
object grid in (fractional) pixels, and the geometry in one unit system.

Under MPI the used frames are cut into fixed *chunks* of at most ``run.block_frames``
consecutive frames (never across a change of rotation angle; ``null``: one chunk per rank,
``ceil(P / ranks)`` frames); each rank owns a contiguous run of chunks
(:func:`xrayflow.parallel.partition`) and holds only their patterns — from a CXI file it
reads only those frames (a NumPy archive is loaded whole, then cut). Positions, angles, the
mask and per-frame totals are known on every rank.
"""

from __future__ import annotations

import bz2
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xrayflow.backend import ifftshift
from xrayflow.errors import ConfigError, DataError
from xrayflow.geometry import Geometry
from xrayflow.io.cxi import (
    check_counts,
    check_real_counts,
    read_cxi,
    read_cxi_geometry,
    read_cxi_meta,
)
from xrayflow.modalities import get_modality, modalities
from xrayflow.optics.constants import wavelength
from xrayflow.parallel import Comm, get_comm


@dataclass
class ReconData:
    """Inputs of the reconstruction, in memory order (y, x) and DC-at-corner patterns.

    ``intensities`` holds the frames ``local`` (rows of the P used frames) of this MPI
    rank; everything else describes all P used frames."""

    intensities: np.ndarray  # (len(local), ny, nx) float32
    mask: np.ndarray  # (ny, nx) bool, True = good pixel
    corners: np.ndarray  # (P, 2) float64, top-left corner of the window, object pixels
    object_shape: tuple  # (Ny, Nx)
    pixel_size: float  # object pixel (m, or 1.0 in pixel units)
    wavelength: float | None  # m (or object pixels), None if unknown and not needed
    distance: float | None
    energy_ev: float | None
    indices: np.ndarray  # indices of the used frames in the file
    probe: np.ndarray | None = None  # (M, ny, nx) complex or None
    slice_spacing: float | None = None
    distances: np.ndarray | None = None  # near field: per-frame propagation distances
    truth: dict = field(default_factory=dict)
    units: str = "metres"
    positions_m: np.ndarray | None = None  # (P, 2) as read (file units)
    angles: np.ndarray | None = None  # (P,) rotation angles, rad (tomography)
    volume_depth: int | None = None  # Z voxels of a tomography volume (from the truth)
    local: np.ndarray | None = None  # rows of the used frames held here (None: all)
    chunk_starts: np.ndarray | None = None  # first row of each chunk (None: one chunk)
    frame_totals: np.ndarray | None = None  # (P,) counts per frame over good pixels

    def __post_init__(self):
        if self.local is None:
            self.local = np.arange(self.intensities.shape[0])
        if self.chunk_starts is None:
            self.chunk_starts = np.zeros(1, np.int64)
        if self.frame_totals is None:
            self.frame_totals = self.intensities[:, self.mask].sum(axis=1, dtype=np.float64)

    @property
    def n_positions(self) -> int:
        return int(np.asarray(self.corners).shape[0])

    @property
    def frame_shape(self) -> tuple:
        return tuple(self.intensities.shape[-2:])


def _load_npz(path: Path) -> dict:
    try:
        if path.name.endswith(".bz2"):
            with bz2.open(path, "rb") as fh:
                raw = fh.read()
            arc = np.load(io.BytesIO(raw), allow_pickle=False)
        else:
            arc = np.load(path, allow_pickle=False)
        return {k: arc[k] for k in arc.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read NumPy archive: {exc}") from exc


def _subset(n: int, cfg: dict) -> np.ndarray:
    idx = np.arange(n)
    sub = cfg["data"]["subset"]
    if sub == "even":
        idx = idx[0::2]
    elif sub == "odd":
        idx = idx[1::2]
    mp = cfg["data"]["max_positions"]
    if mp is not None:
        idx = idx[:mp]
    return idx


def chunk_starts(n: int, block: int, angles=None) -> np.ndarray:
    """First row of each chunk: consecutive runs of at most ``block`` of ``n`` frames that
    do not cross a change of ``angles`` (as :meth:`TomoModel.frame_blocks`)."""
    runs = [0]
    if angles is not None and n:
        runs += (np.flatnonzero(np.diff(np.asarray(angles))) + 1).tolist()
    ends = [*runs[1:], n]
    return np.asarray([s for a, b in zip(runs, ends, strict=True) for s in range(a, b, block)])


def local_rows(starts: np.ndarray, n: int, comm: Comm) -> np.ndarray:
    """Rows of the chunks owned by ``comm``'s rank (a contiguous run of chunks)."""
    own = comm.partition(len(starts))
    bounds = [*np.asarray(starts).tolist(), n]
    return np.arange(bounds[own.start], bounds[own.stop], dtype=np.int64)


def _plan(cfg: dict, n_file: int, angles_file, comm: Comm):
    """Used frames (file indices), chunk starts and this rank's rows."""
    used = _subset(n_file, cfg)
    by_angle = _modality(cfg).rotation_series
    ang = None if angles_file is None or not by_angle else np.asarray(angles_file)[used]
    block = cfg["run"]["block_frames"] or max(1, -(-len(used) // comm.size))
    starts = chunk_starts(len(used), block, ang)
    return used, starts, local_rows(starts, len(used), comm)


def _modality(cfg: dict):
    return get_modality(cfg["model"]["type"], "model.type")


def _squeeze_to(a: np.ndarray, ndim: int, what: str, path) -> np.ndarray:
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim != ndim:
        raise DataError(f"{path}: {what} has shape {a.shape}, expected {ndim} dimensions")
    return a


def load_data(path, cfg: dict, comm: Comm | None = None) -> ReconData:
    """Read ``path`` according to the (validated) reconstruct config ``cfg``; only this
    rank's frames of ``comm`` (default: :func:`xrayflow.parallel.get_comm`)."""
    comm = comm or get_comm()
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {p} does not exist")
    if not p.is_file():
        raise DataError(f"data file {p} is a directory or not a regular file; give a CXI file")
    fmt = cfg["data"]["format"]
    if fmt not in ("auto", "cxi", "npz"):
        raise ConfigError(
            f"data.format: {fmt} reads one 3D volume (models of the phase-retrieval solver); "
            "frame stacks are read from cxi or npz files"
        )
    if fmt == "auto":
        fmt = "npz" if (p.name.endswith(".npz") or p.name.endswith(".npz.bz2")) else "cxi"
    rd = _read_npz(p, cfg, comm) if fmt == "npz" else _read_cxi(p, cfg, comm)
    _finish(rd, cfg, p, comm)
    return rd


def _read_npz(p: Path, cfg: dict, comm: Comm) -> ReconData:
    arrs = _load_npz(p)
    keys = cfg["data"]["keys"]
    for role in ("data", "positions"):
        if keys[role] not in arrs:
            raise DataError(
                f"{p}: array {keys[role]!r} ({role}) not found; arrays present: {sorted(arrs)}"
            )
    data = _squeeze_to(np.asarray(arrs[keys["data"]]), 3, "data", p)
    pos = _squeeze_to(np.asarray(arrs[keys["positions"]], dtype=np.float64), 2, "positions", p)
    probe = None
    if keys["probe"] in arrs:
        probe = np.asarray(arrs[keys["probe"]])
        while probe.ndim > 3 and probe.shape[0] == 1:
            probe = probe[0]
        if probe.ndim == 2:
            probe = probe[None]
    if pos.shape != (data.shape[0], 2):
        raise DataError(f"{p}: {data.shape[0]} patterns but positions of shape {pos.shape}")
    g = cfg["geometry"]
    if g["units"] != "pixels" and g["object_pixel_size"] is None:
        raise ConfigError(
            "geometry.units: NumPy archives carry no geometry; set "
            "geometry.units: pixels or geometry.object_pixel_size"
        )
    centred = bool(cfg["data"]["centred"]) if cfg["data"]["centred"] is not None else False
    idx, starts, local = _plan(cfg, data.shape[0], None, comm)
    check_real_counts(data.dtype, f"{p}: array {keys['data']!r}")  # before the cast
    data = np.asarray(data[idx[local]], dtype=np.float32)
    check_counts(data, idx[local], f"{p}: array {keys['data']!r}")
    if centred:
        data = ifftshift(data, axes=(-2, -1))
    pix = 1.0 if g["units"] == "pixels" else float(g["object_pixel_size"])
    if g["units"] == "pixels":
        lam = g["wavelength_px"]
    else:
        lam = None if g["energy_ev"] is None else float(wavelength(g["energy_ev"]))
    rd = ReconData(
        intensities=data,
        mask=np.ones(data.shape[-2:], bool),
        corners=pos,
        object_shape=None,
        pixel_size=pix,
        wavelength=lam,
        distance=g["distance"],
        energy_ev=g["energy_ev"],
        indices=idx,
        probe=probe,
        units=g["units"],
        positions_m=pos,
        local=local,
        chunk_starts=starts,
    )
    # positions are in pixel units (or metres if object_pixel_size given with units metres)
    rd.corners = pos / (1.0 if g["units"] == "pixels" else pix)
    return rd


def _read_cxi(p: Path, cfg: dict, comm: Comm) -> ReconData:
    try:
        n_file = read_cxi_meta(p)["n_frames"]
        pos_all, ang_all = read_cxi_geometry(p)
        idx, starts, local = _plan(cfg, n_file, ang_all, comm)
        want = idx[local]
        dd = read_cxi(p, indices=want if want.size else idx[:1])
    except OSError as exc:
        raise DataError(f"{p}: cannot read as CXI/HDF5: {exc}") from exc
    g = cfg["geometry"]
    data = np.asarray(dd.data, dtype=np.float32)[: want.size]
    if data.ndim != 3:
        raise DataError(f"{p}: patterns have shape {data.shape}, expected (P, ny, nx)")
    mod = _modality(cfg)
    _check_kind(dd.attrs.get("modality"), mod, p)
    centred = cfg["data"]["centred"]
    if mod.real_space_frames:
        if centred:
            raise ConfigError(
                f"data.centred: {mod.name} frames are real-space images, never FFT-shifted; "
                "remove data.centred"
            )
        centred = False
    elif centred is None:
        centred = bool(getattr(dd, "centred", True))
    if centred:
        data = ifftshift(data, axes=(-2, -1))
    truth = dict(dd.truth)
    geo = _geometry(dd, data.shape[-2:], cfg, p)
    if mod.far_field and g["units"] != "pixels":
        _check_far_field(geo, p, mod.name)
    if g["units"] == "pixels":
        pix = 1.0
        lam = g["wavelength_px"]
    else:
        lam = geo.wavelength
        pix = g["object_pixel_size"]
        if pix is None:  # real-space frames are stored on their own (binned) sample-plane grid
            own = geo.binned_object_pixel if mod.real_space_frames else geo.object_pixel
            if own is None:
                raise DataError(f"{p}: object pixel size unknown; set geometry.object_pixel_size")
            pix = own[1]
    mask = getattr(dd, "mask", None)
    mask = np.ones(data.shape[-2:], bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != data.shape[-2:]:
        raise DataError(f"{p}: mask shape {mask.shape} differs from patterns {data.shape[-2:]}")
    if centred:
        mask = ifftshift(mask)
    pos = np.zeros((n_file, 2)) if pos_all is None else np.asarray(pos_all, np.float64)
    probe = truth.get("probe") if cfg["init"]["probe"] in ("truth", "file") else None
    rd = ReconData(
        intensities=data,
        mask=mask,
        corners=pos / pix,
        object_shape=None,
        pixel_size=float(pix),
        wavelength=lam,
        distance=geo.distance,
        energy_ev=geo.energy_ev,
        indices=idx,
        probe=None if probe is None else np.asarray(probe),
        slice_spacing=geo.slice_spacing,
        truth=truth,
        units=g["units"],
        positions_m=pos,
        angles=ang_all,
        local=local,
        chunk_starts=starts,
    )
    # near field: the propagation distance in the sample plane; for a point source that is
    # the effective distance z1 z2 / (z1 + z2) of the magnification-corrected frames
    # (Fresnel scaling theorem)
    ds = g["distances"] if g["distances"] is not None else geo.effective_distances
    if ds is not None:
        ds = np.asarray(ds, np.float64).ravel()
        if ds.size == 1:
            ds = np.full(n_file, ds[0])
        elif ds.size != n_file:
            raise DataError(f"{p}: {ds.size} propagation distances for {n_file} frames")
        rd.distances = ds
    osh = dd.attrs.get("object_shape")
    if osh is None and "object" in truth:
        osh = np.asarray(truth["object"]).shape[-2:]
    if _modality(cfg).rotation_series and "delta" in truth:
        vol = np.asarray(truth["delta"]).shape
        osh, rd.volume_depth = (osh if osh is not None else vol[-2:]), int(vol[0])
    if osh is not None:
        rd.object_shape = tuple(int(v) for v in np.asarray(osh).ravel()[-2:])
    return rd


def _geometry(dd, frame_shape, cfg: dict, p: Path) -> Geometry:
    """The data file's geometry with the config's ``geometry.energy_ev``, ``distance`` and
    ``detector_pixel_size`` (the stored frames' pitch) in place of the file's."""
    g = cfg["geometry"]
    energy = g["energy_ev"] if g["energy_ev"] is not None else dd.energy_ev
    if not (np.isfinite(energy) and energy > 0):
        raise DataError(f"{p}: photon energy is missing; set geometry.energy_ev")
    mod = _modality(cfg)
    if mod.far_field and g["source_distance"] is not None:
        raise ConfigError(
            f"geometry.source_distance: {mod.name} is a far-field model (the cone-beam "
            "source distance sets near-field magnification); remove it"
        )
    dps = g["detector_pixel_size"]
    return Geometry.from_frames(
        energy,
        g["distance"] if g["distance"] is not None else dd.distance,
        dd.pixel_size if dps is None else (dps, dps),
        frame_shape,
        dd.attrs,
        dd.truth,
        far_field=not mod.real_space_frames,
        source_distance=g["source_distance"],
    )


#: Largest Fresnel number ``λz/p²`` of the far-field reconstruction's field of view
#: ``λz/p`` (detector pixel p at distance z) accepted for far-field frames; near-field
#: holograms recorded on fine camera pixels lie far above it.
MAX_FAR_FIELD_FRESNEL = 1.0


def _check_far_field(geo: Geometry, p: Path, name: str) -> None:
    """DataError when the frames cannot be far-field patterns: the Fresnel number of the
    field of view a far-field reconstruction would have, ``(λz/p)²/(λz) = λz/p²``, above
    :data:`MAX_FAR_FIELD_FRESNEL`."""
    pix = min(geo.frame_pixel_size)
    fresnel = geo.wavelength * geo.distance / pix**2
    if fresnel > MAX_FAR_FIELD_FRESNEL:
        raise DataError(
            f"{p}: the frames are not far-field patterns for {name}: detector pixel "
            f"{pix:.4g} m at {geo.distance:.4g} m gives a field of view lambda z/p whose "
            f"Fresnel number lambda z/p^2 = {fresnel:.3g} exceeds {MAX_FAR_FIELD_FRESNEL:g}. "
            f"Near-field holograms of a scanned sample: model.type {_names(near=True)} (cone "
            "beam: geometry.source_distance); or fix geometry.distance / "
            "geometry.detector_pixel_size"
        )


def _names(near: bool) -> str:
    """The registered models of scanned frames in the near (or far) field, for messages."""
    found = [
        k
        for k, m in modalities().items()
        if m.scanned
        and m.build_model is not None
        and m.solver == "gradient"
        and m.real_space_frames == near
        and not m.rotation_series
    ]
    return " or ".join(found) or "(none registered)"


def _check_kind(recorded, mod, p: Path) -> None:
    """DataError when the file records a modality of the other field regime (near-field
    frames given to a far-field model or the reverse)."""
    try:
        other = get_modality(str(recorded)) if recorded else None
    except ConfigError:
        return  # written by a modality not known here: decided by the geometry
    if other is not None and other.far_field != mod.far_field:
        kind = "far-field diffraction patterns" if other.far_field else "near-field images"
        raise DataError(
            f"{p}: the file holds {kind} ({recorded}); model.type {mod.name} expects "
            f"{'far-field patterns' if mod.far_field else 'near-field images'}"
        )


def _finish(rd: ReconData, cfg: dict, p, comm: Comm) -> None:
    """Positions -> window corners on the object grid (from all frames, so that subsets
    share one grid); then keep the frames of ``rd.indices``; consistency checks; the
    saturation mask and per-frame totals from every rank's frames."""
    g, m = cfg["geometry"], cfg["model"]
    data = rd.intensities  # counts checked when read: real, finite, >= 0
    mod = _modality(cfg)
    if data.shape[-1] != data.shape[-2] and not mod.real_space_frames:
        raise DataError(f"{p}: patterns must be square, got {data.shape[-2:]}")
    if rd.probe is not None:
        pr = np.asarray(rd.probe)
        if pr.ndim == 2:
            pr = pr[None]
        if pr.shape[-2:] != data.shape[-2:]:
            raise DataError(
                f"{p}: probe shape {pr.shape[-2:]} differs from the detector "
                f"shape {data.shape[-2:]}"
            )
        rd.probe = pr
    sat = cfg["data"]["mask_saturated_above"]
    if not rd.mask.any():
        raise DataError(f"{p}: the detector mask marks every pixel as bad (nothing to fit)")
    if sat is not None:
        hot = np.any(comm.allgather((data >= sat).any(axis=0)), axis=0)
        rd.mask = rd.mask & ~hot
        if not rd.mask.any():
            raise ConfigError(
                f"data.mask_saturated_above: {sat:g} counts masks every detector pixel of "
                f"{p} (some frame reaches it everywhere); raise it or set it to null"
            )
    mine = data.reshape(data.shape[0], -1)[:, rd.mask.ravel()].sum(axis=1, dtype=np.float64)
    rd.frame_totals = np.concatenate(comm.allgather(mine))
    if rd.frame_totals.size and not rd.frame_totals.any():
        raise DataError(
            f"{p}: all {rd.frame_totals.size} frames are zero over the good detector pixels "
            "(no counts to fit)"
        )
    c = np.asarray(rd.corners, np.float64)
    if g["flip_positions"]:
        c = c[:, ::-1]
    n = np.asarray(data.shape[-2:], np.float64)
    margin = m["object_margin_px"]
    osh = m["object_shape"] if m["object_shape"] is not None else rd.object_shape
    if not mod.scanned:
        _unscanned(rd, c, osh, m["type"], p)
        return
    _check_scan_span(c, rd, p, mod)
    if osh is None:
        _check_outliers(c, n, rd, p)
    if g["position_reference"] == "centre":
        if osh is None:
            # centre-relative: corner = centre + pos - n/2, with the grid sized to fit
            span = c.max(axis=0) - c.min(axis=0)
            osh = tuple(
                int(2 * np.ceil((s + n_ + 2 * margin) / 2)) for s, n_ in zip(span, n, strict=True)
            )
            mid = (c.max(axis=0) + c.min(axis=0)) / 2
            c = c - mid
        corners = (np.asarray(osh) // 2 - n.astype(int) // 2) + c  # as scans.positions_to_pixels
    else:
        corners = c
        if osh is None:
            corners = corners - corners.min(axis=0) + margin
            osh = tuple(
                int(np.ceil(v)) + int(n_) + margin
                for v, n_ in zip(corners.max(axis=0), n, strict=True)
            )
    osh = tuple(int(v) for v in osh)
    lo = np.floor(corners).min(axis=0)
    hi = (np.floor(corners) + n).max(axis=0)
    if (lo < 0).any() or hi[0] > osh[0] or hi[1] > osh[1]:
        raise DataError(
            f"{p}: scan positions fall off the object grid {osh} (probe windows "
            f"span rows {lo[0]:.0f}..{hi[0]:.0f}, columns {lo[1]:.0f}..{hi[1]:.0f}; "
            "enlarge model.object_shape or fix the pixel size)"
        )
    rd.corners = corners
    rd.object_shape = osh
    _take(rd)


def _unscanned(rd: ReconData, c: np.ndarray, osh, kind: str, p) -> None:
    """Frames that each see the whole object on their own grid (in-line near-field images): one
    position for all (windows at the origin), the object grid the frame grid."""
    if np.ptp(c, axis=0).max(initial=0.0) > 0:
        n = len(np.unique(c, axis=0))
        raise DataError(
            f"{p}: the frames were taken at {n} scan positions; {kind} models every frame on "
            f"one object grid and would ignore them. A scanned sample: model.type "
            f"{_names(near=True)} (near field) or {_names(near=False)} (far field)"
        )
    shape = tuple(rd.intensities.shape[-2:])
    rd.object_shape = tuple(int(v) for v in (osh if osh is not None else shape))
    if rd.object_shape != shape:
        raise DataError(
            f"{p}: {kind} needs the object grid {rd.object_shape} to equal the detector "
            f"shape {shape} (model.object_shape)"
        )
    rd.corners = np.zeros((c.shape[0], 2))
    _take(rd)


def _check_scan_span(c: np.ndarray, rd: ReconData, p, mod) -> None:
    """DataError when distinct scan positions span less than one object pixel: the pixel
    size is wrong (for cone-beam near-field frames typically the magnification is missing)."""
    if len(np.unique(c, axis=0)) < 2:
        return
    span = float(np.ptp(c, axis=0).max())
    if span >= 1.0:
        return
    unit = "" if rd.units == "pixels" else f" of {rd.pixel_size:.4g} m"
    fix = (
        "a cone beam's frames need geometry.source_distance (focus-sample, m): the object "
        "pixel is then the detector pixel / the magnification (z1 + z2)/z1"
        if mod.real_space_frames
        else "check geometry.energy_ev, geometry.distance, geometry.detector_pixel_size or "
        "set geometry.object_pixel_size"
    )
    raise DataError(
        f"{p}: the {c.shape[0]} scan positions span {span:.3g} object pixels{unit}, less than "
        f"one: the pixel size is wrong; {fix}"
    )


OUTLIER_FACTOR = 10.0


def _check_outliers(c: np.ndarray, n: np.ndarray, rd: ReconData, p) -> None:
    """Refuse scan positions far outside the scanned cluster before they size the object
    grid: a position farther from the median than :data:`OUTLIER_FACTOR` times (the
    cluster's extent + the frame size). The extent is the 75th percentile of the distances
    to the median (robust to a few outliers); needs at least 5 positions."""
    if c.shape[0] < 5:
        return
    d = np.abs(c - np.median(c, axis=0)).max(axis=1)  # px, per frame (all frames of the file)
    extent = float(np.quantile(d, 0.75))
    bad = np.flatnonzero(d > OUTLIER_FACTOR * (extent + float(n.max())))
    if bad.size:
        k = int(bad[np.argmax(d[bad])])
        unit = "px" if rd.units == "pixels" else "m"
        pix = 1.0 if rd.units == "pixels" else float(rd.pixel_size)
        raise DataError(
            f"{p}: the scan position of frame {k} lies {d[k] * pix:.3g} {unit} from the median "
            f"position, {d[k] / max(extent, 1e-9):.0f} x the extent of the scan "
            f"({extent * pix:.3g} {unit}); {bad.size} such outlier(s) (frames "
            f"{bad[:5].tolist()}) would make a huge object grid. Fix the positions or set "
            "model.object_shape"
        )


def _take(rd: ReconData) -> None:
    """Keep the used frames' geometry (the patterns were read for them already)."""
    idx = rd.indices
    rd.intensities = np.ascontiguousarray(rd.intensities)
    rd.corners = rd.corners[idx]
    if rd.angles is not None:
        rd.angles = np.asarray(rd.angles, np.float64)[idx]
    if rd.positions_m is not None:
        rd.positions_m = rd.positions_m[idx]
    if rd.distances is not None:
        rd.distances = rd.distances[idx]
