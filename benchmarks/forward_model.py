"""Throughput of the multislice forward model (far-field intensities) on the CPU.

For each probe size N and slice count S it times ``MultisliceModel.intensities`` on a
batch of scan positions (random sub-pixel corners, one probe mode by default) and the
*floor*: ``scipy.fft`` alone (same workers, complex64, same batch) doing the FFTs the model
must do, ``2 (S - 1) + 1`` 2D transforms of an (batch, N, N) array in place. The model
also does one inverse FFT per position and mode for the sub-pixel probe shift (not counted
in the floor), the patch gathers and the multiplies.

    python benchmarks/forward_model.py                    # 128/256 x 1/10 slices, batch 32
    python benchmarks/forward_model.py --sizes 256 --slices 10 --repeats 10 --workers 2

Prints a table and writes benchmarks/results/forward_model.json (machine info included).
Ratio = floor_time / our_time (1.0 = as fast as the bare FFTs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy
import scipy.fft

from xrayflow.backend import default_workers, get_backend
from xrayflow.operators import MultisliceModel

HERE = Path(__file__).resolve().parent


def machine_info(workers: int) -> dict:
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        affinity = os.cpu_count()
    cpu_model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "fft_workers": workers,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds summed over threads) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def floor_time(n: int, n_fft: int, batch: int, workers: int) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    buf = (rng.standard_normal((batch, n, n)) + 1j * rng.standard_normal((batch, n, n))).astype(
        np.complex64
    )

    def ffts():
        a = buf
        for j in range(n_fft):
            f = scipy.fft.fft2 if j % 2 == 0 else scipy.fft.ifft2
            a = f(a, axes=(-2, -1), norm="ortho", overwrite_x=True, workers=workers)

    ffts()  # warm-up
    return _timed(ffts)


def model_time(model, corners, out) -> tuple[float, float]:
    return _timed(lambda: model.intensities(corners, out=out))


def run_case(n, S, batch, modes, workers, repeats, chunk, propagator, scan="random", threads=None):
    rng = np.random.default_rng(1)
    obj = n + 64
    vol = np.exp(
        1j * 0.2 * rng.standard_normal((S, obj, obj)) - 0.01 * rng.random((S, obj, obj))
    ).astype(np.complex64)
    y = np.arange(n) - n / 2
    env = np.exp(-(y[:, None] ** 2 + y[None, :] ** 2) / (2 * (n / 6) ** 2))
    probe = (env * np.exp(1j * rng.standard_normal((modes, n, n)))).astype(np.complex64)
    if scan == "raster":  # step 12.5 px: few distinct fractional parts
        side = int(np.ceil(np.sqrt(batch)))
        g = 0.25 + 12.5 * np.arange(side)
        g = g % (obj - n - 1)
        corners = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)[:batch]
    elif scan == "integer":
        corners = rng.integers(0, obj - n - 1, (batch, 2)).astype(float)
    else:
        corners = rng.uniform(0, obj - n - 1, (batch, 2))
    backend = get_backend("cpu", "single", workers=workers)
    model = MultisliceModel(
        vol,
        probe,
        1e-6,
        1e-10,
        1e-8,
        backend,
        propagator=propagator,
        chunk=chunk,
        threads=threads,
    )
    n_fft = 2 * (S - 1) + 1
    out = np.empty((batch,) + model.n_shape, dtype=model.rdt)
    model.intensities(corners, out=out)  # warm-up: buffers, thread pool, FFT twiddles
    fw = fc = ow = oc = np.inf
    for _ in range(repeats):  # interleave, so concurrent load hits both alike
        w, c = floor_time(n, n_fft, batch * modes, workers)
        fw, fc = min(fw, w), min(fc, c)
        w, c = model_time(model, corners, out)
        ow, oc = min(ow, w), min(oc, c)
    t_floor, t_ours = fw, ow
    return {
        "scan": scan,
        "n": n,
        "slices": S,
        "modes": modes,
        "batch": batch,
        "chunk": model.chunk,
        "threads": model.threads,
        "propagator": propagator,
        "ffts_counted": n_fft,
        "time_s": t_ours,
        "floor_time_s": t_floor,
        "positions_per_s": batch / t_ours,
        "floor_positions_per_s": batch / t_floor,
        "ratio": t_floor / t_ours,
        "cpu_time_s": oc,
        "floor_cpu_time_s": fc,
        "ratio_cpu": fc / oc,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--slices", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--batch", type=int, default=32, help="positions per call")
    ap.add_argument("--modes", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7, help="best of this many")
    ap.add_argument("--workers", type=int, default=None, help="FFT workers / threads")
    ap.add_argument("--chunk", type=int, default=None, help="positions per inner FFT call")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads over chunks (default = workers; 1 = multithreaded FFTs)",
    )
    ap.add_argument("--propagator", default="fresnel", choices=["fresnel", "angular_spectrum"])
    ap.add_argument(
        "--scan",
        default="random",
        choices=["random", "raster", "integer"],
        help="random sub-pixel corners (default), a raster with a 12.5 px step "
        "(shifted probes shared), or integer corners (no sub-pixel shift)",
    )
    ap.add_argument("--out", default=str(HERE / "results" / "forward_model.json"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    workers = default_workers() if args.workers is None else args.workers
    info = machine_info(workers)
    rows = []
    print(f"{'N':>5} {'S':>3} {'pos/s':>10} {'floor pos/s':>12} {'ratio':>6} {'ratio_cpu':>9}")
    for n in args.sizes:
        for S in args.slices:
            r = run_case(
                n,
                S,
                args.batch,
                args.modes,
                workers,
                args.repeats,
                args.chunk,
                args.propagator,
                args.scan,
                args.threads,
            )
            rows.append(r)
            print(
                f"{n:>5} {S:>3} {r['positions_per_s']:>10.1f} "
                f"{r['floor_positions_per_s']:>12.1f} {r['ratio']:>6.2f} "
                f"{r['ratio_cpu']:>9.2f}",
                flush=True,
            )
    info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {
        "benchmark": "multislice forward model, far-field intensities",
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])
        ),
        "repeats": args.repeats,
        "note": "ratio = floor_time / our_time (wall clock); ratio_cpu = the same with process "
        "CPU time (all threads), less sensitive to other load on the machine; floor = scipy.fft "
        "only, 2(S-1)+1 in-place FFTs of (batch*modes, N, N) complex64, same workers; best of "
        "repeats, floor and model interleaved",
        "machine": info,
        "results": rows,
    }
    if not args.no_write:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
