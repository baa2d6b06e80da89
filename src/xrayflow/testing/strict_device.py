"""A strict stand-in for a GPU array module (CuPy), for CI machines without a GPU.

This module is an ``xp`` namespace (``get_backend("strict")`` returns a
:class:`~xrayflow.backend.Backend` with it) whose arrays, :class:`DeviceArray`, hold a NumPy
buffer but behave like ``cupy.ndarray`` where host/device mistakes show:

* no implicit conversion to NumPy: ``np.asarray(a)`` raises TypeError (as CuPy's
  ``__array__`` does); NumPy functions (``np.sum(a)``, ``np.exp(a)``, ...) raise TypeError
  instead of dispatching, so code must call ``xp.*``;
* mixing a host ``numpy.ndarray`` with a device array (``a + host``, ``xp.where(m, a, host)``)
  raises TypeError, as CuPy does (``Unsupported type <class 'numpy.ndarray'>``); Python and
  NumPy scalars are accepted;
* transfers are explicit and counted in :data:`counts`: ``to_device`` (``xp.asarray`` /
  ``xp.array`` of host data, ``a.set(h)``, a host index array or value in ``a[i] = v``),
  ``to_host`` (``xp.asnumpy``, ``a.get()``, ``a.item()``, ``a.tolist()`` and the implicit
  synchronising ones CuPy allows on one element: ``float(a)``, ``int(a)``, ``bool(a)``);
  ``iterations`` counts Python loops over the elements of a 1-D device array (each
  element a host round trip on a GPU);
* reductions return 0-d device arrays, not NumPy scalars; ``xp.fft`` does not exist (FFTs
  go through :mod:`xrayflow.backend`, which runs NumPy's kernels on the buffer).

:data:`CUPYX_MODULES` stand in for the ``cupyx`` functions the GPU branches use
(``scatter_add``, sparse matrices); tests put them in ``sys.modules`` for their duration.
Arithmetic is NumPy's, so results equal the CPU backend's to rounding (the GPU branches may
order sums differently from the CPU ones).
"""

from __future__ import annotations

import operator
import sys
from collections import Counter
from types import ModuleType, SimpleNamespace

import numpy as np

#: Transfers and host loops since the last :func:`reset_counts`.
counts: Counter = Counter()

_SCALARS = (bool, int, float, complex, np.generic)
# numpy.ndarray attributes that expose host memory or iterate on the host
_HOST_ONLY = frozenset({"ctypes", "flat", "tobytes", "tofile", "dump", "dumps"})


def reset_counts() -> Counter:
    """Zero :data:`counts`; returns the counts before."""
    before = Counter(counts)
    counts.clear()
    return before


def _host_array_error(where: str) -> TypeError:
    return TypeError(
        f"Unsupported type {np.ndarray} in {where}: a host NumPy array mixed with device "
        "arrays (move it with xp.asarray first)"
    )


def _unwrap(x, where: str):
    """The buffer(s) of device arrays in ``x`` (lists/tuples walked); host arrays refused."""
    if isinstance(x, DeviceArray):
        return x._buf
    if isinstance(x, np.ndarray):
        raise _host_array_error(where)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where) for v in x)
    return x


