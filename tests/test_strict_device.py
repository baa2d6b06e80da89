"""The strict device stand-in (xrayflow.testing.strict_device): CuPy's host/device rules on a
machine without a GPU, and the reconstruction path run through it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mpi_util import mpiexec, run_ranks
from reconstruct.conftest import config, make_probe, raster, recon_data, simulate, star_phase

from xrayflow import ad
from xrayflow.backend import array_module, get_backend, to_numpy
from xrayflow.config import load_config
from xrayflow.io.cxi import write_cxi
from xrayflow.modalities.losses import loss_target
from xrayflow.modalities.ptycho2d.model import PtychoModel, split_positions
from xrayflow.optics.propagation import transfer_function
from xrayflow.parallel import Comm
from xrayflow.reconstruct.data import load_data
from xrayflow.simulate import simulate as simulate_config
from xrayflow.solvers.gradient import Reconstructor
from xrayflow.testing import strict_device

QUIET = {"log": lambda s: None}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def xp(monkeypatch):
    """The stand-in's namespace, counts zeroed, its ``cupyx`` in place of CuPy's."""
    for name, module in strict_device.CUPYX_MODULES.items():
        monkeypatch.setitem(sys.modules, name, module)
    strict_device.reset_counts()
    return get_backend("strict").xp


def test_refuses_implicit_host_conversion_and_numpy_functions(xp):
    be = get_backend("strict", "double")
    assert be.xp is xp and not be.is_gpu and be.complex_dtype == np.complex128
    a = xp.asarray(np.arange(6.0).reshape(2, 3))
    host = np.ones(3)
    for bad in (
        lambda: np.asarray(a),
        lambda: np.sum(a),
        lambda: np.iscomplexobj(a),
        lambda: np.exp(a),
        lambda: a + host,
        lambda: host * a,
        lambda: xp.where(a > 1, a, host),
        lambda: xp.add(a, [1.0, 2.0, 3.0]),
        lambda: float(a),
        lambda: a.ctypes,
        lambda: xp.fft,
    ):
        with pytest.raises((TypeError, AttributeError)):
            bad()
    # scalars mix as in CuPy; results stay on the device, reductions as 0-d arrays
    b = np.float32(2) * a + 1
    assert isinstance(b, xp.ndarray) and isinstance(b.sum(), xp.ndarray) and b.sum().ndim == 0
    assert array_module(b) is xp and xp.multiply(a, a, out=a) is a
    assert xp.asarray(a, dtype=a.dtype) is a and xp.array(a) is not a


def test_transfers_are_explicit_and_counted(xp):
    a = xp.asarray(np.arange(4.0))  # 1 to the device
    a[np.array([0, 1])] = 0.0  # a host index array: 1 to the device
    assert to_numpy(a).tolist() == [0.0, 0.0, 2.0, 3.0]  # 1 to the host
    assert float(xp.sum(a)) == 5.0 and a[3].item() == 3.0  # 2 to the host
    assert [float(v) for v in a] == [0.0, 0.0, 2.0, 3.0]  # 1 loop, 4 to the host
    assert dict(strict_device.reset_counts()) == {"to_device": 2, "to_host": 7, "iterations": 1}


MULTISLICE = {"type": "multislice_ptycho", "n_slices": 2, "slice_spacing": 10.0}


def _problem(slices=1):
    shape, n = (32, 32), 16
    obj = np.exp(1j * star_phase(shape, amp=0.6 / slices))[None].repeat(slices, 0)
    c = raster(shape, n, 4, jitter=1.0)
    H = transfer_function("fresnel", (n, n), 1.0, 1e-3, 10.0, dtype=np.complex128)
    H = H if slices > 1 else None
    I, probe = simulate(obj, make_probe(n, width=0.5), c, photons=1e4, transfer=H)
    return obj, probe, c, I


def test_forward_model_and_ad_gradient_match_numpy(xp):
    obj, probe, c, I = _problem()
    ci, fr = split_positions(c)
    tgt = loss_target(I, "gaussian")
    out = {}
    for name in ("cpu", "strict"):
        be = get_backend(name, "double")
        model = PtychoModel(probe.shape[-2:], obj.shape[-2:], backend=be)

        def f(o, p, s, model=model, be=be):
            return model.loss({"object": o}, p, ci, s, be.asarray(tgt))

        args = [be.asarray(v) for v in (obj, probe, fr)]
        o, p, s = map(ad.const, args)
        inten = model.intensities({"object": o}, p, ci, s)
        value, grads = ad.value_and_grad(f, argnums=(0, 1, 2))(*args)
        out[name] = [to_numpy(inten.data), value, *map(to_numpy, grads)]
    for s, c_ in zip(out["strict"], out["cpu"], strict=True):
        np.testing.assert_allclose(s, c_, rtol=1e-10, atol=1e-12)


def _reconstruct(device, model=None, iterations=3):
    _, probe, c, I = _problem(model["n_slices"] if model else 1)
    cfg = config(
        model=model or {},
        optimizer={
            "iterations": iterations,
            "batch_size": 8,
            "method": "adam",
            "object": {"lr": 0.05},
            "probe": {"lr": 0.05, "start": 1},
        },
        run={"precision": "double"},
    )
    cfg["run"]["device"] = device  # "strict" is no config value: set past validation
    data = recon_data(I, c, (32, 32), probe=probe, wavelength=1e-3, slice_spacing=10.0)
    return Reconstructor(cfg, data, **QUIET).run()


@pytest.mark.parametrize("model", [None, MULTISLICE], ids=["ptycho2d", "multislice"])
def test_reconstruction_through_the_stand_in_matches_numpy(xp, model):
    cpu, strict = _reconstruct("cpu", model), _reconstruct("strict", model)
    assert strict_device.counts["to_device"] > 0 and strict_device.counts["iterations"] == 0
    for k in cpu.params:
        assert isinstance(strict.params[k], np.ndarray)
        np.testing.assert_allclose(strict.params[k], cpu.params[k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(strict.history["loss"], cpu.history["loss"], rtol=1e-9)


def test_ptychotomo_reconstruction_through_the_stand_in_matches_numpy(xp, tmp_path):
    """Found by the stand-in: the sub-pixel probe shifts were host arrays on the GPU."""
    d = simulate_config(ROOT / "config" / "simulate" / "ptychotomo.yaml")
    write_cxi(tmp_path / "cone.cxi", d)
    res = {}
    for device in ("cpu", "strict"):
        cfg = load_config(
            ROOT / "config" / "reconstruct" / "ptychotomo.yaml",
            "reconstruct",
            ["optimizer.iterations=2", "run.precision=double", "run.log_every=0"],
        )
        cfg["run"]["device"] = device
        data = load_data(tmp_path / "cone.cxi", cfg)
        res[device] = Reconstructor(cfg, data, **QUIET).run()
    for k in res["cpu"].params:
        np.testing.assert_allclose(res["strict"].params[k], res["cpu"].params[k], rtol=1e-9)


def test_a_host_conversion_in_the_gradient_path_is_caught(xp, monkeypatch):
    """An ``np.asarray`` slipped into the backward pass passes on NumPy, fails on the
    stand-in (as it would on CuPy)."""
    fit = ad.core._fit
    monkeypatch.setattr(ad.core, "_fit", lambda g, p: fit(np.asarray(g), p))
    _reconstruct("cpu", iterations=1)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        _reconstruct("strict", iterations=1)


def test_block_sum_on_device_arrays(xp):
    parts = [{"loss": float(k), "grad": xp.full((3, 2), k + 0.5j)} for k in range(5)]
    total = Comm(None).block_sum(5, lambda k: parts[k])
    assert total["loss"] == 10.0 and isinstance(total["grad"], xp.ndarray)
    np.testing.assert_array_equal(total["grad"].get(), np.full((3, 2), 10 + 2.5j))


_REDUCE = """
import sys
import numpy as np
from xrayflow.backend import get_backend
from xrayflow.parallel import abort_on_error
from xrayflow.testing import strict_device

