"""Differentiable 3D Bragg CDI forward model.

The unknown is the complex crystal density ``rho`` (Z, Y, X) on the detector grid (the
crystal box zero-padded by the oversampling). A circular shift of ``rho`` only multiplies
its Fourier transform by a phase ramp, so ``rho`` can be held in the centred layout (crystal
in the middle of the array) while the model works with the DC-at-corner layout of the
FFT::

    I(q) = |F{rho}(q)|^2          # ortho 3D FFT, DC at index (0, 0, 0)

Measured counts are stored centred (``DiffractionData.centred``); :class:`BraggCDIModel`
moves them (and the mask) to the DC-corner layout once. The data term is
:func:`xrayflow.modalities.losses.intensity_loss`: ``gaussian`` (least squares on
amplitudes, the variance-stabilised Poisson form) or ``poisson`` (negative log-likelihood).
For the Gaussian loss without mask the gradient is ``2 (rho - P_M rho)`` (``P_M``: the
modulus projection), so a gradient step of 0.5 followed by the support projection is exactly
one error-reduction iteration.

The model is also what the phase-retrieval solver (:mod:`xrayflow.solvers.phase_retrieval`)
and the reconstruct stage see of the modality: the start from a network's prediction
(:mod:`.network_start`) and the result file's object datasets.
"""

from __future__ import annotations

import copy

import numpy as np

from xrayflow import ad
from xrayflow.backend import fftshift, get_backend, ifftshift, to_numpy
from xrayflow.errors import ConfigError
from xrayflow.modalities.bragg_cdi.grid import embed
from xrayflow.modalities.bragg_cdi.network_start import (
    NETWORK_HIO,
    network_predict,
    network_start,
    network_support,
)
from xrayflow.modalities.bragg_cdi.strain import g_vector, strain_entries
from xrayflow.modalities.losses import LOSSES, intensity_loss, loss_target

__all__ = ["LOSSES", "BraggCDIModel", "build"]


