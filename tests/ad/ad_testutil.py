"""Helpers for the AD tests: random complex inputs and central finite differences."""

import numpy as np


def crandn(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


def fd_grad(f, x, h=1e-6):
    """Central finite-difference gradient of a real scalar f at x, PyTorch convention:
    dL/dRe + i dL/dIm (real x: dL/dx)."""
    x = np.array(x, dtype=x.dtype, copy=True)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    gf = g.reshape(-1)
    for k in range(flat.size):
        x0 = flat[k]
        flat[k] = x0 + h
        fp = f(x)
        flat[k] = x0 - h
        fm = f(x)
        d = (fp - fm) / (2 * h)
        if np.iscomplexobj(x):
            flat[k] = x0 + 1j * h
            fp = f(x)
            flat[k] = x0 - 1j * h
            fm = f(x)
            d = d + 1j * (fp - fm) / (2 * h)
        flat[k] = x0
        gf[k] = d
    return g


def rel_err(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))
