"""Far-field ptychography forward models: 2D (thin object) and multislice (thick object).

Unknowns (all optional to refine):

* ``object``: complex transmission per slice, ``(S, Ny, Nx)``; or, with
  ``object_param="delta_beta"``, real ``delta`` and ``beta`` ``(S, Ny, Nx)`` turned into
  ``t = exp(-i k dz (delta - i beta))`` inside the model (docs/physics.md);
* ``probe``: ``(M, n, n)`` mixed-state coherent modes (intensities add);
* ``shifts``: the sub-pixel part of each position in the batch, ``(B, 2)`` pixels (y, x),
  applied as a Fourier shift of the probe, so its gradient drives position correction.

For a batch with integer window corners ``c_b`` (top-left, object pixels) and fractional
shifts ``s_b``::

    P_b   = fourier_shift(P, s_b)                      # (B, M, n, n)
    psi   = P_b * O[c_b]  (slice 0);  then for j >= 1:  psi = t_j[c_b] * F^-1{H F{psi}}
    I_b   = sum_m |F{psi_m}|^2                         # DC at index (0, 0), ortho FFT

Gradients come from :mod:`xrayflow.ad`; nothing here is hand-differentiated.
:func:`build` makes the model from the reconstruct config and the data (both ``ptycho2d``,
with one slice, and ``multislice_ptycho``). The object
part is the fused :func:`xrayflow.ad.multislice_object` (also for S = 1), the far field the
fused :func:`xrayflow.ad.far_field_intensity`: probe shift and far field cost four
(B, M, n, n) FFTs per batch (forward and backward), and no (S, B, n, n) array is formed.
"""

from __future__ import annotations

import copy

import numpy as np

from xrayflow import ad
from xrayflow.backend import array_module, fftfreq
from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities.transmission import ObjectModel, model_options, slice_spacing
from xrayflow.optics.propagation import transfer_function


class PtychoModel(ObjectModel):
    """2D (``n_slices = 1``) or multislice far-field ptychography.

    Args:
        frame_shape: (n, n) detector / probe window.
        object_shape: (Ny, Nx).
        n_slices: S.
        transfer: ``(n, n)`` or ``(S-1, n, n)`` complex Fresnel transfer function between
            slices (window-sized; ignored for S = 1).
        **kwargs: ``k_dz``, ``object_param``, ``loss``, ``eps``, ``mask`` ((n, n)),
            ``backend``: see :class:`ObjectModel`.
    """

    refines_positions = True

    def __init__(self, frame_shape, object_shape, n_slices=1, transfer=None, **kwargs):
        super().__init__(**kwargs)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.object_shape = tuple(int(v) for v in object_shape)
        self.n_slices = int(n_slices)
        self.transfer = transfer

    @property
    def object_rows(self) -> int:
        """Rows Ny of the object grid (the axis split by a distributed object)."""
        return self.object_shape[0]

    def on_rows(self, rows: range) -> PtychoModel:
        """The same model on the object rows ``rows`` (a slab): unknowns ``(S,
        len(rows), Nx)``, window corners relative to ``rows.start``. A window's exit wave
        depends only on the object inside it, so a slab holding a window computes its frame
        exactly (:mod:`xrayflow.solvers.distributed_object`)."""
        m = copy.copy(self)
        m.object_shape = (len(rows), self.object_shape[1])
        m.last = {}
        return m

    @staticmethod
    def split(corners):
        """Fractional corners (P, 2) -> (integer window corners, sub-pixel shifts)
        (:func:`split_positions`)."""
        return split_positions(corners)

    def shift_probe(self, probe, shifts):
        """Probe modes (M, n, n) shifted by ``shifts`` (B, 2) px -> (B, M, n, n)
        (:func:`shift_probe`)."""
        return shift_probe(probe, shifts, self.backend)

    def exit_waves(self, obj_params: dict, probe, corners, shifts):
        """Exit waves (B, M, n, n) for integer ``corners`` (B, 2) and ``shifts`` (B, 2).

        Uses the fused :func:`xrayflow.ad.multislice_object` (patches gathered per chunk,
        their gradient scatter-added into the object; backward memory O(batch), not
        O(slices)). Side outputs for the preconditioners go to ``self.last``:
        ``patch_power`` (B, n, n) = prod_j |t_j[c_b]|^2 and ``probe_shifted``
        (B or 1, M, n, n).
        """
        probe = ad.as_tensor(probe)
        if shifts is None:
            pb = ad.reshape(probe, 1, *probe.shape)  # (1, M, n, n)
        else:
            pb = self.shift_probe(probe, shifts)
        obj = self._transmission(obj_params)
        transfer = self.transfer if self.n_slices > 1 else None
        psi = ad.multislice_object(pb, obj, corners, transfer, backend=self.backend)
        # plain-array side outputs for the preconditioners
        O = obj.data
        xp = array_module(O)
        pw = xp.abs(O[0]) ** 2
        for j in range(1, self.n_slices):
            pw *= xp.abs(O[j]) ** 2
        self.last["patch_power"] = ad.gather_patches(pw, corners, self.frame_shape).data
        self.last["probe_shifted"] = pb.data
        return psi

    def intensities(self, obj_params, probe, corners, shifts):
        """Far-field intensities (B, n, n), DC at index (0, 0)."""
        psi = self.exit_waves(obj_params, probe, corners, shifts)
        return ad.far_field_intensity(psi, backend=self.backend, recompute=False)

    def loss(self, obj_params, probe, corners, shifts, target):
        """Data term for the batch; ``target`` from
        :func:`xrayflow.modalities.losses.loss_target`."""
        return self.data_term(self.intensities(obj_params, probe, corners, shifts), target)

    # -- the gradient solver's model interface ------------------------------------------------
    def block_loss(self, params: dict, frames, corners, target, refine_positions: bool):
        """Data term of a block of frames at fractional window ``corners`` (B, 2) px.

        Returns ``(loss, shifts, integer corners)``: ``shifts`` is the Tensor of sub-pixel
        shifts (a parameter when ``refine_positions``, else a constant or None when all are
        whole pixels)."""
        ci, frac = self.split(corners)
        shifts = params["probe"].xp.asarray(frac.astype(self.backend.real_dtype))
        shifts_t = ad.param(shifts) if refine_positions else ad.const(shifts)
        if not np.any(frac) and not refine_positions:
            shifts_t = None
        objp = {k: params[k] for k in self.object_names}
        return self.loss(objp, params["probe"], ci, shifts_t, target), shifts_t, ci

    def preconditioner_sums(self, frames, corners) -> dict:
        """``illum``: probe power scatter-added on the object grid; ``opw``: object power
        summed over the block's windows (from the last forward pass)."""
        xp = self.backend.xp
        pw = xp.sum(xp.abs(self.last["probe_shifted"]) ** 2, axis=1)  # (B or 1, n, n)
        if pw.shape[0] != len(frames):
            pw = xp.broadcast_to(pw, (len(frames), *pw.shape[1:]))
        illum = xp.zeros(self.object_shape, dtype=pw.dtype)
        ad.scatter_add_patches(illum, xp.ascontiguousarray(pw), corners)
        return {"illum": illum, "opw": xp.sum(self.last["patch_power"], axis=0)}