class BraggCDIModel:
    """3D far-field intensities of a complex object and their misfit to measured counts.

    Args:
        counts: (Z, Y, X) measured photon counts (float, >= 0).
        mask: (Z, Y, X) bool, True = good voxel, or None (all good).
        loss: ``"gaussian"`` or ``"poisson"``.
        centred: True when ``counts`` / ``mask`` have the zero frequency in the middle
            (as stored in CXI files); they are then ``ifftshift``-ed once.
        scale: the counts are divided by ``scale`` (photons), so that ``rho`` is held in
            units of ``sqrt(scale)``; the minimiser is unchanged up to that factor.
        eps: regulariser of ``sqrt`` / ``log`` at zero intensity (in scaled counts).
        backend: :class:`xrayflow.backend.Backend` (default CPU, single precision).
        reflection: the measured reflection (``d_spacing`` m, ``q_direction`` (z, y, x),
            ``phase_sign``, ``mask_fraction``; the ``cdi.reflection`` section) or None:
            :meth:`result_entries` adds displacement and strain along G.

    Attributes the phase-retrieval solver uses: ``backend``, ``shape``, ``counts`` (photons,
    DC-corner layout), ``total`` (sum of the counts, photons), ``er_step`` and the methods
    below.
    """

    def __init__(
        self,
        counts,
        mask=None,
        loss: str = "gaussian",
        centred: bool = True,
        scale: float = 1.0,
        eps: float = 1e-6,
        backend=None,
        reflection: dict | None = None,
    ):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.backend = backend or get_backend("cpu")
        self.reflection = reflection
        xp = self.backend.xp
        c = xp.asarray(counts, dtype=self.backend.real_dtype)
        if c.ndim != 3:
            raise ValueError(f"counts must be a 3D array (Z, Y, X), got shape {c.shape}")
        self.total = float(c.sum(dtype=np.float64))
        self.counts = ifftshift(c) if centred else c
        self.shape = tuple(c.shape)
        self.loss_kind = loss
        self.eps = float(eps)
        self.mask = None
        if mask is not None:
            m = xp.asarray(mask, dtype=bool)
            if m.shape != c.shape:
                raise ValueError(f"mask shape {m.shape} does not match counts {c.shape}")
            if centred:
                m = ifftshift(m)
            self.mask = m.astype(self.backend.real_dtype)
        self._set_scale(scale)

    def _set_scale(self, scale: float) -> None:
        self.scale = float(scale)
        c = self.counts / self.backend.real_dtype(scale)
        self.target = loss_target(c, self.loss_kind)
        self.amplitude = self.target if self.loss_kind == "gaussian" else self.backend.xp.sqrt(c)

    def rescaled(self, scale: float) -> BraggCDIModel:
        """This model with the counts in units of ``scale`` photons (``rho`` then in units
        of ``sqrt(scale)``); shares the count and mask arrays."""
        other = copy.copy(self)
        other._set_scale(scale)
        return other

    @property
    def er_step(self) -> float:
        """The gradient step that amounts to one error-reduction iteration (dimensionless;
        exact for ``gaussian``, the Poisson gradient being about twice as large)."""
        return 0.5 if self.loss_kind == "gaussian" else 0.25

    def embed(self, a):
        """``a`` on the model's grid: as it is, or a smaller centred box zero-padded
        (:func:`~xrayflow.modalities.bragg_cdi.grid.embed`)."""
        return embed(a, self.shape, self.backend.xp)

    def network_prediction(self, network, device: str = "cpu"):
        """A trained 3D CDI network's ``(support probability, phase (rad), seconds)`` for
        these counts (:func:`~xrayflow.modalities.bragg_cdi.network_start.network_predict`)."""
        return network_predict(network, fftshift(to_numpy(self.counts)), True, device)

    def prediction_start(self, support, phase) -> dict:
        """Phase-retrieval start from a network's prediction of the crystal box (support
        probability, phase (rad)): ``init`` (complex64 on the model's grid, NumPy),
        ``support`` (bool, loose: shrink-wrap tightens it) and ``hio_iterations`` (the
        default from a prediction), see :mod:`.network_start`."""
        return {
            "init": network_start(support, phase, self.shape),
            "support": network_support(support, self.shape),
            "hio_iterations": NETWORK_HIO,
        }

    def far_field(self, rho):
        """``F{rho}`` (ortho 3D FFT, DC at the corner) as a Tensor."""
        return ad.fftn(rho, backend=self.backend)

    def intensity(self, rho):
        """Model intensities ``|F{rho}|^2`` (scaled counts) as a Tensor."""
        return ad.abs2(self.far_field(rho))

    def loss(self, rho):
        """Data term (real scalar Tensor) for the complex object ``rho`` (Z, Y, X)."""
        return intensity_loss(self.intensity(rho), self.target, self.mask, self.loss_kind, self.eps)

    def modulus_projection(self, rho):
        """``P_M rho``: replace ``|F{rho}|`` by the measured amplitude on good voxels (array)."""
        xp = self.backend.xp
        F = self.backend.fftn(rho)
        mag = xp.abs(F)
        fac = self.amplitude / xp.maximum(mag, 1e-30)
        if self.mask is not None:
            fac = self.mask * fac + (1 - self.mask)
        F *= fac
        return self.backend.ifftn(F, overwrite_x=True)

    def fit_scale(self, rho):
        """``rho`` times the least-squares factor that fits ``|F{rho}|`` to the measured
        amplitude on good voxels."""
        xp = self.backend.xp
        mag = xp.abs(self.backend.fftn(rho))
        w = self.mask if self.mask is not None else 1.0
        den = float((w * mag * mag).sum())
        return rho * (float((w * mag * self.amplitude).sum()) / den if den > 0 else 1.0)

    def r_factor(self, rho) -> float:
        """Normalised amplitude misfit ``sqrt(sum m (|F| - a)^2 / sum m a^2)`` (good voxels)."""
        xp = self.backend.xp
        d = xp.abs(self.backend.fftn(rho)) - self.amplitude
        a2 = self.amplitude**2
        if self.mask is not None:
            d = d * self.mask
            a2 = a2 * self.mask
        return float(xp.sqrt((d * d).sum() / xp.maximum(a2.sum(), 1e-30)))

    def result_entries(self, result: dict, volume) -> dict:
        """The result file's object datasets from a phase-retrieval ``result`` (centred by
        the reconstruct stage): ``object`` (complex64, data grid, data units), ``support``
        (bool), ``voxel_size`` (m, the volume's: one number or (Z, Y, X); None in voxel
        units) and, with a measured ``reflection`` (the ``cdi.reflection`` section), the
        group ``strain`` (:func:`.strain.strain_entries`: displacement and strain along G)."""
        out = {
            "object": np.asarray(result["object"]).astype(np.complex64),
            "support": result["support"],
            "voxel_size": volume.voxel_size,
        }
        r = self.reflection
        if r is not None:
            out["strain"] = strain_entries(
                out["object"],
                g_vector(r["d_spacing"], r["q_direction"]),  # 1/m, (z, y, x)
                volume.voxel_size,
                out["support"],
                r["mask_fraction"],
                r["phase_sign"],
            )
        return out


def build(cfg: dict, volume, backend) -> BraggCDIModel:
    """The model of the reconstruct config ``cfg`` (data term ``cdi.loss``) for ``volume``,
    the measured pattern: ``counts`` (Z, Y, X) intensities (photons, or any unit: the
    solver rescales them), ``mask`` (bool or None), ``centred``."""
    reflection = cfg["cdi"]["reflection"]
    if reflection is not None and volume.voxel_size is None:  # before the solve
        raise ConfigError(
            "cdi.reflection: the strain needs the voxel size, which neither the data file nor "
            "the config gives (geometry.energy_ev, distance and detector_pixel_size, or "
            "geometry.object_pixel_size)"
        )
    return BraggCDIModel(
        volume.counts,
        volume.mask,
        cfg["cdi"]["loss"],
        volume.centred,
        backend=backend,
        reflection=reflection,
    )
