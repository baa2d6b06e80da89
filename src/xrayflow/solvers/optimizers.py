"""Optimizers on plain ``xp`` arrays (NumPy or CuPy), with per-parameter settings.

Each parameter has a name, a learning rate, an update schedule (``start`` / ``stop``
iteration) and an optional preconditioner (an array broadcastable to the gradient, e.g. the
illumination of the object; the gradient is divided by it). Gradients follow the PyTorch
convention (``g = dL/dRe + i dL/dIm``), so ``p -= lr * g`` descends for complex ``p``.

State (moments, step counts, previous iterates) is exported by :meth:`state_dict` as a flat
dict of arrays and scalars, which :mod:`xrayflow.io.checkpoint` stores, so a
resumed run continues bit-for-bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xrayflow.backend import array_module, to_numpy
from xrayflow.errors import ConfigError


@dataclass
class ParamSettings:
    """How one parameter is updated."""

    lr: float = 0.1
    start: int = 0
    stop: int | None = None
    precondition: bool = False

    def active(self, iteration: int) -> bool:
        """True when the parameter is updated at ``iteration`` (0-based)."""
        if iteration < self.start:
            return False
        return self.stop is None or iteration < self.stop


def _vdot_real(a, b) -> float:
    """Re <a, b> summed over all elements (works for real and complex arrays)."""
    xp = array_module(a)
    return float(xp.real(xp.vdot(a.ravel(), b.ravel())))


class Optimizer:
    """Base class: ``step(params, grads, iteration, precond=None, closure=None)`` in place."""

    name = "base"

    def __init__(self, settings: dict[str, ParamSettings]):
        self.settings = settings
        self.state: dict[str, dict] = {k: {} for k in settings}
        #: multiplier of every learning rate (a schedule sets it per iteration)
        self.lr_scale = 1.0

    def lr(self, name: str) -> float:
        return self.settings[name].lr * self.lr_scale

    def active(self, name: str, iteration: int) -> bool:
        s = self.settings.get(name)
        return s is not None and s.active(iteration)

    def _direction(self, name, g, precond):
        if precond is not None and name in precond and self.settings[name].precondition:
            return g / precond[name]
        return g

    def step(self, params: dict, grads: dict, iteration: int, precond=None, closure=None):
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Flat dict ``"<param>/<key>" -> numpy array or scalar``."""
        out = {}
        for pname, st in self.state.items():
            for k, v in st.items():
                out[f"{pname}/{k}"] = to_numpy(v) if hasattr(v, "shape") else v
        return out

    def load_state_dict(self, flat: dict, xp=np) -> None:
        self.state = {k: {} for k in self.settings}
        for key, v in flat.items():
            pname, k = key.split("/", 1)
            self.state.setdefault(pname, {})
            if isinstance(v, np.ndarray) and v.ndim > 0:
                v = xp.asarray(v)
            elif isinstance(v, np.ndarray | np.generic):
                v = v.item()
            self.state[pname][k] = v


