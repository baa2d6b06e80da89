"""Multislice (split-step) propagation and its memory-light reversible gradient: one
chunked, threaded engine for the simulation (:class:`~.ptychography.MultisliceModel`) and
the AD node (:func:`xrayflow.ad.multislice`, :func:`xrayflow.ad.multislice_object`).

Forward, per probe mode, all positions batched (docs/physics.md)::

    psi_0 = probe
    for j in 0..S-1:
        u_j = t_j * psi_j                       # t_j: transmission of slice j at the position
        psi_{j+1} = P_j u_j = F^-1 H_j F u_j    # not after the last slice
    exit = u_{S-1}

Backward (PyTorch complex convention, g = dL/d exit)::

    gu_{S-1} = g
    for j = S-1..0:
        gt_j     = sum_m gu_j * conj(psi_j)     # gradient of the slice transmission
        gpsi_j   = gu_j * conj(t_j)
        gu_{j-1} = P_{j-1}^H gpsi_j              # = F^-1 conj(H) F gpsi_j
    gprobe = sum_b gpsi_0

**Reversible mode** (default) keeps no per-slice waves: ``psi_j`` is regenerated from the
exit wave backwards, ``u_{j-1} = P_{j-1}^-1 psi_j`` and ``psi_j = u_j / t_j``. Free-space
propagation with ``|H| = 1`` is unitary (``P^-1 = P^H``), so regeneration and the adjoint
propagation share one batched FFT on a stacked (2, b, M, h, w) buffer. Where regeneration
would amplify round-off too much (accumulated ``1/min|t|`` since the last checkpoint above
``max_amplification``, or ``H = 0`` somewhere, e.g. band-limited/evanescent), the incident
wave of that slice is stored in the forward pass (a checkpoint). ``reversible=False``
stores every incident wave (the usual AD memory: S wavefield batches). The gradient in the
probe alone (:meth:`Multislice.adj`) needs no regeneration at all.

Engine: positions are cut into chunks; each chunk runs the whole slice loop in one
``(b, M, h, w)`` buffer with in-place ufuncs and in-place FFTs, and the threads take chunks
in ascending order (each with ``workers // threads`` FFT threads). Accumulations shared
between chunks (object scatter-add, probe sum) run in chunk order, so results do not
depend on the thread schedule (bitwise equal to one thread). Backward memory: two
wavefield buffers of one chunk plus a few patch buffers per thread, independent of S.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from xrayflow.backend import array_module, fft2, fft_workers, ifft2

from .base import OperatorError
from .fourier import inplace
from .patches import Patches, flat_index, scatter_add_patches

__all__ = [
    "Multislice",
    "MultisliceEngine",
    "ObjectWindows",
    "PatchStack",
    "chunk_bounds",
    "exit_waves",
]


# ---------------------------------------------------------------------------------------
# threads over chunks
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(n: int) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="xrayflow-ms")
            _POOLS[n] = pool
        return pool


class _Turns:
    """Runs ``fn`` for chunk ``ci`` under ``key`` only after chunks 0..ci-1 did (in order),
    so shared accumulations are deterministic. Workers take chunks in ascending order, one
    at a time, so the lowest unfinished chunk never waits (no deadlock)."""

    def __init__(self):
        self.cv = threading.Condition()
        self.next: dict = {}
        self.failed = False

    def run(self, key, ci: int, fn) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.failed or self.next.get(key, 0) == ci)
            if self.failed:
                raise RuntimeError("multislice: another worker thread failed")
            try:
                fn()
            finally:
                self.next[key] = ci + 1
                self.cv.notify_all()

    def fail(self) -> None:
        with self.cv:
            self.failed = True
            self.cv.notify_all()


def _run_chunks(n_chunks: int, threads: int, work, turns: _Turns | None = None) -> None:
    """``work(next_chunk)`` on ``threads`` threads; ``next_chunk()`` hands out chunk
    indices in ascending order (None when all are taken)."""
    it = iter(range(n_chunks))
    lock = threading.Lock()

    def next_chunk():
        with lock:
            return next(it, None)

    if threads <= 1:
        work(next_chunk)
        return

    def guarded():
        try:
            work(next_chunk)
        except BaseException:
            if turns is not None:
                turns.fail()
            raise

    futures = [_pool(threads).submit(guarded) for _ in range(threads)]
    for f in futures:
        f.result()


def chunk_bounds(B: int, step: int) -> list[tuple[int, int]]:
    """``[(b0, b1), ...]`` covering ``0..B`` in steps of ``step`` positions."""
    step = max(1, int(step))
    return [(b0, min(B, b0 + step)) for b0 in range(0, B, step)]


# ---------------------------------------------------------------------------------------
# slice transmissions: given per position, or read from the object at corners
class PatchStack:
    """Slice transmissions given per position: ``(S, B, h, w)``."""

    grad_done = None  # patch gradients go straight to their place

    def __init__(self, T):
        if T.ndim != 4:
            raise OperatorError(f"patches must have shape (S, B, n, n), got {T.shape}")
        self.T, self.xp = T, array_module(T)
        self.S, self.B = T.shape[:2]
        self.n_shape = tuple(T.shape[-2:])
        self.dtype = T.dtype

    def mul(self, j, b0, b1, a, out):
        """``out = a · t_j`` for positions b0:b1 (``a``: (1 or b, M, h, w))."""
        self.xp.multiply(a, self.T[j, b0:b1, None], out=out)

    def conj(self, j, b0, b1, out):
        """``out = conj(t_j)`` (b, h, w) for positions b0:b1; returns ``out``."""
        return self.xp.conjugate(self.T[j, b0:b1], out=out)

    def min_abs(self, j) -> float:
        return float(self.xp.abs(self.T[j]).min())

    def new_grad(self, cdt):
        return self.xp.empty(self.T.shape, dtype=cdt)

    def grad_into(self, G, j, b0, b1, scratch):
        """The (b, h, w) buffer that receives the gradient of t_j at positions b0:b1."""
        return G[j, b0:b1]


class ObjectWindows:
    """Slice transmissions read from the object ``(S, Ny, Nx)`` at integer top-left
    ``corners`` (B, 2): views on the CPU (no copies), one gather per chunk on the GPU. The
    gradient of a window is scatter-added into the object gradient (in chunk order)."""

    def __init__(self, obj, corners, n_shape):
        if obj.ndim != 3:
            raise OperatorError(f"obj must have shape (S, Ny, Nx), got {obj.shape}")
        self.O, self.xp = obj, array_module(obj)
        self.windows = Patches(corners, n_shape, obj.shape)
        self.ci = self.windows.ci
        self.S, self.B = obj.shape[0], self.ci.shape[0]
        self.n_shape = self.windows.shape
        self.dtype = obj.dtype
        if self.xp is not np:
            self.idx = flat_index(self.ci, self.n_shape, obj.shape[-1], self.xp)
            self._scratch = threading.local()

    def _views(self, j, b0, b1):
        h, w = self.n_shape
        for k, b in enumerate(range(b0, b1)):
            r, c = self.ci[b]
            yield k, self.O[j, r : r + h, c : c + w]

    def _gather(self, j, b0, b1):
        buf = getattr(self._scratch, "buf", None)
        if buf is None or buf.shape[0] < b1 - b0:
            buf = self.xp.empty((b1 - b0,) + self.n_shape, dtype=self.O.dtype)
            self._scratch.buf = buf
        buf = buf[: b1 - b0]
        return self.xp.take(self.O[j].reshape(-1), self.idx[b0:b1], out=buf)

    def mul(self, j, b0, b1, a, out):
        xp = self.xp
        if xp is np:
            last = a.shape[0] - 1
            for k, v in self._views(j, b0, b1):
                xp.multiply(a[min(k, last)], v, out=out[k])
        else:
            xp.multiply(a, self._gather(j, b0, b1)[:, None], out=out)

    def conj(self, j, b0, b1, out):
        xp = self.xp
        if xp is np:
            for k, v in self._views(j, b0, b1):
                xp.conjugate(v, out=out[k])
            return out
        return xp.conjugate(self._gather(j, b0, b1), out=out)

    def min_abs(self, j) -> float:
        return float(self.xp.abs(self.O[j]).min())  # a bound over the whole slice

    def new_grad(self, cdt):
        return self.xp.zeros(self.O.shape, dtype=cdt)

    def grad_into(self, G, j, b0, b1, scratch):
        return scratch

    def grad_done(self, G, j, b0, b1, buf):
        scatter_add_patches(G[j], buf, self.ci[b0:b1])


# ---------------------------------------------------------------------------------------
class _Gap:
    """Propagator of one gap: ``H``, ``conj(H)``, the inverse (0 where ``H = 0``), whether
    ``|H| = 1`` and ``min|H|``."""

    def __init__(self, H, cdt, xp):
        self.H = H.astype(cdt, copy=False)
        aH = xp.abs(self.H)
        self.hmin = float(aH.min())
        self.unitary = float(xp.abs(aH - 1).max()) < 1e-5
        self.Hc = self.H.conj()
        if self.unitary:
            self.Hinv = self.Hc
        else:
            self.Hinv = xp.where(aH > 0, 1 / xp.where(aH > 0, self.H, 1), 0).astype(cdt)


def _gaps(transfer, S: int, n_shape, cdt, xp) -> list[_Gap]:
    """The S − 1 propagators from ``transfer``: ``(h, w)``, ``(1 or S−1, h, w)`` or a list
    of ``(h, w)`` arrays; ignored (may be None) for one slice."""
    if S <= 1:
        return []
    if transfer is None:
        raise OperatorError("multislice: a transfer function is needed for more than one slice")
    if isinstance(transfer, (list, tuple)):
        Hs = [xp.asarray(h) for h in transfer]
    else:
        T = xp.asarray(transfer)
        Hs = [T] if T.ndim == 2 else list(T)
    if len(Hs) not in (1, S - 1) or any(tuple(h.shape) != tuple(n_shape) for h in Hs):
        raise OperatorError(
            f"transfer must be {tuple(n_shape)} or ({S - 1}, *{tuple(n_shape)}) for "
            f"{S} slices, got {len(Hs)} of shape {tuple(Hs[0].shape)}"
        )
    made: dict[int, _Gap] = {}
    for H in Hs:
        if id(H) not in made:
            made[id(H)] = _Gap(H, cdt, xp)
    gaps = [made[id(H)] for H in Hs]
    return gaps * (S - 1) if len(gaps) == 1 else gaps


class MultisliceEngine:
    """Chunked, threaded forward and backward passes through ``n_slices`` slices.

    Args:
        transfer: propagators between slices (see :func:`_gaps`); None for one slice.
        n_slices: S. n_shape: window ``(h, w)``. cdt: complex working dtype. xp: namespace.
        workers: CPU threads in all (chunk threads × FFT threads); 1 on the GPU.
    """

    def __init__(self, transfer, n_slices: int, n_shape, cdt, xp, workers: int):
        self.S = int(n_slices)
        self.n_shape = tuple(int(v) for v in n_shape)
        self.cdt, self.xp = np.dtype(cdt), xp
        self.gaps = _gaps(transfer, self.S, self.n_shape, self.cdt, xp)
        self.workers = max(1, int(workers)) if xp is np else 1
        self._local = threading.local()

    def _fft_workers(self, threads: int) -> int:
        return max(1, self.workers // max(1, threads))

    def _buffer(self, b: int, M: int):
        """Per-thread work buffer (b, M, h, w), kept between calls."""
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.shape[0] < b or buf.shape[1] != M:
            buf = self.xp.empty((b, M) + self.n_shape, dtype=self.cdt)
            self._local.buf = buf
        return buf[:b]

    def plan(self, src, max_amplification: float) -> list[bool]:
        """``store[j]``: keep the incident wave of slice j (j ≥ 1) in the forward pass,
        where regenerating it from the exit wave would amplify round-off by more than
        ``max_amplification`` (accumulated ``1/(min|t_j|·min|H_j|)`` since the last
        checkpoint)."""
        S = self.S
        store = [False] * S
        amp = 1.0
        for j in range(S - 1, 0, -1):
            # regenerating psi_j from psi_{j+1}: invert P_j (not after the last slice),
            # divide by t_j
            hmin = self.gaps[j].hmin if j < S - 1 else 1.0
            tmin = src.min_abs(j)
            amp *= math.inf if (tmin <= 0 or hmin <= 1e-6) else 1.0 / (tmin * hmin)
            if amp > max_amplification:
                store[j] = True
                amp = 1.0
        return store

    def forward(
        self,
        src,
        chunks: list[tuple[int, int]],
        threads: int,
        start: Callable,
        M: int,
        dest=None,
        finish: Callable | None = None,
        store: list[bool] | None = None,
    ) -> dict:
        """One pass over ``chunks`` of positions.

        ``start(b0, b1, buf, workers)`` returns the incident waves: ``buf`` (b, M, h, w)
        filled in place, or an array broadcasting against it (e.g. the (1, M, h, w) probe),
        read by the first transmission. ``dest`` (B, M, h, w) receives the exit waves (None:
        a per-thread buffer); ``finish(b0, b1, psi, workers)`` is called with each chunk's
        exit waves. ``store[j]``: copy the incident wave of slice j (checkpoints). Returns
        the copies, keyed ``(chunk index, j)``.
        """
        xp, S, gaps = self.xp, self.S, self.gaps
        stored: dict = {}
        workers = self._fft_workers(threads)

        def work(next_chunk):
            while (ci := next_chunk()) is not None:
                b0, b1 = chunks[ci]
                psi = self._buffer(b1 - b0, M) if dest is None else dest[b0:b1]
                a = start(b0, b1, psi, workers)
                for j in range(S):
                    if j > 0 and store is not None and store[j]:
                        stored[(ci, j)] = psi.copy()
                    src.mul(j, b0, b1, psi if j > 0 else a, psi)
                    if j < S - 1:
                        inplace(fft2, psi, workers=workers)
                        xp.multiply(psi, gaps[j].H, out=psi)
                        inplace(ifft2, psi, workers=workers)
                if finish is not None:
                    finish(b0, b1, psi, workers)

        _run_chunks(len(chunks), threads, work)
        return stored

    def backward(self, src, chunks, threads, p4, G, need_probe, saved=None, record=None):
        """Gradients ``(probe (p4) or None, slices (``src.new_grad``) or None)`` for the
        exit-wave gradient ``G`` (B, M, h, w). The slices' gradient needs ``saved = (P, y,
        stored, store)`` from the forward pass (probe (1 or B, M, h, w), exit waves,
        checkpoints, plan); None computes the probe gradient alone. ``record``: a list that
        receives ``(j, b0, b1, origin, psi_j)`` for every incident wave used (for tests)."""
        xp, cdt = self.xp, self.cdt
        workers = self._fft_workers(threads)
        back = _Backward(self, src, chunks, p4, G, need_probe, saved, record, workers)
        M = p4[1]
        bm = max((b1 - b0 for b0, b1 in chunks), default=0)
        shape = (bm,) + self.n_shape

        def work(next_chunk):
            bufs = {"W": xp.empty((2, bm, M) + self.n_shape, dtype=cdt).ravel()}
            bufs["t"] = xp.empty(shape, dtype=cdt)
            if saved is not None:
                bufs["a"] = xp.empty(shape, dtype=np.finfo(cdt).dtype)
                bufs["gt"] = xp.empty(shape, dtype=cdt)
                bufs["m"] = xp.empty((bm, M) + self.n_shape, dtype=cdt) if M > 1 else None
            while (ci := next_chunk()) is not None:
                back.chunk(ci, bufs)

        _run_chunks(len(chunks), threads, work, back.turns)
        if record is not None:
            record.sort(key=lambda r: (r[1], -r[0]))  # serial order: chunks, slices down
        return back.gP, back.gS


class _Backward:
    """One backward pass of :class:`MultisliceEngine` (its state, shared by the threads)."""

    def __init__(self, eng, src, chunks, p4, G, need_probe, saved, record, workers):
        self.eng, self.xp, self.src, self.chunks = eng, eng.xp, src, chunks
        self.G, self.record = G, record
        self.M = p4[1]
        self.per_position = p4[0] > 1
        self.P, self.y, self.stored, self.store = saved if saved is not None else (None,) * 4
        self.gP = eng.xp.zeros(p4, dtype=eng.cdt) if need_probe else None
        self.gS = None if saved is None else src.new_grad(eng.cdt)
        self.turns = _Turns()
        self.workers = workers

    def chunk(self, ci, bufs):
        xp, eng, M, gS = self.xp, self.eng, self.M, self.gS
        b0, b1 = self.chunks[ci]
        b = b1 - b0
        W = bufs["W"][: 2 * b * M * math.prod(eng.n_shape)].reshape((2, b, M) + eng.n_shape)
        W0, W1 = W[0], W[1]
        tb = bufs["t"][:b]
        g = self.G[b0:b1]  # gradient of u_j: G for the last slice, then W1
        u = None if self.y is None else self.y[b0:b1]  # u_j: the exit wave, then W0
        for j in range(eng.S - 1, -1, -1):
            tc = self.src.conj(j, b0, b1, tb)  # conj(t_j)
            if gS is not None:
                psi = self._incident(j, ci, b0, b1, u, tc, bufs, W0)
                if self.record is not None and j > 0:
                    origin = "stored" if self.store[j] else "regenerated"
                    self.record.append((j, b0, b1, origin, psi.copy()))
                self._slice_grad(j, ci, b0, b1, psi, g, bufs)
            # adjoint through the transmission: gpsi_j = gu_j * conj(t_j)
            xp.multiply(g, tc[:, None], out=W1)
            g = W1
            if j == 0:
                break
            # propagate back by P_{j-1}: the adjoint always, regeneration when needed
            gap = eng.gaps[j - 1]
            if gS is not None and j - 1 > 0 and not self.store[j - 1]:
                if psi is not W0:
                    W0[...] = psi
                inplace(fft2, W, workers=self.workers)
                if gap.unitary:
                    W *= gap.Hc
                else:
                    W0 *= gap.Hinv
                    W1 *= gap.Hc
                inplace(ifft2, W, workers=self.workers)
                u = W0
            else:
                inplace(fft2, W1, workers=self.workers)
                W1 *= gap.Hc
                inplace(ifft2, W1, workers=self.workers)
        gP = self.gP
        if gP is not None and self.per_position:
            gP[b0:b1] = W1
        elif gP is not None:
            part = W1.sum(axis=0)
            self.turns.run("probe", ci, lambda: xp.add(gP, part, out=gP))

    def _incident(self, j, ci, b0, b1, u, tc, bufs, W0):
        """psi_j: the probe, a checkpoint, or regenerated ``u_j / t_j`` (in ``W0``)."""
        xp = self.xp
        if j == 0:
            return self.P[b0:b1] if self.per_position else self.P
        if self.store[j]:
            return self.stored[(ci, j)]
        # psi_j = u_j * conj(t_j) / |t_j|^2
        b = b1 - b0
        a = bufs["a"][:b]
        xp.abs(tc, out=a)
        xp.multiply(a, a, out=a)
        xp.reciprocal(a, out=a)
        r = xp.multiply(tc, a, out=bufs["gt"][:b])  # 1/t_j (gt is free until the gradient)
        xp.multiply(u, r[:, None], out=W0)
        return W0

    def _slice_grad(self, j, ci, b0, b1, psi, g, bufs):
        """Gradient of t_j at positions b0:b1: ``sum_m g * conj(psi_j)``."""
        xp, src, gS = self.xp, self.src, self.gS
        gtb = bufs["gt"][: b1 - b0]
        gt = src.grad_into(gS, j, b0, b1, gtb)
        if self.M == 1:  # via the scratch: gt may be fresh memory (write it once)
            xp.conjugate(xp.broadcast_to(psi[:, 0], gtb.shape), out=gtb)
            xp.multiply(gtb, g[:, 0], out=gt)
        else:
            mb = bufs["m"][: b1 - b0]
            xp.conjugate(xp.broadcast_to(psi, mb.shape), out=mb)
            mb *= g
            mb.sum(axis=1, out=gt)
        if src.grad_done is not None:
            self.turns.run(j, ci, lambda: src.grad_done(gS, j, b0, b1, gt))


# ---------------------------------------------------------------------------------------
def _probe_shape4(shape) -> tuple[int, int, int, int]:
    shape = tuple(int(v) for v in shape)
    if not 2 <= len(shape) <= 4:
        raise OperatorError(f"probe must have shape (M, n, n) or (B, M, n, n), got {shape}")
    return (1,) * (4 - len(shape)) + shape


class Multislice:
    """Exit waves ``(B, M, h, w)`` of probe modes through S slices at B positions.

    Linear in the probe for fixed slices: ``fwd(probe)`` and ``adj(g)`` (the probe
    gradient of ``<g, exit>``); :meth:`vjp` after ``fwd(keep=True)`` gives the gradients in
    the probe and the slices together (reversible, see the module doc).

    Args:
        slices: :class:`PatchStack` or :class:`ObjectWindows`.
        transfer: ``(h, w)``, ``(S−1, h, w)`` or a list of S−1 transfer functions (DC at
            index 0; e.g. :func:`xrayflow.optics.propagation.transfer_function`); None for
            one slice.
        probe_shape: ``(h, w)``, ``(M, h, w)``, or ``(B, M, h, w)`` (a probe per position).
        dtype: complex working dtype (default: the slices' complex dtype).
        workers: CPU threads (default :func:`xrayflow.backend.fft_workers`).
        chunk: positions per chunk (default ``ceil(B / (8 · workers))``); backward buffers
            (per thread) scale with it.
        reversible, max_amplification: see the module doc.
    """

    def __init__(
        self,
        slices,
        transfer,
        probe_shape,
        dtype=None,
        workers: int | None = None,
        chunk: int | None = None,
        reversible: bool = True,
        max_amplification: float = 10.0,
    ):
        self.src = slices
        self.probe_shape = tuple(int(v) for v in probe_shape)
        self.p4 = _probe_shape4(self.probe_shape)
        B = slices.B
        if self.p4[0] not in (1, B):
            raise OperatorError(f"per-position probes must number B = {B}, got {self.p4[0]}")
        if self.p4[-2:] != tuple(slices.n_shape):
            raise OperatorError(
                f"the slices' windows {tuple(slices.n_shape)} do not match the probe "
                f"{self.probe_shape}"
            )
        cdt = np.result_type(slices.dtype, np.complex64) if dtype is None else dtype
        xp = slices.xp
        w = (workers or fft_workers()) if xp is np else 1
        self.engine = MultisliceEngine(transfer, slices.S, slices.n_shape, cdt, xp, w)
        self.chunks = chunk_bounds(B, chunk or math.ceil(B / (8 * w)))
        self.threads = max(1, min(w, len(self.chunks)))
        self.reversible = bool(reversible)
        self.max_amplification = float(max_amplification)
        self._state = None

    def _probe(self, probe):
        return probe.reshape(self.p4).astype(self.engine.cdt, copy=False)

    def fwd(self, probe, out=None, keep: bool = False):
        """Exit waves for ``probe`` (``probe_shape``); ``out`` (B, M, h, w) receives them.
        ``keep=True`` keeps what :meth:`vjp` needs for the slices' gradient (the exit waves
        and the checkpoints)."""
        eng = self.engine
        P = self._probe(probe)
        M = P.shape[1]
        store = None
        if keep:
            store = [j > 0 for j in range(eng.S)]
            if self.reversible:
                store = eng.plan(self.src, self.max_amplification)
        y = out if out is not None else eng.xp.empty((self.src.B, M) + eng.n_shape, eng.cdt)
        per_position = P.shape[0] > 1

        def start(b0, b1, buf, workers):
            return P[b0:b1] if per_position else P

        stored = eng.forward(self.src, self.chunks, self.threads, start, M, y, store=store)
        self._state = (P, y, stored, store) if keep else None
        return y

    def adj(self, g):
        """``Aᴴ g``: the probe (``probe_shape``) for exit-wave gradients ``g``."""
        return self.vjp(g, need_slices=False)[0]

    def vjp(self, g, need_probe: bool = True, need_slices: bool = True, record=None):
        """``(probe gradient or None, slices gradient or None)`` for the exit-wave gradient
        ``g``; the slices' gradient needs a preceding ``fwd(keep=True)``."""
        if need_slices and self._state is None:
            raise RuntimeError("Multislice.vjp: the slices' gradient needs fwd(keep=True)")
        gP, gS = self.engine.backward(
            self.src,
            self.chunks,
            self.threads,
            self.p4,
            g,
            need_probe,
            self._state if need_slices else None,
            record,
        )
        return (None if gP is None else gP.reshape(self.probe_shape)), gS


def exit_waves(probe, patches, transfer, backend, out=None):
    """Exit waves ``(B, M, n, n)`` of the multislice model (see :class:`Multislice`).

    Args:
        probe: ``(M, n, n)`` modes (same for every position) or ``(B, M, n, n)``.
        patches: ``(S, B, n, n)`` slice transmissions seen by each position.
        transfer: ``(n, n)`` or ``(S−1, n, n)``; may be None if S = 1.
        backend: :class:`xrayflow.backend.Backend` (CPU threads, precision).
        out: optional ``(B, M, n, n)`` complex buffer.
    """
    dt = np.result_type(probe.dtype, patches.dtype, backend.complex_dtype)
    op = Multislice(PatchStack(patches), transfer, probe.shape, dt, backend.workers)
    return op.fwd(probe, out=out)
