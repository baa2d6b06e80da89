"""Fused multislice primitive with a hand-written, memory-light VJP.

Forward (per probe mode, all positions batched)::

    psi_0 = probe
    for j in 0..S-1:
        u_j = t_j * psi_j                       # t_j: object patch of slice j
        psi_{j+1} = P_j u_j = F^-1 H_j F u_j    # not after the last slice
    exit = u_{S-1}

Backward (PyTorch complex convention, g = dL/d exit)::

    gu_{S-1} = g
    for j = S-1..0:
        gt_j    = sum_m gu_j * conj(psi_j)      # gradient of the patch
        gpsi_j  = gu_j * conj(t_j)
        gu_{j-1} = P_{j-1}^H gpsi_j              # = F^-1 conj(H) F gpsi_j
    gprobe = sum_b gpsi_0

**Reversible mode** (default) keeps no per-slice waves: ``psi_j`` is regenerated from
the exit wave backwards, ``u_{j-1} = P_{j-1}^-1 psi_j`` and ``psi_j = u_j / t_j``. Free-space
propagation with ``|H| = 1`` is unitary (``P^-1 = P^H``), so regeneration and the adjoint
propagation share one batched FFT call on a stacked (2, b, M, n, n) buffer. Where
regeneration would amplify round-off too much (strongly absorbing slices: ``1/min|t|``
accumulated since the last checkpoint exceeds ``max_amplification``, or a propagator with
``H = 0`` somewhere, e.g. band-limited/evanescent), the incident wave of that slice is
stored during the forward pass instead (a checkpoint). ``reversible=False`` stores every
incident wave (the usual AD memory, S wavefield batches) for comparison.

Memory of the backward pass: two wavefield buffers of one position chunk (``chunk``
positions) plus a few patch buffers per worker thread, independent of the number of
slices. :func:`multislice_object` also gathers the object patches itself (in forward and
backward) and scatter-adds their gradient straight into the object gradient, so no
(S, B, n, n) array exists at any time.

Speed (CPU): chunks are spread over the FFT worker threads (each then runs its FFTs with
one thread), so the elementwise work runs in parallel too; the division by ``t_j`` is a
multiplication by ``conj(t_j) / |t_j|^2``. Gradient accumulations shared between chunks
(object scatter-add, probe sum) happen in chunk order, so results do not depend on the
thread schedule (bitwise equal to one thread).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from xrayflow import backend as fftlib
from xrayflow.backend import array_module

from .core import Tensor, make_node
from .ops import _check_bounds, _corner_arrays, scatter_add_patches

__all__ = ["multislice", "multislice_object"]


def _d(x):
    return x.data if isinstance(x, Tensor) else x


def _ptr(a):
    if array_module(a) is np:
        return a.__array_interface__["data"][0]
    return a.data.ptr


class _FFT:
    """In-place batched 2D FFTs (ortho) on owned contiguous buffers, ``workers`` CPU threads."""

    def __init__(self, workers: int):
        self.workers = workers

    def fwd(self, buf):
        r = fftlib.fft2(buf, overwrite_x=True, workers=self.workers)
        if _ptr(r) != _ptr(buf):
            buf[...] = r
        return buf

    def inv(self, buf):
        r = fftlib.ifft2(buf, overwrite_x=True, workers=self.workers)
        if _ptr(r) != _ptr(buf):
            buf[...] = r
        return buf


def _chunks(B: int, chunk: int | None, threads: int) -> list[tuple[int, int]]:
    if chunk is None:
        chunk = max(1, math.ceil(B / (8 * threads)))
    chunk = max(1, min(int(chunk), B))
    return [(b0, min(B, b0 + chunk)) for b0 in range(0, B, chunk)]


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


class _Patches:
    """Slice transmissions given as patches (S, B, n, n)."""

    def __init__(self, T, xp):
        self.T, self.xp = T, xp

    def mul(self, j, b0, b1, a, out):
        """``out = a * t_j`` for positions b0:b1 (``a``: (1 or b, M, n, n))."""
        self.xp.multiply(a, self.T[j, b0:b1, None], out=out)

    def conj(self, j, b0, b1, out):
        """``out = conj(t_j)`` (b, n, n) for positions b0:b1; returns ``out``."""
        return self.xp.conjugate(self.T[j, b0:b1], out=out)


class _ObjectPatches:
    """Slice transmissions read from the object (S, Ny, Nx) at integer corners (B, 2),
    without an intermediate copy on the CPU."""

    def __init__(self, O, ci, n, xp):
        self.O, self.ci, self.n, self.xp = O, ci, n, xp
        if xp is not np:
            cj = xp.asarray(ci)
            ar = xp.arange(n)
            self.rows = cj[:, 0, None, None] + ar[None, :, None]
            self.cols = cj[:, 1, None, None] + ar[None, None, :]

    def _views(self, j, b0, b1):
        n = self.n
        for k, b in enumerate(range(b0, b1)):
            r, c = self.ci[b]
            yield k, self.O[j, r : r + n, c : c + n]

    def _gather(self, j, b0, b1):
        return self.O[j][self.rows[b0:b1], self.cols[b0:b1]]

    def mul(self, j, b0, b1, a, out):
        xp = self.xp
        if xp is np:
            for k, v in self._views(j, b0, b1):
                xp.multiply(a[min(k, a.shape[0] - 1)], v, out=out[k])
        else:
            xp.multiply(a, self._gather(j, b0, b1)[:, None], out=out)

    def conj(self, j, b0, b1, out):
        xp = self.xp
        if xp is np:
            for k, v in self._views(j, b0, b1):
                xp.conjugate(v, out=out[k])
            return out
        return xp.conjugate(self._gather(j, b0, b1), out=out)


class _Engine:
    """Shared forward/backward for both multislice entry points.

    Slice transmissions come from ``src`` (:class:`_Patches` or :class:`_ObjectPatches`;
    called from several threads at once).
    """

    def __init__(self, P, S, B, n, cdt, transfer, backend, reversible, max_amp, chunk, xp):
        if P.shape[0] not in (1, B):
            raise ValueError(f"per-position probes must number B = {B}, got {P.shape[0]}")
        self.P, self.S, self.B, self.n, self.cdt, self.xp = P, S, B, n, cdt, xp
        self.M = P.shape[1]
        self.per_position = P.shape[0] > 1
        self.reversible = reversible
        self.max_amp = float(max_amp)
        workers = 1
        if xp is np:
            workers = backend.workers if backend is not None else fftlib.fft_workers()
        self.chunks = _chunks(B, chunk, workers)
        self.threads = max(1, min(workers, len(self.chunks)))
        self.fft = _FFT(max(1, workers // self.threads))
        self.bmax = max(b1 - b0 for b0, b1 in self.chunks)
        # propagators: H_j for j in 0..S-2
        self.H, self.Hc, self.Hinv, self.unitary, self.hmin = [], [], [], [], []
        if S > 1:
            if transfer is None:
                raise ValueError("multislice: transfer is required for more than one slice")
            T = xp.asarray(_d(transfer))
            if T.ndim == 2:
                T = T[None]
            if T.shape[0] not in (1, S - 1) or T.shape[-2:] != (n, n):
                raise ValueError(
                    f"transfer must have shape ({n}, {n}) or ({S - 1}, {n}, {n}), got {T.shape}"
                )
            cache = {}
            for j in range(S - 1):
                k = 0 if T.shape[0] == 1 else j
                if k not in cache:
                    H = T[k].astype(cdt)
                    aH = xp.abs(H)
                    hmin = float(aH.min())
                    unit = float(xp.abs(aH - 1).max()) < 1e-5
                    Hc = H.conj()
                    if unit:
                        Hinv = Hc
                    else:
                        Hinv = xp.where(aH > 0, 1 / xp.where(aH > 0, H, 1), 0).astype(cdt)
                    cache[k] = (H, Hc, Hinv, unit, hmin)
                H, Hc, Hinv, unit, hmin = cache[k]
                self.H.append(H)
                self.Hc.append(Hc)
                self.Hinv.append(Hinv)
                self.unitary.append(unit)
                self.hmin.append(hmin)

    # -- checkpoint plan -------------------------------------------------------------
    def plan(self, tmin: list[float]) -> list[bool]:
        """store[j]: keep the incident wave of slice j (j >= 1) from the forward pass."""
        S = self.S
        store = [False] * S
        if not self.reversible:
            for j in range(1, S):
                store[j] = True
            return store
        amp = 1.0
        for j in range(S - 1, 0, -1):
            # regenerating psi_j from psi_{j+1}: invert P_j (not for the last slice), divide by t_j
            hmin = self.hmin[j] if j < S - 1 else 1.0
            step = math.inf if (tmin[j] <= 0 or hmin <= 1e-6) else 1.0 / (tmin[j] * hmin)
            amp *= step
            if amp > self.max_amp:
                store[j] = True
                amp = 1.0
        return store

    def probe(self, b0: int, b1: int):
        """(b or 1, M, n, n) probes of positions b0:b1."""
        return self.P[b0:b1] if self.per_position else self.P

    def _parallel(self, work, turns: _Turns | None = None) -> None:
        """``work(next_chunk)`` on each worker thread; ``next_chunk()`` hands out chunk
        indices in ascending order (None when all are taken)."""
        it = iter(range(len(self.chunks)))
        lock = threading.Lock()

        def next_chunk():
            with lock:
                return next(it, None)

        if self.threads == 1:
            work(next_chunk)
            return

        def guarded():
            try:
                work(next_chunk)
            except BaseException:
                if turns is not None:
                    turns.fail()
                raise

        with ThreadPoolExecutor(self.threads) as ex:
            futures = [ex.submit(guarded) for _ in range(self.threads)]
        for f in futures:
            f.result()

    # -- forward ---------------------------------------------------------------------
    def forward(self, src, store):
        xp, M, n, S = self.xp, self.M, self.n, self.S
        y = xp.empty((self.B, M, n, n), dtype=self.cdt)
        self.stored = {}

        def work(next_chunk):
            while (ci := next_chunk()) is not None:
                b0, b1 = self.chunks[ci]
                psi = y[b0:b1]
                for j in range(S):
                    if j > 0 and store[j]:
                        self.stored[(ci, j)] = psi.copy()
                    a = self.probe(b0, b1) if j == 0 else psi
                    src.mul(j, b0, b1, a, psi)
                    if j < S - 1:
                        self.fft.fwd(psi)
                        psi *= self.H[j]
                        self.fft.inv(psi)

        self._parallel(work)
        self.y = y
        self.store = store
        return y

    # -- backward --------------------------------------------------------------------
    def backward(self, G, gt_dest, gt_done, src, need_probe, record=None):
        """``gt_dest(j, b0, b1, scratch)`` returns the (b, n, n) buffer that receives the patch
        gradient (or None to skip it); ``gt_done(j, b0, b1, buf)`` (None: nothing to do) is
        called once it is filled, in chunk order for each slice."""
        xp, M, n, cdt = self.xp, self.M, self.n, self.cdt
        gP = xp.zeros(self.P.shape, dtype=cdt) if need_probe else None
        turns = _Turns()

        def work(next_chunk):
            bm = self.bmax
            bufs = {
                "W": xp.empty(2 * bm * M * n * n, dtype=cdt),
                "t": xp.empty((bm, n, n), dtype=cdt),
                "a": xp.empty((bm, n, n), dtype=np.finfo(cdt).dtype),
                "gt": xp.empty((bm, n, n), dtype=cdt),
                "m": xp.empty((bm, M, n, n), dtype=cdt) if M > 1 else None,
            }
            while (ci := next_chunk()) is not None:
                self._backward_chunk(ci, G, gt_dest, gt_done, src, gP, bufs, turns, record)

        self._parallel(work, turns)
        if record is not None:
            record.sort(key=lambda r: (r[1], -r[0]))  # serial order: chunks, slices down
        return gP

    def _backward_chunk(self, ci, G, gt_dest, gt_done, src, gP, bufs, turns, record):
        xp, M, n, S, store = self.xp, self.M, self.n, self.S, self.store
        b0, b1 = self.chunks[ci]
        b = b1 - b0
        W = bufs["W"][: 2 * b * M * n * n].reshape(2, b, M, n, n)
        W0, W1 = W[0], W[1]
        tb, a, gtb = bufs["t"][:b], bufs["a"][:b], bufs["gt"][:b]
        g = G[b0:b1]  # gradient of u_j: G for the last slice, then W1
        u = self.y[b0:b1]  # u_j for regeneration: the exit wave, then W0
        for j in range(S - 1, -1, -1):
            tc = src.conj(j, b0, b1, tb)  # conj(t_j)
            if j == 0:
                psi, origin = self.probe(b0, b1), "probe"
            elif store[j]:
                psi, origin = self.stored[(ci, j)], "stored"
            else:  # psi_j = u_j / t_j = u_j * conj(t_j) / |t_j|^2
                xp.abs(tc, out=a)
                xp.multiply(a, a, out=a)
                xp.reciprocal(a, out=a)
                r = xp.multiply(tc, a, out=gtb)  # 1/t_j (gtb is free until gt below)
                xp.multiply(u, r[:, None], out=W0)
                psi, origin = W0, "regenerated"
            if record is not None and j > 0:
                record.append((j, b0, b1, origin, psi.copy()))
            # gradient of the patch: sum_m gu * conj(psi)
            gt = gt_dest(j, b0, b1, gtb)
            if gt is not None:
                if M == 1:  # via the scratch: gt may be fresh memory (write it once)
                    xp.conjugate(xp.broadcast_to(psi[:, 0], gtb.shape), out=gtb)
                    xp.multiply(gtb, g[:, 0], out=gt)
                else:
                    mb = bufs["m"][:b]
                    xp.conjugate(xp.broadcast_to(psi, mb.shape), out=mb)
                    mb *= g
                    mb.sum(axis=1, out=gt)
                if gt_done is not None:
                    turns.run(j, ci, lambda j=j, gt=gt: gt_done(j, b0, b1, gt))
            # adjoint through the transmission: gpsi_j = gu_j * conj(t_j)
            xp.multiply(g, tc[:, None], out=W1)
            g = W1
            if j == 0:
                break
            # propagate back by P_{j-1}: adjoint always, regeneration when needed
            if (j - 1) > 0 and not store[j - 1]:
                if psi is not W0:
                    W0[...] = psi
                self.fft.fwd(W)
                if self.unitary[j - 1]:
                    W *= self.Hc[j - 1]
                else:
                    W0 *= self.Hinv[j - 1]
                    W1 *= self.Hc[j - 1]
                self.fft.inv(W)
                u = W0
            else:
                self.fft.fwd(W1)
                W1 *= self.Hc[j - 1]
                self.fft.inv(W1)
        if gP is not None and self.per_position:
            gP[b0:b1] = W1
        elif gP is not None:
            part = W1.sum(axis=0)
            turns.run("probe", ci, lambda: xp.add(gP, part, out=gP))


def _prepare_probe(probe):
    """Probe as (1 or B, M, n, n)."""
    P = _d(probe)
    if 2 <= P.ndim <= 4:
        P = P.reshape((1,) * (4 - P.ndim) + P.shape)
    if P.ndim != 4 or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"probe must have shape (M, n, n) or (B, M, n, n), got {P.shape}")
    return P


def _run_forward(eng: _Engine, X, src):
    """Checkpoint plan and forward pass of ``eng``; returns the (B, M, n, n) exit waves.

    ``X`` (S, ...): the slice transmissions (patches or whole slices) whose ``min|t_j|``
    bounds the round-off amplification of regenerating through slice j.
    """
    tmin = [1.0] * eng.S
    if eng.reversible:
        for j in range(1, eng.S):
            tmin[j] = float(eng.xp.abs(X[j]).min())
    return eng.forward(src, eng.plan(tmin))


def _node(y, eng: _Engine, src, probe, other, setup, record, op: str) -> Tensor:
    """Graph node of the exit waves ``y``: the VJPs in ``probe`` and ``other`` share one
    backward pass (run by whichever is asked first).

    ``setup(need_other)`` returns ``(grad, gt_dest, gt_done)``: the gradient of ``other``
    (None when not needed) and the callbacks of :meth:`_Engine.backward` that fill it.
    """
    need_probe = isinstance(probe, Tensor) and probe.requires_grad
    need_other = isinstance(other, Tensor) and other.requires_grad
    state: dict = {}

    def run(g):
        grad, gt_dest, gt_done = setup(need_other)
        gP = eng.backward(g, gt_dest, gt_done, src, need_probe, record=record)
        state["probe"] = None if gP is None else gP.reshape(_d(probe).shape)
        state["other"] = grad

    def vjp(key):
        def f(g):
            if key not in state:
                run(g)
            return state.pop(key)

        return f

    return make_node(y, ((probe, vjp("probe")), (other, vjp("other"))), op)


def multislice(
    probe,
    patches,
    transfer,
    backend=None,
    reversible: bool = True,
    max_amplification: float = 10.0,
    chunk: int | None = None,
    _record=None,
) -> Tensor:
    """Exit waves of a multislice object for every position and probe mode.

    Args:
        probe: (M, n, n) complex probe modes (Tensor or array; (n, n) means M = 1), or
            (B, M, n, n) probes per position (e.g. sub-pixel shifted).
        patches: (S, B, n, n) slice transmissions at the B positions.
        transfer: Fresnel/angular-spectrum transfer function (n, n), or (S-1, n, n) for
            unequal spacings; DC at index 0 (constant, no gradient). Ignored if S = 1.
        backend: :class:`xrayflow.backend.Backend` (its CPU FFT threads); default: the
            module-level FFT threads of :mod:`xrayflow.backend`.
        reversible: regenerate waves in backward instead of storing them (see module doc).
        max_amplification: checkpoint a slice when regeneration would amplify round-off by
            more than this (accumulated ``1/min|t|``).
        chunk: positions per chunk (default ``ceil(B / (8 * threads))``, threads = CPU FFT
            workers, 1 on the GPU): backward buffers (per thread) scale with it.

    Returns:
        (B, M, n, n) exit waves (complex); differentiable in ``probe`` and ``patches``.
    """
    P = _prepare_probe(probe)
    T = _d(patches)
    if T.ndim != 4 or T.shape[-2:] != P.shape[-2:]:
        raise ValueError(f"patches must have shape (S, B, n, n) matching the probe, got {T.shape}")
    xp = array_module(T)
    S, B, n, _ = T.shape
    cdt = np.result_type(P.dtype, T.dtype, np.complex64)
    P = P.astype(cdt, copy=False)
    eng = _Engine(P, S, B, n, cdt, transfer, backend, reversible, max_amplification, chunk, xp)
    src = _Patches(T, xp)
    y = _run_forward(eng, T, src)

    def setup(need_t):
        gT = xp.empty((S, B, n, n), dtype=cdt) if need_t else None

        def gt_dest(j, b0, b1, scratch):
            return None if gT is None else gT[j, b0:b1]

        return gT, gt_dest, None

    return _node(y, eng, src, probe, patches, setup, _record, "multislice")


def multislice_object(
    probe,
    obj,
    corners,
    transfer,
    backend=None,
    reversible: bool = True,
    max_amplification: float = 10.0,
    chunk: int | None = None,
    _record=None,
) -> Tensor:
    """Like :func:`multislice` but with the object (S, Ny, Nx) and integer top-left
    ``corners`` (B, 2): patches are gathered per chunk in forward and backward, and their
    gradient is scatter-added straight into the object gradient (no (S, B, n, n) array).

    Equals ``multislice(probe, gather_patches(obj, corners, (n, n)), transfer, ...)``.
    """
    P = _prepare_probe(probe)
    O = _d(obj)
    if O.ndim != 3:
        raise ValueError(f"obj must have shape (S, Ny, Nx), got {O.shape}")
    xp = array_module(O)
    n = P.shape[-1]
    ci = _corner_arrays(corners, xp)
    _check_bounds(ci, O.shape[-2:], (n, n))
    S = O.shape[0]
    B = ci.shape[0]
    cdt = np.result_type(P.dtype, O.dtype, np.complex64)
    P = P.astype(cdt, copy=False)
    eng = _Engine(P, S, B, n, cdt, transfer, backend, reversible, max_amplification, chunk, xp)
    src = _ObjectPatches(O, ci, n, xp)
    y = _run_forward(eng, O, src)  # min|t_j| bound over the whole slice

    def setup(need_o):
        gO = xp.zeros(O.shape, dtype=cdt) if need_o else None

        def gt_dest(j, b0, b1, scratch):
            return None if gO is None else scratch

        def gt_done(j, b0, b1, buf):
            scatter_add_patches(gO[j], buf, ci[b0:b1])

        return gO, gt_dest, gt_done

    return _node(y, eng, src, probe, obj, setup, _record, "multislice_object")
