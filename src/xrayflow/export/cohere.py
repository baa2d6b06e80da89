"""The cohere phasing-results folder of a Bragg CDI result.

Layout followed: cohere-core 4.5.4 (``cohere_core/controller/phasing.py``: ``Rec.save_res``
writes ``image.npy``, ``support.npy``, ``coherence.npy`` (partial coherence only),
``errors.npy``, ``errors.txt``; ``cohere_core/utilities/ga_utils.py``: ``read_results``
reads ``image.npy``, ``support.npy`` and ``coherence.npy`` back, e.g. to continue phasing
with ``init_guess: continue``). The folder given with ``-o`` plays the part of a
``results_phasing`` folder of a cohere experiment.

==========================  ===============================================================
``image.npy``               complex64 (X, Y, Z): the complex density, the transpose of
                            xrayflow's ``object`` (Z, Y, X); values unscaled (Σ|ρ|² = Σ
                            counts; cohere's own files are scaled to max |ρ| = 1, which
                            cohere does not rely on when reading)
``support.npy``             int64 (X, Y, Z): 1 inside the support, 0 outside (cohere's
                            support dtype), the transpose of ``support``
``errors.npy``              float32 (iterations,): the loss per iteration
``errors.txt``              the same, one value a line
``xrayflow_export.json``    the source result, this layout, the axis order ``["x", "y",
                            "z"]``, ``voxel_size_m`` (x, y, z) or null in voxel units,
                            ``units``; cohere ignores it
==========================  ===============================================================

Axis order: cohere holds its arrays as the transpose of the TIFF stacks it reads and writes
(``utilities/utils.py``: ``read_tif``/``save_tif`` transpose), i.e. (x, y, z) with z the
rocking (frame) axis; xrayflow's volumes are (Z, Y, X) with Z the frame axis (docs/
data-format.md), hence the transpose. No ``coherence.npy`` is written (xrayflow models no
partial coherence), nor ``image.tif`` or ``metrics.txt`` (cohere's own summaries).

The folder is written atomically: into a temporary folder beside it, then renamed into
place; an existing folder is replaced only when it holds nothing but files of this layout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from xrayflow.errors import DataError, OutputError
from xrayflow.export.result import ResultFile
from xrayflow.io.atomic import remove_stale_temporaries, temporary_prefix

__all__ = ["read_results", "write_results"]

#: The layout version this module writes.
LAYOUT = "cohere-core 4.5.4 results_phasing folder (Rec.save_res / ga_utils.read_results)"
#: Files a cohere results folder may hold (an existing folder with others is not replaced).
COHERE_FILES = frozenset(
    {
        "image.npy",
        "support.npy",
        "coherence.npy",
        "errors.npy",
        "errors.txt",
        "metrics.txt",
        "image.tif",
        "xrayflow_export.json",
    }
)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def replace_folder(tmpdir: Path, target: Path) -> None:
    """Move the complete folder ``tmpdir`` onto ``target`` (a rename; an existing
    ``target`` is moved aside first and removed after, and put back on failure)."""
    if not target.exists():
        os.rename(tmpdir, target)
        return
    old = Path(tempfile.mkdtemp(prefix=temporary_prefix(target), dir=target.parent))
    old.rmdir()
    os.rename(target, old)
    try:
        os.rename(tmpdir, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_target(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise OutputError(
            f"-o {str(target)!r}: exists and is not a folder (cohere writes a folder)"
        )
    if target.is_dir():
        other = sorted(p.name for p in target.iterdir() if p.name not in COHERE_FILES)
        if other:
            raise OutputError(
                f"-o {str(target)!r}: the folder exists and holds other files "
                f"({', '.join(other[:5])}); give a new or empty folder for the cohere results"
            )


def write_results(result: ResultFile, out: str | os.PathLike) -> Path:
    """Write the cohere results folder ``out`` of the Bragg CDI result ``result`` (layout in
    the module docstring); returns ``out``."""
    target = Path(out)
    _check_target(target)
    rho = result.array("object")
    support = result.array("support")
    if rho.ndim != 3 or support.shape != rho.shape:
        raise DataError(
            f"{result.label}: expected a 3D object and a support of its shape; got "
            f"{rho.shape} and {support.shape}"
        )
    loss = np.asarray(result.array("loss") if result.has("loss") else [], np.float32).ravel()
    voxel = None
    if result.metric and result.has("voxel_size"):
        voxel = np.broadcast_to(np.asarray(result.array("voxel_size"), np.float64), 3)[::-1]
    meta = {
        "source": result.source(),
        "layout": LAYOUT,
        "axes": ["x", "y", "z"],
        "shape": [int(v) for v in rho.shape[::-1]],
        "voxel_size_m": None if voxel is None else [float(v) for v in voxel],
        "units": "metres" if voxel is not None else "voxels",
        "note": "image.npy and support.npy are the transposes of the xrayflow object and "
        "support (Z, Y, X)",
    }
    remove_stale_temporaries(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=temporary_prefix(target), dir=target.parent))
    try:
        np.save(tmpdir / "image.npy", np.ascontiguousarray(rho.astype(np.complex64).T))
        np.save(tmpdir / "support.npy", np.ascontiguousarray((support != 0).astype(np.int64).T))
        np.save(tmpdir / "errors.npy", loss)
        (tmpdir / "errors.txt").write_text("\n".join(repr(float(v)) for v in loss))
        (tmpdir / "xrayflow_export.json").write_text(json.dumps(meta, indent=2) + "\n")
        for p in tmpdir.iterdir():
            _fsync_file(p)
        os.chmod(tmpdir, 0o777 & ~_umask())
        replace_folder(tmpdir, target)
    finally:
        with contextlib.suppress(OSError):
            if tmpdir.exists():
                shutil.rmtree(tmpdir)
    return target


write_results.output_kind = "dir"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_results(folder: str | os.PathLike) -> dict:
    """``image``, ``support``, ``errors`` (arrays as cohere holds them, (x, y, z)) and
    ``meta`` (``xrayflow_export.json``, or None) of a cohere results folder."""
    d = Path(folder)
    if not (d / "image.npy").is_file():
        raise DataError(f"{str(d)!r}: no image.npy: not a cohere results folder")
    out: dict = {"image": np.load(d / "image.npy")}
    for name in ("support", "errors", "coherence"):
        p = d / f"{name}.npy"
        out[name] = np.load(p) if p.is_file() else None
    meta = d / "xrayflow_export.json"
    out["meta"] = json.loads(meta.read_text()) if meta.is_file() else None
    return out
