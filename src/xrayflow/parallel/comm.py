"""MPI communicator wrapper: rank/size, partitions, sums, rank-0 output, abort on error.

Without a launcher (``mpiexec``, ``srun``, ...) :func:`get_comm` returns a size-1
communicator and mpi4py is not even imported. ``XRAYFLOW_MPI=1`` / ``0`` forces MPI on /
off.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from xrayflow.errors import XrayflowError

from .reduce import Layout, eval_node, tree_cover
from .transport import MPITransport, SerialTransport, gpu_transport_name, make_gpu_transport

_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "PALS_RANKID")


def partition(n: int, rank: int, size: int) -> range:
    """Contiguous, balanced block of ``range(n)`` for ``rank`` of ``size`` (the first
    ``n % size`` ranks get one item more)."""
    if size < 1 or not 0 <= rank < size or n < 0:
        raise ValueError(f"partition: need n >= 0 and 0 <= rank < size, got {n}, {rank}, {size}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def block_ranges(n: int, block: int) -> list[range]:
    """``range(n)`` cut into consecutive blocks of ``block`` items (the last may be short);
    the boundaries depend only on ``n`` and ``block``, never on the number of ranks."""
    if block < 1:
        raise ValueError(f"block size must be >= 1, got {block}")
    return [range(b, min(n, b + block)) for b in range(0, n, block)]


def launched_by_mpi() -> bool:
    """True under an MPI launcher (or ``XRAYFLOW_MPI=1``)."""
    flag = os.environ.get("XRAYFLOW_MPI")
    if flag in ("0", "1"):
        return flag == "1"
    if any(v in os.environ for v in _LAUNCHER_VARS):
        return True
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1


class Comm:
    """Rank/size plus the collectives xrayflow needs; ``mpi`` is an mpi4py communicator or
    None (one process)."""

    def __init__(self, mpi=None):
        self.mpi = mpi
        self.rank = 0 if mpi is None else mpi.Get_rank()
        self.size = 1 if mpi is None else mpi.Get_size()
        self._transports: dict = {}
        self.last_timing: dict = {}  # of the last block_sum: compute_s, reduce_s (this rank)

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def partition(self, n: int) -> range:
        """This rank's contiguous share of ``range(n)``."""
        return partition(n, self.rank, self.size)

    def barrier(self) -> None:
        if self.mpi is not None:
            self.mpi.Barrier()

    def bcast(self, obj, root: int = 0):
        """Python object from ``root`` to every rank (pickled; small objects only)."""
        return obj if self.mpi is None else self.mpi.bcast(obj, root=root)

    def allgather(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled; small objects)."""
        return [obj] if self.mpi is None else self.mpi.allgather(obj)

    def abort(self, code: int = 1) -> None:
        """End every rank now (MPI_Abort; the launcher kills the others)."""
        if self.mpi is None:
            sys.exit(code)
        self.mpi.Abort(code)

    # -- transports ------------------------------------------------------------------
    def transport_name(self, xp_name: str = "numpy") -> str:
        """``serial`` (one rank), ``mpi`` (host arrays) or, for ``cupy`` arrays, ``nccl`` |
        ``cuda-aware-mpi`` | ``host`` (staged through host memory)."""
        return self._transport(xp_name).name

    def _transport(self, xp_name: str):
        if xp_name not in self._transports:
            if self.mpi is None:
                t = SerialTransport()
            elif xp_name == "numpy":
                t = MPITransport(self.mpi)
            else:
                t = make_gpu_transport(self.mpi, gpu_transport_name())
            self._transports[xp_name] = t
        return self._transports[xp_name]

    def select_gpu(self) -> int:
        """Make GPU ``node-local rank % device count`` current (call before allocating).

        The index is among the devices this process sees: the workflow's launchers and
        wrappers narrow that to the process's own GPU (``srun --gpus-per-task=1``, or
        ``workflow/scripts/polaris/set_affinity_gpu.sh``, which gives every rank and every
        single-rank job a GPU no other process on the node holds), so a single-rank job's
        device 0 is its own GPU, not the node's first one."""
        import cupy

        local = 0
        if self.mpi is not None:
            from mpi4py import MPI

            node = self.mpi.Split_type(MPI.COMM_TYPE_SHARED)
            local = node.Get_rank()
            node.Free()
        dev = local % cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(dev).use()
        return dev

    def alltoallv(self, send, scounts, recv, rcounts):
        """Consecutive segments of the flat real buffer ``send`` (``scounts`` elements for
        ranks 0, 1, ...) to every rank; ``recv`` receives ``rcounts`` elements from ranks
        0, 1, ... (through the transport of the arrays' module; segments of 0 elements are
        not sent, so mostly-zero counts make it a neighbour exchange)."""
        return self._transport(type(send).__module__.split(".")[0]).alltoallv(
            send, scounts, recv, rcounts
        )

    # -- sums ------------------------------------------------------------------------
    def allreduce(self, tree):
        """Sum of ``tree`` (array, or dict of arrays/floats) over ranks, the fast way (the
        rounding depends on the rank count; use :meth:`block_sum` for reproducible sums)."""
        if self.mpi is None:
            return tree
        lay = Layout.of(tree)
        bufs = lay.pack(tree, lay.empty(_modules(lay)))
        for g, buf in zip(lay.groups, bufs, strict=True):
            self._transport(g[0]).allreduce(buf)
        return lay.unpack(bufs)

    def block_sum(self, n_blocks: int, partial: Callable[[int], object], spans=None):
        """Deterministic sum over ranks of ``partial(k)`` for blocks ``k`` in
        ``range(n_blocks)``; this rank computes the blocks ``self.partition(n_blocks)``, or
        ``spans[self.rank]`` when ``spans`` (one ``range`` per rank, consecutive, covering
        ``range(n_blocks)``) says which rank holds which blocks (e.g. the data they read).

        ``partial(k)`` returns an array or a dict of arrays / floats (same layout for every
        block), e.g. ``{"loss": value, "delta": grad, ...}``. The result is bit-identical for
        any number of ranks (:mod:`xrayflow.parallel.reduce`); every rank receives it.
        ``last_timing`` then holds this rank's compute and reduction (incl. waiting) times.
        Communication per rank: about ``(k + 1)`` partials' worth, ``k <= ~2 log2(n_blocks)``.
        """
        if n_blocks < 1:
            raise ValueError(f"block_sum: n_blocks must be >= 1, got {n_blocks}")
        if spans is None:
            bounds = [partition(n_blocks, r, self.size) for r in range(self.size)]
        else:
            bounds = [range(s.start, s.stop) for s in spans]
            starts = [b.start for b in bounds] + [n_blocks]
            if (
                len(bounds) != self.size
                or any(b.stop != nxt for b, nxt in zip(bounds, starts[1:], strict=True))
                or starts[0] != 0
            ):
                raise ValueError(f"block_sum: spans {spans} do not cover range({n_blocks})")
        covers = [tree_cover(0, n_blocks, b.start, b.stop) for b in bounds]
        state: dict = {}

        def leaf(lo, hi):
            if hi - lo != 1:
                return None
            tree = partial(lo)
            if "layout" not in state:
                state["layout"] = Layout.of(tree)
            lay = state["layout"]
            return lay.pack(tree, lay.empty(_modules(lay)))

        t0 = time.perf_counter()
        nodes = [eval_node(lo, hi, leaf) for lo, hi in covers[self.rank]]
        t1 = time.perf_counter()
        self.last_timing = {"compute_s": t1 - t0, "reduce_s": 0.0}
        if self.mpi is None:
            return state["layout"].unpack(nodes[0])
        mine = state["layout"].describe() if "layout" in state else None
        every = self.mpi.allgather(mine)
        ref = next(d for d in every if d is not None)
        if any(d is not None and d != ref for d in every):
            raise ValueError(f"block_sum: ranks returned partials of different layouts: {every}")
        lay = Layout(*ref)
        mods = _modules(lay)
        k_max = max(len(c) for c in covers)
        where = {node: (r, i) for r, c in enumerate(covers) for i, node in enumerate(c)}
        totals = [
            self._reduce_group(
                [node[g] for node in nodes],
                lay.sizes[g],
                mods[name],
                dt,
                self._transport(name),
                k_max,
                where,
                n_blocks,
            )
            for g, (name, dt) in enumerate(lay.groups)
        ]
        out = lay.unpack(totals)
        self.last_timing["reduce_s"] = time.perf_counter() - t1
        return out

    def _reduce_group(self, nodes, n, xp, dt, transport, k_max, where, n_blocks):
        """Tree-sum flat buffers of ``n`` elements: rank r owns element segment r; an
        all-to-all sends it every rank's tree nodes restricted to that segment, it finishes
        the tree there, and an all-gather assembles the segments (traffic per rank about
        ``(k_max + 1) n`` elements, memory ``2 k_max n + n``)."""
        segs = [partition(n, r, self.size) for r in range(self.size)]
        lens = [len(s) for s in segs]
        send = xp.empty(k_max * n, dtype=dt)  # rows past len(nodes) are never read
        off = 0
        for s in segs:
            view = send[off : off + k_max * len(s)].reshape(k_max, len(s))
            for i, node in enumerate(nodes):
                view[i] = node[s.start : s.stop]
            off += k_max * len(s)
        me = lens[self.rank]
        recv = xp.empty((self.size, k_max, me), dtype=dt)
        transport.alltoallv(
            send, [k_max * v for v in lens], recv.reshape(-1), [k_max * me] * self.size
        )

        def known(lo, hi):
            if (lo, hi) not in where:
                return None
            r, i = where[(lo, hi)]
            return [recv[r, i]]

        part = eval_node(0, n_blocks, known)[0]
        total = xp.empty(n, dtype=dt)
        return transport.allgatherv(xp.ascontiguousarray(part), total, lens)


