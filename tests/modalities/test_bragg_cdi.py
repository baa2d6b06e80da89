"""3D Bragg CDI: the modality's differentiable model, network start and grid, the
phase-retrieval solver (HIO/ER, shrink-wrap, gradient refinement) and its reconstruct stage
glue (file in, result file out)."""

import numpy as np
import pytest
import torch
from bcdi_util import crystal_config
from scipy import ndimage

from xrayflow import ad
from xrayflow.backend import get_backend
from xrayflow.config import load_config
from xrayflow.errors import ConfigError, DataError
from xrayflow.evaluate.alignment import align
from xrayflow.evaluate.metrics import ssim
from xrayflow.io.cxi import DiffractionData, write_cxi
from xrayflow.io.hdf5 import read_h5
from xrayflow.modalities import stage_schema
from xrayflow.modalities.bragg_cdi import RECONSTRUCT_SECTIONS, settings
from xrayflow.modalities.bragg_cdi.grid import crop, embed
from xrayflow.modalities.bragg_cdi.model import LOSSES, BraggCDIModel
from xrayflow.modalities.bragg_cdi.network_start import (
    NETWORK_HIO,
    network_predict,
    network_start,
    network_support,
)
from xrayflow.networks import EncoderDecoder, network_options, save_model
from xrayflow.reconstruct.phase_retrieval import reconstruct_file
from xrayflow.simulate import simulate
from xrayflow.solvers.phase_retrieval import (
    ESTIMATE_HIO,
    RANDOM_START_HIO,
    random_start,
    refine,
    refine_from_network,
    refine_from_prediction,
)

N = 32  # detector grid; crystal box N/2 (2x oversampled)
SEED = 2
# Scores after twin / ramp / shift / phase removal, in the crystal box, for a 32^3 Poisson
# pattern of 1e8 photons of a crystal with 0.53 rad rms strain phase. Measured over twelve
# random starts (default config before the shrink-wrap guard): the 6 that reached the noise
# floor SSIM 1.00 and phase error 0.002 rad, the stagnated ones (R 10-22 x the floor)
# 0.65-0.69 / 0.58-0.60 rad (with the guard: R 5-8 x the floor, best SSIM 0.82 / 0.31 rad);
# the random start itself 0.006 / 1.6 rad; ignoring the phase (flat) gives 0.53 rad. SSIM
# >= 0.9 and phase error <= 0.2 rad thus mean "crystal shape and strain phase found".
SSIM_MIN, PHASE_MAX = 0.9, 0.2
# random starts: this crystal is a hard one: 4 of the 12 starts of generator SEED reach the
# floor (5 of 12 without the guard); at 1/3 per start all six miss with probability 0.09
STARTS = 6


def _refine(data, init=None, support=None, config=None, rng=None, *, mask=None, centred=True):
    """The solver on a model of the counts ``data`` with the settings ``config`` (partial)."""
    cfg = settings(config)
    return refine(BraggCDIModel(data, mask, cfg["loss"], centred), init, support, cfg, rng)


def _from_network(net, data, config, centred=True):
    return refine_from_network(BraggCDIModel(data, centred=centred), net, settings(config))


def _simulate(photons=1e8, poisson=True, seed=1):
    # facets 3.5-3.8 voxels from the centre: the largest that fits the 16^3 box
    d = simulate(crystal_config(N, seed, (0.11, 0.118), photons, poisson, strained=True))
    return d.data.astype(np.float64), embed(d.truth["object"], d.data.shape)


