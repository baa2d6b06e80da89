"""Ptycho-tomography forward model: a 3D (δ, β) volume seen by multislice ptychography at
a series of rotation angles.

For frame ``f`` at angle ``θ_f`` and top-left corner ``c_f`` (y, x) in the (Y, X) plane
(integer part ``⌊c_f⌋`` selects the window, the fractional part shifts the probe, as in
far-field ptychography)::

    V_θ   = rotate (δ, β) about y by θ            # ad.rotate_volume, axes (z, x), bilinear
    t_s   = exp(-i k vz Σ_{z in slab s} (δ - iβ))  # S slabs along the beam z (as simulate)
    ψ     = multislice(P shifted, t, ⌊c_f⌋, H)    # ad.multislice_object, H_s: slab spacing
    I_f   = Σ_m |F ψ_m|²                          # DC at (0, 0), ortho FFT

Conventions match the ``ptychotomo`` simulation: volume (Z, Y, X), voxels ``vz`` cubes,
slab edges ``linspace(0, Z, S + 1).round()``, rotation as ``scipy.ndimage.rotate(vol,
degrees(θ), axes=(0, 2))``, frames angle-major. Gradients come from :mod:`xrayflow.ad`.
:func:`build` makes the model from the reconstruct config and the data.
"""

from __future__ import annotations

import copy

import numpy as np

from xrayflow import ad
from xrayflow.backend import get_backend
from xrayflow.errors import DataError, PhysicsError
from xrayflow.modalities.losses import intensity_loss
from xrayflow.modalities.ptycho2d.model import shift_probe, split_positions
from xrayflow.optics.propagation import transfer_function


