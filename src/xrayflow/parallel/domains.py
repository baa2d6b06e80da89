"""Object domain decomposition: the object grid's rows split into slabs, one per rank, each
with halo rows owned by other ranks.

Rank ``r`` *owns* rows ``own(r) = partition(n_rows, r, size)`` (contiguous, balanced) and
*holds* its extended slab ``held(r) = [own.start - before, own.stop + after)`` clipped to the
grid (empty if it owns no row). Arrays on a rank are ``(..., rows, Nx)`` with the rows on
axis -2: a *held* array covers ``held(r)``, an *owned* array ``own(r)``.

Two exchanges move halo rows between ranks (a halo may span several neighbours when slabs
are thinner than the halo):

* :meth:`SlabPartition.sum_halos` (held -> owned): every rank's contributions to rows owned
  by another rank are sent to that owner and added there, the owner's own first, then the
  other ranks' in increasing rank order (deterministic);
* :meth:`SlabPartition.fill_halos` (owned -> held): the owners' values copied into the
  halos.

Both are one :meth:`xrayflow.parallel.Comm.alltoallv` with non-zero counts only between
neighbours; complex arrays travel as float views. Traffic per exchange and rank: its halo
rows x the trailing size x the item size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xrayflow.backend import array_module, to_numpy

from .comm import Comm, partition


def overlap(a: range, b: range) -> range:
    """Rows in both ``a`` and ``b`` (step-1 ranges)."""
    lo = max(a.start, b.start)
    return range(lo, max(lo, min(a.stop, b.stop)))


@dataclass(frozen=True)
class SlabPartition:
    """Rows ``range(n_rows)`` over ``size`` ranks with ``before`` / ``after`` halo rows."""

    n_rows: int
    size: int
    before: int = 0
    after: int = 0

    def own(self, r: int) -> range:
        """Rows owned (updated) by rank ``r``."""
        return partition(self.n_rows, r, self.size)

    def held(self, r: int) -> range:
        """Rows rank ``r`` holds: its own plus its halos, clipped to the grid."""
        o = self.own(r)
        if not len(o):
            return o
        return range(max(0, o.start - self.before), min(self.n_rows, o.stop + self.after))

    def owner(self, rows) -> np.ndarray:
        """Rank owning each of ``rows`` (int array)."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise ValueError(f"rows outside [0, {self.n_rows}): {rows.min()}..{rows.max()}")
        counts = [len(self.own(r)) for r in range(self.size)]
        return np.repeat(np.arange(self.size), counts)[rows]

    def halo(self, r: int, s: int) -> range:
        """Rows held by ``r`` and owned by another rank ``s`` (empty for ``s == r``)."""
        return range(0) if r == s else overlap(self.held(r), self.own(s))

    def halo_rows(self, r: int) -> int:
        """Number of halo rows of rank ``r``."""
        return len(self.held(r)) - len(self.own(r))

    # -- exchanges ---------------------------------------------------------------------
    def sum_halos(self, comm: Comm, held):
        """Held array (..., len(held(rank)), Nx) -> owned array (..., len(own(rank)), Nx):
        each owned row is this rank's contribution plus those of the ranks holding it as
        halo, added in increasing rank order."""
        r = comm.rank
        h0, own = self.held(r).start, self.own(r)
        recv = self._exchange(comm, held, lambda s: self.halo(r, s), lambda s: self.halo(s, r), h0)
        out = held[..., own.start - h0 : own.stop - h0, :].copy()
        for s, part in recv:
            rows = self.halo(s, r)
            out[..., rows.start - own.start : rows.stop - own.start, :] += part
        return out

    def fill_halos(self, comm: Comm, owned):
        """Owned array (..., len(own(rank)), Nx) -> held array (..., len(held(rank)), Nx):
        the halo rows copied from their owners."""
        r = comm.rank
        h, o0 = self.held(r), self.own(r).start
        xp = array_module(owned)
        out = xp.empty((*owned.shape[:-2], len(h), owned.shape[-1]), dtype=owned.dtype)
        out[..., o0 - h.start : o0 - h.start + owned.shape[-2], :] = owned
        for s, part in self._exchange(
            comm, owned, lambda s: self.halo(s, r), lambda s: self.halo(r, s), o0
        ):
            rows = self.halo(r, s)
            out[..., rows.start - h.start : rows.stop - h.start, :] = part
        return out

    def _exchange(self, comm: Comm, a, send_rows, recv_rows, row0: int) -> list:
        """Send rows ``send_rows(s)`` of ``a`` (whose first row is global row ``row0``) to
        every rank ``s``; returns ``[(s, rows received from s)]`` for the ranks that sent
        any, in rank order."""
        xp = array_module(a)
        lead, width = a.shape[:-2], a.shape[-1]
        real = np.finfo(a.dtype).dtype  # complex data travel as float views
        per_row = int(np.prod(lead, dtype=np.int64)) * width * (a.dtype.itemsize // real.itemsize)
        sends = [send_rows(s) for s in range(comm.size)]
        recvs = [recv_rows(s) for s in range(comm.size)]
        parts = [a[..., s.start - row0 : s.stop - row0, :] for s in sends if len(s)]
        send = (
            xp.concatenate([xp.ascontiguousarray(p).reshape(-1) for p in parts])
            if parts
            else xp.empty(0, a.dtype)
        )
        recv = xp.empty(sum(len(s) for s in recvs) * per_row, real)
        comm.alltoallv(
            send.view(real),
            [len(s) * per_row for s in sends],
            recv,
            [len(s) * per_row for s in recvs],
        )
        out, off = [], 0
        for s, rows in enumerate(recvs):
            if len(rows):
                n = len(rows) * per_row
                part = recv[off : off + n].view(a.dtype).reshape(*lead, len(rows), width)
                out.append((s, part))
                off += n
        return out

    def gather(self, comm: Comm, owned) -> np.ndarray:
        """The whole grid (..., n_rows, Nx) on every rank from the owned arrays (host
        copies, pickled: for tests and small objects; no rank needs it in a run)."""
        return np.concatenate(comm.allgather(to_numpy(owned)), axis=-2)
