"""The ingest: beamline files → a Dask array over their HDF5 chunks → a CXI file, block by
block, so that memory stays bounded whatever the size of the files.

Steps of :func:`ingest`: open the master file and the frame datasets (external links
resolved), read the positions and the geometry, check the output path, plan the blocks of
frames within the memory limit, average the dark and flat frames, one pass over the frames
for the statistics the mask and crop need (pixels saturated in some frame, the mean frame's
centre of mass) when they are asked for, and the pass that corrects, crops, bins and stores
the frames in the CXI file (:func:`xrayflow.io.cxi.cxi_stream`: written atomically, one
frame per compressed chunk). Config keys: ``schemas/ingest.schema.json`` and
docs/data-format.md, section 7.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import dask
import dask.array as da
import h5py
import numpy as np

from xrayflow.errors import ConfigError, DataError
from xrayflow.ingest.corrections import (
    bin_good,
    centre_of_mass,
    crop_window,
    flat_response,
    to_photons,
)
from xrayflow.ingest.master import dataset, frame_datasets, frames_dataset, master_geometry
from xrayflow.ingest.master import pixel_mask as nexus_pixel_mask
from xrayflow.ingest.positions import read_positions
from xrayflow.io.cxi import MAX_DISTANCE_M, MAX_PIXEL_M, DiffractionData, check_counts, cxi_stream
from xrayflow.io.hdf5 import open_h5
from xrayflow.io.outputs import check_outputs
from xrayflow.memory import GiB, available_bytes, check_memory
from xrayflow.optics.constants import xray_energy_problem
from xrayflow.provenance import provenance

log = logging.getLogger("xrayflow.ingest")

#: partial results combined per step of a reduction over frames (mean, any)
SPLIT_EVERY = 4
#: raw bytes of one block of frames when the memory limit allows more
MAX_BLOCK_BYTES = 64 << 20
#: float32 frame copies per frame of a block in flight (photons, crop, bin, writer, spare)
FLOAT_COPIES = 5

Sources = list[tuple[str, h5py.Dataset]]


def ingest(cfg: dict, out: str | os.PathLike, config_file: str | None = None) -> str:
    """Ingest what the validated ``ingest`` config ``cfg`` names into the CXI file ``out``;
    returns a one-line summary. DataError, ConfigError, OutputError or ResourceError on bad
    input, before ``out`` exists (nothing is left behind)."""
    t0 = time.perf_counter()
    master = str(cfg["master"])
    with contextlib.ExitStack() as stack:
        mf = stack.enter_context(open_h5(master))
        sources = _frame_sources(cfg["frames"], mf, master, stack)
        n, shape = _frame_count(sources)
        pos = cfg["positions"]
        positions = read_positions(pos, master, n) if pos is not None else None
        recorded = master_geometry(mf, master)
        energy_ev, distance, pixel = _geometry(cfg["geometry"], recorded, master)
        inputs = _inputs(cfg, config_file, sources)
        check_outputs({"--out": out}, inputs)
        k = plan_blocks(shape, sources, n, cfg["compute"])
        stack.enter_context(
            dask.config.set(scheduler="threads", num_workers=cfg["compute"]["workers"])
        )
        dark, flat, bad, notes = _corrections(cfg, mf, master, shape, stack, k)
        raw = dask_frames(sources, k)
        ph = cfg["photons"]

        def photons(good: np.ndarray) -> da.Array:
            args = (dark, flat, ph["gain"], ph["offset"], ph["round"], good)
            return raw.map_blocks(to_photons, *args, dtype=np.float32)

        crop = cfg["crop"]
        saturation = _saturation(cfg["mask"]["saturation"], recorded)
        stats = {}
        if saturation is not None:
            stats["saturated"] = (raw >= saturation).any(axis=0, split_every=SPLIT_EVERY)
        if crop["shape"] is not None and crop["centre"] == "com":
            stats["total"] = photons(~bad).sum(axis=0, dtype=np.float64, split_every=SPLIT_EVERY)
        stats = dict(zip(stats, dask.compute(*stats.values()), strict=True))
        if "saturated" in stats:
            bad |= stats["saturated"]
            notes.append(f"{int(stats['saturated'].sum())} saturated")
        if bad.all():
            raise DataError(f"{master}: every detector pixel is masked ({', '.join(notes)})")
        ys, xs = _window(crop, recorded, stats.get("total"), ~bad, shape)
        frames, good = photons(~bad)[:, ys, xs], ~bad[ys, xs]
        b = _check_binning(cfg["binning"], good.shape)
        if b > 1:  # a bin with a bad detector pixel is bad, and 0
            good = bin_good(good, b)
            frames = da.where(good, da.coarsen(np.sum, frames, {1: b, 2: b}), np.float32(0))
        meta = {
            "energy_ev": energy_ev,
            "distance": distance,
            "pixel_size": (pixel[0] * b, pixel[1] * b),
            "centred": cfg["output"]["centred"],
            "positions": positions,
            "mask": None if good.all() else good,
            "attrs": _attrs(cfg["output"], b),
            "config": cfg,
            "provenance": provenance(
                cfg,
                inputs=sorted(set(inputs.values())),
                detector_window=[ys.start, ys.stop, xs.start, xs.stop],
            ),
        }
        _write(out, frames, meta, cfg["output"], f"{master} frames (after corrections)")
    ny, nx = frames.shape[1:]
    return (
        f"wrote {out}: {n} frames of {ny}x{nx} (detector rows {ys.start}..{ys.stop - 1}, "
        f"columns {xs.start}..{xs.stop - 1}, binning {b}), {energy_ev:g} eV, {distance:g} m; "
        f"masked detector pixels: {', '.join(notes) or 'none'}; {int((~good).sum())} bad "
        f"pixels written; {time.perf_counter() - t0:.1f} s"
    )


def _corrections(cfg: dict, mf: h5py.File, master: str, shape, stack, k: int):
    """``(dark, flat, bad, notes)``: the mean dark frame (float32 ADU) and the normalised
    flat response, None when not configured; the bad detector pixels of the NXdetector
    ``pixel_mask``, the mask files and the flat field; what each contributed (text)."""
    bad, notes = _static_bad(cfg["mask"], mf, master, shape)
    dark = _mean_frame(cfg["dark"], "dark", mf, master, shape, stack, k)
    flat = None
    if cfg["flat"] is not None:
        flat_mean = _mean_frame(cfg["flat"], "flat", mf, master, shape, stack, k)
        offset, min_response = cfg["photons"]["offset"], cfg["flat"]["min_response"]
        flat, good_flat = flat_response(flat_mean, dark, offset, min_response)
        bad |= ~good_flat
        notes.append(f"{int((~good_flat).sum())} flat-field")
    return None if dark is None else dark.astype(np.float32), flat, bad, notes


# --------------------------------------------------------------------------- inputs
def _frame_sources(fr: dict, mf: h5py.File, master: str, stack) -> Sources:
    """``(label, dataset)`` of every frame dataset, in frame order: ``frames.files`` (each
    holding ``frames.key``) or the master's frames (``frames.dataset``)."""
    if not fr["files"]:
        return frame_datasets(mf, master, fr["dataset"])
    out = []
    for path in fr["files"]:
        f = stack.enter_context(open_h5(path))
        out.append((f"{path}:{fr['key']}", frames_dataset(f, fr["key"], str(path))))
    return out


