"""Data-parallel set-up: torch.distributed from MPI (or torchrun / Slurm) environment variables.

Rank and world size are read, in order, from ``PMI_RANK``/``PMI_SIZE`` (MPICH hydra, Intel MPI),
``OMPI_COMM_WORLD_RANK``/``OMPI_COMM_WORLD_SIZE`` (Open MPI), ``SLURM_PROCID``/``SLURM_NTASKS``
(srun) and ``RANK``/``WORLD_SIZE`` (torchrun). ``MASTER_ADDR``/``MASTER_PORT`` are taken from
the environment when set; otherwise rank 0 picks a free port and, when mpi4py is importable,
broadcasts it (with its host name, or 127.0.0.1 when every rank is on the same host).

Gradients are averaged by :func:`allreduce_gradients` (one flat SUM all-reduce), not by DDP,
so that the training loop can normalise the loss by the *global* batch size: per-rank batch =
global batch / world size, and the summed gradient equals the one-rank gradient up to
rounding. Batch norm statistics are made global by :class:`xrayflow.networks.GlobalBatchNorm`.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from dataclasses import dataclass

import torch
import torch.distributed as dist

from xrayflow.errors import ConfigError, XrayflowError

_ENV_PAIRS = (
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    ("RANK", "WORLD_SIZE", "LOCAL_RANK"),
)


@dataclass
class DistInfo:
    """Where this process sits: rank, world size, local rank, torch device, backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 and dist.is_available() and dist.is_initialized()


def env_rank_size(environ=None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from MPI/Slurm/torchrun variables; (0, 1, 0) if none."""
    env = os.environ if environ is None else environ
    for r, s, lr in _ENV_PAIRS:
        if r in env and s in env:
            rank, size = int(env[r]), int(env[s])
            local = int(env.get(lr, rank))
            if not 0 <= rank < size:
                raise ConfigError(f"{r}={rank} is not in [0, {s}={size})")
            return rank, size, local
    return 0, 1, 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _rendezvous(rank: int, size: int) -> tuple[str, str]:
    """MASTER_ADDR/PORT: environment first, else chosen by rank 0 and broadcast via mpi4py."""
    addr = os.environ.get("MASTER_ADDR")
    port = os.environ.get("MASTER_PORT")
    if addr and port:
        return addr, port
    comm = None
    try:
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_size() == size:
            comm = MPI.COMM_WORLD
    except Exception:  # pragma: no cover - no mpi4py / not under MPI
        comm = None
    if comm is None:
        return addr or "127.0.0.1", port or "29500"
    hosts = comm.allgather(socket.gethostname())
    if rank == 0:
        a = addr or ("127.0.0.1" if len(set(hosts)) == 1 else hosts[0])
        p = port or str(_free_port())
        payload = (a, p)
    else:
        payload = None
    return comm.bcast(payload, root=0)


def _xpu_available() -> bool:
    """Intel GPUs through PyTorch's XPU device (torch >= 2.4 XPU builds)."""
    xpu = getattr(torch, "xpu", None)
    return xpu is not None and xpu.is_available()


def accelerator(device: str, key: str = "training.device") -> str:
    """``cuda`` | ``xpu`` | ``cpu`` for a requested device; ``auto``: CUDA, else XPU, else CPU.
    A device torch does not see is a ConfigError naming ``key``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "xpu" if _xpu_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: cuda requested but torch sees no CUDA device")
    if device == "xpu" and not _xpu_available():
        raise ConfigError(f"{key}: xpu requested but torch sees no XPU device")
    return device


def init_distributed(device: str = "auto", backend: str = "auto") -> DistInfo:
    """Initialise torch.distributed when launched with more than one rank.

    Args:
        device: ``cpu`` | ``cuda`` | ``xpu`` | ``auto`` (CUDA when available, else an Intel
            GPU through ``torch.xpu``, else CPU; GPU ``local_rank % count``).
        backend: ``gloo`` | ``nccl`` | ``xccl`` | ``auto`` (NCCL on CUDA, XCCL on XPU, gloo
            on CPU).
    """
    rank, size, local = env_rank_size()
    kind = accelerator(device)
    if kind == "cpu":
        dev = torch.device("cpu")
    else:
        module = getattr(torch, kind)
        dev = torch.device(kind, local % module.device_count())
        module.set_device(dev)
    if backend == "auto":
        backend = {"cuda": "nccl", "xpu": "xccl", "cpu": "gloo"}[kind]
    if size > 1 and backend == "xccl" and not dist.is_xccl_available():
        raise ConfigError(
            "training on XPU with several ranks needs torch.distributed's XCCL backend, which "
            "this torch build lacks (use the site's PyTorch XPU build, or training.device: cpu)"
        )
    info = DistInfo(rank, size, local, dev, None)
    if size > 1:
        if not dist.is_initialized():
            addr, port = _rendezvous(rank, size)
            os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = addr, str(port)
            dist.init_process_group(backend, rank=rank, world_size=size)
        info.backend = backend
    return info


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if this module created one."""
    if info.active:
        dist.barrier()
        dist.destroy_process_group()


def broadcast_parameters(model: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not info.active:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def allreduce_gradients(model: torch.nn.Module, info: DistInfo) -> None:
    """SUM the gradients over ranks (loss must be normalised by the global batch size)."""
    if not info.active:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    off = 0
    for p in params:
        n = p.numel()
        p.grad = flat[off : off + n].view_as(p).clone()
        off += n


def allreduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few Python floats over ranks (float64)."""
    if not info.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu()]


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def abort_all(exc: BaseException, rank: int) -> None:
    """Report ``exc`` and abort every MPI rank (so that peers blocked in collectives exit)."""
    msg = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    print(f"[rank {rank}] {msg}; aborting all ranks", file=sys.stderr, flush=True)
    try:
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_size() > 1:
            MPI.COMM_WORLD.Abort(2 if isinstance(exc, XrayflowError) else 1)
    except ImportError:  # pragma: no cover
        pass
