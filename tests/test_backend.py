"""Array backend: device selection, FFT conventions, no CuPy at import time."""

import subprocess
import sys

import numpy as np
import pytest

from xrayflow import backend
from xrayflow.backend import BackendError, array_module, get_backend, gpu_available, to_numpy


def test_cpu_backend_is_numpy_single_precision():
    be = get_backend("cpu")
    assert be.xp is np and not be.is_gpu
    assert be.complex_dtype == np.complex64 and be.real_dtype == np.float32
    be2 = get_backend("cpu", precision="double", workers=1)
    assert be2.complex_dtype == np.complex128 and be2.workers == 1


@pytest.mark.parametrize("bad", [{"device": "tpu"}, {"precision": "half"}])
def test_bad_device_or_precision_names_the_value(bad):
    with pytest.raises(BackendError, match=next(iter(bad.values()))):
        get_backend(**bad)


@pytest.mark.skipif(gpu_available(), reason="a GPU is present")
def test_gpu_request_without_gpu_is_a_clear_error_and_auto_falls_back():
    with pytest.raises(BackendError, match="CuPy"):
        get_backend("gpu")
    assert get_backend("auto").device == "cpu"


def test_fft_is_ortho_unitary_and_keeps_precision():
    be = get_backend("cpu", workers=2)
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 16, 16)) + 1j * rng.standard_normal((3, 16, 16))).astype(
        np.complex64
    )
    f = be.fft2(a)
    assert f.dtype == np.complex64
    np.testing.assert_allclose(np.sum(np.abs(f) ** 2), np.sum(np.abs(a) ** 2), rtol=1e-5)
    np.testing.assert_allclose(f, np.fft.fft2(a, norm="ortho"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(be.ifft2(f), a, atol=1e-5)
    v = a[0]
    np.testing.assert_allclose(be.ifftn(be.fftn(v)), v, atol=1e-5)


def test_array_module_and_to_numpy_on_host_arrays():
    a = np.arange(3)
    assert array_module(a) is np
    assert to_numpy(a) is a


def test_importing_the_package_does_not_import_cupy():
    code = (
        "import sys, importlib, pkgutil, xrayflow\n"
        "for m in pkgutil.walk_packages(xrayflow.__path__, 'xrayflow.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "assert 'cupy' not in sys.modules, 'cupy imported at import time'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU")
def test_gpu_fft_matches_cpu():
    gpu, cpu = get_backend("gpu"), get_backend("cpu")
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((4, 32, 32)) + 1j * rng.standard_normal((4, 32, 32))).astype(
        np.complex64
    )
    np.testing.assert_allclose(
        gpu.to_numpy(gpu.fft2(gpu.asarray(a))), cpu.fft2(a), rtol=1e-4, atol=1e-4
    )


def test_backend_is_the_only_fft_entry_point():
    """No module but xrayflow.backend calls numpy.fft, scipy.fft or cupyx.scipy.fft."""
    import re
    from pathlib import Path

    import xrayflow

    pattern = re.compile(r"\b(scipy\.fft|numpy\.fft|np\.fft|cupyx\.scipy\.fft|xp\.fft)\b")
    root = Path(xrayflow.__file__).parent
    offenders = [
        f"{p.relative_to(root)}:{i}"
        for p in sorted(root.rglob("*.py"))
        if p.name != "backend.py" or p.parent != root
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line.split("#")[0]) and "``" not in line
    ]
    assert offenders == []


def test_module_fft_matches_backend_and_numpy():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 8, 6)) + 1j * rng.standard_normal((3, 8, 6))
    be = get_backend("cpu", "double", workers=2)
    np.testing.assert_allclose(backend.fft2(a), np.fft.fft2(a, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(be.fftn(a, norm="backward"), np.fft.fftn(a), atol=1e-12)
    np.testing.assert_allclose(backend.ifft(a, axis=0), np.fft.ifft(a, axis=0, norm="ortho"))
    np.testing.assert_array_equal(backend.fftfreq(5, 0.5), np.fft.fftfreq(5, 0.5))
    np.testing.assert_array_equal(backend.fftshift(a, axes=(1,)), np.fft.fftshift(a, axes=1))
    np.testing.assert_array_equal(backend.ifftshift(backend.fftshift(a)), a)
