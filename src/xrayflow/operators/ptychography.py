"""Ptychography forward model (simulation): sub-pixel probe shift, multislice, far-field
(or, with a detector distance, near-field Fresnel) intensity, batched over scan positions
and probe modes.

Scan positions are top-left corners of the probe window on the object grid, in
(fractional) pixels. The integer part ``i = rint(c)`` selects the object window
``[i, i + n)``; the fractional part ``f = c − i ∈ [−½, ½]`` shifts the probe by ``+f``
pixels (:class:`~.shift.FourierShift`), so probe sample ``k`` sits at object coordinate
``c + k``. Then the multislice engine (:mod:`.multislice`) and ``I = Σ_m |F{ψ_m}|²`` (far
field) or ``I = Σ_m |F⁻¹{H_z R_{−f} F{ψ_m}}|²`` (near field: transfer function ``H_z`` of
the detector distance; frames are real-space images on the detector grid, which is the
probe's: the exit wave, sampled on the object grid ``i + k``, is shifted back by ``−f``
(ramp ``R_{−f}``) so that frame pixel ``k`` sees object coordinate ``c + k``, whatever the
split of ``c`` into window and fraction).

Performance (CPU): positions run in chunks small enough to stay in cache, with the
engine's per-thread buffers, in-place ufuncs and in-place FFTs; by default the chunks run
one after another with ``backend.workers`` FFT threads (``threads=`` spreads them over a
pool). Transfer functions come from a cache keyed on (shape, Δz, λ, Δx).
"""

from __future__ import annotations

import numpy as np

from xrayflow.backend import Backend, fft2, get_backend, ifft2, to_numpy
from xrayflow.errors import PhysicsError
from xrayflow.optics import propagation as optics_propagation

from .fourier import inplace
from .multislice import MultisliceEngine, ObjectWindows, chunk_bounds
from .propagation import intensity
from .shift import FourierShift

__all__ = ["MultisliceModel", "simulate_intensities", "split_corners"]


def split_corners(corners_px, subpixel: bool = True):
    """Split fractional corners into ``(integer corners (B, 2) int64, fractions (B, 2))``
    with ``i = rint(c)`` and ``f = c − i``; fractions are 0 when ``subpixel`` is False."""
    c = np.asarray(to_numpy(corners_px), dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(c)):
        raise PhysicsError("scan corners must be finite")
    ci = np.rint(c)
    frac = c - ci if subpixel else np.zeros_like(c)
    return ci.astype(np.int64), frac


def _stack3(a, xp, cdt, expected: str):
    """``a`` as a C-contiguous 3D ``cdt`` array on ``xp`` (2D gets a leading axis of 1);
    raises :class:`PhysicsError` ``"{expected}, got shape ..."`` otherwise."""
    a = xp.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise PhysicsError(f"{expected}, got shape {a.shape}")
    return xp.ascontiguousarray(a.astype(cdt, copy=False))


