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

Gradients come from :mod:`xrayflow.ad`; nothing here is hand-differentiated. The object
part is the fused :func:`xrayflow.ad.multislice_object` (also for S = 1), the far field the
fused :func:`xrayflow.ad.far_field_intensity`: probe shift and far field cost four
(B, M, n, n) FFTs per batch (forward and backward), and no (S, B, n, n) array is formed.
"""

from __future__ import annotations

import numpy as np

from xrayflow import ad
from xrayflow.backend import array_module, fftfreq


def loss_target(data, kind: str = "gaussian"):
    """What :func:`intensity_loss` compares with: ``sqrt(D)`` (gaussian) or ``D`` (poisson)."""
    xp = array_module(data)
    return xp.sqrt(data) if kind == "gaussian" else data


def intensity_loss(I, target, mask, kind: str = "gaussian", eps: float = 1e-6):
    """Data term summed over the batch (a real scalar Tensor).

    ``gaussian``: amplitude least squares ``sum m (sqrt(I + eps) - sqrt(D))^2``
    (variance-stabilised Poisson), ``target = sqrt(D)``; ``poisson``: negative
    log-likelihood ``sum m (I - D log(I + eps))`` (constants dropped), ``target = D``.
    ``mask`` (ny, nx) 1 = good pixel. Use :func:`loss_target` to make ``target``.
    """
    data = target
    if kind == "gaussian":
        r = ad.sqrt(I + eps) - data
        if mask is not None:
            r = r * mask
        return ad.sum(ad.abs2(r))
    if kind == "poisson":
        t = I - ad.log(I + eps) * data
        if mask is not None:
            t = t * mask
        return ad.sum(t)
    raise ValueError(f"unknown loss {kind!r}")


class ObjectModel:
    """What the transmission-object models share: the object unknowns and the data term,
    and ``last``, side outputs of the last forward pass (plain arrays, for the
    preconditioners).

    Args:
        k_dz: ``2 pi / lambda * dz`` (only for ``object_param="delta_beta"``).
        object_param: ``"transmission"`` (complex) or ``"delta_beta"``.
        loss, eps: see :func:`intensity_loss`.
        mask: detector good-pixel mask or None.
        backend: :class:`xrayflow.backend.Backend` (None: that of the inputs).
    """

    def __init__(
        self,
        *,
        k_dz=None,
        object_param="transmission",
        loss="gaussian",
        eps=1e-6,
        mask=None,
        backend=None,
    ):
        self.k_dz = k_dz
        self.object_param = object_param
        self.loss_kind = loss
        self.eps = float(eps)
        self.mask = mask
        self.backend = backend
        self.last = {}

    @property
    def object_names(self) -> tuple:
        """Names of the object unknowns."""
        return ("delta", "beta") if self.object_param == "delta_beta" else ("object",)

    def _transmission(self, obj_params):
        """Complex transmission (a Tensor) of the whole object grid, (S, Ny, Nx).

        For ``delta_beta`` the exponential is taken over the object grid, which is smaller
        than a batch of patches for the usual overlaps.
        """
        if self.object_param == "delta_beta":
            d = ad.as_tensor(obj_params["delta"])
            b = ad.as_tensor(obj_params["beta"])
            # t = exp(-i k dz delta - k dz beta)
            return ad.exp(d * (-1j * self.k_dz) + b * (-self.k_dz))
        return ad.as_tensor(obj_params["object"])


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

    def __init__(self, frame_shape, object_shape, n_slices=1, transfer=None, **kwargs):
        super().__init__(**kwargs)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        self.object_shape = tuple(int(v) for v in object_shape)
        self.n_slices = int(n_slices)
        self.transfer = transfer

    def shift_probe(self, probe, shifts):
        """Probe modes (M, n, n) shifted by ``shifts`` (B, 2) px -> (B, M, n, n).

        ``ifft2(fft2(P) * exp(-2 pi i fy sy) * exp(-2 pi i fx sx))``: the same operation as
        :func:`xrayflow.ad.fourier_shift`, written with separable phase ramps so that the
        forward pass needs one batch-sized FFT and the backward pass one (instead of three),
        and only B * 2n complex exponentials.
        """
        probe = ad.as_tensor(probe)
        shifts = ad.as_tensor(shifts)
        xp = probe.xp
        n0, n1 = probe.shape[-2:]
        rdt = np.finfo(np.result_type(probe.dtype, np.complex64)).dtype
        B = shifts.shape[0]
        fy = xp.asarray((-2 * np.pi * fftfreq(n0)).astype(rdt)).reshape(1, 1, n0, 1)
        fx = xp.asarray((-2 * np.pi * fftfreq(n1)).astype(rdt)).reshape(1, 1, 1, n1)
        ry = ad.expi(ad.reshape(shifts[:, 0:1], B, 1, 1, 1) * fy)  # (B, 1, n0, 1)
        rx = ad.expi(ad.reshape(shifts[:, 1:2], B, 1, 1, 1) * fx)  # (B, 1, 1, n1)
        Pf = ad.fft2(probe, backend=self.backend)  # (M, n0, n1)
        return ad.ifft2(Pf * (ry * rx), backend=self.backend)

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
        """Data term for the batch; ``target`` from :func:`loss_target`."""
        I = self.intensities(obj_params, probe, corners, shifts)
        return intensity_loss(I, target, self.mask, self.loss_kind, self.eps)


def split_positions(corners):
    """Fractional corners (P, 2) -> (integer corners, sub-pixel shifts in [0, 1))."""
    c = np.asarray(corners, np.float64)
    ci = np.floor(c)
    return ci.astype(np.int64), c - ci
