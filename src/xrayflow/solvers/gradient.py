"""The gradient solver: minibatch gradient descent through a modality's differentiable model.

The model comes from the modality (:attr:`xrayflow.modalities.Modality.build_model`) and
offers the solver this interface (defaults in
:class:`xrayflow.modalities.transmission.ObjectModel`):

* ``object_names`` (the object unknowns; the probe is ``"probe"``), ``n_slices``,
  ``refines_positions`` (the loss is differentiable in sub-pixel shifts);
* ``initial_object(kind, truth) -> {name: array}`` (``init.object``: ``truth`` or blank);
* ``batches(rng, n_frames, batch_size, shuffle, chunk_starts)`` -> sorted frame indices per
  minibatch;
* ``block_loss(params, frames, corners, target, refine_positions) -> (loss, shifts, aux)``:
  the data term of a block of frames (``params``: Tensors by name, ``corners`` the frames'
  fractional window corners, ``shifts`` the Tensor of sub-pixel shifts or None);
* ``preconditioner_sums(frames, aux) -> dict`` (per-block sums, added over blocks and
  ranks) and ``preconditioners(params, sums, n_frames, factor, alpha) -> {name: array}``;
* ``result_entries(params, data) -> dict`` (the result file's object datasets).

One *iteration* is one pass over all (used) positions in minibatches (order shuffled from
the run's RNG). Per batch: forward model + data term + regularisers, gradients by
:mod:`xrayflow.ad`, optional preconditioning (object: illumination, probe: object power),
an optimizer step for every parameter whose schedule is active. Position gradients are
accumulated over the iteration and applied once at its end (Gauss-Newton-scaled, clipped,
mean drift removed). After each iteration: NaN / divergence checks, a progress line,
and a checkpoint every ``run.checkpoint_every`` iterations.

MPI: a batch is split into *blocks* — its positions falling in one fixed chunk of
``run.block_frames`` frames (:mod:`xrayflow.reconstruct.data`) — and each rank computes the
blocks of the chunks whose frames it holds. Per-block data terms, gradients and
preconditioner sums are added by :meth:`xrayflow.parallel.Comm.block_sum` in a fixed tree
order, so every rank takes the same step and the result is bit-identical for any number of
ranks (with a number in ``run.block_frames``). Regularisers are evaluated once per batch, the
same on every rank.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from xrayflow import ad
from xrayflow.backend import BackendError, fftfreq, fftshift, get_backend, to_numpy
from xrayflow.errors import ConfigError, DataError, XrayflowError
from xrayflow.io import checkpoint as ckpt
from xrayflow.io.atomic import atomic_write
from xrayflow.io.hdf5 import write_h5
from xrayflow.modalities import get_modality
from xrayflow.modalities.losses import loss_target
from xrayflow.parallel import Comm, get_comm, on_root, partition
from xrayflow.progress import eta
from xrayflow.solvers.optimizers import GradientDescent, ParamSettings, make_optimizer
from xrayflow.solvers.regularizers import regularization


class DivergenceError(XrayflowError):
    """The loss or a parameter became NaN/inf, or the loss grew past the divergence limit."""


@dataclass
class Result:
    params: dict
    positions: np.ndarray  # (P, 2) corners, px
    history: dict
    iteration: int
    stopped: bool = False
    timings: dict = field(default_factory=dict)


# ------------------------------------------------------------------------- set-up
def build_model(cfg: dict, data, backend):
    """The differentiable model of ``model.type`` for ``data`` (the reconstruct stage's
    :class:`~xrayflow.reconstruct.data.ReconData`); ConfigError if that modality has none."""
    mod = get_modality(cfg["model"]["type"], "model.type")
    if mod.build_model is None:
        raise ConfigError(f"model.type: {mod.name} is not reconstructed by the gradient solver")
    return mod.build_model(cfg, data, backend)


def mean_frame(data, comm: Comm) -> np.ndarray:
    """The mean of all used frames (ny, nx), float64: each chunk of frames summed by the rank
    that holds it, the chunks added in their order (the same numbers for any rank count)."""
    bounds = [*np.asarray(data.chunk_starts).tolist(), data.n_positions]
    row = {int(g): i for i, g in enumerate(data.local)}
    mine = [
        (k, np.sum(data.intensities[row[a] : row[a] + b - a], axis=0, dtype=np.float64))
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        if a in row
    ]
    sums = dict(kv for part in comm.allgather(mine) for kv in part)
    total = sums[0].copy()
    for k in range(1, len(sums)):
        total += sums[k]
    return total / max(data.n_positions, 1)


def initial_probe(cfg, data, rng, model=None, comm: Comm | None = None) -> np.ndarray:
    """Start probe modes (M, n, n) complex128 from ``init.probe``: the data file's, a
    Gaussian or a softened aperture of ``init.probe_width`` of the window, or (near-field
    ``model``) the mean frame back-propagated (``model.probe_from_mean_frame``; the frames
    of every rank of ``comm``); extra modes as phase-ramped copies of ``init.mode_power``;
    scaled to the frames' mean counts."""
    n = data.frame_shape
    ini = cfg["init"]
    M = cfg["model"]["probe_modes"]
    kind = ini["probe"]
    base = None
    if kind in ("file", "truth") and data.probe is not None:
        base = np.asarray(data.probe, np.complex128)
        if base.ndim == 2:
            base = base[None]
    if kind == "truth" and base is None:
        raise DataError("init.probe: truth requested but the data file has no probe")
    if kind == "propagated":
        if not hasattr(model, "probe_from_mean_frame"):
            raise ConfigError(
                f"init.probe: propagated back-propagates the mean frame of near-field data; "
                f"model.type {cfg['model']['type']} has no such start"
            )
        mean = mean_frame(data, comm or get_comm())
        mean[~data.mask] = mean[data.mask].mean()
        base = to_numpy(model.probe_from_mean_frame(mean))[None].astype(np.complex128)
    if base is None:
        yy = fftshift(fftfreq(n[0])) * n[0]
        xx = fftshift(fftfreq(n[1])) * n[1]
        r = np.hypot(yy[:, None] / n[0], xx[None, :] / n[1])
        w = ini["probe_width"]
        if kind == "gaussian":
            p = np.exp(-((r / (w / 2)) ** 2) / 2)
        else:
            p = (r <= w / 2).astype(np.float64)
            # soften the edge a little

            p = gaussian_filter(p, 1.0)
        base = p[None].astype(np.complex128)
    modes = list(base[:M])
    yy, xx = np.meshgrid(np.arange(n[0]) / n[0], np.arange(n[1]) / n[1], indexing="ij")
    k = 0
    while len(modes) < M:
        k += 1
        # weaker modes: the first mode with a few low-order phase ramps (near-orthogonal)
        ky, kx = [(0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (2, 1)][(k - 1) % 6]
        p = modes[0] * np.exp(2j * np.pi * (ky * yy + kx * xx))
        modes.append(p * np.sqrt(ini["mode_power"]))
    probe = np.stack(modes)
    if ini["probe_scale_to_data"]:
        target = float(np.mean(data.frame_totals)) / max(data.mask.mean(), 1e-12)
        probe *= np.sqrt(target / max(float(np.sum(np.abs(probe) ** 2)), 1e-30))
    return probe


def _settings(cfg, names) -> dict:
    o = cfg["optimizer"]
    out = {}
    for n in names:
        pc = o[n]
        out[n] = ParamSettings(
            lr=pc["lr"], start=pc["start"], stop=pc["stop"], precondition=pc["precondition"]
        )
    return out


def _quiet(_msg: str) -> None:
    """Log of the ranks other than 0."""


def _changed_keys(a, b, prefix: str = "") -> list:
    """Dotted keys whose values differ between two nested dicts."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return [] if a == b else [prefix.rstrip(".") or "config"]
    out = []
    for k in sorted(set(a) | set(b)):
        out += _changed_keys(a.get(k), b.get(k), f"{prefix}{k}.")
    return out


def _config_core(cfg) -> dict:
    c = copy.deepcopy(cfg)
    c.pop("run", None)
    c["optimizer"].pop("iterations", None)
    return c


# ------------------------------------------------------------------------- the loop
class Reconstructor:
    """Holds the model, parameters and optimizer state; :meth:`run` iterates.

    Every rank of ``comm`` holds the same parameters and takes the same steps; only rank 0
    logs and writes checkpoints."""

    def __init__(
        self,
        cfg: dict,
        data,
        checkpoint_path=None,
        log=None,
        comm: Comm | None = None,
        fingerprint: dict | None = None,
    ):
        self.cfg = cfg
        # what determines the result (run.input_fingerprint): written into checkpoints; a
        # checkpoint with another one is not resumed. None: only the config is compared.
        self.fingerprint = fingerprint
        self.data = data
        self.comm = comm or get_comm()
        if not self.comm.is_root:
            log = _quiet
        self.log = log if log is not None else (lambda s: print(s, file=sys.stderr, flush=True))
        r = cfg["run"]
        try:
            self.backend = get_backend(r["device"], r["precision"])
        except BackendError as exc:
            raise BackendError(f"run.device: {exc}") from None
        be = self.backend
        if be.is_gpu and self.comm.size > 1:
            self.comm.select_gpu()  # GPU = node-local rank mod GPUs, before any allocation
        xp = be.xp
        self.model = build_model(cfg, data, be)
        self.rng = np.random.default_rng(cfg["optimizer"]["seed"])
        init_rng = np.random.default_rng(cfg["init"]["seed"])
        probe = initial_probe(cfg, data, init_rng, self.model, self.comm)
        self.params = {"probe": xp.asarray(probe.astype(be.complex_dtype))}
        for k, v in self._initial_object().items():
            dt = be.complex_dtype if np.iscomplexobj(v) else be.real_dtype
            self.params[k] = xp.asarray(v.astype(dt))
        self.positions = np.asarray(data.corners, np.float64).copy()
        self.initial_positions = self.positions.copy()
        self.object_names = tuple(self.model.object_names)
        self.names = [*self.object_names, "probe"]
        o = cfg["optimizer"]
        self.opt = make_optimizer(o["method"], _settings(cfg, self.names), rule=o["step_rule"])
        pc = o["positions"]
        if cfg["model"]["position_correction"] and not self.model.refines_positions:
            raise ConfigError(
                f"model.position_correction: model.type {cfg['model']['type']} does not "
                "refine scan positions; set it to false"
            )
        self.correct_positions = bool(cfg["model"]["position_correction"])
        self.pos_settings = ParamSettings(lr=pc["lr"], start=pc["start"], stop=pc["stop"])
        self.pos_opt = GradientDescent({"positions": self.pos_settings}, rule="fixed")
        self._hold_frames(data.local, data.intensities)
        self.chunk_starts = np.asarray(data.chunk_starts, np.int64)
        n_ch, size = len(self.chunk_starts), self.comm.size
        # first chunk of each rank, then the end: rank r owns chunks [c[r], c[r + 1])
        starts = [partition(n_ch, r, size).start for r in range(size)]
        self.rank_chunks = np.asarray([*starts, n_ch])
        self.history = {"loss": [], "time": []}
        self.iteration = 0
        self.checkpoint_path = checkpoint_path
        self.n_good = float(data.mask.sum())

    def _initial_object(self) -> dict:
        """Start values of the object unknowns (``init.object``), NumPy arrays by name."""
        return self.model.initial_object(self.cfg["init"]["object"], self.data.truth)

    def _hold_frames(self, local, intensities) -> None:
        """Keep this rank's frames ``local`` (sorted global frame indices, (L,)) with their
        counts ``intensities`` (L, ny, nx): loss targets indexed through ``row_of[frame]``,
        and the Poisson NLL's minimum per frame (``loss_offset``, subtracted so that
        reported losses are >= 0)."""
        cfg, be = self.cfg, self.backend
        P = self.data.n_positions
        self.row_of = np.full(P, -1, np.int64)
        self.row_of[local] = np.arange(local.size)
        target = loss_target(intensities, cfg["loss"]["type"])
        self.target = be.xp.asarray(target.astype(be.real_dtype))
        self.loss_offset = np.zeros(P)
        if cfg["loss"]["type"] == "poisson":
            D = intensities.astype(np.float64) * self.data.mask
            eps = cfg["loss"]["eps"]
            self.loss_offset[local] = (D - D * np.log(D + eps)).sum(axis=(1, 2))

    #: How the object unknowns are held (``parallel.object``): whole on every rank.
    object_mode = "replicated"

    @property
    def transport(self) -> str:
        """How gradients travel between ranks (``serial``, ``mpi``, ``nccl``, ...)."""
        return self.comm.transport_name(self.backend.xp.__name__)

    # -- state for checkpoints ---------------------------------------------------------
    def save(self, path):
        """Checkpoint (rank 0 writes it atomically; it holds no per-rank state)."""
        on_root(lambda: self._write_checkpoint(path), self.comm)

    def write_result(self, path, tree: dict, attrs: dict, plot: dict, row_keys=()) -> None:
        """Rank 0 writes the result ``tree`` atomically (``row_keys``: the datasets on the
        object rows, distributed only by :mod:`xrayflow.solvers.distributed_reconstructor`)."""
        on_root(
            lambda: atomic_write(
                path, lambda tmp: write_h5(tmp, tree, attrs=attrs, default_plot=plot)
            ),
            self.comm,
        )

    def discard_checkpoint(self) -> None:
        """Remove the checkpoint of a finished run (it could only be resumed into itself)."""
        if self.comm.is_root and self.checkpoint_path is not None:
            Path(self.checkpoint_path).unlink(missing_ok=True)

    def _write_checkpoint(self, path) -> None:
        """Write this process's state to ``path`` atomically."""
        state = self.opt.state_dict()
        state.update({f"__pos__{k}": v for k, v in self.pos_opt.state_dict().items()})
        params = dict(self.params)
        params["__positions__"] = self.positions

        def write(tmp):
            ckpt.save_checkpoint(
                tmp,
                iteration=self.iteration,
                params=params,
                optimizer_state=state,
                rng_state=ckpt.rng_state(self.rng),
                history=self.history,
                config=_config_core(self.cfg),
                extra=self.fingerprint,
            )

        atomic_write(path, write)

    def restore(self, path) -> None:
        c = ckpt.load_checkpoint(path)
        if c["config"] != _config_core(self.cfg):
            a = json.dumps(c["config"], sort_keys=True, default=str)
            b = json.dumps(_config_core(self.cfg), sort_keys=True, default=str)
            if a != b:
                raise ConfigError(
                    f"--resume: the checkpoint {path} was written with a "
                    "different configuration (only run.* and "
                    "optimizer.iterations may change)"
                )
        xp = self.backend.xp
        for k in list(self.params):
            self.params[k] = xp.asarray(c["params"][k])
        self.positions = np.asarray(c["params"]["__positions__"], np.float64)
        opt_state = {k: v for k, v in c["optimizer"].items() if not k.startswith("__pos__")}
        pos_state = {
            k[len("__pos__") :]: v for k, v in c["optimizer"].items() if k.startswith("__pos__")
        }
        self.opt.load_state_dict(opt_state, xp)
        self.pos_opt.load_state_dict(pos_state, xp)
        self.rng = ckpt.restore_rng(c["rng_state"])
        self.history = {k: list(v) for k, v in c["history"].items()}
        self.iteration = c["iteration"]

    def _stale_reason(self, path) -> str | None:
        """Why the checkpoint at ``path`` must not be resumed (other config or data), or
        None. Decided on rank 0 (which alone reads it here) and broadcast. Without a
        fingerprint (library use) nothing is stale: :meth:`restore` compares the config."""

        why = None
        if self.comm.is_root and self.fingerprint is not None and Path(path).exists():
            written = ckpt.read_inputs(path)
            config, old = written if written is not None else (None, None)
            core = json.loads(json.dumps(_config_core(self.cfg), default=str))
            if old is None:
                why = "it is unreadable or not an xrayflow checkpoint"
            elif old.get("fingerprint") == self.fingerprint["fingerprint"]:
                why = None
            elif config != core:
                diff = _changed_keys(config, core)
                why = "configuration changed" + (": " + ", ".join(diff[:3]) if diff else "")
            elif old.get("fingerprint") is None:
                why = "it records no input fingerprint (older xrayflow)"
            elif old.get("data_fingerprint") != self.fingerprint["data_fingerprint"]:
                why = "data file changed"
            else:
                why = "it records another input fingerprint"
        return self.comm.bcast(why)

    # -- one block of a batch -------------------------------------------------------------
    def _block_loss(self, tensors, frames, pos_active):
        """Data term of ``frames`` (sorted global frame indices held by this rank).

        Returns the model's ``(loss, shifts tensor or None, aux)``."""
        rows = self.row_of[frames]
        if (rows < 0).any():
            raise RuntimeError(f"frames {frames[rows < 0][:5].tolist()} are not held by this rank")
        tgt = self.target[rows]
        return self.model.block_loss(tensors, frames, self.positions[frames], tgt, pos_active)

    def _partial(self, frames, idx, active, pos_active):
        """Block sums: ``loss``, Poisson ``offset``, gradients of the ``active`` parameters,
        ``gpos`` ((len(idx), 2), this block's rows) and, for ptychography, the sums behind the
        preconditioners (``illum`` on the object grid, ``opw`` on the window)."""
        tensors = {n: (ad.param(v) if n in active else ad.const(v)) for n, v in self.params.items()}
        loss, shifts_t, aux = self._block_loss(tensors, frames, pos_active)
        out = {"loss": float(loss.data), "offset": float(self.loss_offset[frames].sum())}
        targets = [tensors[n] for n in active] + ([shifts_t] if pos_active else [])
        if not targets:
            return out
        gl = ad.backward(loss, targets=targets)
        out.update(zip(active, gl[: len(active)], strict=False))
        if pos_active:
            g = np.zeros((len(idx), 2))
            g[np.searchsorted(idx, frames)] = to_numpy(gl[-1])
            out["gpos"] = g
        if active:
            out.update(self.model.preconditioner_sums(frames, aux))
        return out

    def _blocks(self, idx):
        """Cut the sorted batch ``idx`` at chunk boundaries; blocks and each rank's span."""
        chunk = np.searchsorted(self.chunk_starts, idx, side="right") - 1
        cuts = np.flatnonzero(np.diff(chunk)) + 1
        blocks = np.split(idx, cuts)
        first = np.searchsorted(chunk[np.r_[0, cuts]], self.rank_chunks)
        spans = [range(int(a), int(b)) for a, b in zip(first[:-1], first[1:], strict=True)]
        return blocks, spans

    def _regularization(self, params, active, fraction):
        """Regularisers (once per batch, identical on every rank): value, gradients."""
        t = {n: (ad.param(v) if n in active else ad.const(v)) for n, v in params.items()}
        reg = regularization(t, self.cfg["regularizers"], fraction)
        if reg is None:
            return 0.0, {}
        grads = ad.backward(reg, targets=[t[n] for n in active]) if active else []
        return float(reg.data), dict(zip(active, grads, strict=True))

    def _nan_causes(self) -> str:
        """Likely causes of a NaN/inf, for the DivergenceError message."""
        d, o = self.data, self.cfg["optimizer"]
        causes = []
        totals = np.asarray(d.frame_totals, np.float64)
        if not d.mask.any():
            causes.append("every detector pixel is masked")
        elif totals.size and not totals.any():
            causes.append("all frames are zero over the good pixels")
        elif totals.size and not totals.all():
            first = int(d.indices[np.flatnonzero(totals == 0)[0]])
            causes.append(
                f"{int((totals == 0).sum())} frame(s) without counts (first: frame {first})"
            )
        sat = self.cfg["data"]["mask_saturated_above"]
        if sat is not None and sat <= 0:
            causes.append(f"data.mask_saturated_above = {sat} masks every pixel")
        for n in [*self.names, "positions"]:
            lr = o[n]["lr"] if isinstance(o.get(n), dict) else None
            if lr is not None and (not np.isfinite(lr) or lr > 1e3):
                causes.append(f"optimizer.{n}.lr = {lr:g} is not a usable step")
        if not causes:
            causes.append(
                "too large a step: lower the learning rates (optimizer.<param>.lr) or use "
                "optimizer.step_rule: backtracking"
            )
        return "likely cause: " + "; ".join(causes)

    def _check_finite(self, what_loss, it):
        xp = self.backend.xp
        bad = None
        for k, v in self.params.items():
            if not bool(xp.isfinite(v).all()):
                bad = f"NaN/inf in parameter {k!r} at iteration {it + 1}"
                break
        if bad is None and not np.all(np.isfinite(self.positions)):
            bad = f"NaN/inf in parameter 'positions' at iteration {it + 1}"
        if bad is None and not np.isfinite(what_loss):
            bad = f"loss is NaN/inf at iteration {it + 1}"
        if bad is not None:
            raise DivergenceError(f"{bad}; {self._nan_causes()}")

    def _preconditioners(self, idx, sums):
        """The model's diagonal preconditioners for a batch of ``len(idx)`` frames, with the
        curvature factor of the data term: 2 for the amplitude loss (its Gauss-Newton
        curvature), 4 for the Poisson NLL (whose gradient is about twice as large near the
        solution and much larger where I << D)."""
        alpha = self.cfg["optimizer"]["precondition_alpha"]
        return self.model.preconditioners(
            self.params, sums, len(idx), self._curvature_factor(), alpha
        )

    def _curvature_factor(self) -> float:
        """Curvature of the data term (:meth:`_preconditioners`)."""
        return 2.0 if self.cfg["loss"]["type"] == "gaussian" else 4.0

    def _position_curvature(self):
        """Gauss-Newton curvature of the data term per unit shift (y, x), per position."""
        xp = self.backend.xp
        P = self.params["probe"]
        F = xp.abs(self.backend.fft2(P)) ** 2
        n = P.shape[-2:]
        fy = xp.asarray(fftfreq(n[0]))[:, None]
        fx = xp.asarray(fftfreq(n[1]))[None, :]
        cy = float(xp.sum(F * (2 * np.pi * fy) ** 2))
        cx = float(xp.sum(F * (2 * np.pi * fx) ** 2))
        return 2 * np.array([cy, cx]) * max(self._object_power(), 1e-6)

    def _object_power(self) -> float:
        """Mean ``|object|²`` of a complex transmission object (1 for other unknowns)."""
        if "object" not in self.params:
            return 1.0
        xp = self.backend.xp
        return float(xp.mean(xp.abs(self.params["object"]) ** 2))

    def run_iteration(self):
        o = self.cfg["optimizer"]
        it = self.iteration
        P = self.data.n_positions
        pos_active = self.correct_positions and self.pos_settings.active(it)
        self.opt.lr_scale = self._lr_scale(it)
        gpos = np.zeros_like(self.positions) if pos_active else None
        total = 0.0
        batches = self.model.batches(self.rng, P, o["batch_size"], o["shuffle"], self.chunk_starts)
        for idx in batches:
            total += self._batch_step(idx, it, pos_active, gpos)
        if pos_active:
            curv = self._position_curvature()
            step = -self.pos_settings.lr * gpos / curv[None, :]
            mx = o["max_position_step"]
            step = np.clip(step, -mx, mx)
            step -= step.mean(axis=0, keepdims=True)
            self.positions += step
            self._clamp_positions()
        self.iteration += 1
        return total / (P * max(self.n_good, 1.0))

    def _batch_step(self, idx, it, pos_active, gpos) -> float:
        """Gradients of one batch summed over its blocks (all ranks), one optimizer step.
        Returns the batch's loss less the Poisson offset."""
        fraction = len(idx) / self.data.n_positions
        active = [n for n in self.names if self.opt.active(n, it)]
        blocks, spans = self._blocks(idx)
        sums = self.comm.block_sum(
            len(blocks), lambda k: self._partial(blocks[k], idx, active, pos_active), spans
        )
        rval, rgrads = self._regularization(self.params, active, fraction)
        lval = sums["loss"] + rval
        if not np.isfinite(lval):
            self._check_finite(lval, it)
        if pos_active:
            gpos[idx] = sums["gpos"]
        if active:
            grads = {n: sums[n] + rgrads[n] if n in rgrads else sums[n] for n in active}
            pre = self._preconditioners(idx, sums)
            if getattr(self.opt, "rule", None) == "backtracking":

                def closure(params):
                    t = {n: ad.const(v) for n, v in params.items()}
                    s = self.comm.block_sum(
                        len(blocks),
                        lambda k: {"loss": float(self._block_loss(t, blocks[k], False)[0].data)},
                        spans,
                    )
                    return s["loss"] + self._regularization(params, [], fraction)[0]

                self.opt.step(self.params, grads, it, precond=pre, closure=closure, loss0=lval)
            else:
                self.opt.step(self.params, grads, it, precond=pre)
            if self.cfg["model"]["nonnegative"]:
                for n in sorted(set(active) & {"delta", "beta"}):
                    self.backend.xp.maximum(self.params[n], 0, out=self.params[n])
        return lval - sums["offset"]

    def _lr_scale(self, it: int) -> float:
        o = self.cfg["optimizer"]
        k0, n = o["lr_decay_start"], o["iterations"]
        if k0 is None or it < k0 or n - 1 <= k0:
            return 1.0
        return float(o["lr_decay_final"] ** ((it - k0) / (n - 1 - k0)))

    def _clamp_positions(self):
        n = np.asarray(self.data.frame_shape)
        hi = np.asarray(self.data.object_shape) - n - 1e-6
        self.positions = np.clip(self.positions, 0.0, hi)

    def run(self, iterations=None, resume=False) -> Result:
        cfg = self.cfg
        r = cfg["run"]
        n_iter = cfg["optimizer"]["iterations"] if iterations is None else iterations
        if resume and self.checkpoint_path is not None:
            stale = self._stale_reason(self.checkpoint_path)
            if stale:
                self.log(
                    f"reconstruct: checkpoint {self.checkpoint_path} was written for other "
                    f"inputs ({stale}); starting from scratch"
                )
            elif Path(self.checkpoint_path).exists():
                self.restore(self.checkpoint_path)
                self.log(
                    f"reconstruct: resumed from {self.checkpoint_path} at iteration "
                    f"{self.iteration}"
                )
            else:
                self.log(
                    f"reconstruct: no checkpoint at {self.checkpoint_path}; starting from scratch"
                )
        t_start = time.perf_counter()
        it_start = self.iteration
        first = self.history["loss"][0] if self.history["loss"] else None
        stopped = False
        while self.iteration < n_iter:
            t0 = time.perf_counter()
            it = self.iteration
            lval = self.run_iteration()
            dt = time.perf_counter() - t0
            self._check_finite(lval, it)
            if first is None:
                first = lval
            elif lval > r["divergence_factor"] * first:
                raise DivergenceError(
                    f"loss diverged at iteration {it + 1}: {lval:.4g} > "
                    f"{r['divergence_factor']:g} x first ({first:.4g}); lower the learning "
                    "rates (optimizer.<param>.lr)"
                )
            self.history["loss"].append(lval)
            self.history["time"].append(dt)
            le = r["log_every"]
            if le and (self.iteration % le == 0 or self.iteration == n_iter):
                act = [n for n in self.names if self.opt.active(n, it)]
                if self.correct_positions and self.pos_settings.active(it):
                    act.append("positions")
                done = self.iteration - it_start
                clock = eta(done, n_iter - it_start, time.perf_counter() - t_start)
                self.log(
                    f"iter {self.iteration:5d}/{n_iter}  loss {lval:.6e}  "
                    f"{1.0 / dt:7.2f} it/s  {clock}  [{', '.join(act)}]"
                )
            ce = r["checkpoint_every"]
            if self.checkpoint_path is not None and ce and self.iteration % ce == 0:
                self.save(self.checkpoint_path)
            if (
                r["stop_after"] is not None
                and self.iteration >= r["stop_after"]
                and self.iteration < n_iter
            ):
                stopped = True
                break
        wall = time.perf_counter() - t_start
        return Result(
            params={k: to_numpy(v) for k, v in self.params.items()},
            positions=self.positions.copy(),
            history=self.history,
            iteration=self.iteration,
            stopped=stopped,
            timings={"wall_s": wall, "total_iteration_s": float(np.sum(self.history["time"]))},
        )