def _frame_count(sources: Sources) -> tuple[int, tuple[int, int]]:
    """Total frames and the frame shape ``(ny, nx)``, the same in every dataset."""
    shape = tuple(int(s) for s in sources[0][1].shape[-2:])
    for label, ds in sources:
        if tuple(ds.shape[-2:]) != shape:
            raise DataError(
                f"{label}: frames of {ds.shape[-2:]} pixels, but {sources[0][0]} has {shape}"
            )
    return sum(ds.shape[0] if ds.ndim == 3 else 1 for _, ds in sources), shape


def _inputs(cfg: dict, config_file, sources: Sources) -> dict[str, str]:
    """Every file the ingest reads, by the config key that names it (link targets too)."""
    out = {"--config": config_file, "master": cfg["master"]}
    out.update({f"frames[{i}]": ds.file.filename for i, (_, ds) in enumerate(sources)})
    for key in ("positions", "dark", "flat"):
        if cfg[key] is not None:
            out[f"{key}.file"] = cfg[key]["file"]
    for i, m in enumerate(cfg["mask"]["files"]):
        out[f"mask.files[{i}]"] = m["file"]
    return {k: str(v) for k, v in out.items() if v is not None}


def _geometry(over: dict, rec: dict, master: str) -> tuple[float, float, tuple[float, float]]:
    """Energy (eV), distance (m) and detector pixel ``(y, x)`` (m, before binning): the
    config's ``geometry`` values, else the master file's."""
    what = {
        "energy_ev": "photon energy (beam/incident_energy, monochromator/energy or "
        "beam/incident_wavelength)",
        "distance": "detector distance (detector/detector_distance or detector/distance)",
        "pixel_size": "pixel size (detector/x_pixel_size, y_pixel_size)",
    }
    values = {}
    for key, text in what.items():
        if over[key] is not None:
            values[key] = over[key]
        elif rec[key] is not None:
            values[key] = rec[key][0]
        else:
            raise DataError(f"{master}: no {text}; set ingest.geometry.{key}")
    energy, distance, pixel = values["energy_ev"], values["distance"], values["pixel_size"]
    pixel = tuple(float(p) for p in (pixel if isinstance(pixel, list | tuple) else (pixel,) * 2))
    problem = xray_energy_problem(energy)
    where = {k: "ingest.geometry." + k if over[k] is not None else rec[k][1] for k in what}
    if problem:
        raise DataError(f"{where['energy_ev']}: {problem}")
    if not 0 < distance <= MAX_DISTANCE_M:
        raise DataError(f"{where['distance']}: {distance:g} m is not a detector distance")
    if not all(0 < p <= MAX_PIXEL_M for p in pixel):
        raise DataError(f"{where['pixel_size']}: {pixel} m is not a detector pixel size")
    return float(energy), float(distance), pixel


