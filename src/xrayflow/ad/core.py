"""Reverse-mode automatic differentiation over ``xp`` arrays (NumPy or CuPy).

Complex gradients follow PyTorch's convention: for a real loss L and a complex
z = x + iy, the gradient is ``dL/dx + i dL/dy`` (= 2 dL/d conj(z)), so that
``z <- z - alpha * g`` descends. Each primitive stores a vector-Jacobian product
(VJP) ``g_out -> g_in`` written in that convention: for a holomorphic f the VJP is
``g * conj(f'(x))``.

The engine is generic: a model is an ordinary Python function of :class:`Tensor`
objects; :func:`backward` sorts the recorded graph topologically and runs the VJPs in
reverse. Two rules are applied centrally when a gradient reaches an input:

* broadcasting: the gradient is sum-reduced to the input's shape;
* dtype: the gradient of a real input is the real part of the complex gradient
  (that is exactly dL/dx), cast to the input's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from xrayflow.backend import array_module, to_numpy
from xrayflow.operators.base import LinearOperator, unbroadcast

__all__ = [
    "Tensor",
    "param",
    "const",
    "as_tensor",
    "backward",
    "value_and_grad",
    "grad",
    "linear",
    "unbroadcast",
]


class Tensor:
    """An ``xp`` array plus the recorded operation that produced it.

    Attributes:
        data: the NumPy/CuPy array.
        requires_grad: True for parameters and anything computed from them.
        grad: filled by :meth:`backward` on leaf tensors with ``requires_grad``.
    """

    __slots__ = ("data", "requires_grad", "grad", "_parents", "_op", "__weakref__")
    # Make ``ndarray <op> Tensor`` defer to the Tensor's reflected operator.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data, requires_grad: bool = False, _parents=(), _op: str = ""):
        if isinstance(data, Tensor):
            data = data.data
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            data = np.asarray(data)
        self.data = data
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self._parents = _parents  # tuple of (Tensor, vjp)
        self._op = _op

    # -- array-like properties ------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def xp(self):
        return array_module(self.data)

    @property
    def is_leaf(self) -> bool:
        return not self._parents

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        rg = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._op}" if self._op else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{rg}{op})"

    def numpy(self) -> np.ndarray:
        return to_numpy(self.data)

    def item(self):
        return self.data.item()

    def __float__(self) -> float:
        return float(self.data)

    def detach(self) -> Tensor:
        return Tensor(self.data)

    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate ``.grad`` on every leaf with ``requires_grad`` (like torch)."""
        backward(self, grad, retain_graph=retain_graph)

    # -- operators (implemented in ops.py, attached at import) -------------------------
    # (see xrayflow.ad.ops: __add__, __mul__, ..., sum, mean, reshape, conj, ...)


def param(arr, copy: bool = False) -> Tensor:
    """A leaf tensor that requires a gradient."""
    if isinstance(arr, Tensor):
        arr = arr.data
    if copy:
        arr = array_module(arr).array(arr, copy=True)
    return Tensor(arr, requires_grad=True)


def const(arr) -> Tensor:
    """A leaf tensor without gradient."""
    if isinstance(arr, Tensor):
        arr = arr.data
    return Tensor(arr, requires_grad=False)


def as_tensor(x) -> Tensor:
    """``x`` itself if it is a Tensor, else a constant Tensor wrapping it."""
    return x if isinstance(x, Tensor) else Tensor(x)


def make_node(data, parents: Sequence[tuple[Any, Callable]], op: str) -> Tensor:
    """Create the result of an operation; keep only parents that need a gradient."""
    ps = tuple((p, f) for p, f in parents if isinstance(p, Tensor) and p.requires_grad)
    return Tensor(data, requires_grad=bool(ps), _parents=ps, _op=op)


def linear(op: LinearOperator, x, name: str | None = None) -> Tensor:
    """Node ``op.fwd(x)`` of a linear operator (:mod:`xrayflow.operators`); its VJP is
    ``op.adj``: for ``y = A x`` and a real loss, the gradient in PyTorch's convention is
    ``Aᴴ g`` (``2 ∂L/∂conj(x) = Aᴴ · 2 ∂L/∂conj(y)``; a real ``x`` takes its real part)."""
    X = x.data if isinstance(x, Tensor) else x
    return make_node(op.fwd(X), ((x, op.adj),), name or type(op).__name__)


