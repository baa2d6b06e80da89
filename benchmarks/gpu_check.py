"""The GPU check (driver of ``benchmarks/gpu_check.sh``): GPU tests, forward and gradient
throughput against the cuFFT floor, and one 2-rank GPU reduction, in one JSON.

    python benchmarks/gpu_check.py                 # needs CuPy and a CUDA GPU
    python benchmarks/gpu_check.py --dry-run       # the same steps, tiny, on the CPU stand-in

Steps (each recorded, a failing one does not stop the others):

* ``tests``: ``pytest -m gpu`` (counts from its JUnit XML);
* ``forward``: ``MultisliceModel.intensities`` per (N, S), positions/s, against the floor:
  ``2 (S - 1) + 1`` batched in-place 2D FFTs (cuFFT through :mod:`xrayflow.backend`) of the
  (batch, N, N) complex64 frames; ratio = floor / ours;
* ``gradient``: value and gradient of the far-field amplitude loss through
  ``ad.multislice_object`` (reversible; as ``benchmarks/gradient.py``), against the floor of
  its ``6 S - 5`` (3 for S = 1) batched FFTs;
* ``reduction``: ``Comm.block_sum`` of device partials on 2 ranks under ``mpiexec``
  (``XRAYFLOW_GPU_COMM``: NCCL with 2 GPUs or more; with one GPU NCCL refuses two ranks on
  the same device, so the ``host`` transport), compared bit for bit with the serial sum;
* ``distributed_object``: ``xrayflow reconstruct`` of a small multislice data set
  (float64) with ``parallel.object: distributed`` on 2 ranks (halo exchanges through the
  same transport) against the replicated run in one process, both on the GPU
  (``--dry-run``: on the CPU), max relative difference of object, probe and loss.

Exit status 0 when the tests pass and the reduction is bit-identical (or was skipped), 1
otherwise; 0 with a "no GPU" message when CuPy or a GPU is missing (nothing is written).
``--dry-run`` runs the benchmarks and the reduction on ``get_backend("strict")`` (no
pytest, no timings worth reading) to check this script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import h5py
import numpy as np

from xrayflow import ad
from xrayflow.backend import get_backend, gpu_available, to_numpy
from xrayflow.operators import MultisliceModel
from xrayflow.parallel import Comm
from xrayflow.testing import strict_device

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import gradient as gradient_bench  # noqa: E402  (benchmarks/gradient.py: problem and loss)

N_BLOCKS = 13


def _sync(backend) -> None:
    if backend.is_gpu:
        backend.xp.cuda.get_current_stream().synchronize()


def _best(fn, backend, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls (device synchronised)."""
    fn()  # warm-up: cuFFT plans, memory pool
    _sync(backend)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(backend)
        best = min(best, time.perf_counter() - t0)
    return best


def _fft_floor(backend, shape, n_fft: int, repeats: int) -> float:
    """Time of ``n_fft`` alternating in-place fft2/ifft2 calls on a complex64 batch."""
    buf = backend.xp.ones(shape, dtype=np.complex64)

    def ffts():
        for k in range(n_fft):
            (backend.fft2 if k % 2 == 0 else backend.ifft2)(buf, overwrite_x=True)

    return _best(ffts, backend, repeats)


def bench_forward(backend, n: int, S: int, batch: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    side = n + 64
    vol = np.exp(1j * 0.2 * rng.standard_normal((S, side, side))).astype(np.complex64)
    y = np.arange(n) - n / 2
    env = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * (n / 6) ** 2))
    probe = (env * np.exp(1j * rng.standard_normal((1, n, n)))).astype(np.complex64)
    corners = rng.uniform(0, side - n - 1, (batch, 2))
    model = MultisliceModel(vol, probe, 1e-6, 1e-10, 1e-8, backend, propagator="fresnel")
    out = backend.xp.empty((batch,) + model.n_shape, dtype=model.rdt)
    t = _best(lambda: model.intensities(corners, out=out), backend, repeats)
    return _against_floor(backend, n, S, batch, t, 2 * (S - 1) + 1, repeats)


def bench_gradient(backend, n: int, S: int, batch: int, repeats: int) -> dict:
    gb = gradient_bench
    rng, probe, H, amp = gb.make_problem(n, S, batch, 1, np.complex64)
    obj, corners = gb.make_object(rng, n, S, batch, np.complex64)
    dev = backend.asarray
    loss = gb.loss_object(dev(H), dev(amp), corners, backend, True)
    vg = ad.value_and_grad(loss, (0, 1))
    probe, obj = dev(probe), dev(obj)
    t = _best(lambda: vg(probe, obj), backend, repeats)
    return _against_floor(backend, n, S, batch, t, gb.fft_counts(S)["reversible"], repeats)