def _wrap(x):
    """Results on the device: arrays and NumPy scalars become :class:`DeviceArray`."""
    if isinstance(x, np.ndarray):
        return DeviceArray(x)
    if isinstance(x, np.generic):
        return DeviceArray(np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _operand(x):
    """Operand of a binary operator: a buffer, a scalar, or NotImplemented."""
    if isinstance(x, DeviceArray):
        return x._buf
    if isinstance(x, np.ndarray):
        raise _host_array_error("a binary operation")
    if isinstance(x, _SCALARS):
        return x
    return NotImplemented


def _index(idx):
    """An index on the device: host index arrays are allowed (as CuPy does) but counted."""
    if isinstance(idx, tuple):
        return tuple(_index(i) for i in idx)
    if isinstance(idx, DeviceArray):
        return idx._buf
    if isinstance(idx, (np.ndarray, list)):
        counts["to_device"] += 1
    return idx


def _binary(op, reflected: bool = False):
    def method(self, other):
        o = _operand(other)
        if o is NotImplemented:
            return NotImplemented
        return _wrap(op(o, self._buf) if reflected else op(self._buf, o))

    return method


def _inplace(op):
    def method(self, other):
        o = _operand(other)
        if o is NotImplemented:
            return NotImplemented
        op(self._buf, o)
        return self

    return method


def _to_host(convert):
    def method(self):
        counts["to_host"] += 1
        return convert(self._buf)

    return method


class DeviceArray:
    """An array "on the device": a NumPy buffer behind CuPy's host/device rules."""

    __slots__ = ("_buf",)
    __array_ufunc__ = None  # np.<ufunc>(a) raises; ndarray <op> a defers to a's operators
    __hash__ = None
    _xrayflow_standin = True  # recognised by xrayflow.backend

    def __init__(self, buf: np.ndarray):
        self._buf = buf

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
            "construct a NumPy array explicitly."
        )

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(
            f"numpy.{func.__name__} called on a device array: use xp.{func.__name__} "
            "(NumPy functions do not take device arrays)"
        )

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in _HOST_ONLY:
            raise AttributeError(f"{name!r}: host memory of a device array (use .get())")
        attr = getattr(self._buf, name)
        if not callable(attr):
            return _wrap(attr)

        def call(*args, **kwargs):
            return _call(attr, f"DeviceArray.{name}", args, kwargs)

        return call

    @property
    def data(self) -> SimpleNamespace:
        """The buffer's address as ``.data.ptr``, like CuPy's ``MemoryPointer``."""
        return SimpleNamespace(ptr=self._buf.__array_interface__["data"][0])

    # explicit transfers
    def get(self) -> np.ndarray:
        """Copy to the host (counted)."""
        counts["to_host"] += 1
        return self._buf.copy()

    def set(self, host) -> None:
        """Copy host data into this array (counted)."""
        if isinstance(host, DeviceArray):
            raise TypeError("DeviceArray.set takes a host array")
        counts["to_device"] += 1
        self._buf[...] = host

    item = _to_host(lambda b: b.item())
    tolist = _to_host(lambda b: b.tolist())
    __float__ = _to_host(float)
    __int__ = _to_host(int)
    __complex__ = _to_host(complex)
    __bool__ = _to_host(bool)

    def __format__(self, spec: str) -> str:
        counts["to_host"] += 1
        return format(self._buf, spec)

    def __repr__(self) -> str:
        return f"DeviceArray({self._buf!r})"

    def __len__(self) -> int:
        return len(self._buf)

    def __iter__(self):
        if self._buf.ndim == 1:  # a loop over elements, not over sub-arrays
            counts["iterations"] += 1
        return (_wrap(v) for v in self._buf)

    def __getitem__(self, idx):
        return _wrap(self._buf[_index(idx)])

    def __setitem__(self, idx, value):
        if isinstance(value, (np.ndarray, list)):
            counts["to_device"] += 1
        else:
            value = _unwrap(value, "__setitem__")
        self._buf[_index(idx)] = value

    __add__, __radd__ = _binary(operator.add), _binary(operator.add, True)
    __sub__, __rsub__ = _binary(operator.sub), _binary(operator.sub, True)
    __mul__, __rmul__ = _binary(operator.mul), _binary(operator.mul, True)
    __truediv__, __rtruediv__ = _binary(operator.truediv), _binary(operator.truediv, True)
    __floordiv__, __rfloordiv__ = _binary(operator.floordiv), _binary(operator.floordiv, True)
    __mod__, __rmod__ = _binary(operator.mod), _binary(operator.mod, True)
    __pow__, __rpow__ = _binary(operator.pow), _binary(operator.pow, True)
    __matmul__, __rmatmul__ = _binary(operator.matmul), _binary(operator.matmul, True)
    __and__, __rand__ = _binary(operator.and_), _binary(operator.and_, True)
    __or__, __ror__ = _binary(operator.or_), _binary(operator.or_, True)
    __xor__, __rxor__ = _binary(operator.xor), _binary(operator.xor, True)
    __eq__, __ne__ = _binary(operator.eq), _binary(operator.ne)
    __lt__, __le__ = _binary(operator.lt), _binary(operator.le)
    __gt__, __ge__ = _binary(operator.gt), _binary(operator.ge)
    __iadd__, __isub__ = _inplace(operator.iadd), _inplace(operator.isub)
    __imul__, __itruediv__ = _inplace(operator.imul), _inplace(operator.itruediv)
    __ipow__, __imod__ = _inplace(operator.ipow), _inplace(operator.imod)
    __iand__, __ior__ = _inplace(operator.iand), _inplace(operator.ior)

    def __neg__(self):
        return DeviceArray(-self._buf)

    def __pos__(self):
        return DeviceArray(+self._buf)

    def __abs__(self):
        return DeviceArray(abs(self._buf))

    def __invert__(self):
        return DeviceArray(~self._buf)


ndarray = DeviceArray


def _device_data(a, dtype, copy: bool):
    if isinstance(a, DeviceArray):
        b = a._buf if dtype is None else a._buf.astype(dtype, copy=False)
        if b is a._buf:
            return DeviceArray(b.copy()) if copy else a
        return DeviceArray(b)
    if isinstance(a, (list, tuple)) and any(isinstance(v, DeviceArray) for v in a):
        return DeviceArray(np.array(_unwrap(a, "asarray"), dtype=dtype))
    counts["to_device"] += 1
    return DeviceArray(np.array(a, dtype=dtype, copy=True))


