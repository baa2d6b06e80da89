"""The gradient solver with the object unknowns distributed over the MPI ranks
(``parallel.object: distributed``): objects, gradients and optimizer states larger than one
device's memory.

The object rows are split into slabs (:class:`xrayflow.solvers.distributed_object.
SlabGradient`): each rank holds its own rows plus ``n - 1`` halo rows (``n``: the window
height), the Adam moments of its own rows only, and the frames whose window's top row it
owns (moved there once from the ranks that read them, :func:`exchange_frames`). Per batch:
the slab gradients, the halo sums into the owners, one optimizer step on the own rows, the
halo refresh. Regularisers are evaluated on the own rows (total variation with the first
halo row, so that each pair of neighbouring rows is counted once); their halo gradients are
summed like the data term's. Probe, loss and positions are the same on every rank.

Checkpoints are one file per rank (``<checkpoint>.rank<r>of<R>.h5``: its rows, its Adam
state, the probe and the run's state), written by every rank; ``--resume`` needs the same
number of ranks. The result is written by the ranks in turn (:func:`xrayflow.io.slabs.
write_row_slabs`); no rank ever holds the whole object. Position correction: each frame's
shift gradient comes from its owner, the positions are updated the same on every rank, and a
frame whose window's top row moves into another rank's rows moves to that rank. Not supported
(ConfigError): the ``bb``/``backtracking`` step rules (they need dot products over the
whole object).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xrayflow.errors import ConfigError, DataError
from xrayflow.io.slabs import write_row_slabs
from xrayflow.parallel import Comm, get_comm
from xrayflow.solvers.distributed_object import SlabGradient
from xrayflow.solvers.gradient import DivergenceError, Reconstructor
from xrayflow.solvers.regularizers import regularization

#: Ground-truth datasets that are object unknowns on the object rows (``init.object: truth``).
OBJECT_TRUTH = ("object", "delta", "beta")


def rank_checkpoint_path(path, comm: Comm) -> Path:
    """This rank's checkpoint file: ``<path without .h5>.rank<r>of<R>.h5``."""
    p = str(path)
    stem = p[: -len(".h5")] if p.endswith(".h5") else p
    return Path(f"{stem}.rank{comm.rank}of{comm.size}.h5")


def check_distributable(cfg: dict) -> None:
    """Refuse (ConfigError naming the key) what the distributed object does not support."""
    if cfg["optimizer"]["step_rule"] != "fixed":
        raise ConfigError(
            f"optimizer.step_rule: {cfg['optimizer']['step_rule']} needs dot products over the "
            "whole object; parallel.object: distributed takes fixed steps"
        )


def exchange_frames(comm: Comm, local, frames, owner) -> tuple[np.ndarray, np.ndarray]:
    """Move frames to the ranks that compute them.

    Args:
        local: sorted global indices (L,) of the frames this rank read.
        frames: their counts (L, ny, nx), float32.
        owner: (P,) rank that computes each frame.

    Returns:
        The sorted global indices of this rank's frames and their counts.
    """
    local = np.asarray(local, np.int64)
    frames = np.ascontiguousarray(frames, np.float32)
    per = int(np.prod(frames.shape[1:]))
    held = comm.allgather(local)
    send_sel = [np.flatnonzero(owner[local] == s) for s in range(comm.size)]
    recv_idx = [h[owner[h] == comm.rank] for h in held]
    send = (
        np.concatenate([frames[s].reshape(-1) for s in send_sel])
        if local.size
        else np.empty(0, np.float32)
    )
    recv = np.empty(sum(i.size for i in recv_idx) * per, np.float32)
    comm.alltoallv(send, [s.size * per for s in send_sel], recv, [i.size * per for i in recv_idx])
    mine = np.concatenate(recv_idx)
    order = np.argsort(mine, kind="stable")
    return mine[order], recv.reshape(-1, *frames.shape[1:])[order]