def _mean_frame(section: dict | None, name: str, mf, master: str, shape, stack, k: int):
    """Mean frame (float64, ADU) of the dark or flat frames ``section`` (``file`` None: the
    master file), None without a section; DataError when their frames are not of the
    detector's ``shape``."""
    if section is None:
        return None
    path = section["file"] or master
    f = mf if section["file"] is None else stack.enter_context(open_h5(path))
    ds = frames_dataset(f, section["key"], path)
    label = f"{path}:{section['key']} ({name})"
    if tuple(ds.shape[-2:]) != shape:
        raise DataError(
            f"{label}: frames of {tuple(ds.shape[-2:])} pixels, the detector has {shape}"
        )
    return dask_frames([(label, ds)], k).mean(axis=0, split_every=SPLIT_EVERY).compute()


def _static_bad(mask: dict, mf: h5py.File, master: str, shape) -> tuple[np.ndarray, list[str]]:
    """Bad detector pixels (True) of the NXdetector ``pixel_mask`` and the mask files, and
    how many each contributed (for the summary)."""
    bad = np.zeros(shape, dtype=bool)
    notes = []
    found = nexus_pixel_mask(mf, master) if mask["detector"] else None
    masks = [] if found is None else [found]
    masks += [_mask_file(m) for m in mask["files"]]
    for m, where in masks:
        m = m.reshape(m.shape[-2:]) if m.ndim == 3 and m.shape[0] == 1 else m
        if m.shape != shape:
            raise DataError(f"{where}: mask of shape {m.shape}, the detector has {shape}")
        bad |= m
        notes.append(f"{int(m.sum())} from {where}")
    return bad, notes


