"""Distributed object (row slabs with halos) against the replicated object: multislice
ptychography gradient of all frames on 1, 2, 4 ranks.

Per rank count, one ``mpiexec -n k python benchmarks/distributed_object.py --worker ...``
run builds the same synthetic case on every rank (random multislice object, two probe
modes, a jittered raster whose windows straddle the slab boundaries, random targets), takes
the replicated gradient, preconditioners and one Adam step with the solver's own code path
(:class:`xrayflow.solvers.gradient.Reconstructor`, one process's view) and compares them
with the distributed ones (:class:`xrayflow.solvers.distributed_object.SlabGradient`: slab
gradient, halo sums, optimizer step on the own rows, halo refresh), gathered for the check
only. Reported per rank count:

- ``object_bytes_per_rank``: the largest rank's object unknowns (held rows) plus the Adam
  state of its own rows; ``object_bytes_per_rank_replicated``: the whole object plus its
  Adam state (what every rank holds in the replicated mode);
- ``s_per_iter``: gradient of all frames (one batch), slowest rank, best of ``--repeat``;
- ``halo_bytes_per_iter``: bytes sent in the halo exchanges of one batch, all ranks
  together (gradient + illumination to owners, object rows to halos);
- ``max_rel_diff``: the largest ``max|distributed - replicated| / max|replicated|`` over
  loss, object and probe gradients, illumination, preconditioners and the updated object.

Run: ``python benchmarks/distributed_object.py`` (``--help``); writes
``benchmarks/results/distributed_object.json``. See docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def case(args):
    """(config, ReconData) of the synthetic multislice case (float64, pixel units)."""
    from xrayflow.config import load_config
    from xrayflow.reconstruct.data import ReconData

    rng = np.random.default_rng(0)
    S, n, ny, nx = args.slices, args.window, args.rows, args.cols
    obj = 0.9 * np.exp(0.3j * rng.standard_normal((S, ny, nx)))
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    p = np.exp(-(yy**2 + xx**2) / (0.08 * n * n) + 0.05j * (yy**2 + xx**2))
    probe = np.stack([p, 0.3 * p * np.exp(2j * np.pi * yy / n)])
    ys = np.arange(0, ny - n - 1, args.step, dtype=float)
    xs = np.arange(0, nx - n - 1, args.step, dtype=float)
    c = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    corners = c + rng.uniform(0, 0.9, c.shape)  # sub-pixel: the probe shift is exercised
    inten = rng.poisson(50.0, (len(corners), n, n)).astype(np.float32)
    data = ReconData(
        intensities=inten,
        mask=np.ones((n, n), bool),
        corners=corners,
        object_shape=(ny, nx),
        pixel_size=1.0,
        wavelength=0.1,
        distance=None,
        energy_ev=None,
        indices=np.arange(len(corners)),
        probe=probe,
        slice_spacing=15.0,
        truth={"object": obj},
        units="pixels",
    )
    cfg = load_config(
        {
            "geometry": {"units": "pixels"},
            "model": {"type": "multislice_ptycho", "n_slices": S, "probe_modes": 2},
            "init": {"object": "truth", "probe": "file", "probe_scale_to_data": False},
            "optimizer": {"method": "adam", "batch_size": len(corners)},
            "run": {"checkpoint_every": 0, "log_every": 0, "precision": "double"},
        },
        "reconstruct",
    )
    return cfg, data


def state_bytes(opt, names) -> int:
    """Bytes of the optimizer state of the parameters ``names``."""
    return sum(v.nbytes for k in names for v in opt.state[k].values() if hasattr(v, "nbytes"))


def worker(args) -> None:
    """One rank count under mpiexec; rank 0 writes the record to ``args.worker``."""
    from xrayflow.io.atomic import atomic_write_text
    from xrayflow.parallel import Comm, abort_on_error, on_root
    from xrayflow.solvers.distributed_object import SlabGradient
    from xrayflow.solvers.gradient import Reconstructor
    from xrayflow.solvers.optimizers import make_optimizer

    with abort_on_error() as comm:
        cfg, data = case(args)
        rec = Reconstructor(cfg, data, comm=Comm(None), log=lambda _: None)
        names, objs = rec.names, rec.object_names
        idx = np.arange(data.n_positions)
        factor, alpha = 2.0, cfg["optimizer"]["precondition_alpha"]

        # replicated: the solver's own block sums, preconditioners and Adam step
        blocks, spans = rec._blocks(idx)
        ref = rec.comm.block_sum(
            len(blocks), lambda k: rec._partial(blocks[k], idx, names, False), spans
        )
        ref_pre = rec._preconditioners(idx, ref)
        start = {k: v.copy() for k, v in rec.params.items()}
        rec.opt.step(rec.params, {k: ref[k] for k in names}, 0, precond=ref_pre)
        replicated_bytes = sum(start[k].nbytes for k in objs) + state_bytes(rec.opt, objs)

        # distributed
        sg = SlabGradient(rec.model, comm)
        slab = sg.slab(start)
        mine = sg.owned_frames(data.corners)
        corners, target = data.corners[mine], rec.target[mine]
        times = []
        for _ in range(args.repeat + 1):
            comm.barrier()
            t0 = time.perf_counter()
            tot = sg.gradient(slab, [(mine, corners, target)], names)
            times.append(max(comm.allgather(time.perf_counter() - t0)))
        pre = sg.preconditioners(tot, factor, alpha)
        opt = make_optimizer("adam", rec.opt.settings)
        own = {k: (v if k == "probe" else v[..., sg.own, :].copy()) for k, v in slab.items()}
        opt.step(own, {k: tot[k] for k in names}, 0, precond=pre)
        for k in objs:
            slab[k][..., sg.own, :] = own[k]
        sg.refresh(slab)
        mine_bytes = sum(slab[k].nbytes for k in objs) + state_bytes(opt, objs)
        halo = sum(comm.allgather(sg.halo_bytes(slab, names)))

        def rel(d, r) -> float:
            return float(np.max(np.abs(d - r)) / max(np.max(np.abs(r)), 1e-300))

        diffs = {"loss": rel(tot["loss"], ref["loss"]), "probe": rel(tot["probe"], ref["probe"])}
        diffs["opw"] = rel(tot["opw"], ref["opw"])
        diffs["pre_probe"] = rel(pre["probe"], ref_pre["probe"])
        diffs["illum"] = rel(sg.part.gather(comm, tot["illum"]), ref["illum"])
        for k in objs:
            diffs[f"grad_{k}"] = rel(sg.part.gather(comm, tot[k]), ref[k])
            diffs[f"pre_{k}"] = rel(sg.part.gather(comm, pre[k]), ref_pre[k])
            diffs[f"step_{k}"] = rel(sg.part.gather(comm, own[k]), rec.params[k])
            # the refreshed halos hold the owners' updated rows
            r = sg.rows
            diffs[f"halo_{k}"] = rel(slab[k], rec.params[k][..., r.start : r.stop, :])
        diffs = {k: max(comm.allgather(v)) for k, v in diffs.items()}
        out = {
            "ranks": comm.size,
            "frames": int(data.n_positions),
            "frames_per_rank": comm.allgather(int(mine.size)),
            "own_rows": [len(sg.part.own(r)) for r in range(comm.size)],
            "held_rows": [len(sg.part.held(r)) for r in range(comm.size)],
            "object_bytes_per_rank": max(comm.allgather(mine_bytes)),
            "object_bytes_per_rank_replicated": replicated_bytes,
            "s_per_iter": min(times[1:]),
            "halo_bytes_per_iter": halo,
            "max_rel_diff": max(diffs.values()),
            "rel_diff": diffs,
        }
        on_root(lambda: atomic_write_text(args.worker, json.dumps(out)), comm)


def run_config(args, ranks: int) -> dict:
    """The worker on ``ranks`` ranks (a plain process for 1)."""
    env = dict(os.environ, XRAYFLOW_FFT_WORKERS="1", OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rec.json"
        cmd = [sys.executable, __file__, "--worker", str(out), *problem_flags(args)]
        if ranks > 1:
            cmd = [args.mpiexec, "-n", str(ranks), *cmd]
        subprocess.run(cmd, check=True, env=env, timeout=args.timeout)
        return json.loads(out.read_text())


def problem_flags(args) -> list[str]:
    keys = ("rows", "cols", "window", "slices", "step", "repeat")
    return [s for k in keys for s in (f"--{k}", str(getattr(args, k)))]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--rows", type=int, default=128, help="object rows Ny (split over ranks)")
    p.add_argument("--cols", type=int, default=128, help="object columns Nx")
    p.add_argument("--window", type=int, default=32, help="probe window n")
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--step", type=int, default=8, help="scan step, px")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument(
        "--weak",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also weak scaling: --rows object rows per rank",
    )
    p.add_argument("--capacity-slices", type=int, default=500)
    p.add_argument("--capacity-window", type=int, default=256)
    p.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    p.add_argument(
        "--out", default=str(ROOT / "benchmarks" / "results" / "distributed_object.json")
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def largest_object(ranks: int, slices: int, window: int, gpu_bytes: float) -> int:
    """Largest square object side N (px) whose ``slices`` complex64 slices, with the
    reconstruction's five object-sized copies (parameter, gradient, summed gradient, two Adam
    moments: ``memory_parts`` of the reconstruct stage) over a slab of ``N / ranks`` rows
    plus the ``window - 1`` halo rows, fill at most 80 % of ``gpu_bytes`` (the rest for the
    batch's wavefields and the frames)."""
    per_row = 5 * 8 * slices  # bytes per object pixel column and row, all copies
    lo, hi = 1, 1 << 20
    while lo < hi:
        n = (lo + hi + 1) // 2
        fits = per_row * n * (-(-n // ranks) + window - 1) <= 0.8 * gpu_bytes
        lo, hi = (n, hi) if fits else (lo, n - 1)
    return lo


def scaled(args, ranks: int):
    """Weak scaling: ``args`` with ``rows`` per rank (the object grows with the ranks)."""
    return argparse.Namespace(**{**vars(args), "rows": args.rows * ranks})


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    rows = [run_config(args, k) for k in args.ranks]
    weak = [run_config(scaled(args, k), k) for k in args.ranks if args.weak]
    for r in rows:  # the target: the replicated bytes over R plus the halo rows' share
        share = 1 / r["ranks"] + (args.window - 1) / args.rows
        r["object_bytes_per_rank_target"] = r["object_bytes_per_rank_replicated"] * share
    gpu = 80e9
    capacity = {
        str(k): largest_object(k, args.capacity_slices, args.capacity_window, gpu)
        for k in (1, 2, 4, 8, 16, 64, 256)
    }
    res = {
        "benchmark": "distributed_object",
        "workload": "multislice ptychography gradient of all frames (one batch), float64",
        "problem": {k: getattr(args, k) for k in ("rows", "cols", "window", "slices", "step")},
        "rows": rows,
        "weak_scaling": weak,
        "largest_object_80GB": {
            "slices": args.capacity_slices,
            "window": args.capacity_window,
            "precision": "complex64, Adam",
            "side_px_by_ranks": capacity,
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "command": " ".join(sys.argv),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print("strong scaling (the same object):")
    print("ranks  MiB/rank  target  replicated  s/iter  halo KiB  max rel diff")
    for r in rows:
        print(
            f"{r['ranks']:5d}  {r['object_bytes_per_rank'] / 2**20:8.2f}  "
            f"{r['object_bytes_per_rank_target'] / 2**20:6.2f}  "
            f"{r['object_bytes_per_rank_replicated'] / 2**20:10.2f}  {r['s_per_iter']:6.3f}  "
            f"{r['halo_bytes_per_iter'] / 2**10:8.0f}  {r['max_rel_diff']:.2e}"
        )
    if weak:
        print(f"weak scaling ({args.rows} object rows per rank):")
        print("ranks  rows  MiB/rank  s/iter  efficiency")
        for r in weak:
            eff = weak[0]["s_per_iter"] / r["s_per_iter"]
            print(
                f"{r['ranks']:5d}  {sum(r['own_rows']):4d}  "
                f"{r['object_bytes_per_rank'] / 2**20:8.2f}  {r['s_per_iter']:6.3f}  {eff:10.2f}"
            )
    print(
        f"largest square object on an 80 GB GPU per rank ({args.capacity_slices} slices, "
        f"window {args.capacity_window}, complex64 + Adam): "
        + ", ".join(f"{k} ranks {v} px" for k, v in capacity.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