def _score(obj, truth):
    """(amplitude SSIM, rms phase error in rad inside the crystal) in the crystal box,
    after removing the twin, phase ramp, shift and complex scale."""
    a, _ = align(obj, truth, twin_check=True)
    a, t = crop(a, (N // 2,) * 3), crop(truth, (N // 2,) * 3)
    amp = np.abs(t)
    inside = amp > 0
    dphi = np.angle(a[inside] * np.conj(t[inside]))
    return ssim(np.abs(a), amp, data_range=amp.max()), float(np.sqrt(np.mean(dphi**2)))


def _perturbed(truth, rng):
    """Stand-in for a network prediction in the crystal box: blurred flat support and the
    true phase plus a smooth error of 0.5 rad rms."""
    t = crop(truth, (N // 2,) * 3)
    amp = ndimage.gaussian_filter((np.abs(t) > 0).astype(float), 1.0)
    err = ndimage.gaussian_filter(rng.standard_normal(t.shape), 2.0)
    return (amp / amp.max()) * np.exp(1j * (np.angle(t) + 0.5 * err / err.std()))


@pytest.fixture(scope="module")
def noisy():
    return _simulate()


@pytest.fixture(scope="module")
def from_random(noisy):
    data, _ = noisy
    return _refine(data, None, None, {"starts": STARTS}, np.random.default_rng(SEED))


# ----------------------------------------------------------------------------- model
@pytest.mark.parametrize("loss", ["gaussian", "poisson"])
def test_gradient_matches_finite_differences(loss):
    rng = np.random.default_rng(0)
    be = get_backend("cpu", "double")
    shape = (4, 4, 4)
    rho = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    counts = rng.poisson(5.0, shape).astype(float)
    mask = np.ones(shape, bool)
    mask[1, 2, 3] = False
    model = BraggCDIModel(counts, mask, loss, centred=True, backend=be)
    value, g = ad.value_and_grad(model.loss)(rho)
    assert value == pytest.approx(float(model.loss(ad.const(rho)).data))
    h = 1e-6
    for _ in range(4):
        d = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        lp = float(model.loss(ad.const(rho + h * d)).data)
        lm = float(model.loss(ad.const(rho - h * d)).data)
        # PyTorch convention: dL = Re sum conj(g) dz
        assert (lp - lm) / (2 * h) == pytest.approx(np.vdot(g, d).real, rel=1e-6, abs=1e-8)


def test_half_gaussian_gradient_step_is_the_modulus_projection():
    rng = np.random.default_rng(1)
    be = get_backend("cpu", "double")
    shape = (6, 5, 4)
    rho = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    counts = rng.uniform(1.0, 9.0, shape)
    model = BraggCDIModel(counts, None, "gaussian", eps=0.0, backend=be)
    _, g = ad.value_and_grad(model.loss)(rho)
    np.testing.assert_allclose(rho - 0.5 * g, model.modulus_projection(rho), atol=1e-10)


def test_centred_counts_match_the_centred_object():
    data, truth = _simulate(photons=1e6, poisson=False)
    total = data.sum()
    truth = truth * np.sqrt(total / np.sum(np.abs(truth) ** 2))  # Parseval: photons
    model = BraggCDIModel(data, backend=get_backend("cpu", "double"))
    assert float(model.loss(ad.const(truth)).data) / total < 1e-8
    assert model.r_factor(truth) < 1e-4
    # the same counts taken as already DC-at-corner no longer match
    wrong = BraggCDIModel(data, centred=False, backend=get_backend("cpu", "double"))
    assert float(wrong.loss(ad.const(truth)).data) / total > 0.1


# ----------------------------------------------------------------------------- refine
def test_random_start_reconstructs_the_crystal(noisy, from_random):
    data, truth = noisy
    start, support = random_start(BraggCDIModel(data), np.random.default_rng(SEED))
    assert support.sum() > 2 * (np.abs(truth) > 0).sum()  # autocorrelation: oversized
    s0, p0 = _score(start, truth)
    assert s0 < 0.1 and p0 > 1.0
    s, dphi = _score(from_random["object"], truth)
    assert s >= SSIM_MIN and dphi <= PHASE_MAX, (s, dphi)
    n = settings()["iterations"]
    assert from_random["iterations"] == n and len(from_random["loss"]) == n
    assert from_random["hio_iterations"] == RANDOM_START_HIO
    assert from_random["starts"] == STARTS and not from_random["stopped"]  # no stop_loss
    # down to the Poisson noise floor: the misfit of the true crystal to the noisy counts
    scaled = truth * np.sqrt(data.sum() / np.sum(np.abs(truth) ** 2))
    floor = BraggCDIModel(data, backend=get_backend("cpu", "double")).r_factor(scaled)
    assert from_random["r_factor"] <= 1.05 * floor, (from_random["r_factor"], floor)
    # data units: Parseval with the ortho FFT
    assert np.sum(np.abs(from_random["object"]) ** 2) == pytest.approx(data.sum(), rel=0.05)


def test_good_start_reaches_the_same_loss_in_far_fewer_iterations(noisy, from_random):
    data, truth = noisy
    init = _perturbed(truth, np.random.default_rng(5))  # crystal box, as a network gives
    assert _score(embed(init, data.shape), truth)[0] < SSIM_MIN
    # "same quality": within 10 % of the random start's final loss (R within 5 %)
    cfg = {"stop_loss": 1.1 * float(from_random["loss"][-1]), "iterations": 1000}
    res = _refine(data, init, None, cfg)
    assert res["hio_iterations"] == ESTIMATE_HIO
    total_random = from_random["iterations"] + from_random["hio_iterations"]
    total_good = res["iterations"] + res["hio_iterations"]
    assert total_good <= 0.3 * total_random, (total_good, total_random)
    s, dphi = _score(res["object"], truth)
    assert s >= SSIM_MIN and dphi <= PHASE_MAX, (s, dphi)


def test_shrink_wrap_tightens_an_oversized_support(noisy):
    data, truth = noisy
    true = np.abs(truth) > 0
    loose = ndimage.binary_dilation(true, iterations=4)
    res = _refine(data, truth, loose, {"iterations": 100, "shrinkwrap": {"start": 0}})
    final = res["support"]
    assert final.sum() < 0.6 * loose.sum()
    assert (final & true).sum() >= 0.98 * true.sum()  # still holds the crystal
    assert (final ^ true).sum() < 0.5 * (loose ^ true).sum()


def test_same_seed_same_result(noisy, from_random):
    data, _ = noisy
    again = _refine(data, None, None, {"starts": STARTS}, np.random.default_rng(SEED))
    np.testing.assert_array_equal(again["object"], from_random["object"])
    np.testing.assert_array_equal(again["loss"], from_random["loss"])
    other = _refine(data, None, None, {"iterations": 5}, np.random.default_rng(SEED + 1))
    assert not np.allclose(other["loss"], from_random["loss"][:5])


def test_random_starts_end_at_the_first_that_reaches_stop_loss(noisy):
    data, truth = noisy
    stop = (1.05 * _floor(data, truth)) ** 2
    # with this generator the first two random starts stagnate and the third converges
    res = _refine(data, None, None, {"starts": 8, "stop_loss": stop}, np.random.default_rng(1))
    assert res["stopped"] and res["r_factor"] ** 2 <= stop * 1.001
    last = res["loss"][-1] if res["iterations"] else res["hio_loss"][-1]
    assert last <= stop
    # shrink-wrap during HIO: the estimate after each block is scored, and it got there
    assert len(res["hio_loss"]) == res["hio_iterations"] // settings()["hio"]["every"]
    s, dphi = _score(res["object"], truth)
    assert s >= SSIM_MIN and dphi <= PHASE_MAX, (s, dphi)
    # the starts before the kept one were run and missed: one start alone from the same
    # generator is the first of them
    assert res["starts"] == 3
    first = _refine(data, None, None, {"stop_loss": stop}, np.random.default_rng(1))
    assert not first["stopped"] and first["starts"] == 1
    assert first["r_factor"] > res["r_factor"] and first["time_s"] < res["time_s"]


def test_hio_baseline_then_poisson_gradient_descent(noisy):
    data, truth = noisy
    cfg = {
        "hio": {"iterations": 200, "every": 0},  # fixed support throughout
        "iterations": 40,
        "loss": "poisson",
        "optimizer": {"kind": "gd", "lr": 1.0},
        "shrinkwrap": {"every": 0},
    }
    res = _refine(data, None, None, cfg, np.random.default_rng(SEED))
    s, dphi = _score(res["object"], truth)
    assert s >= SSIM_MIN and dphi <= PHASE_MAX, (s, dphi)
    assert np.all(np.diff(res["loss"]) <= 0)  # fixed support: gradient descent is monotone


def test_embed_crop_and_config_errors():
    a = np.arange(27.0).reshape(3, 3, 3)
    big = embed(a, (8, 7, 6))
    np.testing.assert_array_equal(crop(big, a.shape), a)
    assert big.sum() == a.sum()
    data = np.ones((8, 8, 8))
    with pytest.raises(ConfigError, match="cdi.bogus"):
        _refine(data, config={"bogus": 1})
    with pytest.raises(ConfigError, match="cdi.optimizer"):
        _refine(data, config={"optimizer": {"kind": "lbfgs"}})
    with pytest.raises(ConfigError, match="cdi.shrinkwrap.sigmas"):
        _refine(data, config={"shrinkwrap": {"sigmas": 1}})
    with pytest.raises(ConfigError, match="cdi.starts"):
        _refine(data, config={"starts": 0})
    with pytest.raises(ConfigError, match="cdi.hio.every"):
        _refine(data, config={"hio": {"every": -1}})
    with pytest.raises(ConfigError, match="cdi.starts: 'two' is not of type 'integer'"):
        _refine(data, config={"starts": "two"})
    with pytest.raises(ConfigError, match="cdi.hio.er"):
        _refine(data, config={"hio": {"er": 1.5}})


def test_masked_voxels_are_ignored(noisy):
    data, truth = noisy
    mask = np.ones(data.shape, bool)
    mask[N // 2, N // 2 - 1 : N // 2 + 2, :] = False  # a bad detector strip
    junk = np.where(mask, data, 50 * data.max())
    init = _perturbed(truth, np.random.default_rng(5))
    cfg = {"iterations": 150}
    good = _score(_refine(junk, init, None, cfg, mask=mask)["object"], truth)
    bad = _score(_refine(junk, init, None, cfg)["object"], truth)
    assert good[0] >= SSIM_MIN and good[1] <= PHASE_MAX, good
    assert bad[0] < SSIM_MIN or bad[1] > PHASE_MAX, bad


# ----------------------------------------------------------------------------- network start
class _PerfectNet:
    """Stand-in for a trained CDI3DNet whose output is the true crystal box."""

    heads = ("support", "phase")

    def __init__(self, truth, input_size=N):
        box = crop(truth, (N // 2,) * 3)
        self.out = {
            "support": torch.from_numpy((np.abs(box) > 0).astype(np.float32))[None],
            "phase": torch.from_numpy(np.angle(box).astype(np.float32))[None],
        }
        self.input_size = input_size
        self.seen = None

    def parameters(self):
        return iter([torch.zeros(1)])

    def __call__(self, x):
        self.seen = x
        return self.out


def _network(n, net_cfg):
    """An untrained support/phase network for n^3 patterns, crystal box (n/2)^3."""
    return EncoderDecoder(3, ("support", "phase"), n, **network_options(net_cfg, n // 2))


def _floor(data, truth):
    scaled = truth * np.sqrt(data.sum() / np.sum(np.abs(truth) ** 2))
    return BraggCDIModel(data, backend=get_backend("cpu", "double")).r_factor(scaled)


def test_network_start_from_the_true_box_is_the_truth(noisy):
    data, truth = noisy
    box = crop(truth, (N // 2,) * 3)
    init = network_start((np.abs(box) > 0).astype(np.float32), np.angle(box), data.shape)
    assert init.shape == data.shape and init.dtype == np.complex64
    # the network's box lands where the simulator put the crystal: no shift, no twin needed
    np.testing.assert_allclose(init, truth / np.abs(truth).max(), atol=1e-6)
    s, dphi = _score(init, truth)
    assert s > 0.999 and dphi < 1e-3


def test_refine_from_a_perfect_network_stops_at_once(noisy):
    data, truth = noisy
    net = _PerfectNet(truth)
    # no HIO: a perfect start is already at the noise floor (HIO would wander off it first)
    cfg = {"stop_loss": (1.05 * _floor(data, truth)) ** 2, "iterations": 100}
    res = _from_network(net, data, {**cfg, "hio": {"iterations": 0}})
    # the network saw sqrt(counts), centred, with a batch axis
    np.testing.assert_allclose(net.seen.numpy()[0], np.sqrt(data), rtol=1e-6)
    assert res["hio_iterations"] == 0 and res["iterations"] <= 5
    assert res["network_support"].shape == (N // 2,) * 3
    assert 0 <= res["network_time_s"] <= res["time_s"]
    s, dphi = _score(res["object"], truth)
    assert s >= 0.99 and dphi <= 0.05, (s, dphi)
    # uncentred counts: the network still gets centred input
    res2 = _from_network(net, np.fft.ifftshift(data), {"iterations": 0}, centred=False)
    np.testing.assert_allclose(net.seen.numpy()[0], np.sqrt(data), rtol=1e-6)
    assert res2["hio_iterations"] == NETWORK_HIO  # the default from a network
    assert res2["r_factor"] < 2 * _floor(data, truth)


def test_network_support_is_loose_enough_for_shrink_wrap(noisy):
    data, truth = noisy
    stop = (1.05 * _floor(data, truth)) ** 2
    box = crop(truth, (N // 2,) * 3)
    true = np.abs(box) > 0
    # a network that misses the crystal's outer layer of voxels (276 -> 125), with a smooth
    # 0.5 rad phase error
    eroded = ndimage.binary_erosion(true)
    err = ndimage.gaussian_filter(np.random.default_rng(5).standard_normal(box.shape), 2.0)
    phase = np.angle(box) + 0.5 * err / err.std()
    net = _PerfectNet(truth)
    net.out = {
        "support": torch.from_numpy(eroded.astype(np.float32))[None],
        "phase": torch.from_numpy(phase.astype(np.float32))[None],
    }
    start = network_support(eroded)
    np.testing.assert_array_equal(start, ndimage.binary_dilation(eroded))
    assert network_support(eroded, data.shape).shape == data.shape
    res = _from_network(net, data, {"stop_loss": stop, "iterations": 300})
    assert res["stopped"], res["r_factor"]
    s, dphi = _score(res["object"], truth)
    assert s >= 0.99 and dphi <= 0.05, (s, dphi)
    # the same start held to the network's own (tight) support stalls far from the floor
    init = network_start(eroded, phase, data.shape)
    cfg = {"stop_loss": stop, "iterations": 300, "hio": {"iterations": NETWORK_HIO}}
    tight = _refine(data, init, eroded, cfg)
    assert not tight["stopped"] and tight["r_factor"] > 5 * res["r_factor"]


def test_network_predict_on_a_stack_equals_one_by_one(noisy):
    data, truth = noisy
    torch.manual_seed(0)
    net = _network(N, {"channels": [4, 8]}).eval()
    other = np.random.default_rng(3).poisson(data.mean(), data.shape).astype(np.float32)
    stack = np.stack([data, other])
    sup, ph, secs = network_predict(net, stack)
    assert sup.shape == ph.shape == (2, N // 2, N // 2, N // 2) and secs > 0
    for k, vol in enumerate(stack):
        s1, p1, _ = network_predict(net, vol)
        np.testing.assert_allclose(sup[k], s1, atol=1e-5)
        np.testing.assert_allclose(ph[k], p1, atol=1e-5)
    # uncentred stacks are centred per volume (the stack axis untouched)
    sup_u, ph_u, _ = network_predict(net, np.fft.ifftshift(stack, axes=(1, 2, 3)), False)
    np.testing.assert_allclose(sup_u, sup, atol=1e-5)
    np.testing.assert_allclose(ph_u, ph, atol=1e-5)
    # refinement from one prediction of the stack is refinement from the network
    res = refine_from_prediction(BraggCDIModel(data), sup[0], ph[0], settings({"iterations": 3}))
    ref = _from_network(net, data, {"iterations": 3})
    np.testing.assert_allclose(res["start"], ref["start"], atol=1e-5)
    assert res["hio_iterations"] == ref["hio_iterations"] == NETWORK_HIO


def test_network_predict_rejects_wrong_sizes_and_models(noisy):
    data, truth = noisy
    with pytest.raises(DataError, match="network input"):
        network_predict(_PerfectNet(truth, input_size=2 * N), data)
    with pytest.raises(DataError, match="network input"):
        network_predict(_PerfectNet(truth), data[None, None])
    net = _PerfectNet(truth)
    net.heads = ("amplitude", "phase")
    with pytest.raises(DataError, match="not a 3D CDI network"):
        network_predict(net, data)


# ----------------------------------------------------------------------------- file entry
def _tiny_cxi(path, n=16):
    d = simulate(crystal_config(n, 4, (0.1, 0.11), 1e7))
    write_cxi(path, d)
    return d


def _tiny_model(path, n=16):
    net_cfg = {"channels": [2, 4], "norm": "none"}
    net = _network(n, net_cfg)
    save_model(path, net, {"network": net_cfg}, {}, {"input_size": n, "output_size": n // 2})


def _recon_config(cdi, seed=0, network=None):
    """A validated reconstruct config of the modality with the ``cdi`` section ``cdi``."""
    cfg = {"model": {"type": "bragg_cdi", "network": network}, "optimizer": {"seed": seed}}
    return load_config({**cfg, "cdi": cdi}, stage_schema("reconstruct"), name="reconstruct")


def test_reconstruct_file_writes_the_result(tmp_path):
    d = _tiny_cxi(tmp_path / "b.cxi")
    cfg = _recon_config({"iterations": 6, "hio": {"iterations": 4}}, seed=3)
    res = reconstruct_file(cfg, tmp_path / "b.cxi", tmp_path / "r.h5")
    out = read_h5(tmp_path / "r.h5")
    assert out["object"].shape == d.data.shape and out["object"].dtype == np.complex64
    np.testing.assert_array_equal(out["object"], res["object"].astype(np.complex64))
    assert out["support"].dtype == bool and out["support"].shape == d.data.shape
    assert len(out["loss"]) == 6 and out["iterations"] == 6 and out["hio_iterations"] == 4
    assert out["timings"]["total_s"] > 0 and out["start"] == "random"
    assert out["config"]["iterations"] == 6 and out["config"]["seed"] == 3
    assert out["provenance"]["seed"] == 3
    assert out["voxel_size"] == pytest.approx(d.attrs["object_pixel_size"])
    # same seed, same result
    again = reconstruct_file(cfg, tmp_path / "b.cxi", tmp_path / "r2.h5")
    np.testing.assert_array_equal(again["object"], res["object"])
    # from a (here untrained) network
    _tiny_model(tmp_path / "m.pt")
    cfg["model"]["network"] = str(tmp_path / "m.pt")
    reconstruct_file(cfg, tmp_path / "b.cxi", tmp_path / "n.h5")
    net = read_h5(tmp_path / "n.h5")
    assert net["start"] == "network" and net["model"] == str(tmp_path / "m.pt")
    assert net["network"]["support"].shape == (8, 8, 8) and net["timings"]["network_s"] > 0


def test_reconstruct_file_rejects_bad_input(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        reconstruct_file(_recon_config({}), tmp_path / "missing.cxi", tmp_path / "r.h5")
    flat = DiffractionData(
        data=np.ones((1, 16, 16), np.float32),
        energy_ev=9000.0,
        distance=1.0,
        pixel_size=(55e-6, 55e-6),
    )
    write_cxi(tmp_path / "2d.cxi", flat)
    with pytest.raises(DataError, match="not a 3D Bragg CDI volume"):
        reconstruct_file(_recon_config({}), tmp_path / "2d.cxi", tmp_path / "r.h5")
    _tiny_cxi(tmp_path / "b.cxi")
    with pytest.raises(ConfigError, match="cdi.bogus"):
        reconstruct_file(_recon_config({"bogus": 1}), tmp_path / "b.cxi", tmp_path / "r.h5")
    assert not (tmp_path / "r.h5").exists()


def test_settings_schema_is_closed_and_complete():
    """Every key of the cdi section has a default and a description, no object is open,
    and the data terms are the model's."""

    def walk(node, path):
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path
            for key, sub in node["properties"].items():
                assert "default" in sub and sub.get("description"), f"{path}.{key}"
                walk(sub, f"{path}.{key}")

    walk(RECONSTRUCT_SECTIONS["cdi"], "cdi")
    assert tuple(RECONSTRUCT_SECTIONS["cdi"]["properties"]["loss"]["enum"]) == LOSSES
    assert set(settings()) == set(RECONSTRUCT_SECTIONS["cdi"]["properties"])
