"""A reconstruction result opened for export: its modality, datasets and geometry.

:func:`read_result` opens a file written by ``xrayflow reconstruct`` (docs/data-format.md,
section 4) and returns a :class:`ResultFile`; the writers of :mod:`xrayflow.export` read
the arrays they need from it (:meth:`ResultFile.array`), each read naming the file and the
dataset when it fails. Units are those of the result: metres, radians, eV; arrays are
C-ordered ``(..., y, x)``, volumes ``(z, y, x)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import yaml

from xrayflow.config import SafeLoader
from xrayflow.errors import DataError
from xrayflow.io.hdf5 import open_h5

__all__ = ["ResultFile", "read_result"]


def _decode(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class ResultFile:
    """An xrayflow reconstruction result (HDF5) being exported.

    Attributes:
        path: the result file.
        modality: the modality that made it (the root attribute ``model``).
        attrs: the root attributes (``units``, ``energy_ev``, ``distance``, ...).
        names: the datasets it holds (paths without the leading ``/``).
        data_path: the data file it was reconstructed from (``xrayflow export --data``),
            read for geometry the result does not record (the detector distance of older
            results), or None.
    """

    path: Path
    modality: str
    attrs: dict
    names: frozenset
    data_path: Path | None = None
    _config: dict | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return repr(str(self.path))

    def has(self, name: str) -> bool:
        """Whether the result holds the dataset ``name``."""
        return name in self.names

    def array(self, name: str) -> np.ndarray:
        """The dataset ``name`` as an array (its stored dtype); DataError naming the file and
        the dataset when it is missing or cannot be read."""
        if name not in self.names:
            raise DataError(
                f"{self.label}: no dataset {name!r} in this {self.modality} result; it cannot be "
                "exported in this format (was it written by xrayflow reconstruct?)"
            )
        try:
            with h5py.File(self.path, "r") as f:
                return np.asarray(f[name][()])
        except (OSError, KeyError, RuntimeError) as exc:
            raise DataError(f"{self.label}: cannot read {name!r}: {exc}") from None

    def scalar(self, name: str) -> float:
        """A scalar dataset as a float (see :meth:`array`)."""
        return float(np.asarray(self.array(name)).ravel()[0])

    def config(self) -> dict:
        """The stored config (the ``config`` dataset, YAML), or ``{}``."""
        if self._config is None:
            self._config = {}
            if "config" in self.names:
                text = self.array("config")
                text = text.item() if isinstance(text, np.ndarray) else text
                text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
                loaded = yaml.load(text, Loader=SafeLoader)
                self._config = loaded if isinstance(loaded, dict) else {}
        return self._config

    @property
    def metric(self) -> bool:
        """The result's lengths are in metres (not pixel or voxel units)."""
        return str(self.attrs.get("units", "metres")) not in ("pixels", "voxels")

    def require_metres(self, fmt: str) -> None:
        """DataError when the result is in pixel units, which ``fmt`` cannot represent."""
        if not self.metric:
            raise DataError(
                f"{self.label}: the result is in {self.attrs.get('units')} units (no object "
                f"pixel size in metres), which the {fmt} format cannot hold; reconstruct with "
                "geometry.units: metres"
            )

    def pixel_size(self) -> float:
        """The object pixel (m): the ``pixel_size`` dataset."""
        pix = self.scalar("pixel_size")
        if not (math.isfinite(pix) and pix > 0):
            raise DataError(f"{self.label}: pixel_size {pix!r} is not a positive length")
        return pix

    def energy_ev(self) -> float:
        """Photon energy (eV): the root attribute ``energy_ev`` (Bragg CDI: the dataset
        ``geometry/energy_ev``); DataError when neither is recorded."""
        e = self.attrs.get("energy_ev")
        if (e is None or not math.isfinite(float(e))) and self.has("geometry/energy_ev"):
            e = self.scalar("geometry/energy_ev")
        if e is None or not math.isfinite(float(e)) or float(e) <= 0:
            raise DataError(f"{self.label}: the result records no photon energy (energy_ev)")
        return float(e)

    def distance(self, near_field: bool = False) -> float:
        """The propagation distance (m) an exported product records: far field the
        sample-detector distance, near field the sample-plane distance of the frames.

        Looked up in the result's root attributes (``distance``; near field
        ``propagation_distance``), its config (``geometry.distance``), then the data file
        given as ``data_path`` (its recorded geometry); DataError saying how to give it when
        none has it.
        """
        key = "propagation_distance" if near_field else "distance"
        d = self.attrs.get(key)
        if d is None or not math.isfinite(float(d)):
            d = None
            geo = self.config().get("geometry") or {}
            if not near_field and geo.get("distance") is not None:
                d = float(geo["distance"])
        if d is None and self.data_path is not None:
            from xrayflow.io.cxi import read_cxi_meta

            g = read_cxi_meta(self.data_path)["geometry"]
            if near_field and g.effective_distances:
                d = float(g.effective_distances[0])
            elif g.distance:
                d = float(g.distance)
        if d is None or not math.isfinite(float(d)) or float(d) <= 0:
            raise DataError(
                f"{self.label}: the result records no {'propagation' if near_field else 'detector'}"
                " distance (results written before the distance was stored); give the data "
                "file it was reconstructed from with --data DATA.cxi"
            )
        return float(d)

    def source(self) -> str:
        """One line naming the result (for the exported files' comments)."""
        from xrayflow import __version__

        return f"exported by xrayflow {__version__} from {self.path.name} ({self.modality})"


def read_result(path: str | os.PathLike, data_path: str | os.PathLike | None = None) -> ResultFile:
    """Open the result ``path``; DataError naming it when it is missing, not HDF5, or not an
    xrayflow result (no root attribute ``model`` naming the modality)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{str(p)!r}: is a directory, not a result file")
    names: set[str] = set()
    with open_h5(p) as f:
        attrs = {k: _decode(v) for k, v in f.attrs.items()}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                names.add(name)

        f.visititems(visit)
    modality = attrs.get("model")
    if not isinstance(modality, str) or not modality:
        raise DataError(
            f"{str(p)!r}: not an xrayflow reconstruction result (no root attribute 'model' "
            "naming the modality)"
        )
    if data_path is not None and not Path(data_path).is_file():
        raise DataError(f"--data {str(data_path)!r}: file does not exist")
    return ResultFile(
        path=p,
        modality=modality,
        attrs=attrs,
        names=frozenset(names),
        data_path=None if data_path is None else Path(data_path),
    )
