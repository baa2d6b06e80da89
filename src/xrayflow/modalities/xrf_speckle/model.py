"""The differentiable model of speckle-illuminated X-ray fluorescence, for the linear-inverse
solver (:mod:`xrayflow.solvers.linear_inverse`, whose model interface it implements).

Counts of pattern k in the fluorescence line of element e::

    y[k, e] = s_e · Σ_r I_k(r) · c_e(r)  +  Σ_j β_ej · d[k, j]

``I_k`` the recorded illumination (photons per pixel), ``c_e`` the element's areal mass
(g/cm²), ``s_e`` the line's sensitivity (counts per photon per g/cm², the data file's
``sensitivity``), ``d[k, j]`` the counts of diffuser line j in pattern k and ``β_ej >= 0``
the spill of diffuser line j into line e (estimated with the maps, or absent with
``background: false``). The first term is
:class:`xrayflow.operators.PatternProjection` through :func:`xrayflow.ad.linear`, the same
operator the simulation computes the expected counts with.

The unknowns are held in normalised units: maps in units of ``c̄_e`` (the uniform map that
gives the line's mean counts ``ȳ_e``), spills in units of ``ȳ_e / (d̄_j·√(ny·nx))`` (``d̄_j``
the diffuser line's mean counts), so that step sizes and prior weights do not depend on the
dose.
"""

from __future__ import annotations

import numpy as np

from xrayflow import ad
from xrayflow.errors import DataError
from xrayflow.modalities.xrf_speckle.fluorescence import DIFFUSER, SAMPLE
from xrayflow.operators import PatternProjection


class XRFSpeckleModel:
    """Element maps (E, ny, nx) and background spills (E, D) behind the counts of the
    patterns this rank holds (see the module docstring; the solver's interface).

    Args:
        patterns: (R, ny, nx) illumination of this rank's rows (photons per pixel).
        rows: (R,) their global indices (consecutive).
        signals: the data file's signals of every pattern: ``counts`` (K, L), per line
            ``line_kind`` (``sample`` | ``diffuser``), ``line_names``, ``line_elements``,
            ``sensitivity``; ``transmission`` (ny, nx) for the gradient prior (optional).
        mean_total: mean over all patterns of ``Σ_r I_k(r)`` (photons per pattern).
        loss: ``poisson`` (negative log-likelihood less its minimum) or ``gaussian``
            (``½ Σ (ŷ − y)² / v_e``, ``v_e`` the line's mean counts: the Poisson variance).
        background: estimate the diffuser spills (when there are diffuser lines).
        backend: the array backend (its ``xp`` and real dtype hold the arrays).
    """

    image = "maps"

    def __init__(self, patterns, rows, signals, mean_total, loss, background, backend):
        xp, dt = backend.xp, backend.real_dtype
        self.backend, self.loss = backend, loss
        kinds = np.asarray(signals["line_kind"]).astype(str)
        names = np.asarray(signals["line_names"]).astype(str)
        counts = np.asarray(signals["counts"], np.float64)
        sample, diffuser = kinds == SAMPLE, kinds == DIFFUSER
        self.names = {
            "elements": np.asarray(signals["line_elements"]).astype(str)[sample].tolist(),
            "lines": names[sample].tolist(),
            "diffuser_lines": names[diffuser].tolist(),
        }
        self.n_rows, self.shape = counts.shape[0], tuple(patterns.shape[1:])
        self.rows = np.asarray(rows, np.int64)
        self.offset = int(self.rows[0]) if self.rows.size else 0
        y = counts[:, sample]
        self.mean_counts = np.maximum(y.mean(axis=0), 1.0)  # ȳ_e (>= 1 count)
        s = np.asarray(signals["sensitivity"], np.float64)[sample]
        self.map_unit = self.mean_counts / (s * mean_total)  # c̄_e, g/cm²
        self.projection = xp.asarray(patterns, dtype=dt)
        self.weights = s * self.map_unit  # counts per photon of a unit (normalised) map
        self.counts = xp.asarray(y[self.rows], dtype=dt)
        self.whiten = xp.asarray(1.0 / np.sqrt(self.mean_counts), dtype=dt)
        self.diffuser_counts = counts[self.rows][:, diffuser]
        d_mean = np.maximum(counts[:, diffuser].mean(axis=0), 1.0)  # d̄_j
        self.background = bool(background) and diffuser.any()
        # ȳ_e / (d̄_j √(ny·nx)): a unit spill gives the line's mean counts over √(ny·nx),
        # between a unit map pixel and a unit uniform map (the scales L-BFGS-B balances)
        npix = self.shape[0] * self.shape[1]
        self.spill_unit = self.mean_counts[:, None] / d_mean[None, :] / np.sqrt(npix)
        # the counts of a unit (normalised) spill, (R, E, D)
        unit = self.diffuser_counts[:, None, :] * self.spill_unit[None]
        self.diffuser = xp.asarray(unit, dtype=dt)
        T = signals.get("transmission")
        self.prior_image = None if T is None else xp.asarray(T, dtype=dt)
        self.lower_bounds = {"maps": 0.0, "spill": 0.0} if self.background else {"maps": 0.0}
        # the Poisson term's minimum per row (at ŷ = y), subtracted so that it is >= 0
        yl = y[self.rows]
        self.poisson_minimum = (yl - yl * np.log(np.maximum(yl, 1e-300))).sum(axis=1)

    def _local(self, rows):
        """Indices of ``rows`` into this rank's arrays: a slice (a view) when consecutive."""
        i = np.asarray(rows, np.int64) - self.offset
        if i.size and i[-1] - i[0] + 1 == i.size:
            return slice(int(i[0]), int(i[-1]) + 1)
        return i

    # -- the solver's interface ---------------------------------------------------------
    def initial_params(self) -> dict:
        """Uniform maps that give the mean counts, no spill."""
        xp, dt = self.backend.xp, self.backend.real_dtype
        params = {"maps": xp.ones((len(self.weights), *self.shape), dtype=dt)}
        if self.background:
            params["spill"] = xp.zeros(self.spill_unit.shape, dtype=dt)
        return params

    def predict(self, params, rows):
        """Expected counts (len(rows), E) of ``rows`` (linear in the unknowns)."""
        i = self._local(rows)
        op = PatternProjection(self.projection[i], self.weights)
        pred = ad.linear(op, params["maps"])
        if self.background:  # Σ_j β_ej d[k, j]
            pred = pred + ad.sum(self.diffuser[i] * params["spill"], axis=-1)
        return pred

    def target(self, rows):
        return self.counts[self._local(rows)]

    def whitening(self, rows):
        return self.whiten

    def block_loss(self, params, rows):
        """The data term of ``rows`` (a real scalar Tensor)."""
        pred, y = self.predict(params, rows), self.target(rows)
        if self.loss == "gaussian":
            return 0.5 * ad.sum(ad.abs2((pred - y) * self.whiten))
        eps = 1e-6  # counts: keeps the log finite where a prediction reaches 0
        nll = ad.sum(pred - ad.log(pred + eps) * y)
        return nll - float(self.poisson_minimum[self._local(rows)].sum())

    def physical(self, params) -> dict:
        """The unknowns (NumPy, normalised) in physical units: ``maps`` (E, ny, nx) g/cm²,
        ``spill`` (E, D) counts per diffuser count (None without background estimation)."""
        maps = np.asarray(params["maps"], np.float64) * self.map_unit[:, None, None]
        spill = None
        if self.background:
            spill = np.asarray(params["spill"], np.float64) * self.spill_unit
        return {"maps": maps, "spill": spill}

    def result_entries(self, maps, spill) -> dict:
        """The result file's datasets of ``maps`` (E, ny, nx) g/cm² and ``spill`` (E, D) or
        None: ``maps`` float32 g/cm², ``elements`` and ``lines`` (E,) (e.g. "Co", "Co Ka"),
        ``background_spill`` float64 (E, D) counts in the map's line per count of diffuser
        line j (zeros when not estimated), ``diffuser_lines`` (D,)."""
        return {
            "maps": np.asarray(maps, np.float32),
            "elements": self.names["elements"],
            "lines": self.names["lines"],
            "background_spill": np.zeros(self.spill_unit.shape) if spill is None else spill,
            "diffuser_lines": self.names["diffuser_lines"],
        }

    def network_inputs(self) -> dict:
        """The measurements in physical units, for a network fitted to them
        (:func:`xrayflow.networks.siren.fit_siren`'s arguments): ``patterns``, ``counts``
        (K, E), ``sensitivity`` (E,), ``shape``, ``prior`` (or None) and ``background``
        (K, D diffuser counts, or None without background estimation)."""
        to_np = self.backend.to_numpy
        return {
            "patterns": to_np(self.projection),
            "counts": to_np(self.counts),
            "sensitivity": self.weights / self.map_unit,
            "shape": self.shape,
            "prior": None if self.prior_image is None else to_np(self.prior_image),
            "background": self.diffuser_counts if self.background else None,
        }