def _mask_file(m: dict) -> tuple[np.ndarray, str]:
    """A mask of ``mask.files`` as bool True = bad: ``.npy`` or an HDF5 dataset ``key``."""
    path = m["file"]
    if not Path(path).is_file():
        raise DataError(f"mask file {str(path)!r} does not exist")
    if str(path).endswith(".npy"):
        try:
            arr, where = np.load(path, allow_pickle=False), str(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy mask ({exc})") from None
    else:
        if m["key"] is None:
            raise ConfigError(f"ingest.mask.files: {path} is not .npy: give its key (dataset)")
        with open_h5(path) as f:
            arr, where = np.asarray(dataset(f, m["key"], str(path))[()]), f"{path}:{m['key']}"
    return (arr != 0) if m["bad"] == "nonzero" else (arr == 0), where


def _saturation(value, rec: dict) -> float | None:
    """Raw value (ADU) from which a pixel counts as saturated, None: no such masking."""
    if value == "detector":
        return None if rec["saturation"] is None else rec["saturation"][0]
    return value


def _window(crop: dict, rec: dict, total, good, shape) -> tuple[slice, slice]:
    """The detector rows and columns kept: the ``crop.shape`` window around the centre
    (``com``: the mean frame's centre of mass; ``nexus``: the beam centre the master file
    records; or ``[y, x]``), or all."""
    if crop["shape"] is None:
        return slice(0, shape[0]), slice(0, shape[1])
    centre = crop["centre"]
    if centre == "com":
        centre = centre_of_mass(total, good)
    elif centre == "nexus":
        if rec["centre"] is None:
            raise DataError(
                "ingest.crop.centre: nexus, but the master file records no "
                "detector/beam_center_x and beam_center_y"
            )
        centre = rec["centre"][0]
    return crop_window(centre, crop["shape"], shape)


def _check_binning(b: int, shape: tuple[int, int]) -> int:
    if shape[0] % b or shape[1] % b:
        raise ConfigError(
            f"ingest.binning: {b} does not divide the {shape[0]}x{shape[1]} frames; choose a "
            "crop.shape that is a multiple of it"
        )
    return b


def _attrs(output: dict, b: int) -> dict:
    attrs = {"binning": b}
    for key in ("modality", "description"):
        if output[key] is not None:
            attrs[key] = output[key]
    return attrs


# --------------------------------------------------------------------------- Dask
class _Reader:
    """An h5py dataset for :func:`dask.array.from_array` whose read errors (a corrupt or
    truncated chunk) are DataErrors naming the file, the dataset and the frames."""

    def __init__(self, label: str, ds: h5py.Dataset):
        self.label, self.ds = label, ds
        self.shape, self.dtype, self.ndim = ds.shape, ds.dtype, ds.ndim

    def __getitem__(self, idx):
        try:
            return self.ds[idx]
        except (OSError, RuntimeError, ValueError) as exc:
            rows = idx[0] if isinstance(idx, tuple) else idx
            where = f"frames {rows.start}..{rows.stop - 1}" if isinstance(rows, slice) else "frames"
            raise DataError(
                f"{self.label}: cannot read {where} (corrupt or truncated?): {exc}"
            ) from None


def dask_frames(sources: Sources, k: int) -> da.Array:
    """One Dask array ``(P, ny, nx)`` over the frame datasets, ``k`` frames per block (a
    block never spans two datasets), read lazily through h5py."""
    parts = []
    for label, ds in sources:
        chunks = (min(k, ds.shape[0]), *ds.shape[1:]) if ds.ndim == 3 else ds.shape
        arr = da.from_array(_Reader(label, ds), chunks=chunks, lock=True, name=False)
        parts.append(arr if ds.ndim == 3 else arr[None])
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


def plan_blocks(shape: tuple[int, int], sources: Sources, n: int, comp: dict) -> int:
    """Frames per Dask block: ``compute.block_frames``, or as many as fit in half the
    memory limit with ``compute.workers`` blocks in flight (a multiple of the frames per
    HDF5 chunk, at most :data:`MAX_BLOCK_BYTES` of raw data). ResourceError (naming
    ``compute.max_memory_gb``) when even one HDF5 chunk per worker does not fit."""
    npx = shape[0] * shape[1]
    itemsize = max(ds.dtype.itemsize for _, ds in sources)
    chunk = max((ds.chunks or (1,))[0] if ds.ndim == 3 else 1 for _, ds in sources)
    per_frame = npx * (itemsize + 4 * FLOAT_COPIES)
    workers = comp["workers"]
    fixed = npx * (8 + 1) * (SPLIT_EVERY + workers) + npx * 4 * 4  # reductions; dark, flat, ...
    k = comp["block_frames"]
    if k is None:
        limit = available_bytes()
        if comp["max_memory_gb"] is not None:
            limit = min(limit, comp["max_memory_gb"] * GiB)
        fit = int((limit / 2 - fixed) // (workers * per_frame))
        cap = max(1, MAX_BLOCK_BYTES // (npx * itemsize))
        k = max(chunk, min(fit, cap) // chunk * chunk)
    k = max(1, min(k, n))
    blocks = f"{workers} blocks of {k} frames of {shape[0]}x{shape[1]} in flight"
    parts = {blocks: workers * k * per_frame, "dark, flat, mask and reductions": fixed}
    check_memory(parts, "ingest", comp["max_memory_gb"], key="ingest.compute.max_memory_gb")
    log.info("ingest: %d frames per block, %d workers", k, workers)
    return k


class _FrameWriter:
    """Target of :func:`dask.array.store`: blocks of frames go into the streamed CXI
    frames, checked first (finite, non-negative: DataError naming ``source`` and the
    frame), with a progress line (elapsed time, ETA) every tenth of the frames."""

    def __init__(self, frames, source: str):
        self.frames, self.source = frames, source
        self.done, self.t0, self.next = 0, time.perf_counter(), 0.1

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        rows = key[0]
        check_counts(block, np.arange(rows.start, rows.stop), self.source)
        self.frames[rows] = block
        self.done += block.shape[0]
        n = len(self.frames)
        if self.done >= self.next * n:
            dt = time.perf_counter() - self.t0
            eta = dt * (n - self.done) / self.done
            pct = 100 * self.done / n
            log.info(
                "ingest: %d/%d frames (%.0f%%), %.1f s, ETA %.1f s", self.done, n, pct, dt, eta
            )
            self.next = (self.done / n) + 0.1


def _write(out, frames: da.Array, meta: dict, output: dict, source: str) -> None:
    """Store ``frames`` block by block in the CXI file ``out`` and finish it with ``meta``
    (the other :class:`DiffractionData` fields), atomically: nothing under ``out`` on
    failure."""
    compression = None if output["compression"] == "none" else output["compression"]
    with cxi_stream(out, compression, output["level"]) as s:
        target = s.create_frames(*frames.shape)
        da.store(frames, _FrameWriter(target, source), lock=True)
        s.finish(DiffractionData(data=target, **meta))