class Adam(Optimizer):
    """Adam (Kingma & Ba) with a real second moment ``|g|^2`` for complex parameters."""

    name = "adam"

    def __init__(self, settings, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        super().__init__(settings)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def step(self, params, grads, iteration, precond=None, closure=None):
        for name, g in grads.items():
            if g is None or not self.active(name, iteration):
                continue
            xp = array_module(g)
            g = self._direction(name, g, precond)
            st = self.state[name]
            if "m" not in st:
                st["m"] = xp.zeros_like(g)
                st["v"] = xp.zeros(g.shape, dtype=xp.real(g).dtype)
                st["t"] = 0
            st["t"] += 1
            t = st["t"]
            st["m"] *= self.beta1
            st["m"] += (1 - self.beta1) * g
            st["v"] *= self.beta2
            st["v"] += (1 - self.beta2) * (g.real**2 + g.imag**2 if xp.iscomplexobj(g) else g * g)
            # bias corrections: the first one folded into the step size (one scalar division)
            c1, c2 = 1 - self.beta1**t, 1 - self.beta2**t
            upd = (self.lr(name) / c1) * st["m"] / (xp.sqrt(st["v"] / c2) + self.eps)
            params[name] -= upd.astype(params[name].dtype, copy=False)
        return None


class GradientDescent(Optimizer):
    """Gradient descent with a step-size rule.

    ``rule``:
      - ``fixed``: ``p -= lr * d`` (``d`` the preconditioned gradient).
      - ``bb``: Barzilai-Borwein (BB1, per parameter, from the previous iterate and
        gradient), clipped to ``[lr * bb_min, lr * bb_max]``; the first step uses ``lr``.
      - ``backtracking``: Armijo line search on the current minibatch; needs ``closure``
        (``closure(params) -> loss``) and ``loss0``; halves the step (from ``lr``, grown by
        ``grow`` after each accepted step) until
        ``L(p - a d) <= L(p) - c a Re<g, d>``.
    """

    name = "sgd"
    RULES = ("fixed", "bb", "backtracking")

    def __init__(
        self,
        settings,
        rule: str = "fixed",
        armijo_c: float = 1e-4,
        shrink: float = 0.5,
        grow: float = 1.5,
        max_backtracks: int = 8,
        bb_min: float = 0.01,
        bb_max: float = 100.0,
    ):
        super().__init__(settings)
        if rule not in self.RULES:
            raise ConfigError(f"optimizer.step_rule: must be one of {self.RULES}, got {rule!r}")
        self.rule = rule
        self.c, self.shrink, self.grow = armijo_c, shrink, grow
        self.max_backtracks = max_backtracks
        self.bb_min, self.bb_max = bb_min, bb_max

    def step(self, params, grads, iteration, precond=None, closure=None, loss0=None):
        dirs = {}
        for name, g in grads.items():
            if g is None or not self.active(name, iteration):
                continue
            dirs[name] = self._direction(name, g, precond)
        if not dirs:
            return None
        if self.rule == "fixed":
            for name, d in dirs.items():
                params[name] -= (self.lr(name) * d).astype(params[name].dtype, copy=False)
            return None
        if self.rule == "bb":
            for name, d in dirs.items():
                st = self.state[name]
                lr = self.lr(name)
                a = lr
                if "x_prev" in st:
                    s = params[name] - st["x_prev"]
                    y = d - st["d_prev"]
                    sy = _vdot_real(s, y)
                    ss = _vdot_real(s, s)
                    if sy > 0 and ss > 0:
                        a = float(np.clip(ss / sy, lr * self.bb_min, lr * self.bb_max))
                st["x_prev"] = params[name].copy()
                st["d_prev"] = d.copy()
                params[name] -= (a * d).astype(params[name].dtype, copy=False)
            return None
        # backtracking (Armijo) on the shared step scale, one search for all parameters
        if closure is None or loss0 is None:
            raise ValueError("backtracking needs closure and loss0")
        scale = float(self.state.setdefault("_ls", {}).get("scale", 1.0))
        slope = sum(_vdot_real(grads[n], d) * self.lr(n) for n, d in dirs.items())
        saved = {n: params[n].copy() for n in dirs}
        loss = None
        for _ in range(self.max_backtracks + 1):
            for n, d in dirs.items():
                params[n][...] = saved[n] - (scale * self.lr(n) * d).astype(
                    saved[n].dtype, copy=False
                )
            loss = closure(params)
            if np.isfinite(loss) and loss <= loss0 - self.c * scale * slope:
                break
            scale *= self.shrink
        else:
            for n in dirs:
                params[n][...] = saved[n]
            loss = loss0
        self.state["_ls"]["scale"] = min(scale * self.grow, 1.0e3)
        return loss


def make_optimizer(method: str, settings: dict[str, ParamSettings], **kw) -> Optimizer:
    """``adam`` | ``sgd`` (with ``rule`` fixed | bb | backtracking)."""
    if method == "adam":
        return Adam(settings, **{k: v for k, v in kw.items() if k in ("beta1", "beta2", "eps")})
    if method in ("sgd", "gd"):
        return GradientDescent(
            settings,
            **{k: v for k, v in kw.items() if k != "beta1" and k != "beta2" and k != "eps"},
        )
    raise ConfigError(f"optimizer.method: must be 'adam' or 'sgd', got {method!r}")


StepClosure = Callable[[dict], float]