class MultisliceModel:
    """Multislice far-field (or near-field) model with cached transfer functions and reusable
    buffers.

    Args:
        transmission: ``(S, Ny, Nx)`` complex slice transmissions (or ``(Ny, Nx)``, S = 1).
        probe: ``(M, n, n)`` probe modes (or ``(n, n)``).
        slice_spacing: m, scalar or ``(S−1,)`` per-gap spacings (ignored when S = 1).
        wavelength, pixel_size: m (pixel_size scalar or ``(dy, dx)``).
        backend: :class:`xrayflow.backend.Backend` (precision = its complex dtype).
        propagator: ``"fresnel"`` or ``"angular_spectrum"``.
        chunk: positions per chunk (default: ~2 MiB of work buffer on the CPU, at most 16
            positions; ~256 MiB on the GPU).
        detector_distance: None: far field; else the propagation distance from the exit
            plane to the (magnification-corrected) detector plane, m (near field: the
            effective distance of a cone beam), with the ``propagator``'s transfer function.
        subpixel: apply the fractional part of the corners as a Fourier shift of the probe.
        check_sampling: raise PhysicsError if a slice spacing exceeds ``NΔx²/λ``.
        band_limit: band-limit the transfer functions (no-op up to ``NΔx²/λ``).
        threads: CPU threads over chunks, each with ``backend.workers // threads`` FFT
            threads (worth it on many-core nodes that are not oversubscribed). Default 1:
            chunks run one after another with ``backend.workers`` FFT threads, which stays
            efficient when other processes load the CPU (Python threads then stall on the
            GIL).
    """

    def __init__(
        self,
        transmission,
        probe,
        slice_spacing,
        wavelength,
        pixel_size,
        backend: Backend | None = None,
        propagator: str = "fresnel",
        chunk: int | None = None,
        detector_distance: float | None = None,
        subpixel: bool = True,
        check_sampling: bool = True,
        band_limit: bool = True,
        threads: int | None = None,
    ):
        self.backend = backend if backend is not None else get_backend()
        xp = self.backend.xp
        if propagator not in optics_propagation.KINDS:
            raise PhysicsError(
                f"propagator must be one of {optics_propagation.KINDS}, got {propagator!r}"
            )
        cdt = np.dtype(self.backend.complex_dtype)
        self.cdt = cdt
        self.rdt = np.empty(0, dtype=cdt).real.dtype
        self.volume = _stack3(transmission, xp, cdt, "transmission must be (S, Ny, Nx)")
        self.probe = _stack3(probe, xp, cdt, "probe must be (M, n, n)")
        self.n_shape = tuple(int(v) for v in self.probe.shape[-2:])
        S = self.volume.shape[0]
        if self.n_shape[0] > self.volume.shape[1] or self.n_shape[1] > self.volume.shape[2]:
            raise PhysicsError(
                f"probe {self.n_shape} is larger than the object {self.volume.shape[1:]}"
            )
        spacing = np.atleast_1d(np.asarray(slice_spacing, dtype=np.float64))
        if S > 1:
            if spacing.size == 1:
                spacing = np.repeat(spacing, S - 1)
            if spacing.size != S - 1:
                raise PhysicsError(
                    f"slice_spacing has {spacing.size} values; {S} slices need 1 or {S - 1}"
                )
        else:
            spacing = np.zeros(0)
        self.spacing = spacing
        self.wavelength = float(wavelength)
        self.pixel_size = pixel_size
        self.propagator = propagator
        self.transfer = [
            optics_propagation.cached_transfer_function(
                propagator,
                self.n_shape,
                pixel_size,
                self.wavelength,
                float(dz),
                xp,
                cdt,
                band_limit=band_limit,
                check=check_sampling,
            )
            for dz in spacing
        ]
        self.detector_transfer = None
        if detector_distance is not None:
            self.detector_transfer = optics_propagation.cached_transfer_function(
                propagator,
                self.n_shape,
                pixel_size,
                self.wavelength,
                float(detector_distance),
                xp,
                cdt,
                band_limit=band_limit,
                check=check_sampling,
            )
        self.subpixel = bool(subpixel)
        self.probe_hat = self.backend.fft2(self.probe)  # (M, n, n), for sub-pixel shifts
        workers = 1 if self.backend.is_gpu else self.backend.workers
        self.engine = MultisliceEngine(self.transfer, S, self.n_shape, cdt, xp, workers)
        self._chunk_auto = chunk is None
        if chunk is None:
            # CPU: ~2 MiB of work buffer per thread (stays in L2/L3 cache; measured best);
            # GPU: ~256 MiB, large batches per cuFFT call
            per_pos = max(1, self.n_modes * self.n_shape[0] * self.n_shape[1] * cdt.itemsize)
            if self.backend.is_gpu:
                chunk = max(1, (256 << 20) // per_pos)
            else:
                chunk = max(1, min(16, (2 << 20) // per_pos))
        self.chunk = int(chunk)
        self.threads = 1 if threads is None else max(1, int(threads))

    @property
    def n_modes(self) -> int:
        return int(self.probe.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.volume.shape[0])

    def _prepare_shared(self, frac):
        """If the fractional shifts take few distinct values (raster scans), shift the probe
        once per value; returns ``(shifted probes (U, M, n, n), index per position (B,))``
        or None."""
        if not self.subpixel or not np.any(frac != 0.0):
            return None
        key = np.round(frac, 9)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        per = self.n_modes * self.n_shape[0] * self.n_shape[1] * self.cdt.itemsize
        if 2 * uniq.shape[0] > frac.shape[0] or uniq.shape[0] * per > (256 << 20):
            return None
        shift = FourierShift(
            uniq[:, None], self.probe.shape, self.cdt, self.backend.xp, self.backend.workers
        )
        return shift.fwd(self.probe), inv.ravel()

    def _run(self, corners_px, out_int=None, out_exit=None):
        """Forward model for corners ``(B, 2)``: intensities into ``out_int`` and/or exit
        waves into ``out_exit``."""
        xp = self.backend.xp
        ci, frac = split_corners(corners_px, self.subpixel)
        src = ObjectWindows(self.volume, ci, self.n_shape)
        B = ci.shape[0]
        shared = self._prepare_shared(frac)
        step = self.chunk
        threads = 1 if self.backend.is_gpu else self.threads
        if threads > 1 and self._chunk_auto:
            # at least ~4 chunks per thread, so that threads balance the load dynamically
            step = max(1, min(step, -(-B // (4 * threads))))
        chunks = chunk_bounds(B, step)
        threads = max(1, min(threads, len(chunks)))

        def start(b0, b1, buf, workers):
            """The probe, shifted by the fractional part of the corner."""
            if shared is not None:  # few distinct fractions: shifted probes precomputed
                probes, sel = shared
                return xp.take(probes, xp.asarray(sel[b0:b1]), axis=0, out=buf)
            f = frac[b0:b1]
            if not (self.subpixel and np.any(f != 0.0)):
                return self.probe[None]
            shift = FourierShift(f[:, None], self.probe.shape, self.cdt, xp, workers)
            return shift.shift_spectrum(self.probe_hat, buf)

        def finish(b0, b1, psi, workers):
            inplace(fft2, psi, workers=workers)
            if self.detector_transfer is not None:  # near field: F^-1 H R_-f F psi
                psi *= self.detector_transfer
                if self.subpixel and np.any(frac[b0:b1] != 0.0):
                    back = FourierShift(-frac[b0:b1, None], psi.shape, self.cdt, xp)
                    psi *= back.ry
                    psi *= back.rx
                inplace(ifft2, psi, workers=workers)
            intensity(psi, 1, out_int[b0:b1], overwrite=True)

        self.engine.forward(
            src,
            chunks,
            threads,
            start,
            self.n_modes,
            dest=out_exit,
            finish=None if out_int is None else finish,
        )

    def intensities(self, corners_px, out=None):
        """Detector intensities ``(B, n, n)`` (real dtype of the backend; far field: zero
        frequency at index (0, 0)) for corners ``(B, 2)`` in pixels (fractional allowed)."""
        B = to_numpy(corners_px).reshape(-1, 2).shape[0]
        if out is None:
            out = self.backend.xp.empty((B,) + self.n_shape, dtype=self.rdt)
        self._run(corners_px, out_int=out)
        return out

    def exit_waves(self, corners_px, out=None):
        """Exit waves ``(B, M, n, n)`` for corners ``(B, 2)`` in pixels."""
        B = to_numpy(corners_px).reshape(-1, 2).shape[0]
        if out is None:
            out = self.backend.xp.empty((B, self.n_modes) + self.n_shape, dtype=self.cdt)
        self._run(corners_px, out_exit=out)
        return out


def simulate_intensities(
    transmission,
    probe,
    corners_px,
    slice_spacing,
    wavelength,
    pixel_size,
    backend: Backend | None = None,
    batch: int | None = None,
    propagator: str = "fresnel",
    **kwargs,
):
    """Far-field intensities ``(B, n, n)`` of :class:`MultisliceModel`.

    ``batch`` is the number of positions per chunk; other keyword arguments go to
    :class:`MultisliceModel`.
    """
    model = MultisliceModel(
        transmission,
        probe,
        slice_spacing,
        wavelength,
        pixel_size,
        backend,
        propagator=propagator,
        chunk=batch,
        **kwargs,
    )
    return model.intensities(corners_px)