def asarray(a, dtype=None, order=None):
    """``a`` on the device: device arrays as they are (cast to ``dtype``), host data copied
    (counted)."""
    return _device_data(a, dtype, copy=False)


def array(a, dtype=None, copy=True, order=None):
    """A device copy of ``a`` (host data counted as a transfer)."""
    return _device_data(a, dtype, copy=copy)


asanyarray = asarray


def asnumpy(a) -> np.ndarray:
    """Host copy of a device array (counted); host arrays are returned as they are."""
    return a.get() if isinstance(a, DeviceArray) else np.asarray(a)


def get_array_module(*args) -> ModuleType:
    """This module if any argument is a device array, else NumPy."""
    return sys.modules[__name__] if any(isinstance(a, DeviceArray) for a in args) else np


class _Ufunc:
    """A NumPy ufunc on device arrays (``__call__`` and methods such as ``at``)."""

    def __init__(self, uf: np.ufunc):
        self._uf = uf
        self.__name__ = uf.__name__

    def __call__(self, *args, **kwargs):
        if any(isinstance(a, (list, tuple)) for a in args):  # CuPy: "Unsupported type"
            raise TypeError(f"xp.{self.__name__}: a list or tuple operand (use xp.asarray)")
        return _call(self._uf, f"xp.{self.__name__}", args, kwargs)

    def __getattr__(self, name):
        method = getattr(self._uf, name)
        if not callable(method):
            return method
        return lambda *args, **kwargs: _call(method, f"xp.{self.__name__}.{name}", args, kwargs)


def _call(fn, where: str, args, kwargs):
    """``fn`` on the buffers of device arguments; ``out=`` device arrays are returned as
    themselves (as CuPy does)."""
    out = kwargs.get("out")
    result = fn(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()})
    if isinstance(out, DeviceArray) and result is out._buf:
        return out
    return _wrap(result)


def _function(fn, name: str):
    def call(*args, **kwargs):
        return _call(fn, f"xp.{name}", args, kwargs)

    call.__name__ = name
    return call


def __getattr__(name: str):
    """NumPy's functions, ufuncs, dtypes and constants, acting on device arrays."""
    if name in ("fft", "cuda") or name.startswith("__"):
        raise AttributeError(
            f"module {__name__!r} has no attribute {name!r}"
            + (" (FFTs go through xrayflow.backend)" if name == "fft" else "")
        )
    obj = getattr(np, name)
    if isinstance(obj, np.ufunc):
        obj = _Ufunc(obj)
    elif isinstance(obj, ModuleType):
        raise AttributeError(f"module {__name__!r} has no submodule {name!r}")
    elif callable(obj) and not isinstance(obj, type):
        obj = _function(obj, name)
    globals()[name] = obj
    return obj


def _scatter_add(a, slices, value) -> None:
    """``cupyx.scatter_add``: unbuffered ``a[slices] += value`` on device arrays."""
    np.add.at(_unwrap(a, "scatter_add"), _index(slices), _unwrap(value, "scatter_add"))


class _Sparse:
    """A ``cupyx.scipy.sparse`` matrix: SciPy's, built from and applied to device arrays."""

    def __init__(self, m):
        self._m = m

    def tocsr(self) -> _Sparse:
        return _Sparse(self._m.tocsr())

    @property
    def T(self) -> _Sparse:
        return _Sparse(self._m.T)

    def __matmul__(self, x):
        return _wrap(self._m @ _unwrap(x, "sparse @"))


def _coo_matrix(arg, shape=None) -> _Sparse:
    """``cupyx.scipy.sparse.coo_matrix((data, (row, col)), shape)`` of device arrays."""
    import scipy.sparse

    data, (row, col) = _unwrap(arg, "coo_matrix")
    return _Sparse(scipy.sparse.coo_matrix((data, (row, col)), shape=shape))


def _module(name: str, **attrs) -> ModuleType:
    m = ModuleType(name, f"strict device stand-in for {name}")
    m.__dict__.update(attrs)
    return m


#: Stand-ins for the ``cupyx`` modules the GPU branches import, by name: tests put them in
#: ``sys.modules`` (``scatter_add``, ``scipy.sparse.coo_matrix``).
CUPYX_MODULES = {"cupyx.scipy.sparse": _module("cupyx.scipy.sparse", coo_matrix=_coo_matrix)}
CUPYX_MODULES["cupyx.scipy"] = _module("cupyx.scipy", sparse=CUPYX_MODULES["cupyx.scipy.sparse"])
CUPYX_MODULES["cupyx"] = _module(
    "cupyx", scatter_add=_scatter_add, scipy=CUPYX_MODULES["cupyx.scipy"]
)
