"""Phase retrieval for 3D Bragg CDI by automatic differentiation, with shrink-wrap.

:func:`refine` minimises the data term of :class:`xrayflow.modalities.bragg_cdi.model.BraggCDIModel`
over the complex crystal density ``rho`` with gradients from :mod:`xrayflow.ad` (Adam or a
fixed step), projecting ``rho`` onto the support after every step and updating the support
by shrink-wrap (Marchesini et al., PRB 68, 140101 (2003)): ``|rho|`` blurred by a Gaussian
of width ``sigma`` (decreasing towards ``sigma_min``), thresholded at a fraction of its
maximum. It starts either from :func:`random_start` (random phases inside a support
derived from the autocorrelation of the data) or from a given estimate, e.g. a network
prediction ``support * exp(i phase)`` in the crystal box (the 3D-CDI-NN recipe: network
first, then refinement). Hybrid input-output iterations (HIO, Fienup, Appl. Opt. 21, 2758
(1982)) run before the gradient steps by default, 200 from a random start and 20 from an
estimate, in blocks of 20, each followed by 2 error-reduction iterations, a shrink-wrap and
(with ``stop_loss``) a stop check. ``starts`` > 1 repeats a random start, keeping the first
that reaches ``stop_loss`` or else the lowest R-factor, as random-start phase retrieval is
run in practice. Measured on 32^3 / 64^3 Poisson patterns (1e8 photons) of crystals with
0.5 rad rms strain phase (benchmarks/cdi_refine.py): from random phases, Adam alone
stagnated (R 0.09-0.18, 6 of 6 starts at 32^3); 200 HIO on the fixed autocorrelation
support, then Adam with shrink-wrap, reached the noise floor in 1 of 3 starts at 64^3
(7-9 s each); with shrink-wrap during HIO, 6 of 6 at 64^3 (0.8-1.2 s) and 4 of 6 at 32^3
(the other two stagnate at R 15-18 x the floor: hence ``starts``); on 16 held-out crystals
of the training generator (benchmarks/cdi_network.py), 46 of 48 single starts against 25
of 48. From a perturbed truth (0.5 rad smooth phase error), Adam alone needed 100-150 steps
at 32^3 and stayed in a local minimum (R 1.33 x floor) in 1 of 6 cases at 64^3, while 20
HIO iterations first brought every case to the floor in 26-46 Adam steps (0.07-0.13 s at
32^3, 0.25-0.36 s at 64^3).

Arrays go through the backend's ``xp`` (NumPy or CuPy); complex64 by default. ``rho`` is
held in the centred layout on the detector grid; results are returned as NumPy arrays in
data units (``sum |rho|^2 = sum counts``, Parseval with the ortho FFT).

Network first, then refinement: :func:`network_predict` runs a trained
:class:`xrayflow.train.networks.CDI3DNet` (sqrt(counts), centred, in; support probability and
phase of the crystal box out; one volume or a batch), :func:`network_start` turns that into a
start on the data grid, :func:`refine_from_prediction` refines from one prediction and
:func:`refine_from_network` does all three for one volume. :func:`reconstruct_file` is the
file-to-file entry (CXI from the simulate stage in, HDF5 out) for the reconstruct stage.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from xrayflow import ad
from xrayflow.backend import array_module, fftfreq, fftshift, get_backend, ifftshift, to_numpy
from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities.bragg_cdi.model import LOSSES, BraggCDIModel

__all__ = [
    "DEFAULTS",
    "ESTIMATE_HIO",
    "NETWORK_HIO",
    "NETWORK_SUPPORT_DILATION",
    "NETWORK_SUPPORT_THRESHOLD",
    "RANDOM_START_HIO",
    "autocorrelation_support",
    "crop",
    "embed",
    "gaussian_blur",
    "network_predict",
    "network_start",
    "network_support",
    "random_start",
    "reconstruct_file",
    "refine",
    "refine_from_network",
    "refine_from_prediction",
    "shrink_wrap",
]

# HIO iterations before the gradient steps when hio.iterations is None (see module docstring)
RANDOM_START_HIO = 200
ESTIMATE_HIO = 20
# HIO iterations before the gradient steps from a network prediction (refine_from_prediction),
# and the start support: the network's support probability above NETWORK_SUPPORT_THRESHOLD,
# dilated by NETWORK_SUPPORT_DILATION voxels. Measured with a CDI3DNet trained for 10 min on
# CPU (benchmarks/cdi_network.py: 2,048 patterns of 32^3, amplitude SSIM 0.87 alone; its
# support misses 10-25 % of the crystal's voxels and adds as many): from the network's own
# support (blurred |rho| > 0.25 max) 50 HIO then Adam reached the noise floor for 3 of 16
# held-out crystals; from the dilated support with shrink-wrap every 20 HIO iterations, 15 of
# 16 in 20-80 HIO iterations and no gradient step (undilated: 5 of 16; dilated by 2: 4 of 16)
NETWORK_HIO = 160
NETWORK_SUPPORT_THRESHOLD = 0.3
NETWORK_SUPPORT_DILATION = 1
DEFAULTS: dict = {
    "iterations": 300,
    "loss": "gaussian",
    "optimizer": {"kind": "adam", "lr": 0.1, "beta1": 0.9, "beta2": 0.999},
    "shrinkwrap": {
        "every": 20,
        "start": 20,
        "sigma": 2.0,
        "sigma_min": 1.0,
        "decay": 0.95,
        "threshold": 0.25,
    },
    "autocorrelation_threshold": 0.1,
    "hio": {"iterations": None, "beta": 0.9, "every": 20, "er": 2},
    "stop_loss": None,
    "starts": 1,
}


def _config(config: dict | None) -> dict:
    """``DEFAULTS`` updated by ``config`` (one level of nesting), checked."""
    cfg = copy.deepcopy(DEFAULTS)
    for k, v in (config or {}).items():
        if k not in cfg:
            raise ConfigError(f"cdi.{k}: unknown key (known: {sorted(cfg)})")
        if isinstance(cfg[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"cdi.{k}: expected a mapping, got {v!r}")
            unknown = set(v) - set(cfg[k])
            if unknown:
                raise ConfigError(f"cdi.{k}.{sorted(unknown)[0]}: unknown key")
            cfg[k].update(v)
        else:
            cfg[k] = v
    if cfg["loss"] not in LOSSES:
        raise ConfigError(f"cdi.loss: must be one of {LOSSES}, got {cfg['loss']!r}")
    if cfg["optimizer"]["kind"] not in ("adam", "gd"):
        raise ConfigError(f"cdi.optimizer.kind: adam | gd, got {cfg['optimizer']['kind']!r}")
    counts = {
        "iterations": (cfg["iterations"], 0),
        "hio.iterations": (cfg["hio"]["iterations"] or 0, 0),
        "hio.every": (cfg["hio"]["every"], 0),
        "hio.er": (cfg["hio"]["er"], 0),
        "starts": (cfg["starts"], 1),
    }
    for key, (v, low) in counts.items():
        whole = isinstance(v, int | float | np.number) and float(v).is_integer()
        if isinstance(v, bool) or not whole or v < low:
            raise ConfigError(f"cdi.{key}: must be an integer >= {low}, got {v!r}")
    return cfg


# ----------------------------------------------------------------------------- geometry
def embed(a, shape, xp=np):
    """Zero-pad ``a`` (crystal box) into the centre of ``shape``, as the simulator places
    the crystal (start index ``N // 2 - m // 2`` per axis)."""
    a = xp.asarray(a)
    out = xp.zeros(tuple(shape), dtype=a.dtype)
    sl = []
    for n, m in zip(shape, a.shape, strict=True):
        if m > n:
            raise ValueError(f"array {a.shape} does not fit into {tuple(shape)}")
        sl.append(slice(n // 2 - m // 2, n // 2 - m // 2 + m))
    out[tuple(sl)] = a
    return out


def crop(a, shape):
    """The centred box of ``shape`` from ``a`` (inverse of :func:`embed`)."""
    sl = tuple(
        slice(n // 2 - m // 2, n // 2 - m // 2 + m) for n, m in zip(a.shape, shape, strict=True)
    )
    return a[sl]


def gaussian_blur(a, sigma: float, backend):
    """Circular Gaussian blur of a real volume (``sigma`` in voxels) by FFT, on any backend."""
    xp = backend.xp
    f2 = 0
    for ax, n in enumerate(a.shape):
        f = xp.asarray(fftfreq(n), dtype=backend.real_dtype)
        shape = [1] * a.ndim
        shape[ax] = n
        f2 = f2 + f.reshape(shape) ** 2
    kern = xp.exp(-2.0 * np.pi**2 * sigma**2 * f2)
    return backend.ifftn(backend.fftn(a.astype(backend.complex_dtype)) * kern).real


def shrink_wrap(rho, sigma: float, threshold: float, backend):
    """Support ``blur(|rho|, sigma) > threshold * max`` (bool, same layout as ``rho``)."""
    b = gaussian_blur(backend.xp.abs(rho), sigma, backend)
    return b > threshold * b.max()


def autocorrelation_support(counts, threshold: float = 0.1, centred: bool = True, backend=None):
    """Support of the object's autocorrelation ``|F^-1{I}|`` above ``threshold * max``,
    centred (bool (Z, Y, X)). It contains every centred copy of the object; shrink-wrap
    tightens it."""
    backend = backend or get_backend("cpu")
    xp = backend.xp
    c = xp.asarray(counts, dtype=backend.real_dtype)
    if centred:
        c = ifftshift(c)
    auto = xp.abs(backend.ifftn(c.astype(backend.complex_dtype)))
    auto = fftshift(auto)
    return auto > threshold * auto.max()


def random_start(data, rng, support=None, threshold: float = 0.1, centred=True, backend=None):
    """Random phases (uniform in [0, 2 pi)) with a flat amplitude inside ``support``
    (default: :func:`autocorrelation_support`), scaled so that ``sum |rho|^2 = sum counts``.

    Returns ``(rho, support)``: complex (Z, Y, X) in the centred layout and the bool support.
    """
    backend = backend or get_backend("cpu")
    xp = backend.xp
    if support is None:
        support = autocorrelation_support(data, threshold, centred, backend)
    support = xp.asarray(support, dtype=bool)
    phase = xp.asarray(rng.uniform(0.0, 2.0 * np.pi, support.shape), dtype=backend.real_dtype)
    amp = np.sqrt(float(xp.asarray(data, dtype=np.float64).sum()) / max(int(support.sum()), 1))
    rho = (amp * support) * xp.exp(1j * phase)
    return rho.astype(backend.complex_dtype), support


# ----------------------------------------------------------------------------- steps
def _hio(model, rho, support, beta: float, n: int):
    """``n`` hybrid input-output iterations (Fienup 1982) from ``rho``."""
    xp = model.backend.xp
    for _ in range(n):
        p = model.modulus_projection(rho)
        rho = xp.where(support, p, rho - beta * p)
    return rho


def _hio_shrinkwrap(model, rho, support, cfg: dict, n: int, sigma: float, stop, norm: float):
    """``n`` HIO iterations in blocks of ``cfg["hio"]["every"]`` (0: one block, fixed
    support). After each block: ``cfg["hio"]["er"]`` error-reduction iterations (modulus
    projection, then support), a shrink-wrap of the support (``cfg["shrinkwrap"]``
    threshold; Gaussian width ``sigma``, decaying to ``sigma_min``) and, when ``stop`` is
    set, a stop check on the normalised loss of that estimate.

    Returns ``(rho, support, sigma, hio iterations run, normalised losses after each block,
    stopped)``.
    """
    hio, sw = cfg["hio"], cfg["shrinkwrap"]
    if not hio["every"]:
        rho = _hio(model, rho, support, float(hio["beta"]), n) * support
        return rho, support, sigma, n, [], False
    done, losses = 0, []
    while done < n:
        k = min(int(hio["every"]), n - done)
        rho = _hio(model, rho, support, float(hio["beta"]), k) * support
        done += k
        for _ in range(int(hio["er"])):
            rho = model.modulus_projection(rho) * support
        support = shrink_wrap(rho, sigma, sw["threshold"], model.backend)
        sigma = max(float(sw["sigma_min"]), sigma * float(sw["decay"]))
        rho *= support
        if stop is not None:
            losses.append(float(model.loss(ad.const(rho)).data) / norm)
            if losses[-1] <= float(stop):
                return rho, support, sigma, done, losses, True
    return rho, support, sigma, done, losses, False


class _Adam:
    """Adam on a complex array (as two reals; ``v`` accumulates ``|g|^2``), in place."""

    def __init__(self, like, lr: float, beta1: float, beta2: float, eps: float = 1e-8):
        xp = array_module(like)
        self.m = xp.zeros_like(like)
        self.v = xp.zeros(like.shape, dtype=like.real.dtype)
        self.lr, self.b1, self.b2, self.eps, self.t = float(lr), beta1, beta2, eps, 0
        self.xp = xp

    def step(self, x, g):
        xp = self.xp
        self.t += 1
        self.m *= self.b1
        self.m += (1 - self.b1) * g
        self.v *= self.b2
        self.v += (1 - self.b2) * (g.real**2 + g.imag**2)
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        x -= (self.lr / c1) * self.m / (xp.sqrt(self.v / c2) + self.eps)


def _scale_init(model, rho):
    """Least-squares amplitude scale of ``rho`` so that ``|F rho|`` fits the data."""
    xp = model.backend.xp
    mag = xp.abs(model.backend.fftn(rho))
    w = model.mask if model.mask is not None else 1.0
    den = float((w * mag * mag).sum())
    return rho * (float((w * mag * model.amplitude).sum()) / den if den > 0 else 1.0)


# ----------------------------------------------------------------------------- refine
def refine(
    data,
    init=None,
    support=None,
    config: dict | None = None,
    rng=None,
    *,
    mask=None,
    centred: bool = True,
    backend=None,
) -> dict:
    """Retrieve the complex crystal density from 3D Bragg CDI counts.

    Args:
        data: (Z, Y, X) counts (centred unless ``centred=False``).
        init: complex start, on the detector grid or a smaller centred crystal box
            (zero-padded with :func:`embed`), e.g. a network's ``support * exp(i phase)``;
            rescaled to the data by least squares. None: :func:`random_start`.
        support: bool start support (same layout/size rules as ``init``). None: from the
            autocorrelation (random start) or shrink-wrap of ``|init|`` at ``sigma_min``.
        config: overrides of :data:`DEFAULTS` (``iterations``, ``loss``, ``optimizer``
            {kind adam|gd, lr (adam: in units of the rms start amplitude; gd: in units of
            the error-reduction step)}, ``shrinkwrap`` {every, start, sigma, sigma_min,
            decay, threshold} (``every``, ``start``: in gradient steps),
            ``autocorrelation_threshold``, ``hio`` {iterations (None:
            :data:`RANDOM_START_HIO` from a random start, :data:`ESTIMATE_HIO` from
            ``init``), beta, every (shrink-wrap after every this many HIO iterations, each
            time after ``er`` error-reduction iterations; 0: fixed support)},
            ``stop_loss``: stop once the normalised loss is at or below it, ``starts``:
            random starts, at most, ending at the first that reaches ``stop_loss``, else
            keeping the lowest R-factor).
        rng: ``numpy.random.Generator`` (random start); default seed 0.
        mask: (Z, Y, X) bool good voxels, or None.
        backend: :class:`~xrayflow.backend.Backend` (default CPU, single precision).

    Returns:
        dict with ``object`` (complex, data grid, centred, data units), ``support`` (bool),
        ``loss`` (history, normalised: data term / sum of counts; for ``gaussian`` this is
        the squared amplitude R-factor), ``r_factor`` (final), ``iterations`` (gradient
        steps run), ``hio_iterations``, ``hio_loss`` (normalised loss after each HIO
        block, when ``stop_loss`` is set), ``stopped`` (``stop_loss`` reached), ``starts``
        (random starts run; the returned fields are the kept start's), ``time_s`` (all
        starts) and ``config``.
    """
    cfg = _config(config)
    rng = np.random.default_rng(0) if rng is None else rng
    t0 = time.perf_counter()
    best, runs = None, 0
    while runs < (int(cfg["starts"]) if init is None else 1):
        res = _refine_one(data, init, support, cfg, rng, mask, centred, backend)
        runs += 1
        if best is None or res["stopped"] or res["r_factor"] < best["r_factor"]:
            best = res
        if res["stopped"]:
            break
    return {**best, "starts": runs, "time_s": time.perf_counter() - t0}


def _refine_one(data, init, support, cfg: dict, rng, mask, centred: bool, backend) -> dict:
    """One :func:`refine` run from ``init`` or one random start (``cfg`` checked)."""
    backend = backend or get_backend("cpu")
    xp = backend.xp
    counts = xp.asarray(data, dtype=backend.real_dtype)
    if counts.ndim != 3:
        raise ValueError(f"data must be a 3D array (Z, Y, X), got shape {counts.shape}")
    shape = counts.shape
    total = float(counts.sum(dtype=np.float64))
    if total <= 0:
        raise ValueError("data holds no counts")
    sw = cfg["shrinkwrap"]
    if support is not None:
        support = embed(xp.asarray(support, dtype=bool), shape, xp)
    if init is None:
        rho, support = random_start(
            counts, rng, support, cfg["autocorrelation_threshold"], centred, backend
        )
    else:
        rho = embed(xp.asarray(init, dtype=backend.complex_dtype), shape, xp)
        if support is None:
            support = shrink_wrap(rho, sw["sigma_min"], sw["threshold"], backend)
    # hold rho in units of the rms amplitude over the start support (Adam's lr is then
    # dimensionless); the data are scaled accordingly
    scale = total / max(int(support.sum()), 1)
    model = BraggCDIModel(counts, mask, cfg["loss"], centred, scale, backend=backend)
    rho = (rho / np.sqrt(scale)).astype(backend.complex_dtype)
    if init is not None:
        rho = _scale_init(model, rho)
    rho *= support
    norm = total / scale
    n_hio = cfg["hio"]["iterations"]
    n_hio = int((RANDOM_START_HIO if init is None else ESTIMATE_HIO) if n_hio is None else n_hio)
    # an estimate already has the crystal's shape: its support is not blurred more widely
    sigma = float(sw["sigma"] if init is None else sw["sigma_min"])
    stop = cfg["stop_loss"]
    rho, support, sigma, n_hio, hio_loss, stopped = _hio_shrinkwrap(
        model, rho, support, cfg, n_hio, sigma, stop, norm
    )

    opt = cfg["optimizer"]
    adam = opt["kind"] == "adam"
    if adam:
        stepper = _Adam(rho, opt["lr"], opt["beta1"], opt["beta2"])
    else:
        # unit step = error reduction (gaussian); the Poisson gradient is about twice as big
        lr = 0.5 * float(opt["lr"]) * (1.0 if cfg["loss"] == "gaussian" else 0.5)
    value_and_grad = ad.value_and_grad(model.loss)
    history = []
    it = 0
    for it in range(1, 0 if stopped else int(cfg["iterations"]) + 1):
        value, g = value_and_grad(rho)
        history.append(value / norm)
        if stop is not None and history[-1] <= float(stop):
            it -= 1
            stopped = True
            break
        if adam:
            stepper.step(rho, g)
        else:
            rho -= lr * g
        if sw["every"] and it >= sw["start"] and it % int(sw["every"]) == 0:
            support = shrink_wrap(rho * support, sigma, sw["threshold"], backend)
            sigma = max(float(sw["sigma_min"]), sigma * float(sw["decay"]))
        rho *= support
    r = model.r_factor(rho)
    obj = to_numpy(rho * np.sqrt(scale))
    return {
        "object": obj,
        "support": to_numpy(support),
        "loss": np.asarray(history, dtype=np.float64),
        "r_factor": r,
        "iterations": it,
        "hio_iterations": n_hio,
        "hio_loss": np.asarray(hio_loss, dtype=np.float64),
        "stopped": stopped,
        "config": cfg,
    }


# ----------------------------------------------------------------------------- network start
def network_predict(model, data, centred: bool = True, device: str = "cpu"):
    """Support probability and phase (rad) of the crystal box from a trained 3D CDI network.

    Args:
        model: a model file (:func:`xrayflow.train.loop.load_model`) or a loaded
            :class:`~xrayflow.train.networks.CDI3DNet` (eval mode; any module with ``heads``
            ``("support", "phase")`` and ``input_size``).
        data: (N, N, N) counts, or a stack (B, N, N, N) predicted in one batch; the network
            input is ``sqrt(counts)``, centred, as in the training shards
            (:mod:`xrayflow.train.generate`); N must be the network's input size.
        centred: False when ``data`` has the zero frequency at the corner.

    Returns:
        ``(support, phase, seconds)``: float32 (m, m, m) arrays, or (B, m, m, m) for a stack,
        and the network's wall time (the whole batch). On a CPU a stack costs less per
        crystal than single volumes (benchmarks/cdi_network.py: 4-8 ms against 25-30 ms at
        32^3, 2 cores), as PyTorch runs a batch of one small volume without oneDNN.
    """
    import torch  # noqa: PLC0415 - torch only for this entry

    if isinstance(model, str | os.PathLike):
        from xrayflow.train.loop import load_model  # noqa: PLC0415

        model = load_model(model, device)[0]
    if tuple(getattr(model, "heads", ())) != ("support", "phase"):
        raise DataError(f"{type(model).__name__}: not a 3D CDI network (heads support, phase)")
    n = int(model.input_size)
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
    dev = next(model.parameters()).device
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model(torch.from_numpy(np.ascontiguousarray(a.reshape((-1, n, n, n)))).to(dev))
        sup, ph = (out[h].float().cpu().numpy() for h in ("support", "phase"))
    if single:
        sup, ph = sup[0], ph[0]
    return sup, ph, time.perf_counter() - t0


def network_start(support, phase, shape, xp=np):
    """Refinement start ``support * exp(i phase)`` from a network's crystal box (m, m, m)
    (support probability in [0, 1], phase in rad), zero-padded into the centre of the data
    grid ``shape``: start index ``N // 2 - m // 2``, the training sets' ``(N - m) // 2`` for
    even N and m (:func:`xrayflow.train.generate.bragg_patterns`). complex64."""
    sup = xp.asarray(support, dtype=np.float32)
    rho = sup * xp.exp(1j * xp.asarray(phase, dtype=np.float32))
    return embed(rho.astype(np.complex64), shape, xp)


def network_support(probability, shape=None):
    """Start support from a network's support probability (m, m, m): above
    :data:`NETWORK_SUPPORT_THRESHOLD`, dilated by :data:`NETWORK_SUPPORT_DILATION` voxels
    (a loose support that shrink-wrap tightens), zero-padded like :func:`network_start` to
    ``shape`` when given. bool."""
    s = np.asarray(probability) > NETWORK_SUPPORT_THRESHOLD
    s = ndimage.binary_dilation(s, iterations=NETWORK_SUPPORT_DILATION)
    return s if shape is None else embed(s, shape)


def refine_from_prediction(
    support, phase, data, config: dict | None = None, *, mask=None, centred=True, backend=None
) -> dict:
    """:func:`refine` from a network's prediction of the crystal box (support probability
    and phase (rad), (m, m, m), e.g. one of a batch from :func:`network_predict`): start
    :func:`network_start`, support :func:`network_support`, by default
    :data:`NETWORK_HIO` HIO iterations with shrink-wrap, ending early at ``stop_loss``.

    Returns :func:`refine`'s dict plus ``start`` (the start on the data grid, unscaled).
    """
    cfg = copy.deepcopy(config or {})
    if isinstance(cfg.get("hio", {}), dict) and cfg.get("hio", {}).get("iterations") is None:
        cfg.setdefault("hio", {})["iterations"] = NETWORK_HIO
    init = network_start(support, phase, np.shape(data))
    res = refine(
        data, init, network_support(support), cfg, mask=mask, centred=centred, backend=backend
    )
    return {**res, "start": init}


def refine_from_network(
    model,
    data,
    config: dict | None = None,
    *,
    mask=None,
    centred=True,
    backend=None,
    device: str = "cpu",
) -> dict:
    """:func:`network_predict`, then :func:`refine_from_prediction`.

    Returns :func:`refine`'s dict with ``time_s`` including the network, plus
    ``network_time_s``, ``network_support`` and ``network_phase`` (crystal box) and
    ``start`` (the start on the data grid, unscaled).
    """
    t0 = time.perf_counter()
    sup, ph, t_net = network_predict(model, data, centred, device)
    res = refine_from_prediction(sup, ph, data, config, mask=mask, centred=centred, backend=backend)
    res.update(
        time_s=time.perf_counter() - t0,
        network_time_s=t_net,
        network_support=sup,
        network_phase=ph,
    )
    return res


# ----------------------------------------------------------------------------- file entry
def _read_volume(data_path):
    """Counts (Z, Y, X) float32, centred flag, 3D mask or None, DiffractionData of a bragg_cdi
    CXI file; DataError for a missing file or data that are not a 3D CDI volume."""
    from xrayflow.io.cxi import read_cxi  # noqa: PLC0415

    path = Path(data_path)
    if not path.is_file():
        raise DataError(f"{str(path)!r}: data file does not exist")
    d = read_cxi(path, truth=False)
    fft_ndim = d.attrs.get("fft_ndim", 2)
    if fft_ndim != 3 or d.data.ndim != 3 or min(d.data.shape) < 2:
        raise DataError(
            f"{str(path)!r}: not a 3D Bragg CDI volume (data shape {d.data.shape}, attrs "
            f"fft_ndim {fft_ndim}; expected fft_ndim 3, as written by the bragg_cdi modality)"
        )
    mask = None if d.mask is None else np.broadcast_to(np.asarray(d.mask, bool), d.data.shape)
    if not (d.data if mask is None else d.data[mask]).any():
        raise DataError(f"{str(path)!r}: the 3D pattern is zero everywhere (no counts to fit)")
    return d.data, bool(d.centred), mask, d


def reconstruct_file(config: dict, data_path, out_path, model_path=None, backend=None) -> dict:
    """Phase retrieval of a bragg_cdi CXI file (simulate stage) into an HDF5 result.

    Args:
        config: :func:`refine` config (keys of :data:`DEFAULTS`) plus optional ``seed``
            (random start, default 0).
        data_path: CXI file, 3D volume (``attrs fft_ndim = 3``), any centring.
        out_path: HDF5 to write (atomic, :func:`xrayflow.io.hdf5.write_h5`).
        model_path: trained 3D CDI network: start from its prediction
            (:func:`refine_from_network`); None: :func:`random_start`.

    Output datasets: ``object`` (complex64, data grid, centred layout, data units),
    ``support`` (bool), ``loss`` (history), ``r_factor``, ``iterations``, ``hio_iterations``
    (of the kept start), ``starts`` (random starts run), ``timings`` {``total_s``,
    ``network_s``}, ``start`` ("random" | "network"), ``model``
    (path) and ``network`` {``support``, ``phase``} (crystal box; network start only),
    ``voxel_size`` (m, if known), ``config``, ``provenance``.
    Returns the :func:`refine` dict.
    """
    from xrayflow.io.hdf5 import write_h5  # noqa: PLC0415
    from xrayflow.provenance import provenance  # noqa: PLC0415

    cfg = dict(config or {})
    seed = int(cfg.pop("seed", 0))
    counts, centred, mask, d = _read_volume(data_path)
    if model_path is None:
        res = refine(
            counts,
            None,
            None,
            cfg,
            np.random.default_rng(seed),
            mask=mask,
            centred=centred,
            backend=backend,
        )
    else:
        res = refine_from_network(
            model_path, counts, cfg, mask=mask, centred=centred, backend=backend
        )
    full = {**res["config"], "seed": seed}
    tree = {
        "object": res["object"].astype(np.complex64),
        "support": res["support"],
        "loss": res["loss"],
        "r_factor": float(res["r_factor"]),
        "iterations": int(res["iterations"]),
        "hio_iterations": int(res["hio_iterations"]),
        "starts": int(res["starts"]),
        "timings": {"total_s": res["time_s"], "network_s": res.get("network_time_s", 0.0)},
        "start": "random" if model_path is None else "network",
        "model": None if model_path is None else str(model_path),
        "network": None
        if model_path is None
        else {"support": res["network_support"], "phase": res["network_phase"]},
        "voxel_size": d.attrs.get("object_pixel_size"),
        "config": full,
        "provenance": provenance(full, seed, data=str(data_path)),
    }
    write_h5(out_path, tree, attrs={"model": "bragg_cdi", "centred": True})
    return res