def _fit(g, p: Tensor):
    """Bring a gradient contribution to the shape and dtype of tensor ``p``."""
    xp = array_module(g) if hasattr(g, "shape") else array_module(p.data)
    if not hasattr(g, "shape"):
        g = xp.asarray(g)
    if tuple(g.shape) != p.shape:
        g = unbroadcast(g, p.shape)
    if g.dtype != p.dtype:
        if xp.iscomplexobj(g) and not xp.iscomplexobj(p.data):
            g = g.real
        g = g.astype(p.dtype, copy=False)
    return g


def _toposort(root: Tensor) -> list[Tensor]:
    """Nodes reachable from ``root`` that require a gradient, parents before children."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p, _ in node._parents:
            if id(p) not in seen:
                stack.append((p, False))
    return order


def backward(
    root: Tensor,
    grad=None,
    targets: Sequence[Tensor] | None = None,
    retain_graph: bool = False,
):
    """Run reverse mode from ``root``.

    Args:
        root: the output tensor (a real scalar unless ``grad`` is given).
        grad: upstream gradient (defaults to 1 for a scalar root).
        targets: if given, return their gradients (list, zeros when unreachable) and
            do not touch ``.grad``; otherwise accumulate ``.grad`` on every leaf that
            requires a gradient.
        retain_graph: keep the recorded VJPs (and the arrays they hold). By default
            each node releases them once processed, so memory falls during the pass.
    """
    xp = array_module(root.data)
    if grad is None:
        if root.size != 1:
            raise ValueError("backward() without grad needs a scalar output")
        if xp.iscomplexobj(root.data):
            raise TypeError("the output of a differentiated function must be real")
        grad = xp.ones(root.shape, dtype=root.dtype)
    grads: dict[int, Any] = {id(root): _fit(grad, root)}
    target_ids = None if targets is None else {id(t) for t in targets}
    results: dict[int, Any] = {}
    if root.requires_grad:
        order = _toposort(root)
    else:
        order = []
    # pop nodes as they are processed so that, once its VJPs have run and released
    # their arrays, an intermediate node (and its data) can be freed during the pass
    while order:
        node = order.pop()
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if target_ids is not None and id(node) in target_ids:
            results[id(node)] = g
        if not node._parents:
            if target_ids is None and node.requires_grad:
                node.grad = g if node.grad is None else node.grad + g
            continue
        parents = node._parents
        if not retain_graph:
            node._parents = ()
        for p, vjp in parents:
            c = vjp(g)
            if c is None:
                continue
            c = _fit(c, p)
            k = id(p)
            if k in grads:
                grads[k] = grads[k] + c
            else:
                grads[k] = c
        del g, parents, node, c
    if targets is None:
        return None
    out = []
    for t in targets:
        g = results.get(id(t))
        if g is None:
            g = array_module(t.data).zeros(t.shape, dtype=t.dtype)
        out.append(g)
    return out


def value_and_grad(fn: Callable, argnums: int | Sequence[int] = 0, has_aux: bool = False):
    """Return ``f(*args) -> (value, grads)`` for a function returning a real scalar Tensor.

    The arguments selected by ``argnums`` (arrays or Tensors) become fresh leaf
    parameters; the other arguments are passed unchanged. ``grads`` is one ``xp``
    array (``argnums`` an int) or a tuple of arrays, each with the shape and dtype of
    its argument (PyTorch convention for complex arguments). With ``has_aux`` the
    function returns ``(loss, aux)`` and the result is ``((value, aux), grads)``.
    """
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    def wrapped(*args, **kwargs):
        args = list(args)
        targets = []
        for i in nums:
            a = args[i]
            t = Tensor(a.data if isinstance(a, Tensor) else a, requires_grad=True)
            args[i] = t
            targets.append(t)
        out = fn(*args, **kwargs)
        aux = None
        if has_aux:
            out, aux = out
        if not isinstance(out, Tensor):
            raise TypeError(f"the differentiated function must return a Tensor, got {type(out)}")
        if out.size != 1:
            raise ValueError(f"the differentiated function must return a scalar, got {out.shape}")
        if array_module(out.data).iscomplexobj(out.data):
            raise TypeError("the differentiated function must return a real scalar")
        gs = backward(out, targets=targets)
        value = float(out.data.reshape(()))
        g = gs[0] if single else tuple(gs)
        return ((value, aux), g) if has_aux else (value, g)

    return wrapped


def grad(fn: Callable, argnums: int | Sequence[int] = 0):
    """Like :func:`value_and_grad` but return only the gradients."""
    vg = value_and_grad(fn, argnums)

    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return wrapped