def _against_floor(backend, n: int, S: int, batch: int, t: float, n_fft: int, repeats: int):
    """The row of an operation that took ``t`` s on ``batch`` positions of n x n with S
    slices, against the time of its ``n_fft`` batched FFTs alone (the floor)."""
    floor = _fft_floor(backend, (batch, n, n), n_fft, repeats)
    return {
        "n": n,
        "slices": S,
        "batch": batch,
        "ffts_counted": n_fft,
        "time_s": t,
        "floor_time_s": floor,
        "positions_per_s": batch / t,
        "floor_positions_per_s": batch / floor,
        "ratio": floor / t,
    }


def _partial(xp, k: int, shape: tuple) -> dict:
    """Block ``k``'s partial: a loss and a float32 array of ``shape`` (16 MiB on the GPU)."""
    rng = np.random.default_rng(1000 + k)
    g = rng.standard_normal(shape).astype(np.float32) * 10.0 ** rng.integers(-3, 4)
    return {"loss": float(rng.random() * 1e3), "g": g if xp is np else xp.asarray(g)}


def reduce_rank(device: str, out: str) -> None:
    """One rank of the reduction run (under mpiexec): block sum of device partials."""
    from xrayflow.parallel import abort_on_error

    backend = get_backend(device)
    with abort_on_error() as comm:
        if backend.is_gpu:
            comm.select_gpu()
        xp = backend.xp
        parts = {k: _partial(xp, k, _shape(device)) for k in comm.partition(N_BLOCKS)}
        comm.block_sum(N_BLOCKS, parts.__getitem__)  # warm-up (NCCL communicator)
        comm.barrier()
        t0 = time.perf_counter()
        total = comm.block_sum(N_BLOCKS, parts.__getitem__)
        _sync(backend)
        wall = time.perf_counter() - t0
        if comm.is_root:
            np.savez(
                out,
                g=to_numpy(total["g"]),
                loss=total["loss"],
                wall_s=wall,
                transport=comm.transport_name(xp.__name__),
            )


def _launcher(n_gpus: int) -> tuple[str | None, dict]:
    """``mpiexec`` (None when missing) and the environment of a 2-rank run: one FFT worker,
    ``XRAYFLOW_GPU_COMM`` NCCL with 2 GPUs or more, else host staging (unless set)."""
    found = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(found) if found.exists() else shutil.which("mpiexec")
    env = dict(os.environ, XRAYFLOW_FFT_WORKERS="1", UCX_TLS=os.environ.get("UCX_TLS", "self,sm"))
    env.setdefault("XRAYFLOW_GPU_COMM", "nccl" if n_gpus >= 2 else "host")
    return mpiexec, env


def run_reduction(device: str, n_gpus: int) -> dict:
    mpiexec, env = _launcher(n_gpus)
    if mpiexec is None:
        return {"skipped": "no mpiexec (pip install mpich mpi4py)"}
    rec = {"ranks": 2, "blocks": N_BLOCKS, "requested_transport": env["XRAYFLOW_GPU_COMM"]}
    if n_gpus < 2 and env["XRAYFLOW_GPU_COMM"] == "host":
        rec["note"] = "one GPU: NCCL refuses two ranks on the same device; host staging used"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sum.npz"
        cmd = [mpiexec, "-n", "2", sys.executable, __file__, "--reduce-rank", str(out)]
        cmd += ["--dry-run"] if device == "strict" else []
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        except subprocess.TimeoutExpired:
            return {**rec, "ok": False, "error": "timed out after 180 s"}
        if r.returncode != 0 or not out.exists():
            return {**rec, "ok": False, "error": r.stderr[-2000:]}
        res = dict(np.load(out))
    serial = {k: _partial(np, k, _shape(device)) for k in range(N_BLOCKS)}
    ref = Comm(None).block_sum(N_BLOCKS, serial.__getitem__)
    same = bool(np.array_equal(res["g"], ref["g"])) and float(res["loss"]) == ref["loss"]
    return {
        **rec,
        "transport": str(res["transport"]),
        "wall_s": float(res["wall_s"]),
        "bytes_reduced": int(res["g"].nbytes),
        "max_abs_diff_to_serial": float(np.max(np.abs(res["g"] - ref["g"]))),
        "bit_identical_to_serial": same,
        "ok": same,
    }


DISTRIBUTED_CONFIG = """model: {type: multislice_ptycho, n_slices: 4}
optimizer: {iterations: 10, batch_size: 16, method: adam}
regularizers: {tv: {weight: 1.0e-3}}
run: {precision: double, checkpoint_every: 0, log_every: 0, block_frames: 8, device: %s}
"""