xp = get_backend("strict").xp


def partial(k):
    rng = np.random.default_rng(k)
    g = rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3))
    return {"loss": float(k), "g": xp.asarray(g.astype(np.complex64) * 10.0 ** (k % 5))}


with abort_on_error() as comm:
    total = comm.block_sum(7, partial)
    assert isinstance(total["g"], xp.ndarray)
    if comm.rank == 0:
        np.savez(sys.argv[1], g=total["g"].get(), loss=total["loss"],
                 transport=comm.transport_name(xp.__name__))
"""


@pytest.mark.mpi
def test_block_sum_on_device_arrays_with_the_host_transport(tmp_path, monkeypatch):
    """Two ranks stage the stand-in's arrays through the host (``.get()``/``.set()``), and
    the sum is bit-identical to one rank's."""
    script = tmp_path / "reduce.py"
    script.write_text(_REDUCE)
    monkeypatch.setenv("XRAYFLOW_GPU_COMM", "host")
    res = {}
    for n, mpi in ((1, False), (2, True)):
        out = tmp_path / f"{n}.npz"
        r = run_ranks([sys.executable, str(script), str(out)], n, timeout=60, mpi=mpi)
        assert r.returncode == 0, r.stderr
        res[n] = dict(np.load(out))
    assert str(res[1]["transport"]) == "serial" and str(res[2]["transport"]) == "host"
    np.testing.assert_array_equal(res[2]["g"], res[1]["g"])
    assert res[2]["loss"] == res[1]["loss"] == 21.0


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="an NVIDIA driver is present")
def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "no GPU" in r.stdout


