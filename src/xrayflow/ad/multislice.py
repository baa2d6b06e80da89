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
positions; default an eighth of the batch) plus one patch buffer, independent of the
number of slices. :func:`multislice_object` also gathers the object patches itself (in
forward and backward) and scatter-adds their gradient straight into the object gradient,
so no (S, B, n, n) array exists at any time.
"""

from __future__ import annotations

import math

import numpy as np

from xrayflow.backend import array_module

from .core import Tensor, make_node
from .ops import _check_bounds, _corner_arrays, _fftmod, scatter_add_patches

__all__ = ["multislice", "multislice_object"]


def _d(x):
    return x.data if isinstance(x, Tensor) else x


def _ptr(a):
    if array_module(a) is np:
        return a.__array_interface__["data"][0]
    return a.data.ptr


class _FFT:
    """In-place batched 2D FFTs on owned contiguous buffers."""

    def __init__(self, arr, backend):
        self.mod, self.kw = _fftmod(arr, backend)

    def fwd(self, buf):
        r = self.mod.fft2(buf, axes=(-2, -1), norm="ortho", overwrite_x=True, **self.kw)
        if _ptr(r) != _ptr(buf):
            buf[...] = r
        return buf

    def inv(self, buf):
        r = self.mod.ifft2(buf, axes=(-2, -1), norm="ortho", overwrite_x=True, **self.kw)
        if _ptr(r) != _ptr(buf):
            buf[...] = r
        return buf


def _chunks(B: int, chunk: int | None) -> list[tuple[int, int]]:
    if chunk is None:
        chunk = max(1, math.ceil(B / 8))
    chunk = max(1, min(int(chunk), B))
    return [(b0, min(B, b0 + chunk)) for b0 in range(0, B, chunk)]


class _Engine:
    """Shared forward/backward for both multislice entry points.

    Slice transmissions come from ``get_t(j, b0, b1, out)`` ((b, n, n); ``out`` is a
    scratch buffer the function may fill and return) and patch gradients go to
    ``put_gt(j, b0, b1, gt)``.
    """

    def __init__(self, P, S, B, n, cdt, transfer, backend, reversible, max_amp, chunk, xp):
        self.P, self.S, self.B, self.n, self.cdt, self.xp = P, S, B, n, cdt, xp
        self.M = P.shape[0]
        self.reversible = reversible
        self.max_amp = float(max_amp)
        self.chunks = _chunks(B, chunk)
        self.bmax = max(b1 - b0 for b0, b1 in self.chunks)
        self.fft = _FFT(P, backend)
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

    # -- forward ---------------------------------------------------------------------
    def forward(self, get_t, store):
        xp, M, n, S = self.xp, self.M, self.n, self.S
        y = xp.empty((self.B, M, n, n), dtype=self.cdt)
        tbuf = xp.empty((self.bmax, n, n), dtype=self.cdt)
        self.stored = {}
        for ci, (b0, b1) in enumerate(self.chunks):
            b = b1 - b0
            psi = y[b0:b1]
            for j in range(S):
                t = get_t(j, b0, b1, tbuf[:b])
                if j == 0:
                    xp.multiply(self.P[None], t[:, None], out=psi)
                else:
                    if store[j]:
                        self.stored[(ci, j)] = psi.copy()
                    psi *= t[:, None]
                if j < S - 1:
                    self.fft.fwd(psi)
                    psi *= self.H[j]
                    self.fft.inv(psi)
        self.y = y
        self.store = store
        return y

    # -- backward --------------------------------------------------------------------
    def backward(self, G, gt_dest, gt_done, get_t, need_probe, record=None):
        """``gt_dest(j, b0, b1, scratch)`` returns the (b, n, n) buffer that receives the patch
        gradient (or None to skip it); ``gt_done(j, b0, b1, buf)`` is called once it is
        filled."""
        xp, M, n, S, cdt = self.xp, self.M, self.n, self.S, self.cdt
        store = self.store
        unit = self.bmax * M * n * n
        Wflat = xp.empty(2 * unit, dtype=cdt)
        tbuf = xp.empty((self.bmax, n, n), dtype=cdt)
        gtbuf = xp.empty((self.bmax, n, n), dtype=cdt)
        mbuf = xp.empty((self.bmax, M, n, n), dtype=cdt) if M > 1 else None
        gP = xp.zeros((M, n, n), dtype=cdt) if need_probe else None
        for ci, (b0, b1) in enumerate(self.chunks):
            b = b1 - b0
            W = Wflat[: 2 * b * M * n * n].reshape(2, b, M, n, n)
            W0, W1 = W[0], W[1]
            regen_needed = S > 1 and not store[S - 1]
            if regen_needed:
                W0[...] = self.y[b0:b1]
            W1[...] = G[b0:b1]
            for j in range(S - 1, -1, -1):
                t = get_t(j, b0, b1, tbuf[:b])
                if j == 0:
                    psi, src = self.P[None], "probe"
                elif store[j]:
                    psi, src = self.stored[(ci, j)], "stored"
                else:
                    W0 /= t[:, None]
                    psi, src = W0, "regenerated"
                if record is not None and j > 0:
                    record.append((j, b0, b1, src, psi.copy()))
                # gradient of the patch: sum_m gu * conj(psi)
                gt = gt_dest(j, b0, b1, gtbuf[:b])
                if gt is not None:
                    if M == 1:
                        xp.conjugate(xp.broadcast_to(psi[:, 0], gt.shape), out=gt)
                        gt *= W1[:, 0]
                    else:
                        mb = mbuf[:b]
                        xp.conjugate(xp.broadcast_to(psi, mb.shape), out=mb)
                        mb *= W1
                        mb.sum(axis=1, out=gt)
                    gt_done(j, b0, b1, gt)
                # adjoint through the transmission
                tb = tbuf[:b]
                xp.conjugate(t, out=tb)  # t may alias tb (object API): elementwise, safe
                W1 *= tb[:, None]
                if j == 0:
                    break
                # propagate back by P_{j-1}: adjoint always, regeneration when needed
                regen = (j - 1) > 0 and not store[j - 1]
                if regen:
                    if psi is not W0:
                        W0[...] = psi
                    self.fft.fwd(W)
                    if self.unitary[j - 1]:
                        W *= self.Hc[j - 1]
                    else:
                        W0 *= self.Hinv[j - 1]
                        W1 *= self.Hc[j - 1]
                    self.fft.inv(W)
                else:
                    self.fft.fwd(W1)
                    W1 *= self.Hc[j - 1]
                    self.fft.inv(W1)
            if need_probe:
                gP += W1.sum(axis=0)
        return gP


def _prepare_probe(probe):
    P = _d(probe)
    if P.ndim == 2:
        P = P[None]
    if P.ndim != 3 or P.shape[-1] != P.shape[-2]:
        raise ValueError(f"probe must have shape (M, n, n), got {P.shape}")
    return P


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
        probe: (M, n, n) complex probe modes (Tensor or array; (n, n) means M = 1).
        patches: (S, B, n, n) slice transmissions at the B positions.
        transfer: Fresnel/angular-spectrum transfer function (n, n), or (S-1, n, n) for
            unequal spacings; DC at index 0 (constant, no gradient). Ignored if S = 1.
        backend: :class:`xrayflow.backend.Backend` (FFT module and threads); default:
            scipy.fft / cupyx.scipy.fft according to the arrays.
        reversible: regenerate waves in backward instead of storing them (see module doc).
        max_amplification: checkpoint a slice when regeneration would amplify round-off by
            more than this (accumulated ``1/min|t|``).
        chunk: positions per chunk (default ``ceil(B/8)``): backward buffers scale with it.

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

    def get_t(j, b0, b1, out):
        return T[j, b0:b1]

    tmin = [1.0] * S
    if reversible:
        for j in range(1, S):
            tmin[j] = float(xp.abs(T[j]).min())
    store = eng.plan(tmin)
    y = eng.forward(get_t, store)

    need_probe = isinstance(probe, Tensor) and probe.requires_grad
    need_t = isinstance(patches, Tensor) and patches.requires_grad
    state: dict = {}

    def run(g):
        gT = xp.empty((S, B, n, n), dtype=cdt) if need_t else None

        def gt_dest(j, b0, b1, scratch):
            return None if gT is None else gT[j, b0:b1]

        def gt_done(j, b0, b1, buf):
            pass

        gP = eng.backward(g, gt_dest, gt_done, get_t, need_probe, record=_record)
        state["probe"] = gP
        state["patches"] = gT

    def vjp_probe(g):
        if "probe" not in state:
            run(g)
        return state.pop("probe")

    def vjp_patches(g):
        if "patches" not in state:
            run(g)
        return state.pop("patches")

    return make_node(y, ((probe, vjp_probe), (patches, vjp_patches)), "multislice")


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
    cj = xp.asarray(ci) if xp is not np else ci
    ar = xp.arange(n)

    def get_t(j, b0, b1, out):
        if xp is np:
            for k, b in enumerate(range(b0, b1)):
                r, c = ci[b]
                out[k] = O[j, r : r + n, c : c + n]
        else:
            rows = cj[b0:b1, 0, None, None] + ar[None, :, None]
            cols = cj[b0:b1, 1, None, None] + ar[None, None, :]
            out[...] = O[j][rows, cols]
        return out

    tmin = [1.0] * S
    if reversible:
        for j in range(1, S):
            tmin[j] = float(xp.abs(O[j]).min())  # bound over the whole slice
    store = eng.plan(tmin)
    y = eng.forward(get_t, store)

    need_probe = isinstance(probe, Tensor) and probe.requires_grad
    need_o = isinstance(obj, Tensor) and obj.requires_grad
    state: dict = {}

    def run(g):
        gO = xp.zeros(O.shape, dtype=cdt) if need_o else None

        def gt_dest(j, b0, b1, scratch):
            return None if gO is None else scratch

        def gt_done(j, b0, b1, buf):
            scatter_add_patches(gO[j], buf, ci[b0:b1])

        gP = eng.backward(g, gt_dest, gt_done, get_t, need_probe, record=_record)
        state["probe"] = gP
        state["obj"] = gO

    def vjp_probe(g):
        if "probe" not in state:
            run(g)
        return state.pop("probe")

    def vjp_obj(g):
        if "obj" not in state:
            run(g)
        return state.pop("obj")

    return make_node(y, ((probe, vjp_probe), (obj, vjp_obj)), "multislice_object")