def split_positions(corners):
    """Fractional corners (P, 2) -> (integer corners, sub-pixel shifts in [0, 1))."""
    c = np.asarray(corners, np.float64)
    ci = np.floor(c)
    return ci.astype(np.int64), c - ci


def shift_probe(probe, shifts, backend=None):
    """Probe modes (M, n, n) shifted by ``shifts`` (B, 2) px -> (B, M, n, n) (Tensors).

    ``ifft2(fft2(P) * exp(-2 pi i fy sy) * exp(-2 pi i fx sx))``: the same operation as
    :func:`xrayflow.ad.fourier_shift`, written with separable phase ramps so that the
    forward pass needs one batch-sized FFT and the backward pass one (instead of three),
    and only B * 2n complex exponentials.
    """
    probe = ad.as_tensor(probe)
    Pf = ad.fft2(probe, backend=backend)  # (M, n0, n1)
    ramp = shift_ramp(shifts, probe.shape[-2:], probe.dtype, probe.xp)  # (B, 1, n0, n1)
    return ad.ifft2(Pf * ramp, backend=backend)


def shift_ramp(shifts, shape, dtype, xp, sign: float = 1.0):
    """The Fourier-shift factor ``exp(-2 pi i (fy sy + fx sx))`` (B, 1, n0, n1) (a Tensor)
    of a shift by ``sign * shifts`` (B, 2) px, for spectra (ortho FFT, DC at (0, 0)) of
    images of ``shape`` (n0, n1); separable, ``B * (n0 + n1)`` complex exponentials."""
    shifts = ad.as_tensor(shifts)
    n0, n1 = shape
    rdt = np.finfo(np.result_type(dtype, np.complex64)).dtype
    B = shifts.shape[0]
    fy = xp.asarray((-2 * np.pi * sign * fftfreq(n0)).astype(rdt)).reshape(1, 1, n0, 1)
    fx = xp.asarray((-2 * np.pi * sign * fftfreq(n1)).astype(rdt)).reshape(1, 1, 1, n1)
    ry = ad.expi(ad.reshape(shifts[:, 0:1], B, 1, 1, 1) * fy)  # (B, 1, n0, 1)
    rx = ad.expi(ad.reshape(shifts[:, 1:2], B, 1, 1, 1) * fx)  # (B, 1, 1, n1)
    return ry * rx


def build(cfg: dict, data, backend, single_slice: bool = False) -> PtychoModel:
    """The model of the reconstruct config ``cfg`` for ``data``
    (:class:`xrayflow.reconstruct.data.ReconData`); ``single_slice``: 2D ptychography
    (``model.n_slices`` must be 1)."""
    m = cfg["model"]
    S = m["n_slices"]
    if single_slice and S != 1:
        raise ConfigError(
            f"model.n_slices: {m['type']} has one slice; use multislice_ptycho for {S}"
        )
    if S == 1 and m["propagator"] != "fresnel":
        raise ConfigError(
            f"model.propagator: {m['propagator']} has no effect on {m['type']} with one slice "
            "(the propagator acts between slices; the far field is a Fourier transform); "
            "remove it, or use nearfield_ptycho for near-field frames"
        )
    opts = model_options(cfg, data, backend)
    transfer = slice_transfer(cfg, data, backend)
    return PtychoModel(data.frame_shape, data.object_shape, n_slices=S, transfer=transfer, **opts)


def slice_transfer(cfg: dict, data, backend):
    """The window-sized transfer function (``model.propagator``) between the
    ``model.n_slices`` slices, on the backend; None for one slice."""
    m = cfg["model"]
    if m["n_slices"] == 1:
        return None
    if data.wavelength is None:
        raise DataError(
            "multislice needs the wavelength: no photon energy in the data; "
            "set geometry.energy_ev (or geometry.wavelength_px in pixel units)"
        )
    H = transfer_function(
        m["propagator"],
        data.frame_shape,
        data.pixel_size,
        data.wavelength,
        slice_spacing(cfg, data),
        dtype=backend.complex_dtype,
    )
    return backend.xp.asarray(H)