def run_distributed(device: str, n_gpus: int) -> dict:
    """The distributed object on 2 ranks against the replicated run, through the CLI."""
    mpiexec, env = _launcher(n_gpus)
    if mpiexec is None:
        return {"skipped": "no mpiexec (pip install mpich mpi4py)"}
    cli = [sys.executable, "-m", "xrayflow"]
    rec = {"ranks": 2, "requested_transport": env["XRAYFLOW_GPU_COMM"]}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "r.yaml").write_text(DISTRIBUTED_CONFIG % ("cpu" if device == "strict" else "gpu"))
        sim = ["-c", str(ROOT / "config/simulate/multislice_ptycho.yaml"), "-o", str(t / "d.cxi")]
        sim += ["--set", "geometry.shape=[64,64]", "--set", "scan.n_y=8", "--set", "scan.n_x=8"]
        rc = ["-c", str(t / "r.yaml"), "-d", str(t / "d.cxi")]
        steps = {
            "simulate": [*cli, "simulate", *sim],
            "replicated": [*cli, "reconstruct", *rc, "-o", str(t / "rep.h5")],
            "distributed": [mpiexec, "-n", "2", *cli, "reconstruct", *rc]
            + ["-o", str(t / "dist.h5"), "--set", "parallel.object=distributed"],
        }
        for name, cmd in steps.items():
            t0 = time.perf_counter()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
            except subprocess.TimeoutExpired:
                return {**rec, "ok": False, "error": f"{name}: timed out after 180 s"}
            if r.returncode != 0:
                return {**rec, "ok": False, "error": f"{name}: {r.stderr[-2000:]}"}
            rec[f"{name}_s"] = time.perf_counter() - t0
        with h5py.File(t / "rep.h5") as a, h5py.File(t / "dist.h5") as b:
            diff = {
                k: float(np.max(np.abs(b[k][()] - a[k][()])) / np.max(np.abs(a[k][()])))
                for k in ("object", "probe", "loss")
            }
            rec["transport"] = str(b.attrs["transport"])
            rec["object_mode"] = str(b.attrs["object_mode"])
    rec["max_rel_diff"] = diff
    rec["ok"] = max(diff.values()) < 1e-6 and rec["object_mode"] == "distributed"
    return rec


def _shape(device: str) -> tuple:
    return (4, 8, 8) if device == "strict" else (64, 256, 256)


def run_tests(timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "gpu.xml"
        cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", f"--junitxml={xml}", "tests"]
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout:.0f} s"}
        rec = {"returncode": r.returncode, "wall_s": time.perf_counter() - t0}
        if xml.exists():
            suite = ET.parse(xml).getroot().find("testsuite")
            for k in ("tests", "failures", "errors", "skipped"):
                rec[k] = int(suite.get(k, 0))
        rec["ok"] = r.returncode == 0
        if not rec["ok"]:
            rec["tail"] = r.stdout[-3000:]
        return rec


def gpu_info() -> dict:
    import cupy

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    return {
        "name": props["name"].decode(),
        "memory_gib": props["totalGlobalMem"] / 2**30,
        "count": cupy.cuda.runtime.getDeviceCount(),
        "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny, on the CPU stand-in")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu_check.json"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tests-timeout", type=float, default=300.0)
    ap.add_argument("--reduce-rank", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = "strict" if args.dry_run else "gpu"
    if args.dry_run:  # the GPU branches' cupyx calls, on the stand-in
        sys.modules.update(strict_device.CUPYX_MODULES)
    if args.reduce_rank:
        reduce_rank(device, args.reduce_rank)
        return 0
    if not args.dry_run and not gpu_available():
        print("gpu_check: no GPU (CuPy with a CUDA device not found): nothing to check")
        return 0
    t0 = time.perf_counter()
    backend = get_backend(device)
    small = args.dry_run
    sizes, batch = ((16,), 4) if small else ((256, 512), 64)
    rec = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "device": "strict (dry run)" if small else "gpu",
        "gpu": None if small else gpu_info(),
    }
    n_gpus = rec["gpu"]["count"] if rec["gpu"] else 1
    rec["tests"] = {"skipped": "dry run"} if small else run_tests(args.tests_timeout)
    rec["forward"] = [
        bench_forward(backend, n, S, batch, args.repeats) for n in sizes for S in (1, 10)
    ]
    rec["gradient"] = [
        bench_gradient(backend, n, S, batch // 2, args.repeats) for n in sizes[:1] for S in (1, 10)
    ]
    rec["reduction"] = run_reduction(device, n_gpus)
    rec["distributed_object"] = run_distributed(device, n_gpus)
    rec["wall_s"] = time.perf_counter() - t0
    for kind in ("forward", "gradient"):
        for r in rec[kind]:
            print(
                f"{kind:>8} N={r['n']:<4} S={r['slices']:<3} {r['positions_per_s']:>10.1f} pos/s"
                f"  floor {r['floor_positions_per_s']:>10.1f}  ratio {r['ratio']:.2f}"
            )
    print(f"   tests {rec['tests']}\nreduction {rec['reduction']}")
    print(f"distributed object {rec['distributed_object']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"wrote {out}")
    ok = all(rec[k].get("ok", True) for k in ("tests", "reduction", "distributed_object"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