class TomoModel:
    """Differentiable ptycho-tomography model (unknowns ``delta``, ``beta``: the volume).

    Args:
        volume_shape: (Z, Y, X) voxels; the beam runs along z, rotation is about y.
        voxel_size: voxel edge, m.
        wavelength: m.
        frame_shape: (n, n) probe window / detector frame.
        corners: (F, 2) top-left corners (y, x) of each frame's window, voxels (fractional
            parts shift the probe).
        angles: (F,) rotation angle of each frame, rad.
        n_slices: S slabs along z (multislice); 1 = projection approximation.
        propagator: ``"fresnel"`` or ``"angular_spectrum"`` between slabs.
        loss, eps, mask: data term, see :func:`xrayflow.modalities.losses.intensity_loss`.
        backend: :class:`xrayflow.backend.Backend` (default CPU, single precision).
        reversible: memory-light multislice backward (:func:`xrayflow.ad.multislice`).
    """

    def __init__(
        self,
        volume_shape,
        voxel_size,
        wavelength,
        frame_shape,
        corners,
        angles,
        n_slices=1,
        propagator="fresnel",
        loss="gaussian",
        eps=1e-6,
        mask=None,
        backend=None,
        reversible=True,
    ):
        self.backend = backend if backend is not None else get_backend("cpu")
        xp = self.backend.xp
        self.volume_shape = tuple(int(v) for v in volume_shape)
        self.frame_shape = tuple(int(v) for v in frame_shape)
        Z, Y, X = self.volume_shape
        S = int(n_slices)
        if not 1 <= S <= Z:
            raise PhysicsError(f"n_slices must be between 1 and Z = {Z}, got {S}")
        self.corners = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
        self.angles = np.asarray(angles, dtype=np.float64).ravel()
        if self.angles.shape[0] != self.corners.shape[0]:
            raise PhysicsError(f"{self.angles.size} angles for {self.corners.shape[0]} frames")
        n = self.frame_shape
        hi = np.floor(self.corners).max(axis=0) + n if len(self.corners) else (0, 0)
        if len(self.corners) and (self.corners.min() < 0 or hi[0] > Y or hi[1] > X):
            raise PhysicsError(
                f"scan windows {n} at the corners leave the (Y, X) = ({Y}, {X}) plane of the volume"
            )
        self.edges = np.linspace(0, Z, S + 1).round().astype(int)
        self.thickness = np.diff(self.edges) * float(voxel_size)  # m per slab
        self.k_vz = 2 * np.pi / float(wavelength) * float(voxel_size)  # rad per unit δ·voxel
        self.transfer = None
        if S > 1:
            self.transfer = xp.stack(
                [
                    transfer_function(
                        propagator,
                        n,
                        voxel_size,
                        wavelength,
                        float(d),
                        xp=xp,
                        dtype=self.backend.complex_dtype,
                    )
                    for d in self.thickness[:-1]
                ]
            )
        self.loss_kind, self.eps, self.mask = loss, float(eps), mask
        self.reversible = reversible

    object_names = ("delta", "beta")
    refines_positions = False

    @property
    def n_slices(self) -> int:
        return len(self.thickness)

    @property
    def object_rows(self) -> int:
        """Rows Y of the volume (the rotation axis; the axis split by a distributed
        object)."""
        return self.volume_shape[1]

    def on_rows(self, rows: range) -> TomoModel:
        """The same model on the volume rows ``rows`` (a slab (Z, len(rows), X)), frame
        corners relative to ``rows.start``. The rotation about y never mixes rows, so a slab
        holding a frame's window rows computes that frame exactly
        (:mod:`xrayflow.solvers.distributed_object`)."""
        m = copy.copy(self)
        Z, _, X = self.volume_shape
        m.volume_shape = (Z, len(rows), X)
        m.corners = self.corners - [rows.start, 0]
        return m

    def transmission(self, delta, beta, angle: float):
        """(S, Y, X) complex slab transmissions of the volume rotated by ``angle`` rad."""
        vol = ad.stack([delta, beta])  # (2, Z, Y, X)
        if angle != 0.0:
            vol = ad.rotate_volume(vol, angle, axes=(1, 3))
        e = self.edges
        proj = ad.stack(
            [ad.sum(vol[:, e[s] : e[s + 1]], axis=1) for s in range(len(e) - 1)], axis=1
        )  # (2, S, Y, X): Σ over the slab's voxels
        return ad.exp(proj[0] * (-1j * self.k_vz) + proj[1] * (-self.k_vz))

    def _angle(self, frames) -> float:
        a = np.unique(self.angles[frames])
        if a.size != 1:
            raise ValueError(f"a batch must share one angle, got {a.size} different angles")
        return float(a[0])

    def intensities(self, delta, beta, probe, frames):
        """Far-field intensities (B, n, n) of ``frames`` (indices sharing one angle)."""
        frames = np.asarray(frames, dtype=np.int64)
        t = self.transmission(delta, beta, self._angle(frames))
        ci, frac = split_positions(self.corners[frames])
        if np.any(frac):
            shifts = self.backend.asarray(frac, dtype=self.backend.real_dtype)  # to the device
            probe = shift_probe(probe, shifts, self.backend)
        psi = ad.multislice_object(
            probe,
            t,
            ci,
            self.transfer,
            backend=self.backend,
            reversible=self.reversible,
        )
        return ad.far_field_intensity(psi, backend=self.backend)

    def loss(self, delta, beta, probe, frames, target):
        """Data term of ``frames``; ``target`` (B, n, n) from ``loss_target(data)``."""
        I = self.intensities(delta, beta, probe, frames)
        return intensity_loss(I, target, self.mask, self.loss_kind, self.eps)

    def frame_blocks(self, block: int) -> list[np.ndarray]:
        """Frames cut into blocks of at most ``block`` frames that share one angle (runs of
        consecutive frames); boundaries independent of the number of MPI ranks."""
        f = np.arange(self.angles.size)
        runs = np.split(f, np.flatnonzero(np.diff(self.angles)) + 1) if f.size else []
        return [r[i : i + block] for r in runs for i in range(0, r.size, block)]

    def value_and_grad(self, delta, beta, probe, target, frames, wrt=("delta", "beta")) -> dict:
        """``{"loss": float, name: gradient for name in wrt}`` of the frames ``frames``
        (sharing one angle) with targets ``target`` (B, n, n); sum it over blocks and ranks
        with :meth:`xrayflow.parallel.Comm.block_sum`."""
        names = ("delta", "beta", "probe")
        vg = ad.value_and_grad(self.loss, argnums=tuple(names.index(w) for w in wrt))
        value, grads = vg(delta, beta, probe, frames, target)
        return {"loss": value, **dict(zip(wrt, grads, strict=True))}

    # -- the gradient solver's model interface ------------------------------------------------
    def initial_object(self, kind: str, truth: dict) -> dict:
        """Start volume: the data file's δ/β truth (``kind="truth"``) or zeros."""
        if kind == "truth":
            if "delta" not in truth or "beta" not in truth:
                raise DataError(
                    "init.object: truth requested but the data file has no object truth"
                )
            return {n: np.asarray(truth[n]).reshape(self.volume_shape) for n in ("delta", "beta")}
        return {"delta": np.zeros(self.volume_shape), "beta": np.zeros(self.volume_shape)}

    def batches(self, rng, n_frames: int, batch_size: int, shuffle: bool, chunk_starts) -> list:
        """Whole blocks (one angle each, so that a block rotates the volume once) in
        shuffled order, up to ``batch_size`` frames per batch."""
        starts = np.asarray(chunk_starts).tolist()
        chunks = [np.arange(a, b) for a, b in zip(starts, [*starts[1:], n_frames], strict=True)]
        order = rng.permutation(len(chunks)) if shuffle else range(len(chunks))
        batches, cur = [], []
        for c in order:
            if cur and sum(map(len, cur)) + len(chunks[c]) > batch_size:
                batches.append(np.sort(np.concatenate(cur)))
                cur = []
            cur.append(chunks[c])
        return [*batches, np.sort(np.concatenate(cur))]

    def block_loss(self, params: dict, frames, corners, target, refine_positions: bool):
        """Data term of ``frames`` (the model's own whole-voxel windows)."""
        loss = self.loss(params["delta"], params["beta"], params["probe"], frames, target)
        return loss, None, None

    def preconditioner_sums(self, frames, aux) -> dict:
        return {}

    def preconditioners(self, params, sums, n_frames, factor, alpha) -> dict:
        """None: plain gradient steps on the volume and the probe."""
        return {}

    def result_entries(self, params, data) -> dict:
        """δ/β volume (Z, Y, X), rotation angle per frame (rad), voxel size (m)."""
        return {
            "delta": params["delta"],
            "beta": params["beta"],
            "angles": np.asarray(data.angles, np.float64),
            "voxel_size": float(data.pixel_size),
        }


