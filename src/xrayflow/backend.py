"""Array backend: one namespace ``xp`` (NumPy or CuPy) chosen at run time.

Nothing here imports CuPy at module import time; :func:`get_backend` imports it only
when a GPU is asked for (``device="gpu"``) or found (``device="auto"``).

FFTs go through ``scipy.fft`` with ``workers`` on the CPU and ``cupyx.scipy.fft`` on
the GPU. Every transform takes ``norm`` explicitly; the project convention
(docs/physics.md) is ``norm="ortho"`` for far-field propagation, so that
sum |psi|^2 = sum I (probe power equals photon counts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import scipy.fft

from xrayflow.errors import XrayflowError

DEVICES = ("cpu", "gpu", "auto")
PRECISIONS = {"single": (np.float32, np.complex64), "double": (np.float64, np.complex128)}


class BackendError(XrayflowError, RuntimeError):
    """The requested device or precision is not available (a user error: exit status 2)."""


def _cupy() -> ModuleType | None:
    """Import CuPy if it is installed and sees a GPU; else None."""
    try:
        import cupy  # noqa: PLC0415 - deliberate lazy import
    except Exception:
        return None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:
        return None
    return cupy


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device is visible."""
    return _cupy() is not None


def uses_gpu(device: str) -> bool:
    """Whether ``get_backend(device)`` runs on the GPU (``gpu``, or ``auto`` with a GPU)."""
    return device == "gpu" or (device == "auto" and gpu_available())


def default_workers() -> int:
    """FFT threads per process: ``XRAYFLOW_FFT_WORKERS``, else the CPUs this process may use."""
    env = os.environ.get("XRAYFLOW_FFT_WORKERS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the FFTs and dtypes that go with it.

    Attributes:
        xp: ``numpy`` or ``cupy``.
        device: ``"cpu"`` or ``"gpu"``.
        real_dtype, complex_dtype: working precision (float32/complex64 by default).
        workers: FFT threads on the CPU (ignored on the GPU).
    """

    xp: ModuleType
    device: str
    real_dtype: Any = np.float32
    complex_dtype: Any = np.complex64
    workers: int = field(default_factory=default_workers)

    @property
    def is_gpu(self) -> bool:
        return self.device == "gpu"

    @property
    def _fft(self) -> ModuleType:
        if self.is_gpu:
            import cupyx.scipy.fft as cufft  # noqa: PLC0415

            return cufft
        return scipy.fft

    def _kw(self, overwrite_x: bool) -> dict:
        kw: dict = {"overwrite_x": overwrite_x}
        if not self.is_gpu:
            kw["workers"] = self.workers
        return kw

    def fft2(self, a, axes=(-2, -1), norm: str = "ortho", overwrite_x: bool = False):
        """2D FFT over ``axes`` (default the last two, (y, x))."""
        return self._fft.fft2(a, axes=axes, norm=norm, **self._kw(overwrite_x))

    def ifft2(self, a, axes=(-2, -1), norm: str = "ortho", overwrite_x: bool = False):
        """Inverse 2D FFT over ``axes``."""
        return self._fft.ifft2(a, axes=axes, norm=norm, **self._kw(overwrite_x))

    def fftn(self, a, axes=None, norm: str = "ortho", overwrite_x: bool = False):
        """N-dimensional FFT (all axes unless ``axes`` is given)."""
        return self._fft.fftn(a, axes=axes, norm=norm, **self._kw(overwrite_x))

    def ifftn(self, a, axes=None, norm: str = "ortho", overwrite_x: bool = False):
        """Inverse N-dimensional FFT."""
        return self._fft.ifftn(a, axes=axes, norm=norm, **self._kw(overwrite_x))

    def asarray(self, a, dtype=None):
        """Move ``a`` to this backend's device (no copy when already there)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """Return ``a`` as a NumPy array on the host."""
        return to_numpy(a)


def get_backend(
    device: str = "cpu", precision: str = "single", workers: int | None = None
) -> Backend:
    """Return the backend for ``device`` (cpu | gpu | auto) and ``precision`` (single | double).

    ``auto`` picks the GPU when CuPy and a CUDA device are present, else the CPU.
    ``gpu`` without CuPy or a device raises :class:`BackendError`.
    """
    if device not in DEVICES:
        raise BackendError(f"device must be one of {DEVICES}, got {device!r}")
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    real, cplx = PRECISIONS[precision]
    w = default_workers() if workers is None else max(1, int(workers))
    if device in ("gpu", "auto"):
        cp = _cupy()
        if cp is not None:
            return Backend(cp, "gpu", real, cplx, w)
        if device == "gpu":
            raise BackendError(
                "device: gpu was requested but CuPy with a CUDA device is not available "
                "(install the 'gpu' extra, or use device: cpu | auto)"
            )
    return Backend(np, "cpu", real, cplx, w)


def array_module(a) -> ModuleType:
    """The namespace (numpy or cupy) that owns array ``a``, without importing CuPy."""
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy  # noqa: PLC0415

        return cupy
    return np


def to_numpy(a) -> np.ndarray:
    """Host copy of a NumPy or CuPy array (NumPy arrays are returned as they are)."""
    if type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)
