"""Phase retrieval started from a trained 3D CDI network (the 3D-CDI-NN recipe: network
first, then refinement).

:func:`network_predict` runs a trained network (:mod:`xrayflow.networks`; sqrt(counts),
centred, in; support probability and phase of the crystal box out; one volume or a batch),
:func:`network_start` turns a prediction into a start ``support * exp(i phase)`` on the data
grid and :func:`network_support` into a loose start support. The defaults below were
measured with benchmarks/cdi_network.py (see benchmarks/README.md): a tight support from the
network stalls the refinement, a dilated one that shrink-wrap tightens does not.
"""

from __future__ import annotations

import os
import time

import numpy as np
from scipy import ndimage

from xrayflow.backend import fftshift
from xrayflow.errors import DataError
from xrayflow.modalities.bragg_cdi.grid import embed

__all__ = [
    "NETWORK_HIO",
    "NETWORK_SUPPORT_DILATION",
    "NETWORK_SUPPORT_THRESHOLD",
    "network_predict",
    "network_start",
    "network_support",
]

#: HIO iterations before the gradient steps from a network prediction (``cdi.hio.iterations``
#: null).
NETWORK_HIO = 160
#: Start support: the network's support probability above this ...
NETWORK_SUPPORT_THRESHOLD = 0.3
#: ... dilated by this many voxels.
NETWORK_SUPPORT_DILATION = 1


def network_predict(network, data, centred: bool = True, device: str = "cpu"):
    """Support probability and phase (rad) of the crystal box from a trained 3D CDI network.

    Args:
        network: a model file (:func:`xrayflow.networks.load_model`) or a loaded network
            in eval mode (any module with ``heads`` ``("support", "phase")`` and
            ``input_size``).
        data: (N, N, N) counts, or a stack (B, N, N, N) predicted in one batch; the network
            input is ``sqrt(counts)``, centred, as in the training shards; N must be the
            network's input size.
        centred: False when ``data`` has the zero frequency at the corner.
        device: torch device of a network loaded from a file.

    Returns:
        ``(support, phase, seconds)``: float32 (m, m, m) arrays, or (B, m, m, m) for a stack,
        and the network's wall time for the whole batch (s). On a CPU a stack costs less per
        crystal than single volumes (benchmarks/README.md).
    """
    import torch

    if isinstance(network, str | os.PathLike):
        from xrayflow.networks import load_model

        network = load_model(network, device)[0]
    if tuple(getattr(network, "heads", ())) != ("support", "phase"):
        raise DataError(f"{type(network).__name__}: not a 3D CDI network (heads support, phase)")
    n = int(network.input_size)
    a = np.asarray(data, dtype=np.float32)
    single = a.ndim == 3
    if a.shape[-3:] != (n, n, n) or a.ndim not in (3, 4):
        raise DataError(
            f"data shape {a.shape} does not match the network input ({n},) * 3 "
            f"(or a stack (B, {n}, {n}, {n}))"
        )
    a = np.sqrt(np.clip(a, 0.0, None))
    if not centred:
        a = fftshift(a, axes=(-3, -2, -1))
    dev = next(network.parameters()).device
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = network(torch.from_numpy(np.ascontiguousarray(a.reshape((-1, n, n, n)))).to(dev))
        sup, ph = (out[h].float().cpu().numpy() for h in ("support", "phase"))
    if single:
        sup, ph = sup[0], ph[0]
    return sup, ph, time.perf_counter() - t0


def network_start(support, phase, shape, xp=np):
    """Start ``support * exp(i phase)`` from a network's crystal box (m, m, m) (support
    probability in [0, 1], phase in rad), zero-padded into the centre of the data grid
    ``shape`` (:func:`~xrayflow.modalities.bragg_cdi.grid.embed`, where the training sets
    put the crystal for even N and m). complex64."""
    sup = xp.asarray(support, dtype=np.float32)
    rho = sup * xp.exp(1j * xp.asarray(phase, dtype=np.float32))
    return embed(rho.astype(np.complex64), shape, xp)


def network_support(probability, shape=None):
    """Start support from a network's support probability (m, m, m): above
    :data:`NETWORK_SUPPORT_THRESHOLD`, dilated by :data:`NETWORK_SUPPORT_DILATION` voxels,
    zero-padded like :func:`network_start` to ``shape`` when given. bool."""
    s = np.asarray(probability) > NETWORK_SUPPORT_THRESHOLD
    s = ndimage.binary_dilation(s, iterations=NETWORK_SUPPORT_DILATION)
    return s if shape is None else embed(s, shape)
