"""GPU (CuPy) runs agree with the CPU and are deterministic (skipped without a GPU)."""

import numpy as np
import pytest
from simconfigs import MODALITY_NAMES, make_config

from xrayflow.backend import gpu_available
from xrayflow.simulate import simulate

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU"),
]


@pytest.mark.parametrize("modality", MODALITY_NAMES)
def test_gpu_matches_cpu_expected_intensities(modality):
    noise = {"photons_per_probe": 1e5, "poisson": False}
    cpu = simulate(make_config(modality, noise=noise, device="cpu", precision="double"))
    gpu = simulate(make_config(modality, noise=noise, device="gpu", precision="double"))
    np.testing.assert_allclose(gpu.data, cpu.data, rtol=1e-3, atol=1e-4 * cpu.data.max())


@pytest.mark.parametrize("modality", MODALITY_NAMES)
def test_gpu_deterministic(modality):
    a = simulate(make_config(modality, device="gpu"))
    b = simulate(make_config(modality, device="gpu"))
    assert np.array_equal(a.data, b.data)