def _modules(lay: Layout) -> dict:
    return {name: importlib.import_module(name) for name, _ in lay.groups}


_COMM: Comm | None = None


def get_comm() -> Comm:
    """The world communicator (cached). Imports mpi4py only under an MPI launcher."""
    global _COMM
    if _COMM is None:
        if launched_by_mpi():
            from mpi4py import MPI

            _COMM = Comm(MPI.COMM_WORLD)
        else:
            _COMM = Comm(None)
    return _COMM


def sum_over_blocks(blocks, partial: Callable, comm: Comm | None = None) -> dict:
    """``Σ_k partial(blocks[k])`` (dicts of floats / arrays with the same keys) over the
    ranks of ``comm`` (default :func:`get_comm`): each rank evaluates the blocks it owns and
    the sums are taken in a fixed tree order, so the result is bit-identical on every rank
    and for any number of ranks (:meth:`Comm.block_sum`)."""
    comm = comm or get_comm()
    return comm.block_sum(len(blocks), lambda k: partial(blocks[k]))


def local_indices(n: int, comm: Comm | None = None) -> np.ndarray:
    """This rank's contiguous share of ``range(n)`` as an int64 array."""
    r = (comm or get_comm()).partition(n)
    return np.arange(r.start, r.stop, dtype=np.int64)


