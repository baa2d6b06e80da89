"""Physics of generated training patterns: Parseval, Poisson mean, attrs, determinism."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from xrayflow.modalities.bragg_cdi import training as B
from xrayflow.modalities.ptycho2d import training as P
from xrayflow.train import generate as G
from xrayflow.train.shards import read_shard, shard_info


def test_parseval_2d_expected_intensity():
    rng = np.random.default_rng(0)
    photons = 1e6
    probe = P.make_probe(32, {"waist_px": 4.0, "defocus": 2e-6}, photons)
    assert np.isclose(np.sum(np.abs(probe) ** 2), photons, rtol=1e-5)
    obj = P.random_object((64, 64), {"phase_max": 1.0, "amplitude_min": 0.7}, rng)
    patches = np.stack([obj[:32, :32], obj[10:42, 20:52]])
    inten = P.ptycho_patterns(probe, patches)
    power = np.sum(np.abs(probe[None] * patches) ** 2, axis=(-2, -1))
    transmission = power / photons
    assert np.all(transmission < 1) and np.all(transmission > 0.49)
    np.testing.assert_allclose(inten.sum(axis=(-2, -1)), photons * transmission, rtol=1e-5)


def test_parseval_3d_and_support():
    rng = np.random.default_rng(1)
    sup = B.crystal_support(16, rng, {})
    assert 0 < sup.mean() < 0.5 and sup[0].sum() == 0 and sup[:, :, -1].sum() == 0  # inside
    for seed in range(5):  # centred: |F| does not see translations
        com = np.array(
            ndimage.center_of_mass(B.crystal_support(16, np.random.default_rng(seed), {}))
        )
        assert np.all(np.abs(com - 7.5) <= 0.5 + 1e-9), com
    ph = B.strain_phase(sup, rng, {"phase_max": 1.0})
    assert np.all(ph[sup == 0] == 0) and np.abs(ph).max() <= 1.0 + 1e-6
    inten = B.bragg_patterns(np.stack([sup, sup * np.exp(1j * ph)]), 2, 5e6)
    assert inten.shape == (2, 32, 32, 32)
    np.testing.assert_allclose(inten.sum(axis=(1, 2, 3)), 5e6, rtol=1e-6)
    # strain changes the pattern but not its centrosymmetric part for a real object
    np.testing.assert_allclose(
        inten[0],
        np.roll(inten[0][::-1, ::-1, ::-1], 1, (0, 1, 2)),
        rtol=1e-6,
        atol=1e-6 * inten[0].max(),
    )
    assert not np.allclose(inten[0], inten[1])


def test_poisson_mean_and_noise_models():
    rng = np.random.default_rng(2)
    expected = np.full((200, 16, 16), 9.0)
    amp = G._noisy_amplitude(expected, {"noise": "poisson_intensity"}, rng)
    counts = amp**2
    assert abs(counts.mean() - 9.0) < 0.05 and abs(counts.var() - 9.0) < 0.3
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)  # integer counts
    none = G._noisy_amplitude(expected, {"noise": "none"}, rng)
    np.testing.assert_allclose(none, 3.0)
    pa = G._noisy_amplitude(expected, {"noise": "poisson_amplitude"}, rng)
    assert abs(pa.mean() - 3.0) < 0.05  # Poisson on |F| (AutoPhaseNN), not photon statistics


def test_shards_record_noise_and_are_deterministic(shards2d, tmp_path, tiny_config):
    info = shard_info(shards2d / "shard-00001.h5")
    a = info["attrs"]
    assert a["noise_model"] == "poisson_intensity" and a["photons"] == 1e6
    assert a["centred"] and a["kind"] == "ptycho2d" and "provenance" in a
    assert info["input_shape"] == (16, 16) and set(info["target_shapes"]) == {"amplitude", "phase"}
    # one shard regenerated alone is identical (per-shard seeds)
    G.generate_shard(tiny_config("ptycho2d"), 1, tmp_path)
    r1, r2 = read_shard(shards2d / "shard-00001.h5"), read_shard(tmp_path / "shard-00001.h5")
    for k in r1:
        np.testing.assert_array_equal(r1[k], r2[k])
    r0 = read_shard(shards2d / "shard-00000.h5")
    assert not np.array_equal(r0["inputs"], r1["inputs"])
    # centred: the brightest pixel (DC) is at the centre
    peak = np.unravel_index(np.argmax(r1["inputs"][0]), (16, 16))
    assert abs(peak[0] - 8) <= 1 and abs(peak[1] - 8) <= 1
    assert (shards2d / "manifest.json").is_file()


def test_3d_shards(shards3d):
    info = shard_info(shards3d / "shard-00000.h5")
    assert info["input_shape"] == (16, 16, 16)
    assert info["target_shapes"] == {"support": (8, 8, 8), "phase": (8, 8, 8)}
    r = read_shard(shards3d / "shard-00000.h5")
    assert set(np.unique(r["support"])) <= {0.0, 1.0}
    np.testing.assert_allclose((r["inputs"] ** 2).sum(axis=(1, 2, 3)), 1e6, rtol=0.01)