class DistributedReconstructor(Reconstructor):
    """:class:`~xrayflow.solvers.gradient.Reconstructor` with the object unknowns in row
    slabs over the ranks of ``comm``; ``params`` holds this rank's held rows."""

    object_mode = "distributed"

    def __init__(self, cfg: dict, data, checkpoint_path=None, **kwargs):
        """As :class:`Reconstructor`; ``checkpoint_path`` names this rank's file."""
        kwargs["comm"] = kwargs.get("comm") or get_comm()
        check_distributable(cfg)
        if checkpoint_path is not None:
            checkpoint_path = rank_checkpoint_path(checkpoint_path, kwargs["comm"])
        super().__init__(cfg, data, checkpoint_path, **kwargs)

    # -- set-up (hooks of Reconstructor.__init__) -------------------------------------
    def _initial_object(self) -> dict:
        """This rank's held rows of the start object (the partition is made here, the
        first time the model is known)."""
        if not hasattr(self.model, "on_rows"):
            raise ConfigError(
                f"parallel.object: distributed: model.type {self.cfg['model']['type']} has no "
                "row-slab model (on_rows); use parallel.object: replicated"
            )
        self.slabs = SlabGradient(self.model, self.comm)
        r = self.slabs.rows
        truth = {
            k: np.asarray(v)[..., r.start : r.stop, :]
            for k, v in self.data.truth.items()
            if k in OBJECT_TRUTH and np.ndim(v) >= 2
        }
        return self.slabs.local.initial_object(self.cfg["init"]["object"], truth)

    def _hold_frames(self, local, intensities) -> None:
        self._take_frames(local, intensities, self.data.corners)

    def _take_frames(self, local, intensities, corners) -> None:
        """Hold the frames whose window's top row (``corners``, (P, 2) px) this rank owns,
        from ``local``/``intensities``, the frames it holds now (moved between ranks)."""
        top = np.floor(np.asarray(corners, np.float64)[:, 0]).astype(np.int64)
        self.owner = self.slabs.part.owner(np.clip(top, 0, self.model.object_rows - 1))
        self._local, self._frames = exchange_frames(self.comm, local, intensities, self.owner)
        super()._hold_frames(self._local, self._frames)

    def _follow_positions(self) -> None:
        """After the positions changed: frames whose window's top row moved into another
        rank's rows go to that rank."""
        top = np.floor(self.positions[:, 0]).astype(np.int64)
        owner = self.slabs.part.owner(np.clip(top, 0, self.model.object_rows - 1))
        moved = int(np.count_nonzero(owner != self.owner))
        if moved:
            self._take_frames(self._local, self._frames, self.positions)
            self.log(f"positions: {moved} frame(s) moved to another rank's rows")

    # -- one batch --------------------------------------------------------------------
    def _own(self) -> dict:
        """Views of the own rows of the object unknowns, and the probe."""
        o = self.slabs.own
        return {k: (v if k == "probe" else v[..., o, :]) for k, v in self.params.items()}

    def _slab_regularization(self, fraction: float):
        """Callable: the regularisers of this rank's rows from the slab's Tensors (None when
        none is configured). TV pairs each own row with the next one (the first halo row)."""
        regs = self.cfg["regularizers"]
        if not any(float((regs.get(n) or {}).get("weight", 0.0)) > 0 for n in regs):
            return None
        o, held = self.slabs.own, len(self.slabs.rows)
        tv_rows = slice(o.start, min(o.stop + 1, held))
        tv = {"tv": regs.get("tv") or {}}
        rest = {k: v for k, v in regs.items() if k != "tv"}
        root = self.comm.is_root

        def rows(t, sl):
            return {
                k: (t[k] if k == "probe" else t[k][(slice(None),) * (t[k].ndim - 2) + (sl,)])
                for k in t
                if k != "probe" or root  # the replicated probe's terms counted once
            }

        def extra(t):
            terms = [
                regularization(rows(t, tv_rows), tv, fraction),
                regularization(rows(t, o), rest, fraction),
            ]
            terms = [x for x in terms if x is not None]
            return sum(terms[1:], terms[0]) if terms else None

        return extra

    def _batch_step(self, idx, it, pos_active, gpos) -> float:
        fraction = len(idx) / self.data.n_positions
        active = [n for n in self.names if self.opt.active(n, it)]
        blocks, _ = self._blocks(idx)
        mine = [b[self.owner[b] == self.comm.rank] for b in blocks]
        mine = [(f, self.positions[f], self.target[self.row_of[f]]) for f in mine if f.size]
        offset = float(sum(self.loss_offset[f].sum() for f, _, _ in mine))
        extra = self._slab_regularization(fraction)
        tot = self.slabs.gradient(self.params, mine, active, offset, extra, pos_active)
        lval = tot["loss"]
        if pos_active:  # one owner per frame: the sum over ranks adds zeros, exactly
            g = np.zeros((self.data.n_positions, 2))
            g[np.concatenate([f for f, _, _ in mine]) if mine else []] = tot["gpos"]
            gpos[idx] = self.comm.allreduce(g)[idx]
        if not np.isfinite(lval):
            self._check_finite(lval, it)
        if active:
            alpha = self.cfg["optimizer"]["precondition_alpha"]
            pre = self.slabs.preconditioners(tot, self._curvature_factor(), alpha)
            own = self._own()
            self.opt.step(own, {n: tot[n] for n in active}, it, precond=pre)
            if self.cfg["model"]["nonnegative"]:
                xp = self.backend.xp
                for n in sorted(set(active) & {"delta", "beta"}):
                    xp.maximum(own[n], 0, out=own[n])
            self.slabs.refresh(self.params)
        return lval - tot["offset"]

    def run_iteration(self):
        loss = super().run_iteration()
        self._follow_positions()
        return loss

    def _object_power(self) -> float:
        """Mean ``|object|²`` over all ranks' own rows."""
        if "object" not in self.params:
            return 1.0
        xp = self.backend.xp
        own = self._own()["object"]
        s = float(xp.sum(xp.abs(own) ** 2))
        parts = self.comm.allgather((s, own.size))
        return sum(p[0] for p in parts) / max(sum(p[1] for p in parts), 1)

    def _check_finite(self, what_loss, it) -> None:
        """As the replicated check, over every rank's rows (all ranks raise together)."""
        try:
            super()._check_finite(what_loss, it)
            why = None
        except DivergenceError as exc:
            why = str(exc)
        first = next((w for w in self.comm.allgather(why) if w), None)
        if first:
            raise DivergenceError(first)

    # -- checkpoints and results ------------------------------------------------------
    def save(self, path) -> None:
        """Every rank writes its own checkpoint file: all ranks stage theirs first and
        rename them together, so that a run killed meanwhile leaves one iteration's files."""
        staged = Path(f"{path}.staged")
        self._write_checkpoint(staged)
        self.comm.barrier()
        os.replace(staged, path)
        self.comm.barrier()

    def discard_checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            Path(self.checkpoint_path).unlink(missing_ok=True)

    def _stale_reason(self, path) -> str | None:
        why = super()._stale_reason(path)  # rank 0's file against the inputs
        have = self.comm.allgather(Path(path).exists())
        if not why and any(have) and not all(have):
            missing = [r for r, h in enumerate(have) if not h]
            why = f"the checkpoints of rank(s) {missing} are missing"
        return why

    def restore(self, path) -> None:
        super().restore(path)
        self._follow_positions()  # the checkpoint's positions
        its = self.comm.allgather(self.iteration)
        if len(set(its)) > 1:
            raise DataError(
                f"--resume: the per-rank checkpoints {Path(path).name} hold different "
                f"iterations {its} (a run killed while writing them); delete them or run "
                "without --resume"
            )

    def run(self, iterations=None, resume=False):
        """As :meth:`Reconstructor.run`; the result's object unknowns are this rank's own
        rows (``rows``: :attr:`own_rows`)."""
        res = super().run(iterations, resume)
        o = self.slabs.own
        res.params = {k: (v if k == "probe" else v[..., o, :]) for k, v in res.params.items()}
        return res

    @property
    def own_rows(self) -> range:
        """The global object rows this rank owns."""
        return self.slabs.part.own(self.comm.rank)

    def write_result(self, path, tree: dict, attrs: dict, plot: dict, row_keys) -> None:
        """Write the result: ``row_keys`` of ``tree`` are this rank's own rows."""
        slabs = {k: tree[k] for k in row_keys}
        rest = {k: v for k, v in tree.items() if k not in slabs}
        write_row_slabs(
            path,
            rest,
            slabs,
            self.own_rows,
            self.model.object_rows,
            self.comm,
            attrs=attrs,
            default_plot=plot,
        )