def build_model(cfg: dict, data, backend) -> XRFSpeckleModel:
    """The model of the reconstruct stage's measurements ``data`` (this rank's patterns
    ``frames`` and their ``rows``, the ``signals`` of every pattern, ``mean_total``,
    ``source``: the file) with the settings of the ``linear_inverse`` section; DataError
    naming the dataset for signals that do not describe element lines."""
    s = data.signals
    where = f"{data.source!r}: entry_1/xrayflow_signals"
    for key in ("line_kind", "line_names", "line_elements", "sensitivity"):
        if key not in s or np.shape(s[key]) != np.shape(s["counts"])[1:]:
            raise DataError(f"{where}/{key}: missing or not one entry per line of counts")
    kinds = np.asarray(s["line_kind"]).astype(str)
    sens = np.asarray(s["sensitivity"], np.float64)[kinds == SAMPLE]
    if not sens.size or not (np.isfinite(sens) & (sens > 0)).all():
        raise DataError(
            f"{where}/sensitivity: every {SAMPLE!r} line (line_kind) needs a finite "
            f"sensitivity > 0, got {sens.tolist()}"
        )
    T = s.get("transmission")
    if T is not None and np.shape(T) != data.frames.shape[1:]:
        raise DataError(
            f"{where}/transmission: shape {np.shape(T)} is not the patterns' "
            f"{data.frames.shape[1:]}"
        )
    settings = cfg["linear_inverse"]
    return XRFSpeckleModel(
        data.frames,
        data.rows,
        s,
        data.mean_total,
        settings["loss"],
        settings["background"],
        backend,
    )
