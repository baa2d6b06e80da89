"""Gradient throughput and memory of the multislice far-field amplitude loss (xrayflow.ad).

Loss: L = sum_b sum_k (sqrt(sum_m |F{psi_bm}|^2)_k - a_bk)^2, psi = ad.multislice(probe,
patches, H), F = fft2 (ortho). One "gradient evaluation" = value and gradient with respect
to the object patches (S, B, n, n) and the probe (M, n, n).

Reported per (n, S):
- positions/s = B / (time of one gradient evaluation), reversible and stored modes with the
  contract API (patches (S, B, n, n) in, their gradient out), and reversible mode with
  ``ad.multislice_object`` (object + corners, as the reconstruction uses it; gradient wrt
  the object, scatter-added);
- FFT floor = (number of batched 2D FFTs of B*M frames) x (time of one such scipy.fft call,
  in place, same workers), the call time taken from running all the FFTs of one reversible
  evaluation back to back (so the floor is timed over as long a stretch as the gradient
  itself) -- interleaved with the gradient runs, best of ``--repeat`` for both, because
  the machine is shared;
  * our count (reversible): forward 2(S-1)+1; backward 2 (far field recomputed by
    ``ad.far_field_intensity`` to save memory, and its adjoint) + 2(S-1) adjoint
    propagation + 2(S-2) regeneration = 6S-5 (3 for S=1); stored mode: 4S-1;
  * minimal count (forward + backward, nothing recomputed): 4S-2;
- ratio = floor / ours (1 = nothing but FFTs), for both counts; wall-clock, and also in
  CPU time of this process (``time.process_time``, all threads), which is less sensitive
  to other jobs sharing the CPUs.

Memory (tracemalloc, NumPy allocations; scipy.fft's internal scratch is not seen) of one
10-slice evaluation: the forward model alone (constants, no gradient), the gradient in
reversible mode and in stored mode; peak above the inputs, and including the inputs. Both
for the contract API (patches (S,B,n,n) as input: the patch gradient is S*B frames by
itself) and for ``ad.multislice_object`` (object + corners; patches gathered on the fly).

Run: ``python benchmarks/gradient.py`` (defaults as in the JSON); ``--help`` for flags.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy
import scipy.fft

from xrayflow import ad
from xrayflow.backend import get_backend

MiB = 2**20


def make_problem(n, S, B, M, dtype, seed=0, obj_margin=None):
    rng = np.random.default_rng(seed)
    rdt = np.float32 if dtype == np.complex64 else np.float64
    probe = (rng.standard_normal((M, n, n)) + 1j * rng.standard_normal((M, n, n))).astype(dtype)
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.fftfreq(n)[None, :]
    H = np.exp(-1j * np.pi * 0.02 * n * (fx**2 + fy**2)).astype(dtype)  # Fresnel, |H| = 1
    amp = rng.random((B, n, n)).astype(rdt)
    return rng, probe, H, amp


def make_patches(rng, n, S, B, dtype):
    ph = rng.standard_normal((S, B, n, n)).astype(np.float32)
    ph *= 0.3
    out = np.empty((S, B, n, n), dtype)
    np.exp(1j * ph, out=out)
    return out


def make_object(rng, n, S, B, dtype):
    side = int(np.ceil(np.sqrt(B)))
    step = n // 4
    N = n + step * (side - 1)
    obj = np.exp(1j * 0.3 * rng.standard_normal((S, N, N))).astype(dtype)
    yy, xx = np.meshgrid(np.arange(side) * step, np.arange(side) * step, indexing="ij")
    corners = np.stack([yy.ravel(), xx.ravel()], axis=1)[:B]
    return obj, corners


def loss_patches(H, amp, backend, reversible):
    def loss(probe, patches):
        psi = ad.multislice(probe, patches, H, backend=backend, reversible=reversible)
        inten = ad.far_field_intensity(psi, backend=backend)  # sum_m |F psi|^2
        return ad.sum((ad.sqrt(inten) - amp) ** 2)

    return loss


def loss_object(H, amp, corners, backend, reversible):
    def loss(probe, obj):
        psi = ad.multislice_object(probe, obj, corners, H, backend=backend, reversible=reversible)
        inten = ad.far_field_intensity(psi, backend=backend)  # sum_m |F psi|^2
        return ad.sum((ad.sqrt(inten) - amp) ** 2)

    return loss


def fft_counts(S):
    # forward 2(S-1)+1; backward: far field recomputed + adjoint (2), adjoint propagation
    # 2(S-1), regeneration 2(S-2) (reversible only)
    rev = 3 if S == 1 else 6 * S - 5
    return {"reversible": rev, "stored": 4 * S - 1, "minimal": 4 * S - 2}


def best(f, repeat):
    """(best wall time, best CPU time of this process) over ``repeat`` calls."""
    ts, cs = [], []
    for _ in range(repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return min(ts), min(cs)


def bench_speed(n, S, args, backend, dtype):
    B, M = args.batch, args.modes
    rng, probe, H, amp = make_problem(n, S, B, M, dtype)
    patches = make_patches(rng, n, S, B, dtype)
    obj, corners = make_object(rng, n, S, B, dtype)
    vg_rev = ad.value_and_grad(loss_patches(H, amp, backend, True), (0, 1))
    vg_sto = ad.value_and_grad(loss_patches(H, amp, backend, False), (0, 1))
    vg_obj = ad.value_and_grad(loss_object(H, amp, corners, backend, True), (0, 1))
    buf = np.ones((B * M, n, n), dtype)

    c = fft_counts(S)

    def all_ffts():  # the FFTs of one reversible gradient evaluation, back to back
        for k in range(c["reversible"]):
            f = scipy.fft.fft2 if k % 2 == 0 else scipy.fft.ifft2
            f(buf, overwrite_x=True, workers=backend.workers)

    runs = {
        "rev": lambda: vg_rev(probe, patches),
        "sto": lambda: vg_sto(probe, patches),
        "obj": lambda: vg_obj(probe, obj),
    }
    for f in runs.values():  # warm-up (plans, page faults)
        f()
    all_ffts()
    walls = {k: [] for k in (*runs, "fft")}
    cpus = {k: [] for k in (*runs, "fft")}
    for _ in range(args.repeat):  # interleaved: the machine is shared
        for k, f in runs.items():
            w, cpu = best(f, 1)
            walls[k].append(w)
            cpus[k].append(cpu)
        w, cpu = best(all_ffts, 1)
        walls["fft"].append(w / c["reversible"])
        cpus["fft"].append(cpu / c["reversible"])
    tr, ts, to, tf = (min(walls[k]) for k in ("rev", "sto", "obj", "fft"))
    cr, cs, co, cf = (min(cpus[k]) for k in ("rev", "sto", "obj", "fft"))
    res = {
        "n": n,
        "slices": S,
        "batch": B,
        "modes": M,
        "time_reversible_s": tr,
        "time_stored_s": ts,
        "positions_per_s_reversible": B / tr,
        "positions_per_s_stored": B / ts,
        "fft_time_per_batched_call_s": tf,
        "fft_count_reversible": c["reversible"],
        "fft_count_stored": c["stored"],
        "fft_count_minimal": c["minimal"],
        "floor_ours_reversible_s": c["reversible"] * tf,
        "floor_minimal_s": c["minimal"] * tf,
        "ratio_floor_ours_count_reversible": c["reversible"] * tf / tr,
        "ratio_floor_minimal_count_reversible": c["minimal"] * tf / tr,
        "ratio_floor_stored": c["stored"] * tf / ts,
        "cpu_time_reversible_s": cr,
        "cpu_time_stored_s": cs,
        "cpu_time_fft_per_batched_call_s": cf,
        "ratio_cpu_floor_ours_count_reversible": c["reversible"] * cf / cr,
        "ratio_cpu_floor_minimal_count_reversible": c["minimal"] * cf / cr,
        "ratio_cpu_floor_stored": c["stored"] * cf / cs,
        "object_api": {
            "time_reversible_s": to,
            "positions_per_s_reversible": B / to,
            "ratio_floor_ours_count_reversible": c["reversible"] * tf / to,
            "ratio_floor_minimal_count_reversible": c["minimal"] * tf / to,
            "cpu_time_reversible_s": co,
            "ratio_cpu_floor_ours_count_reversible": c["reversible"] * cf / co,
            "ratio_cpu_floor_minimal_count_reversible": c["minimal"] * cf / co,
        },
        "all_times_reversible_s": walls["rev"],
        "all_times_stored_s": walls["sto"],
        "all_times_object_reversible_s": walls["obj"],
        "all_times_fft_per_batched_call_s": walls["fft"],
    }
    return res


def _peak(f):
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = f()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del out
    gc.collect()
    return peak


def bench_memory(args, backend, dtype):
    n, S, B, M = args.mem_size, args.mem_slices, args.batch, args.modes
    rng, probe, H, amp = make_problem(n, S, B, M, dtype)
    unit = B * M * n * n * np.dtype(dtype).itemsize
    out = {"n": n, "slices": S, "batch": B, "modes": M, "wavefield_batch_MiB": unit / MiB}

    patches = make_patches(rng, n, S, B, dtype)
    inputs = patches.nbytes + probe.nbytes + amp.nbytes + H.nbytes
    lp_r = loss_patches(H, amp, backend, True)
    lp_s = loss_patches(H, amp, backend, False)
    res = {}
    res["forward"] = _peak(lambda: lp_r(probe, patches))
    res["reversible"] = _peak(lambda: ad.value_and_grad(lp_r, (0, 1))(probe, patches))
    res["stored"] = _peak(lambda: ad.value_and_grad(lp_s, (0, 1))(probe, patches))
    out["patches_api"] = _mem_summary(res, inputs, unit)
    patches = None  # free before the object-API measurement
    gc.collect()

    obj, corners = make_object(rng, n, S, B, dtype)
    inputs = obj.nbytes + probe.nbytes + amp.nbytes + H.nbytes
    lo_r = loss_object(H, amp, corners, backend, True)
    lo_s = loss_object(H, amp, corners, backend, False)
    res = {}
    res["forward"] = _peak(lambda: lo_r(probe, obj))
    res["reversible"] = _peak(lambda: ad.value_and_grad(lo_r, (0, 1))(probe, obj))
    res["stored"] = _peak(lambda: ad.value_and_grad(lo_s, (0, 1))(probe, obj))
    out["object_api"] = _mem_summary(res, inputs, unit)
    out["object_api"]["object_shape"] = list(obj.shape)
    return out


def _mem_summary(res, inputs, unit):
    s = {"inputs_MiB": inputs / MiB}
    for k, v in res.items():
        s[f"{k}_peak_above_inputs_MiB"] = v / MiB
        s[f"{k}_peak_total_MiB"] = (v + inputs) / MiB
        s[f"{k}_peak_above_inputs_wavefield_units"] = v / unit
    f = res["forward"]
    s["ratio_reversible_to_forward_above_inputs"] = res["reversible"] / f
    s["ratio_stored_to_forward_above_inputs"] = res["stored"] / f
    s["ratio_reversible_to_forward_total"] = (res["reversible"] + inputs) / (f + inputs)
    s["ratio_stored_to_forward_total"] = (res["stored"] + inputs) / (f + inputs)
    return s


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="probe sizes n")
    p.add_argument("--slices", type=int, nargs="+", default=[1, 10], help="slice counts S")
    p.add_argument("--batch", type=int, default=32, help="positions per gradient evaluation")
    p.add_argument("--modes", type=int, default=1, help="probe modes M")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions (best is kept)")
    p.add_argument("--workers", type=int, default=None, help="FFT threads (default: all CPUs)")
    p.add_argument("--precision", choices=["single", "double"], default="single")
    p.add_argument("--mem-size", type=int, default=256, help="n for the memory measurement")
    p.add_argument("--mem-slices", type=int, default=10, help="S for the memory measurement")
    p.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    p.add_argument("--no-speed", action="store_true", help="skip the throughput measurement")
    p.add_argument("--out", default="benchmarks/results/gradient.json", help="JSON output")
    args = p.parse_args(argv)

    backend = get_backend("cpu", args.precision, workers=args.workers)
    dtype = backend.complex_dtype
    result = {
        "benchmark": "multislice far-field amplitude loss: value_and_grad wrt patches and probe",
        "settings": vars(args),
        "machine": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "platform": platform.platform(),
            "cpus_available": len(os.sched_getaffinity(0)),
            "fft_workers": backend.workers,
            "loadavg_start": list(os.getloadavg()),
        },
        "fft_count_convention": (
            "batched 2D FFT calls over B*M frames per gradient evaluation; reversible 6S-5 "
            "(forward 2(S-1)+1, backward 2 far field (recomputed + adjoint) + 2(S-1) adjoint "
            "+ 2(S-2) regeneration; 3 for S=1), stored 4S-1, minimal 4S-2"
        ),
        "speed": [],
    }
    if not args.no_speed:
        hdr = (
            f"{'n':>5} {'S':>3} {'B':>4} {'rev pos/s':>10} {'sto pos/s':>10} {'t_rev s':>8} "
            f"{'t_fft ms':>9} {'#fft rev/min':>13} {'ratio(ours#)':>12} {'ratio(min#)':>11} "
            f"{'ratio sto':>9} {'cpu(ours#)':>10} {'cpu(min#)':>9} "
            f"{'obj pos/s':>9} {'obj(ours#)':>10} {'obj cpu(ours#)':>14} {'obj cpu(min#)':>13}"
        )
        print(hdr)
        for n in args.sizes:
            for S in args.slices:
                r = bench_speed(n, S, args, backend, dtype)
                o = r["object_api"]
                result["speed"].append(r)
                print(
                    f"{n:>5} {S:>3} {args.batch:>4} {r['positions_per_s_reversible']:>10.1f} "
                    f"{r['positions_per_s_stored']:>10.1f} {r['time_reversible_s']:>8.3f} "
                    f"{1e3 * r['fft_time_per_batched_call_s']:>9.2f} "
                    f"{r['fft_count_reversible']:>6}/{r['fft_count_minimal']:<6} "
                    f"{r['ratio_floor_ours_count_reversible']:>12.2f} "
                    f"{r['ratio_floor_minimal_count_reversible']:>11.2f} "
                    f"{r['ratio_floor_stored']:>9.2f} "
                    f"{r['ratio_cpu_floor_ours_count_reversible']:>10.2f} "
                    f"{r['ratio_cpu_floor_minimal_count_reversible']:>9.2f} "
                    f"{o['positions_per_s_reversible']:>9.1f} "
                    f"{o['ratio_floor_ours_count_reversible']:>10.2f} "
                    f"{o['ratio_cpu_floor_ours_count_reversible']:>14.2f} "
                    f"{o['ratio_cpu_floor_minimal_count_reversible']:>13.2f}",
                    flush=True,
                )
    if not args.no_memory:
        m = bench_memory(args, backend, dtype)
        result["memory"] = m
        print(
            f"\npeak memory, n={m['n']} S={m['slices']} B={m['batch']} M={m['modes']} "
            f"(wavefield batch = {m['wavefield_batch_MiB']:.0f} MiB)"
        )
        print(
            f"{'API':<8} {'inputs':>8} {'forward':>9} {'reversible':>11} {'stored':>9} "
            f"{'rev/fwd':>8} {'sto/fwd':>8} {'rev/fwd incl. inputs':>21}"
        )
        for api in ("patches_api", "object_api"):
            s = m[api]
            print(
                f"{api.split('_')[0]:<8} {s['inputs_MiB']:>7.0f}M "
                f"{s['forward_peak_above_inputs_MiB']:>8.0f}M "
                f"{s['reversible_peak_above_inputs_MiB']:>10.0f}M "
                f"{s['stored_peak_above_inputs_MiB']:>8.0f}M "
                f"{s['ratio_reversible_to_forward_above_inputs']:>8.2f} "
                f"{s['ratio_stored_to_forward_above_inputs']:>8.2f} "
                f"{s['ratio_reversible_to_forward_total']:>21.2f}"
            )
    result["machine"]["loadavg_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
