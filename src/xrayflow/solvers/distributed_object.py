"""Distributed-object gradient: the object unknowns split into row slabs over the ranks
(:class:`xrayflow.parallel.domains.SlabPartition`), so that no rank holds the whole object,
its gradient or its optimizer state.

The model (the gradient solver's interface, :mod:`xrayflow.solvers.gradient`) must offer
``object_rows`` (the rows of its object grid: Ny of a ptychography object, Y of a
ptycho-tomography volume, the rotation axis) and ``on_rows(rows)``, the same model on a slab
of rows. Object unknowns are arrays ``(..., rows, Nx)`` with the rows on axis -2; a frame
sees rows ``[top, top + n)`` of them (``top``: the integer part of its window corner,
``n``: the window height), whatever the rotation.

Rank ``r`` owns object rows ``own(r)`` and holds ``held(r) = own(r)`` plus ``n - 1`` halo
rows below. It computes the frames whose window's top row it owns; such a window lies inside
its held rows, so the modality's unchanged model runs on the held slab
(``model.on_rows(held)``). Object gradients and the illumination that fall in halo rows are
added into their owners (:meth:`SlabPartition.sum_halos`); loss, probe gradient and object
power on the window are summed over all ranks in a fixed order
(:meth:`xrayflow.parallel.Comm.block_sum`, one block per rank). After a rank updates its own
rows, :meth:`SlabGradient.refresh` copies the owners' rows into the halos.

The result equals the replicated gradient up to the order of floating-point additions.
"""

from __future__ import annotations

import numpy as np

from xrayflow import ad
from xrayflow.backend import to_numpy
from xrayflow.parallel import Comm
from xrayflow.parallel.domains import SlabPartition


