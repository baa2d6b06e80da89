"""Multislice (split-step) forward model, batched over scan positions and probe modes.

Conventions (docs/physics.md): for each probe mode ψ and slice j, ``ψ ← t_j · ψ``, then,
except after the last slice, ``ψ ← F⁻¹{H_j F{ψ}}`` with ``H_j`` the transfer function for
the spacing ``Δz_j``; the detector sees ``I = Σ_m |F{ψ_m}|²`` (unitary FFT, zero frequency
at index (0, 0)). Slice transmission ``t = exp(−ikΔz(δ − iβ))``.

Scan positions are top-left corners of the probe window on the object grid, in (fractional)
pixels. The integer part ``i = rint(c)`` selects the object patch ``[i, i + n)``; the
fractional part ``f = c − i ∈ [−½, ½]`` shifts the probe by ``+f`` pixels (Fourier shift),
so probe sample ``k`` sits at object coordinate ``c + k``.

Linear operators exposed with their adjoints (exact adjoints for the inner product
``<a, b> = Σ conj(a)·b``): :func:`transmit` / :func:`transmit_adjoint`,
:func:`extract_patches` / :func:`extract_patches_adjoint` (scatter-add),
:func:`fourier_shift` / :func:`fourier_shift_adjoint`; propagation and far field in
:mod:`xrayflow.optics.propagation`.

Performance (CPU): the batch is split into chunks small enough to stay in cache; each chunk
is processed with preallocated buffers, in-place ufuncs and in-place FFTs
(``backend.workers`` threads per FFT); optionally (``threads=``) chunks run in a thread
pool with single-threaded FFTs. Transfer functions come from a cache keyed on
(shape, Δz, λ, Δx).
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from xrayflow.backend import Backend, array_module, fftfreq, get_backend, to_numpy
from xrayflow.errors import PhysicsError
from xrayflow.optics.propagation import KINDS, cached_transfer_function

__all__ = [
    "MultisliceModel",
    "exit_waves",
    "extract_patches",
    "extract_patches_adjoint",
    "far_field_intensity",
    "fourier_shift",
    "fourier_shift_adjoint",
    "fourier_shift_ramps",
    "simulate_intensities",
    "split_corners",
    "transmission",
    "transmit",
    "transmit_adjoint",
]


# ---------------------------------------------------------------------------------------
# slice transmission
def transmission(delta, beta, wavelength, thickness, xp=None, dtype=np.complex64):
    """Slice transmission ``t = exp(−ikΔz(δ − iβ)) = exp(−ikΔzδ)·exp(−kΔzβ)``.

    ``delta``, ``beta``: arrays (any shape) or scalars; ``thickness`` Δz in m (scalar, or an
    array broadcasting against ``delta``, e.g. ``(S, 1, 1)`` per slice). Computed in float64,
    returned as ``dtype`` in namespace ``xp`` (default: the namespace of ``delta``).
    """
    if xp is None:
        xp = array_module(delta)
    lam = float(wavelength)
    if not lam > 0:
        raise PhysicsError(f"wavelength must be positive, got {wavelength!r}")
    k = 2.0 * np.pi / lam
    d = xp.asarray(delta, dtype=xp.float64)
    b = xp.asarray(beta, dtype=xp.float64)
    dz = xp.asarray(thickness, dtype=xp.float64)
    kdz = k * dz
    t = xp.exp(-kdz * b) * xp.exp(-1j * (kdz * d))
    return t.astype(dtype, copy=False)


def transmit(psi, t, out=None):
    """``t · ψ`` (broadcasting); with ``out`` written in place."""
    xp = array_module(psi)
    return xp.multiply(psi, t, out=out)


def transmit_adjoint(psi, t, out=None):
    """Adjoint of :func:`transmit` in ψ: ``conj(t) · ψ``."""
    xp = array_module(psi)
    return xp.multiply(psi, xp.conj(t), out=out)


# ---------------------------------------------------------------------------------------
# patches
def _shape_n(shape) -> tuple[int, int]:
    if np.ndim(shape) == 0:
        return int(shape), int(shape)
    shape = tuple(int(s) for s in shape)
    return shape[-2], shape[-1]


def _check_corners(corners, vol_shape, n_shape) -> np.ndarray:
    c = to_numpy(corners)
    if c.ndim != 2 or c.shape[1] != 2:
        raise PhysicsError(f"corners must have shape (B, 2), got {c.shape}")
    c = c.astype(np.int64)
    ny, nx = vol_shape[-2], vol_shape[-1]
    py, px = n_shape
    if c.size and (
        c[:, 0].min() < 0 or c[:, 1].min() < 0 or c[:, 0].max() + py > ny or c[:, 1].max() + px > nx
    ):
        bad = np.flatnonzero(
            (c[:, 0] < 0) | (c[:, 1] < 0) | (c[:, 0] + py > ny) | (c[:, 1] + px > nx)
        )
        raise PhysicsError(
            f"{bad.size} probe window(s) of {py}x{px} px fall outside the {ny}x{nx} object "
            f"(first: corner {tuple(int(v) for v in c[bad[0]])}); enlarge the object or "
            f"shrink the scan"
        )
    return c


def _flat_index(corners_int: np.ndarray, nx_obj: int, n_shape, xp):
    py, px = n_shape
    ay = np.arange(py, dtype=np.int64)
    ax = np.arange(px, dtype=np.int64)
    idx = (corners_int[:, 0, None, None] + ay[None, :, None]) * nx_obj + (
        corners_int[:, 1, None, None] + ax[None, None, :]
    )
    return xp.asarray(idx)


def extract_patches(volume, corners, shape, out=None):
    """Gather probe-sized windows: ``out[s, b] = volume[s, y_b:y_b+n, x_b:x_b+n]``.

    Args:
        volume: ``(S, Ny, Nx)`` (a 2D ``(Ny, Nx)`` object is treated as S = 1).
        corners: ``(B, 2)`` integer top-left corners ``(y, x)``.
        shape: patch shape ``(ny, nx)`` or an int.
        out: optional ``(S, B, ny, nx)`` buffer.
    Returns ``(S, B, ny, nx)``. One vectorised gather, no Python loop over positions.
    """
    xp = array_module(volume)
    vol = volume[None] if volume.ndim == 2 else volume
    n_shape = _shape_n(shape)
    c = _check_corners(corners, vol.shape, n_shape)
    S, ny, nx = vol.shape
    idx = _flat_index(c, nx, n_shape, xp)
    flat = vol.reshape(S, ny * nx)
    if out is None:
        out = xp.empty((S, c.shape[0]) + n_shape, dtype=vol.dtype)
    if xp is np:
        np.take(flat, idx, axis=1, out=out, mode="clip")  # bounds checked above
    else:
        xp.take(flat, idx, axis=1, out=out)
    return out


def extract_patches_adjoint(patches, corners, volume_shape):
    """Adjoint of :func:`extract_patches`: scatter-add ``(S, B, n, n)`` patches into a zero
    volume of ``volume_shape`` ``(S, Ny, Nx)`` (or ``(Ny, Nx)``; then S must be 1)."""
    xp = array_module(patches)
    vshape = tuple(int(v) for v in volume_shape)
    vol3 = (1,) + vshape if len(vshape) == 2 else vshape
    S, ny, nx = vol3
    n_shape = patches.shape[-2:]
    c = _check_corners(corners, vol3, n_shape)
    if patches.shape[0] != S:
        raise PhysicsError(f"patches have {patches.shape[0]} slices, volume {S}")
    idx = _flat_index(c, nx, n_shape, xp).ravel()
    out = xp.zeros((S, ny * nx), dtype=patches.dtype)
    cplx = xp.iscomplexobj(patches)
    for s in range(S):
        p = patches[s].ravel()
        re = xp.bincount(idx, weights=p.real, minlength=ny * nx)
        if cplx:
            im = xp.bincount(idx, weights=p.imag, minlength=ny * nx)
            out[s] = re + 1j * im
        else:
            out[s] = re
    return out.reshape(vshape)


# ---------------------------------------------------------------------------------------
# sub-pixel shifts
def fourier_shift_ramps(shifts, shape, xp=np, dtype=np.complex64):
    """Separable phase ramps ``(ry (B, ny), rx (B, nx))`` with ``ry = exp(−2πi fy sy)``
    (``fy = fftfreq(ny)`` cycles/pixel); multiplying a spectrum by ``ry[:, :, None] *
    rx[:, None, :]`` shifts the image by ``+(sy, sx)`` pixels. Phases in float64."""
    s = np.asarray(to_numpy(shifts), dtype=np.float64).reshape(-1, 2)
    ny, nx = _shape_n(shape)
    fy = fftfreq(ny)
    fx = fftfreq(nx)
    ry = np.exp(-2j * np.pi * s[:, 0, None] * fy[None, :]).astype(dtype)
    rx = np.exp(-2j * np.pi * s[:, 1, None] * fx[None, :]).astype(dtype)
    return xp.asarray(ry), xp.asarray(rx)


def _complex_of(a, xp):
    if xp.iscomplexobj(a):
        return a.dtype
    return np.result_type(a.dtype, np.complex64)


def fourier_shift(a, shift, backend: Backend):
    """Shift images by sub-pixel amounts (periodic, band-limited): ``out(r) = a(r − s)``.

    Args:
        a: ``(ny, nx)`` (one image, shifted by each of the B shifts -> ``(B, ny, nx)``) or
           ``(B, ..., ny, nx)`` (image b shifted by ``shift[b]``).
        shift: ``(B, 2)`` shifts ``(sy, sx)`` in pixels (positive = towards larger index).
    Returns a complex array ``(B, ..., ny, nx)``.
    """
    xp = array_module(a)
    s = np.asarray(to_numpy(shift), dtype=np.float64).reshape(-1, 2)
    B = s.shape[0]
    if a.ndim != 2 and a.shape[0] != B:
        raise PhysicsError(f"fourier_shift: leading axis {a.shape[0]} != number of shifts {B}")
    cdt = _complex_of(a, xp)
    ry, rx = fourier_shift_ramps(s, a.shape[-2:], xp, cdt)
    A = backend.fft2(a)
    mid = (1,) * (a.ndim - 3) if a.ndim > 2 else ()
    ry = ry.reshape((B,) + mid + (ry.shape[1], 1))
    rx = rx.reshape((B,) + mid + (1, rx.shape[1]))
    if a.ndim == 2:
        out = A[None] * ry
    else:
        out = xp.multiply(A, ry, out=A)
    xp.multiply(out, rx, out=out)
    return backend.ifft2(out, overwrite_x=True)


def fourier_shift_adjoint(b, shift, backend: Backend, reduce: bool = False):
    """Adjoint of :func:`fourier_shift`: shift by ``−s``; ``reduce=True`` also sums over the
    leading axis (the adjoint of the 2D-input form, which broadcasts one image to B)."""
    out = fourier_shift(b, -np.asarray(to_numpy(shift), dtype=np.float64), backend)
    if reduce:
        out = out.sum(axis=0)
    return out


def split_corners(corners_px, subpixel: bool = True):
    """Split fractional corners into ``(integer corners (B, 2) int64, fractions (B, 2))``
    with ``i = rint(c)`` and ``f = c − i``; fractions are 0 when ``subpixel`` is False."""
    c = np.asarray(to_numpy(corners_px), dtype=np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(c)):
        raise PhysicsError("scan corners must be finite")
    ci = np.rint(c)
    frac = c - ci if subpixel else np.zeros_like(c)
    return ci.astype(np.int64), frac


# ---------------------------------------------------------------------------------------
# generic (unfused) building blocks
def _ensure_transfer_stack(transfer, n_prop, xp):
    if transfer is None:
        if n_prop:
            raise PhysicsError("a transfer function is needed for more than one slice")
        return []
    if transfer.ndim == 2:
        return [transfer] * n_prop
    if transfer.shape[0] != n_prop:
        raise PhysicsError(
            f"transfer has {transfer.shape[0]} kernels but {n_prop} propagations are needed"
        )
    return [transfer[j] for j in range(n_prop)]


def exit_waves(probe, patches, transfer, backend: Backend, out=None):
    """Exit waves of the multislice model for a batch of positions.

    Args:
        probe: ``(M, n, n)`` modes (same for every position) or ``(B, M, n, n)``
            (per position, e.g. already sub-pixel shifted).
        patches: ``(S, B, n, n)`` slice transmissions seen by each position.
        transfer: ``(n, n)`` (same spacing everywhere) or ``(S−1, n, n)``; may be None if S = 1.
        out: optional ``(B, M, n, n)`` complex buffer.
    Returns ``(B, M, n, n)``.
    """
    xp = backend.xp
    S, B = patches.shape[:2]
    p = probe if probe.ndim == 4 else probe[None]
    M = p.shape[1]
    shape = (B, M) + tuple(patches.shape[-2:])
    dt = np.result_type(probe.dtype, patches.dtype, backend.complex_dtype)
    if out is None:
        out = xp.empty(shape, dtype=dt)
    out[...] = p
    Hs = _ensure_transfer_stack(transfer, S - 1, xp)
    for s in range(S):
        xp.multiply(out, patches[s][:, None], out=out)
        if s < S - 1:
            res = backend.fft2(out, overwrite_x=True)
            xp.multiply(res, Hs[s], out=res)
            res = backend.ifft2(res, overwrite_x=True)
            if res is not out:
                out[...] = res
    return out


def far_field_intensity(exit_waves_, backend: Backend, out=None, overwrite: bool = False):
    """Detector intensity ``Σ_m |F{ψ_m}|²`` for exit waves ``(B, M, n, n)`` -> ``(B, n, n)``.

    Zero frequency at index (0, 0). ``overwrite=True`` lets the FFT reuse the input buffer.
    """
    xp = backend.xp
    psi = exit_waves_
    if psi.ndim == 3:
        psi = psi[:, None]
    F = backend.fft2(psi, overwrite_x=overwrite)
    rdt = np.empty(0, dtype=F.dtype).real.dtype
    if out is None:
        out = xp.empty((F.shape[0],) + F.shape[2:], dtype=rdt)
    _intensity_into(F, out, xp, owned=overwrite or F is not psi)
    return out


def _intensity_into(F, out, xp, owned: bool):
    """``out = Σ_m |F[:, m]|²``; squares ``F`` in place (as a float view) when ``owned``."""
    M = F.shape[1]
    if xp is np and owned and F.flags.c_contiguous:
        v = F.view(F.real.dtype).reshape(F.shape + (2,))
        np.multiply(v, v, out=v)
        np.add(v[:, 0, ..., 0], v[:, 0, ..., 1], out=out)
        for m in range(1, M):
            np.add(out, v[:, m, ..., 0], out=out)
            np.add(out, v[:, m, ..., 1], out=out)
        return out
    out[...] = F[:, 0].real ** 2 + F[:, 0].imag ** 2
    for m in range(1, M):
        out += F[:, m].real ** 2 + F[:, m].imag ** 2
    return out


# ---------------------------------------------------------------------------------------
# fused, buffered forward model
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="xrayflow-ms")
            _POOLS[n] = pool
        return pool


def _stack3(a, xp, cdt, expected: str):
    """``a`` as a C-contiguous 3D ``cdt`` array on ``xp`` (2D gets a leading axis of 1);
    raises :class:`PhysicsError` ``"{expected}, got shape ..."`` otherwise."""
    a = xp.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise PhysicsError(f"{expected}, got shape {a.shape}")
    return xp.ascontiguousarray(a.astype(cdt, copy=False))


class _Workspace:
    """Per-thread buffers for a chunk of ``b`` positions."""

    def __init__(self, xp, b, M, n_shape, cdt):
        self.buf = xp.empty((b, M) + n_shape, dtype=cdt)
        # the CPU path gathers patches through a sliding-window view instead
        self.patch = None if xp is np else xp.empty((b,) + n_shape, dtype=cdt)
        self.b = b


class MultisliceModel:
    """Multislice forward model with cached transfer functions and reusable buffers.

    Args:
        transmission: ``(S, Ny, Nx)`` complex slice transmissions (or ``(Ny, Nx)``, S = 1).
        probe: ``(M, n, n)`` probe modes (or ``(n, n)``).
        slice_spacing: m, scalar or ``(S−1,)`` per-gap spacings (ignored when S = 1).
        wavelength, pixel_size: m (pixel_size scalar or ``(dy, dx)``).
        backend: :class:`xrayflow.backend.Backend` (precision = its complex dtype).
        propagator: ``"fresnel"`` or ``"angular_spectrum"``.
        chunk: positions per inner FFT call per thread (default: ~2 MiB of work buffer on
            the CPU, ~256 MiB on the GPU).
        subpixel: apply the fractional part of the corners as a Fourier shift of the probe.
        check_sampling: raise PhysicsError if a slice spacing exceeds ``NΔx²/λ``.
        threads: CPU threads over chunks of positions, each then running single-threaded
            FFTs (parallel ufuncs too; worth it on many-core nodes that are not
            oversubscribed). Default 1: chunks run one after another and each FFT uses
            ``backend.workers`` pocketfft threads, which stays efficient when other
            processes load the CPU (measured: Python threads then stall on the GIL).
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
        subpixel: bool = True,
        check_sampling: bool = True,
        band_limit: bool = True,
        threads: int | None = None,
    ):
        self.backend = backend if backend is not None else get_backend()
        xp = self.backend.xp
        if propagator not in KINDS:
            raise PhysicsError(f"propagator must be one of {KINDS}, got {propagator!r}")
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
            cached_transfer_function(
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
        if xp is np:
            self._windows = [
                np.lib.stride_tricks.sliding_window_view(self.volume[j], self.n_shape)
                for j in range(S)
            ]
        self.subpixel = bool(subpixel)
        self.probe_hat = self.backend.fft2(self.probe)  # (M, n, n), for sub-pixel shifts
        M = self.probe.shape[0]
        if chunk is None:
            self._chunk_auto = True
            # CPU: ~2 MiB of work buffer per thread (stays in L2/L3 cache; measured best);
            # GPU: ~256 MiB, large batches per cuFFT call
            per_pos = max(1, M * self.n_shape[0] * self.n_shape[1] * cdt.itemsize)
            if self.backend.is_gpu:
                chunk = max(1, (256 << 20) // per_pos)
            else:
                chunk = max(1, min(16, (2 << 20) // per_pos))
        else:
            self._chunk_auto = False
        self.chunk = int(chunk)
        self.threads = 1 if threads is None else max(1, int(threads))
        self._local = threading.local()

    # -- helpers -------------------------------------------------------------------------
    @property
    def n_modes(self) -> int:
        return int(self.probe.shape[0])

    @property
    def n_slices(self) -> int:
        return int(self.volume.shape[0])

    def _workspace(self, b: int) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None or ws.b < b:
            ws = _Workspace(self.backend.xp, b, self.n_modes, self.n_shape, self.cdt)
            self._local.ws = ws
        return ws

    def _run_chunk(self, backend1, ci, frac, shared, out_int=None, out_exit=None):
        """Forward model for one chunk; writes intensities and/or exit waves."""
        xp = backend1.xp
        b = ci.shape[0]
        ws = self._workspace(b)
        buf = ws.buf[:b]
        # 1. probe, shifted by the fractional part of the corner
        if shared is not None:  # few distinct fractions: shifted probes precomputed
            probes, sel = shared
            xp.take(probes, xp.asarray(sel), axis=0, out=buf)
        elif self.subpixel and np.any(frac != 0.0):
            ry, rx = fourier_shift_ramps(frac, self.n_shape, xp, self.cdt)
            xp.multiply(self.probe_hat[None], ry[:, None, :, None], out=buf)
            xp.multiply(buf, rx[:, None, None, :], out=buf)
            res = backend1.ifft2(buf, overwrite_x=True)
            if res is not buf:
                buf[...] = res
        else:
            buf[...] = self.probe[None]
        # 2. slices: transmit, then propagate except after the last one
        S = self.n_slices
        if xp is np:
            # gather through a sliding-window view: row-contiguous copies, no index array
            cy, cx = ci[:, 0], ci[:, 1]
            windows = self._windows
        else:
            idx = _flat_index(ci, self.volume.shape[2], self.n_shape, xp)
            flat = self.volume.reshape(S, -1)
            patch = ws.patch[:b]
        for s in range(S):
            if xp is np:
                patch = windows[s][cy, cx]  # (b, n, n), one vectorised gather
            else:
                xp.take(flat[s], idx, out=patch)
            xp.multiply(buf, patch[:, None], out=buf)
            if s < S - 1:
                res = backend1.fft2(buf, overwrite_x=True)
                xp.multiply(res, self.transfer[s], out=res)
                res = backend1.ifft2(res, overwrite_x=True)
                if res is not buf:
                    buf[...] = res
        if out_exit is not None:
            out_exit[...] = buf
        # 3. far field
        if out_int is not None:
            res = backend1.fft2(buf, overwrite_x=True)
            _intensity_into(res, out_int, xp, owned=True)

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
        shifted = fourier_shift(self.probe[None].repeat(uniq.shape[0], axis=0), uniq, self.backend)
        return shifted.astype(self.cdt, copy=False), inv.ravel()

    def _dispatch(self, corners_px, out_int=None, out_exit=None):
        ci, frac = split_corners(corners_px, self.subpixel)
        _check_corners(ci, self.volume.shape, self.n_shape)
        B = ci.shape[0]
        bk = self.backend
        shared = self._prepare_shared(frac)
        step = self.chunk
        nthreads = 1 if bk.is_gpu else self.threads
        if nthreads > 1 and self._chunk_auto:
            # at least ~4 chunks per thread, so that threads balance the load dynamically
            step = max(1, min(step, -(-B // (4 * nthreads))))
        starts = list(range(0, B, step))
        nthreads = min(nthreads, len(starts))
        b1 = bk if nthreads <= 1 else dataclasses.replace(bk, workers=1)

        def work(a):
            z = slice(a, min(B, a + step))
            self._run_chunk(
                b1,
                ci[z],
                frac[z],
                None if shared is None else (shared[0], shared[1][z]),
                None if out_int is None else out_int[z],
                None if out_exit is None else out_exit[z],
            )

        if nthreads <= 1:
            for a in starts:
                work(a)
            return
        # one task per chunk (threads pull chunks as they finish), FFTs single-threaded
        pool = _pool(nthreads)
        futures = [pool.submit(work, a) for a in starts]
        for f in futures:
            f.result()

    # -- public --------------------------------------------------------------------------
    def intensities(self, corners_px, out=None):
        """Far-field intensities ``(B, n, n)`` (real dtype of the backend) for corners
        ``(B, 2)`` in pixels (fractional allowed)."""
        xp = self.backend.xp
        B = to_numpy(corners_px).reshape(-1, 2).shape[0]
        if out is None:
            out = xp.empty((B,) + self.n_shape, dtype=self.rdt)
        self._dispatch(corners_px, out_int=out)
        return out

    def exit_waves(self, corners_px, out=None):
        """Exit waves ``(B, M, n, n)`` for corners ``(B, 2)`` in pixels."""
        xp = self.backend.xp
        B = to_numpy(corners_px).reshape(-1, 2).shape[0]
        if out is None:
            out = xp.empty((B, self.n_modes) + self.n_shape, dtype=self.cdt)
        self._dispatch(corners_px, out_exit=out)
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
    """Far-field intensities ``(B, n, n)`` of the multislice model (see :class:`MultisliceModel`).

    ``batch`` is the number of positions per inner FFT call (``chunk``); other keyword
    arguments go to :class:`MultisliceModel`.
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