@contextmanager
def abort_on_error(comm: Comm | None = None) -> Iterator[Comm]:
    """Turn an exception on any rank into a stop of *all* ranks instead of a hang.

    On the failing rank: the traceback (not for :class:`XrayflowError`), then
    ``rank k: <message>`` on stderr, then ``MPI_Abort`` with exit code 2 for
    ``XrayflowError`` (the CLI's code for user errors), the ``SystemExit`` code, or 1.
    With one rank the exception propagates unchanged. Usable as a decorator too.
    """
    comm = comm or get_comm()
    try:
        yield comm
    except SystemExit as exc:
        if comm.size == 1 or exc.code in (0, None):
            raise
        code = exc.code if isinstance(exc.code, int) else 1
        print(f"rank {comm.rank}: exit {exc.code}", file=sys.stderr, flush=True)
        comm.abort(code)
    except BaseException as exc:
        if comm.size == 1:
            raise
        user = isinstance(exc, XrayflowError)
        if not user:
            traceback.print_exc()
        msg = str(exc) if user else f"{type(exc).__name__}: {exc}"
        print(f"rank {comm.rank}: {msg}", file=sys.stderr, flush=True)
        comm.abort(2 if user else 1)


def on_root(fn: Callable, comm: Comm | None = None):
    """Rank 0 calls ``fn()`` (e.g. writes a file), then every rank waits at a barrier. A
    failure on rank 0 aborts all ranks (no rank is left waiting). Returns ``fn()``'s result
    on rank 0, None on the others."""
    comm = comm or get_comm()
    out = None
    with abort_on_error(comm):
        if comm.is_root:
            out = fn()
        comm.barrier()
    return out
