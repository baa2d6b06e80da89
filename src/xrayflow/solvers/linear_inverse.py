"""The linear-inverse solver: measurements ``y ≈ A x`` of unknowns that enter linearly (an
image and, e.g., background amplitudes), fitted by AD gradients with priors, or by CGLS.

The model comes from the modality (:attr:`xrayflow.modalities.Modality.build_model`) and
holds the measurement rows (e.g. illumination patterns) of this rank. It offers:

* ``backend``; ``n_rows`` (rows in all, K); ``rows`` (the global rows this rank holds:
  those of its blocks, :func:`local_rows`); ``image`` (the name of the image unknown,
  ``(E, ny, nx)``, to which the priors apply); ``prior_image`` (a measured ``(ny, nx)``
  image whose gradients the image's follow, or None); ``lower_bounds`` (``{name: bound}``
  of the unknowns held at ``x >= bound``);
* ``initial_params() -> {name: array}`` (the start, in the model's units);
* ``predict(params, rows) -> Tensor (len(rows), L)``: ``A x`` for ``rows`` (global
  indices held by this rank), linear in ``params`` (Tensors by name);
* ``block_loss(params, rows) -> Tensor``: the data term of ``rows`` (Poisson or Gaussian);
* ``target(rows)`` and ``whitening(rows)`` (arrays broadcasting against the prediction):
  the Gaussian data term is ``½‖whitening·(predict − target)‖²`` (CGLS fits that).

The objective is the data term summed over all rows plus the priors on the image ``x``
(E maps): ``tv.weight · Σ_e TV(x_e)`` (isotropic total variation,
:func:`xrayflow.solvers.regularizers.total_variation`), ``l1.weight · Σ |x|`` (smooth L1,
:func:`~xrayflow.solvers.regularizers.l1`: with positivity, the smallest maps that explain
the data, which also settles how much of a uniform signal is background) and the
transmission-gradient prior ``gradient_prior.weight · Σ_e Σ_r |∇x_e − g_e ∇T|`` (smooth
L1 of the gradient difference; ``g_e`` fitted by least squares to the current map at every
evaluation, or fixed by ``gradient_prior.scale``).

Algorithms (``settings["algorithm"]``; ``auto``: CGLS for an unregularised Gaussian fit
without positivity, else L-BFGS-B, or Adam with minibatches):

* ``lbfgs``: limited-memory quasi-Newton with bounds (L-BFGS-B, Byrd, Lu, Nocedal & Zhu,
  SIAM J. Sci. Comput. 16, 1190 (1995), :func:`scipy.optimize.minimize`) on the whole
  objective, the bounds being positivity and the model's lower bounds; one iteration is one
  quasi-Newton step (a few evaluations of value and gradient, by :mod:`xrayflow.ad`).
* ``adam``: one iteration is one pass over the rows in minibatches (``batch_size``, shuffled
  from ``seed``); per batch the data term plus the priors times the batch's share of the
  rows, an Adam step (:mod:`xrayflow.solvers.optimizers`) with the step sizes ``lr``, then
  the projections onto the bounds.
* ``cgls``: conjugate gradients on the normal equations of the whitened least-squares
  problem (Hestenes–Stiefel; Björck, Numerical methods for least squares problems, 1996,
  §7.4) from ``x = 0``, through the model's prediction and its adjoint (the VJP): the
  unconstrained least-squares solution (of minimum norm when it is not unique), stopped when
  ``‖Aᵀr‖ <= cgls_tolerance · ‖Aᵀy‖`` (whitened) or after ``iterations``.

MPI: the rows are cut into fixed blocks of ``block_rows`` (:func:`block_ranges`), ranks own
contiguous runs of blocks; every sum over rows (data term, gradients, CGLS inner products
and ``Aᵀr``) is a :meth:`xrayflow.parallel.Comm.block_sum` over the blocks, so every rank
takes the same steps and the result is bit-identical for any number of ranks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, minimize

from xrayflow import ad
from xrayflow.backend import to_numpy
from xrayflow.errors import ConfigError
from xrayflow.parallel import Comm, block_ranges, get_comm
from xrayflow.solvers.gradient import DivergenceError
from xrayflow.solvers.optimizers import Adam, ParamSettings
from xrayflow.solvers.regularizers import l1, total_variation

__all__ = ["ALGORITHMS", "Result", "algorithm", "local_rows", "solve"]

#: ``settings["algorithm"]`` values.
ALGORITHMS = ("auto", "lbfgs", "adam", "cgls")


@dataclass
class Result:
    """``params``: NumPy arrays by name (model units); ``loss``: objective per iteration
    (lbfgs: after each step; adam: summed over the iteration's batches; cgls: ``½‖r‖²``);
    ``algorithm`` run; ``iterations`` run; ``time_s`` wall time."""

    params: dict
    loss: np.ndarray
    algorithm: str
    iterations: int
    time_s: float


def local_rows(n_rows: int, block_rows: int, comm: Comm | None = None) -> np.ndarray:
    """The rows of this rank: those of its contiguous run of fixed blocks (int64)."""
    comm = comm or get_comm()
    blocks = block_ranges(n_rows, block_rows)
    mine = comm.partition(len(blocks))
    if not len(mine):
        return np.zeros(0, np.int64)
    return np.arange(blocks[mine.start].start, blocks[mine.stop - 1].stop, dtype=np.int64)


def algorithm(settings: dict) -> str:
    """The algorithm ``settings`` ask for (``auto`` resolved); ConfigError naming the key
    when CGLS is asked for a problem it does not solve."""
    priors = ("tv", "l1", "gradient_prior")
    plain = (
        settings["loss"] == "gaussian"
        and not settings["positivity"]
        and all(settings[p]["weight"] == 0 for p in priors)
    )
    if settings["algorithm"] == "auto":
        if plain:
            return "cgls"
        return "lbfgs" if settings["batch_size"] is None else "adam"
    if settings["algorithm"] == "cgls" and not plain:
        raise ConfigError(
            "linear_inverse.algorithm: cgls solves the unregularised gaussian least-squares "
            "problem; set loss: gaussian, positivity: false and the tv, l1 and gradient_prior "
            "weights 0, or use algorithm lbfgs or adam"
        )
    return settings["algorithm"]


def solve(model, settings: dict, comm: Comm | None = None, log=None, log_every: int = 0) -> Result:
    """Fit ``model`` (see the module docstring) with the ``settings`` (the reconstruct
    section of the modality: ``algorithm``, ``loss``, ``iterations``, ``batch_size``,
    ``lr`` (by unknown), ``positivity``, ``tv``, ``l1``, ``gradient_prior``,
    ``cgls_tolerance``, ``block_rows``, ``seed``); ``log(line)`` gets a progress line every
    ``log_every`` iterations (0: none). Collective over ``comm``: call it on every rank."""
    comm = comm or get_comm()
    solver = _Solver(model, settings, comm, log if log_every else None, log_every)
    t0 = time.perf_counter()
    kind = algorithm(settings)
    loss = getattr(solver, kind)()
    params = {k: to_numpy(v) for k, v in solver.params.items()}
    return Result(params, np.asarray(loss, np.float64), kind, len(loss), time.perf_counter() - t0)


class _Solver:
    def __init__(self, model, settings, comm, log, log_every):
        self.model, self.s, self.comm = model, settings, comm
        self.log, self.log_every = log, log_every
        self.xp = model.backend.xp
        self.blocks = block_ranges(model.n_rows, settings["block_rows"])
        self.params = dict(model.initial_params())
        self.bounds = dict(model.lower_bounds)
        if not settings["positivity"]:
            self.bounds.pop(model.image, None)

    # -- sums over the blocks of rows -----------------------------------------------------
    def _block_sum(self, rows, partial):
        """``Σ_k partial(k, rows ∩ block k)`` over all blocks (every rank, fixed order)."""
        cut = [rows[(rows >= b.start) & (rows < b.stop)] for b in self.blocks]
        return self.comm.block_sum(len(cut), lambda k: partial(k, cut[k]))

    def _objective(self, rows):
        """Data term of ``rows`` plus the priors times their share of all rows: the value
        and the gradients by name (the same on every rank)."""

        def partial(_k, r):
            t = {n: ad.param(v) for n, v in self.params.items()}
            loss = self.model.block_loss(t, r)
            grads = ad.backward(loss, targets=list(t.values()))
            return {"loss": float(loss.data), **dict(zip(t, grads, strict=True))}

        sums = self._block_sum(rows, partial)
        value = sums.pop("loss")
        priors = self._priors(len(rows) / self.model.n_rows)
        if priors is not None:
            pv, pg = priors
            value += pv
            sums[self.model.image] = sums[self.model.image] + pg
        if not np.isfinite(value):
            raise DivergenceError(
                "the objective is NaN/inf; lower the prior weights or (adam) the step sizes lr"
            )
        return value, sums

    # -- priors -----------------------------------------------------------------------------
    def _priors(self, fraction):
        """Value and image gradient of the priors times ``fraction``, or None (none set)."""
        s, T = self.s, self.model.prior_image
        terms = [(total_variation, s["tv"]), (l1, s["l1"])]
        if T is not None:
            terms.append((lambda x, eps: self._gradient_prior(x, T, eps), s["gradient_prior"]))
        terms = [(f, p) for f, p in terms if p["weight"] > 0]
        if not terms:
            return None

        def objective(x):
            total = 0.0
            for f, p in terms:
                total = f(x, p["eps"]) * p["weight"] + total
            return total * fraction

        return ad.value_and_grad(objective)(self.params[self.model.image])

    def _gradient_prior(self, x, T, eps):
        """``Σ sqrt(|∇x_e − g_e ∇T|² + eps)`` (forward differences, as the TV)."""
        xp = self.xp
        ty = T[1:, :-1] - T[:-1, :-1]
        tx = T[:-1, 1:] - T[:-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        g = self.s["gradient_prior"]["scale"]
        if g is None:  # least squares of ∇x_e against ∇T, held fixed in the step
            num = xp.sum(dy.data * ty + dx.data * tx, axis=(-2, -1), keepdims=True)
            g = num / max(float(xp.sum(ty * ty + tx * tx)), 1e-30)
        return ad.sum(ad.sqrt(ad.abs2(dy - g * ty) + ad.abs2(dx - g * tx) + eps))

    # -- L-BFGS-B -----------------------------------------------------------------------
    def lbfgs(self) -> list:
        xp, dt = self.xp, self.model.backend.real_dtype
        rows = np.arange(self.model.n_rows)
        names = list(self.params)
        shapes = [self.params[n].shape for n in names]
        cuts = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

        def unpack(v):
            parts = np.split(v, cuts)
            return {
                n: xp.asarray(p.reshape(s), dtype=dt)
                for n, p, s in zip(names, parts, shapes, strict=True)
            }

        def pack(tree):
            return np.concatenate([to_numpy(tree[n]).ravel().astype(np.float64) for n in names])

        lower = pack(
            {n: xp.full(v.shape, self.bounds.get(n, -np.inf)) for n, v in self.params.items()}
        )

        def value_and_grad(v):
            self.params = unpack(v)
            value, grads = self._objective(rows)
            return value, pack(grads)

        history = []

        def step(intermediate_result):
            history.append(float(intermediate_result.fun))
            self._progress(len(history) - 1, history[-1])

        res = minimize(
            value_and_grad,
            np.maximum(pack(self.params), lower),
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(lower, np.inf),
            callback=step,
            options={"maxiter": int(self.s["iterations"])},
        )
        self.params = unpack(res.x)
        return history

    # -- Adam ---------------------------------------------------------------------------
    def adam(self) -> list:
        s, xp = self.s, self.xp
        K = self.model.n_rows
        opt = Adam({n: ParamSettings(lr=float(s["lr"][n])) for n in self.params})
        rng = np.random.default_rng(s["seed"])
        batch = K if s["batch_size"] is None else int(s["batch_size"])
        history, step = [], 0
        for it in range(int(s["iterations"])):
            order = rng.permutation(K)
            total = 0.0
            for start in range(0, K, batch):
                value, grads = self._objective(np.sort(order[start : start + batch]))
                total += value
                opt.step(self.params, grads, step)
                step += 1
                for n, lo in self.bounds.items():
                    xp.maximum(self.params[n], lo, out=self.params[n])
            history.append(total)
            self._progress(it, total)
        return history

    # -- CGLS ---------------------------------------------------------------------------
    def _fwd(self, p, rows):
        """Whitened ``A p`` of ``rows``."""
        pred = self.model.predict({n: ad.const(v) for n, v in p.items()}, rows).data
        return pred * self.model.whitening(rows)

    def _adj(self, r, rows):
        """``{name: Aᵀ(whitening · r)}`` of ``rows`` (the VJP of the linear prediction)."""
        t = {n: ad.param(self.xp.zeros_like(v)) for n, v in self.params.items()}
        pred = self.model.predict(t, rows)
        g = ad.backward(pred, grad=r * self.model.whitening(rows), targets=list(t.values()))
        return dict(zip(t, g, strict=True))

    def cgls(self) -> list:
        """Conjugate gradients on ``AᵀA x = Aᵀy`` (whitened), from ``x = 0``."""
        xp, rows = self.xp, np.asarray(self.model.rows, np.int64)
        x = {n: xp.zeros_like(v) for n, v in self.params.items()}
        r, q = {}, {}  # residuals and A p of this rank's blocks, by block

        def residual(k, b, alpha=0.0):
            r[k] = self.model.target(b) * self.model.whitening(b) if k not in r else r[k]
            if alpha:
                r[k] = r[k] - alpha * q[k]
            return {"rr": _dot(r[k], r[k]), **self._adj(r[k], b)}

        s = self._block_sum(rows, residual)
        history = [0.5 * s.pop("rr")]
        p = {n: v.copy() for n, v in s.items()}
        gamma = _norm2(s)
        stop = float(self.s["cgls_tolerance"]) ** 2 * gamma
        for it in range(int(self.s["iterations"])):
            if gamma <= stop or gamma == 0:
                break

            def project(k, b, p=p):
                q[k] = self._fwd(p, b)
                return {"qq": _dot(q[k], q[k])}

            alpha = gamma / self._block_sum(rows, project)["qq"]
            for n in x:
                x[n] += alpha * p[n]
            s = self._block_sum(rows, lambda k, b, a=alpha: residual(k, b, a))
            history.append(0.5 * s.pop("rr"))
            gamma, gamma_old = _norm2(s), gamma
            for n in p:
                p[n] = s[n] + (gamma / gamma_old) * p[n]
            self._progress(it, history[-1])
        self.params = x
        return history[1:]

    def _progress(self, it, value):
        if self.log is not None and (it + 1) % self.log_every == 0:
            self.log(f"iter {it + 1:5d}/{self.s['iterations']}  loss {value:.6e}")


def _dot(a, b) -> float:
    return float((a * b).sum())


def _norm2(tree: dict) -> float:
    return sum(_dot(v, v) for v in tree.values())