class SlabGradient:
    """The data-term gradient of ``model`` (window ``(n, n)``, object unknowns ``(...,
    object_rows, Nx)``) with the object's rows distributed over the ranks of ``comm``."""

    def __init__(self, model, comm: Comm):
        n = model.frame_shape[0]
        self.comm = comm
        self.model = model
        self.part = SlabPartition(model.object_rows, comm.size, before=0, after=n - 1)
        self.rows = self.part.held(comm.rank)  # global rows of the held slab
        self.local = model.on_rows(self.rows)  # the same model on the held slab

    def owned_frames(self, corners) -> np.ndarray:
        """Indices of the frames (fractional window corners (P, 2), px) this rank computes:
        those whose window's top row it owns."""
        top = np.floor(np.asarray(corners, np.float64)[:, 0]).astype(np.int64)
        return np.flatnonzero(self.part.owner(top) == self.comm.rank)

    def slab(self, params: dict) -> dict:
        """This rank's parameters from replicated ones: object unknowns (S, Ny, Nx) cut to
        the held rows (copies), the probe as it is."""
        r = self.rows
        return {
            k: (v if k == "probe" else v[..., r.start : r.stop, :].copy())
            for k, v in params.items()
        }

    @property
    def own(self) -> slice:
        """This rank's own rows within its held slab (index of axis -2)."""
        o = self.part.own(self.comm.rank)
        return slice(o.start - self.rows.start, o.stop - self.rows.start)

    def refresh(self, slab_params: dict) -> None:
        """Copy the owners' rows into the halo rows of the object unknowns (in place),
        after each rank has updated its own rows."""
        for k in self.model.object_names:
            v = slab_params[k]
            v[...] = self.part.fill_halos(self.comm, v[..., self.own, :])

    def gradient(
        self, slab_params: dict, blocks, active, offset: float = 0.0, extra=None, refine=False
    ):
        """Loss, gradients and preconditioner sums of a batch, assembled over the ranks.

        Args:
            slab_params: this rank's parameters (:meth:`slab`), halos up to date.
            blocks: this rank's frames of the batch (:meth:`owned_frames`) as blocks
                ``(frames, corners, target)``: global frame indices (B,), their fractional
                window corners (B, 2) (global px) and loss targets (B, n, n); a block never
                spans two rotation angles. May be empty.
            active: names of the parameters to differentiate.
            offset: this rank's part of a constant added to the loss (Poisson offset).
            extra: None or a callable ``(Tensors of slab_params by name) -> Tensor or
                None``, this rank's part of further loss terms (regularisers).
            refine: also differentiate the frames' sub-pixel shifts (position correction).

        Returns:
            ``loss`` and ``offset`` (floats, all frames of all ranks), ``probe`` (M, n, n)
            and ``opw`` (n, n) summed over all ranks; the ``active`` object unknowns'
            gradients (..., len(own), Nx) and ``illum`` (len(own), Nx) on this rank's own
            rows (``opw``/``illum`` only for models with such preconditioner sums); with
            ``refine``, ``gpos`` (B, 2): the loss gradient of each of this rank's frames'
            shifts, in the order of ``blocks`` (not summed over ranks: one owner per frame).
        """
        xp = self.model.backend.xp
        tensors = {k: (ad.param(v) if k in active else ad.const(v)) for k, v in slab_params.items()}
        rest = {"loss": 0.0, "offset": float(offset)}
        grads = {k: xp.zeros_like(slab_params[k]) for k in active}
        sums, gpos = {}, []
        for frames, corners, target in blocks:
            if not len(frames):
                continue
            local = np.asarray(corners, np.float64) - [self.rows.start, 0]
            loss, shifts, aux = self.local.block_loss(tensors, frames, local, target, refine)
            rest["loss"] += float(loss.data)
            wrt = [tensors[k] for k in active] + ([shifts] if refine else [])
            if wrt:
                g = ad.backward(loss, targets=wrt)
                for k, gk in zip(active, g, strict=False):
                    grads[k] += gk
                if refine:
                    gpos.append(to_numpy(g[-1]))
            for k, v in self.local.preconditioner_sums(frames, aux).items():
                sums[k] = sums[k] + v if k in sums else v
        term = extra(tensors) if extra is not None else None
        if term is not None:
            rest["loss"] += float(term.data)
            if active:
                g = ad.backward(term, targets=[tensors[k] for k in active])
                for k, gk in zip(active, g, strict=True):
                    grads[k] += gk
        if self._has_illumination:
            rdt = self.model.backend.real_dtype
            rest["opw"] = sums.get("opw", xp.zeros(self.model.frame_shape, rdt))
            illum = sums.get("illum", xp.zeros((len(self.rows), self._width), rdt))
        if "probe" in grads:
            rest["probe"] = grads["probe"]
        size = self.comm.size
        total = self.comm.block_sum(size, lambda _: rest, [range(r, r + 1) for r in range(size)])
        for k in grads:
            if k != "probe":
                total[k] = self.part.sum_halos(self.comm, grads[k])
        if self._has_illumination:
            total["illum"] = self.part.sum_halos(self.comm, illum)
        if refine:
            total["gpos"] = np.concatenate(gpos) if gpos else np.zeros((0, 2))
        return total

    @property
    def _has_illumination(self) -> bool:
        """The model's preconditioners need the illumination on the object grid."""
        return hasattr(self.model, "object_shape") and hasattr(self.model, "illumination")

    @property
    def _width(self) -> int:
        return self.model.object_shape[-1]

    def preconditioners(self, sums: dict, factor: float, alpha: float) -> dict:
        """The model's preconditioners from :meth:`gradient`'s sums: object unknowns on the
        own rows, probe (n, n); the illumination's maximum is taken over all ranks."""
        if not self._has_illumination:
            return self.model.preconditioners(None, sums, 0, factor, alpha)
        illum = sums["illum"]
        xp = self.model.backend.xp
        peak = max(self.comm.allgather(float(to_numpy(illum.max())) if illum.size else 0.0))
        # one extra row holding the global maximum makes the model's own ``illum.max()``
        # the global one; the row is dropped from the object preconditioners
        padded = xp.concatenate([illum, xp.full((1, illum.shape[-1]), peak, illum.dtype)])
        pre = self.model.preconditioners(
            None, {"illum": padded, "opw": sums["opw"]}, 0, factor, alpha
        )
        return {k: (v if k == "probe" else v[..., :-1, :]) for k, v in pre.items()}

    def halo_bytes(self, slab_params: dict, active) -> int:
        """Bytes this rank sends per batch: the ``active`` object gradients and ``illum``
        to the owners of its halo rows, and its rows of the object unknowns to the ranks
        holding them as halo (:meth:`refresh`)."""
        r, ranks = self.comm.rank, range(self.comm.size)
        to_owners = sum(len(self.part.halo(r, s)) for s in ranks)
        to_halos = sum(len(self.part.halo(s, r)) for s in ranks)

        def row(v) -> int:  # bytes of one row of a held array
            return int(np.prod(v.shape[:-2], dtype=np.int64)) * v.shape[-1] * v.dtype.itemsize

        objs = [slab_params[k] for k in self.model.object_names]
        grads = [slab_params[k] for k in self.model.object_names if k in active]
        illum = 0
        if self._has_illumination:
            illum = self._width * np.dtype(self.model.backend.real_dtype).itemsize
        return to_owners * (sum(map(row, grads)) + illum) + to_halos * sum(map(row, objs))