@pytest.mark.mpi
def test_gpu_check_dry_run_on_the_stand_in(tmp_path):
    """The GPU check's benchmarks, 2-rank reduction and distributed object, run on the
    stand-in (the reconstructions on the CPU)."""
    mpiexec()  # skips without one
    out = tmp_path / "gpu_check.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run"]
    r = subprocess.run(
        [*cmd, "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    rec = json.loads(out.read_text())
    assert [(f["n"], f["slices"]) for f in rec["forward"]] == [(16, 1), (16, 10)]
    assert rec["reduction"]["bit_identical_to_serial"] and rec["reduction"]["transport"] == "host"
    dist = rec["distributed_object"]
    assert dist["ok"] and dist["object_mode"] == "distributed", dist
    assert max(dist["max_rel_diff"].values()) < 1e-6


_DISTRIBUTED = """
import sys
import numpy as np
from xrayflow.testing import strict_device
sys.modules.update(strict_device.CUPYX_MODULES)
from xrayflow.config import load_config
from xrayflow.parallel import abort_on_error
from xrayflow.reconstruct.data import load_data
from xrayflow.solvers.distributed_reconstructor import DistributedReconstructor

cxi, cfg_path, out = sys.argv[1:4]
with abort_on_error() as comm:
    cfg = load_config(cfg_path, "reconstruct")
    cfg["run"]["device"] = "strict"
    rec = DistributedReconstructor(cfg, load_data(cxi, cfg, comm), comm=comm, log=print)
    assert isinstance(rec.params["object"], strict_device.ndarray)
    res = rec.run()
    obj = rec.slabs.part.gather(comm, res.params["object"])
    if comm.rank == 0:
        np.savez(out, object=obj, probe=res.params["probe"], loss=res.history["loss"],
                 transport=rec.transport, to_device=strict_device.counts["to_device"])
"""


@pytest.mark.mpi
def test_distributed_object_through_the_stand_in_on_two_ranks(tmp_path, monkeypatch):
    """The distributed object's slab gradients, halo exchanges (staged through the host),
    optimizer steps on the own rows and TV on the slabs, with the stand-in's arrays on two
    ranks: the replicated NumPy result."""
    d = simulate_config(
        ROOT / "config" / "simulate" / "multislice_ptycho.yaml",
        ["geometry.shape=[32,32]", "scan.n_y=4", "scan.n_x=4"],
    )
    write_cxi(tmp_path / "d.cxi", d)
    (tmp_path / "r.yaml").write_text(
        "model: {type: multislice_ptycho, n_slices: 4}\n"
        "optimizer: {iterations: 3, batch_size: 5, method: adam}\n"
        "regularizers: {tv: {weight: 1.0e-3}}\n"
        "run: {precision: double, log_every: 0, checkpoint_every: 0, block_frames: 4}\n"
    )
    cfg = load_config(tmp_path / "r.yaml", "reconstruct")
    ref = Reconstructor(cfg, load_data(tmp_path / "d.cxi", cfg), **QUIET).run()
    script = tmp_path / "dist.py"
    script.write_text(_DISTRIBUTED)
    monkeypatch.setenv("XRAYFLOW_GPU_COMM", "host")
    out = tmp_path / "dist.npz"
    cmd = [sys.executable, str(script), *map(str, (tmp_path / "d.cxi", tmp_path / "r.yaml", out))]
    r = run_ranks(cmd, 2, timeout=120, mpi=True)
    assert r.returncode == 0, r.stderr
    got = dict(np.load(out))
    assert str(got["transport"]) == "host" and got["to_device"] > 0
    for k in ("object", "probe", "loss"):
        np.testing.assert_allclose(got[k], ref.params.get(k, ref.history["loss"]), rtol=1e-7)