def volume_shape(cfg: dict, data) -> tuple:
    """(Z, Y, X) of the reconstructed volume (``model.volume_depth``, else the data's)."""
    Z = cfg["model"]["volume_depth"] or data.volume_depth or data.object_shape[1]
    return (int(Z), *data.object_shape)


def object_memory(cfg: dict, data, real_bytes: int, complex_bytes: int) -> tuple[str, float]:
    """(description, bytes) of one copy of the unknown volume."""
    Z, Y, X = volume_shape(cfg, data)
    return f"volume delta+beta ({Z}, {Y}, {X})", float(2 * Z * Y * X * real_bytes)


def build(cfg: dict, data, backend) -> TomoModel:
    """The model of the reconstruct config ``cfg`` for ``data``."""
    m = cfg["model"]
    if data.angles is None:
        raise DataError(f"model.type={m['type']} needs rotation angles in the data file")
    if data.wavelength is None:
        raise DataError(f"model.type={m['type']} needs the wavelength (photon energy)")
    mask = None
    if not data.mask.all():
        mask = backend.xp.asarray(data.mask.astype(backend.real_dtype))
    return TomoModel(
        volume_shape(cfg, data),
        data.pixel_size,
        data.wavelength,
        data.frame_shape,
        data.corners,
        data.angles,
        n_slices=m["n_slices"],
        propagator=m["propagator"],
        loss=cfg["loss"]["type"],
        eps=cfg["loss"]["eps"],
        mask=mask,
        backend=backend,
    )
