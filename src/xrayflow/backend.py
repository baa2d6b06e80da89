"""Array backend: one namespace ``xp`` (NumPy or CuPy) chosen at run time.

Nothing here imports CuPy at module import time; :func:`get_backend` imports it only
when a GPU is asked for (``device="gpu"``) or found (``device="auto"``).

This module is the only FFT entry point of xrayflow: the module-level :func:`fft2`,
:func:`ifft2`, :func:`fftn`, :func:`ifftn`, :func:`fft`, :func:`ifft`, :func:`fftfreq`,
:func:`fftshift` and :func:`ifftshift` act on NumPy or CuPy arrays alike (``scipy.fft`` with
``workers`` threads on the CPU, ``cupyx.scipy.fft`` on the GPU), and :class:`Backend` has the
same transforms bound to its worker count. Nothing else imports ``scipy.fft``,
``numpy.fft`` or ``cupyx.scipy.fft``. Every transform takes ``norm``; the project
convention (docs/physics.md) is ``norm="ortho"`` for far-field propagation, so that
sum |psi|^2 = sum I (probe power equals photon counts).
"""

from __future__ import annotations

import os
import sys
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
        import cupy
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


_WORKERS = [0]  # 0: default_workers(); set_fft_workers() overrides it


def set_fft_workers(n: int) -> None:
    """CPU FFT threads of the module-level transforms (those called without ``workers``)."""
    _WORKERS[0] = max(1, int(n))


def fft_workers() -> int:
    """CPU FFT threads of a transform called without ``workers``."""
    return _WORKERS[0] or default_workers()


def _standin(a) -> bool:
    """Whether ``a`` is an array of :mod:`xrayflow.testing.strict_device` (CI's device)."""
    return getattr(type(a), "_xrayflow_standin", False)


def _fft_call(name: str, a, workers: int | None, overwrite_x: bool, **kw):
    """``<module>.<name>(a, **kw)`` on the device that holds ``a``."""
    if _standin(a):  # NumPy's kernels on the stand-in's buffer
        return type(a)(_fft_call(name, a._buf, workers, overwrite_x, **kw))
    if type(a).__module__.split(".")[0] == "cupy":
        import cupyx.scipy.fft as cufft

        return getattr(cufft, name)(a, overwrite_x=overwrite_x, **kw)
    w = workers or fft_workers()
    return getattr(scipy.fft, name)(a, overwrite_x=overwrite_x, workers=w, **kw)


def fft2(a, axes=(-2, -1), norm: str = "ortho", overwrite_x: bool = False, workers=None):
    """2D FFT over ``axes`` (default the last two, (y, x)) of a NumPy or CuPy array."""
    return _fft_call("fft2", a, workers, overwrite_x, axes=axes, norm=norm)


def ifft2(a, axes=(-2, -1), norm: str = "ortho", overwrite_x: bool = False, workers=None):
    """Inverse 2D FFT over ``axes``."""
    return _fft_call("ifft2", a, workers, overwrite_x, axes=axes, norm=norm)


def fftn(a, axes=None, norm: str = "ortho", overwrite_x: bool = False, workers=None):
    """N-dimensional FFT (all axes unless ``axes`` is given)."""
    return _fft_call("fftn", a, workers, overwrite_x, axes=axes, norm=norm)


def ifftn(a, axes=None, norm: str = "ortho", overwrite_x: bool = False, workers=None):
    """Inverse N-dimensional FFT."""
    return _fft_call("ifftn", a, workers, overwrite_x, axes=axes, norm=norm)


def fft(a, axis: int = -1, norm: str = "ortho", overwrite_x: bool = False, workers=None):
    """1D FFT along ``axis``."""
    return _fft_call("fft", a, workers, overwrite_x, axis=axis, norm=norm)


def ifft(a, axis: int = -1, norm: str = "ortho", overwrite_x: bool = False, workers=None):
    """Inverse 1D FFT along ``axis``."""
    return _fft_call("ifft", a, workers, overwrite_x, axis=axis, norm=norm)


def fftfreq(n: int, d: float = 1.0, xp: ModuleType = np):
    """Sample frequencies of an ``n``-point FFT with sample spacing ``d`` (cycles per unit
    of ``d``; zero frequency at index 0), as an ``xp`` float64 array."""
    return xp.asarray(scipy.fft.fftfreq(int(n), d))


def fftshift(a, axes=None):
    """Move the zero frequency from index 0 to the centre (``n // 2``) along ``axes``."""
    if _standin(a):
        return type(a)(fftshift(a._buf, axes))
    return array_module(a).fft.fftshift(a, axes=axes)


def ifftshift(a, axes=None):
    """Inverse of :func:`fftshift`: the centre back to index 0."""
    if _standin(a):
        return type(a)(ifftshift(a._buf, axes))
    return array_module(a).fft.ifftshift(a, axes=axes)


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the FFTs and dtypes that go with it.

    Attributes:
        xp: ``numpy`` or ``cupy`` (or the test stand-in :mod:`xrayflow.testing.strict_device`).
        device: ``"cpu"`` or ``"gpu"`` (or ``"strict"``).
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

    def fft2(self, a, axes=(-2, -1), norm: str = "ortho", overwrite_x: bool = False):
        """2D FFT over ``axes`` (default the last two, (y, x))."""
        return fft2(a, axes, norm, overwrite_x, self.workers)

    def ifft2(self, a, axes=(-2, -1), norm: str = "ortho", overwrite_x: bool = False):
        """Inverse 2D FFT over ``axes``."""
        return ifft2(a, axes, norm, overwrite_x, self.workers)

    def fftn(self, a, axes=None, norm: str = "ortho", overwrite_x: bool = False):
        """N-dimensional FFT (all axes unless ``axes`` is given)."""
        return fftn(a, axes, norm, overwrite_x, self.workers)

    def ifftn(self, a, axes=None, norm: str = "ortho", overwrite_x: bool = False):
        """Inverse N-dimensional FFT."""
        return ifftn(a, axes, norm, overwrite_x, self.workers)

    def fft(self, a, axis: int = -1, norm: str = "ortho", overwrite_x: bool = False):
        """1D FFT along ``axis``."""
        return fft(a, axis, norm, overwrite_x, self.workers)

    def ifft(self, a, axis: int = -1, norm: str = "ortho", overwrite_x: bool = False):
        """Inverse 1D FFT along ``axis``."""
        return ifft(a, axis, norm, overwrite_x, self.workers)

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
    ``gpu`` without CuPy or a device raises :class:`BackendError`. ``strict`` (for tests;
    not a config value) is the CPU stand-in for a device of
    :mod:`xrayflow.testing.strict_device`.
    """
    if device not in DEVICES and device != "strict":
        raise BackendError(f"device must be one of {DEVICES}, got {device!r}")
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    real, cplx = PRECISIONS[precision]
    w = default_workers() if workers is None else max(1, int(workers))
    if device == "strict":
        from xrayflow.testing import strict_device

        return Backend(strict_device, "strict", real, cplx, w)
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
    if _standin(a):
        return sys.modules[type(a).__module__]
    if type(a).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def to_numpy(a) -> np.ndarray:
    """Host copy of a NumPy or CuPy array (NumPy arrays are returned as they are)."""
    if _standin(a) or type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)
