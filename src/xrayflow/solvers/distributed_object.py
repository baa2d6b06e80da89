"""Distributed-object gradient of (multislice) ptychography: the object split into row slabs
over the ranks (:class:`xrayflow.parallel.domains.SlabPartition`), so that no rank holds
the whole object, its gradient or its optimizer state.

Rank ``r`` owns object rows ``own(r)`` and holds ``held(r) = own(r)`` plus ``n - 1`` halo
rows below (``n``: the window height). It computes the frames whose window's top row it
owns; such a window lies inside its held rows, so the modality's unchanged ptychography model
(the gradient solver's model interface) runs on the held slab with the window corners
shifted by the slab's first row. Object gradients and the illumination that
fall in halo rows are added into their owners (:meth:`SlabPartition.sum_halos`); loss,
probe gradient and object power on the window are summed over all ranks in a fixed order
(:meth:`xrayflow.parallel.Comm.block_sum`, one block per rank). After a rank updates its
own rows, :meth:`SlabGradient.refresh` copies the owners' rows into the halos.

The result equals the replicated gradient up to the order of floating-point additions.
"""

from __future__ import annotations

import copy

import numpy as np

from xrayflow import ad
from xrayflow.backend import to_numpy
from xrayflow.parallel import Comm
from xrayflow.parallel.domains import SlabPartition


class SlabGradient:
    """The data-term gradient of ``model`` (a PtychoModel, object ``(S, Ny, Nx)``, window
    ``(n, n)``) with the object's rows distributed over the ranks of ``comm``."""

    def __init__(self, model, comm: Comm):
        n = model.frame_shape[0]
        ny, nx = model.object_shape
        self.comm = comm
        self.model = model
        self.part = SlabPartition(ny, comm.size, before=0, after=n - 1)
        self.rows = self.part.held(comm.rank)  # global rows of the held slab
        self.local = copy.copy(model)  # the same model on the held slab
        self.local.object_shape = (len(self.rows), nx)
        self.local.last = {}

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

    def gradient(self, slab_params: dict, corners, target, active) -> dict:
        """Loss, gradients and preconditioner sums of a batch, assembled over the ranks.

        Args:
            slab_params: this rank's parameters (:meth:`slab`), halos up to date.
            corners: (B, 2) fractional window corners (global px) of this rank's frames of
                the batch (:meth:`owned_frames`); B may be 0.
            target: (B, n, n) their loss targets.
            active: names of the parameters to differentiate.

        Returns:
            ``loss`` (float, all frames of all ranks), ``probe`` (M, n, n) and ``opw``
            (n, n) summed over all ranks; the ``active`` object unknowns' gradients
            (S, len(own), Nx) and ``illum`` (len(own), Nx) on this rank's own rows.
        """
        corners = np.asarray(corners, np.float64) - [self.rows.start, 0]
        xp = self.model.backend.xp
        rdt = self.model.backend.real_dtype
        tensors = {k: (ad.param(v) if k in active else ad.const(v)) for k, v in slab_params.items()}
        out = {"loss": 0.0}
        grads = {k: xp.zeros_like(slab_params[k]) for k in active}
        illum = xp.zeros(self.local.object_shape, rdt)
        opw = xp.zeros(self.model.frame_shape, rdt)
        if len(corners):
            frames = np.arange(len(corners))
            loss, _, ci = self.local.block_loss(tensors, frames, corners, target, False)
            out["loss"] = float(loss.data)
            if active:
                g = ad.backward(loss, targets=[tensors[k] for k in active])
                grads = dict(zip(active, g, strict=True))
            s = self.local.preconditioner_sums(frames, ci)
            illum, opw = s["illum"], s["opw"]
        rest = {**out, "opw": opw, **({"probe": grads["probe"]} if "probe" in grads else {})}
        size = self.comm.size
        total = self.comm.block_sum(size, lambda _: rest, [range(r, r + 1) for r in range(size)])
        for k in grads:
            if k != "probe":
                total[k] = self.part.sum_halos(self.comm, grads[k])
        total["illum"] = self.part.sum_halos(self.comm, illum)
        return total

    def preconditioners(self, sums: dict, factor: float, alpha: float) -> dict:
        """The model's preconditioners from :meth:`gradient`'s sums: object unknowns on the
        own rows, probe (n, n); the illumination's maximum is taken over all ranks."""
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
        illum = self.model.object_shape[1] * np.dtype(self.model.backend.real_dtype).itemsize
        return to_owners * (sum(map(row, grads)) + illum) + to_halos * sum(map(row, objs))
