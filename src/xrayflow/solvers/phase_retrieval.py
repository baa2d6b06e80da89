"""The phase-retrieval solver: one far-field pattern, HIO/ER with shrink-wrap, then gradient
refinement of the model's data term.

:func:`refine` retrieves the complex object ``rho`` (centred layout on the data grid) from
its start: random phases inside the autocorrelation support (:func:`random_start`), a given
estimate, or a network's prediction (:func:`refine_from_prediction`,
:func:`refine_from_network`). It runs hybrid input-output (HIO, Fienup, Appl. Opt. 21, 2758
(1982)) in blocks, each followed by error-reduction (ER) iterations, a shrink-wrap of the
support (Marchesini et al., PRB 68, 140101 (2003): ``|rho|`` blurred by a Gaussian whose
width decays towards ``sigma_min``, above a fraction of its maximum) and, with
``stop_loss``, a stop check; then gradient steps on the data term (Adam or a fixed step, from
:mod:`xrayflow.solvers.optimizers`), each followed by the projection onto the support and
every ``shrinkwrap.every`` steps by a shrink-wrap. ``starts`` > 1 repeats a random start and
keeps the first that reaches ``stop_loss``, else the lowest R-factor. Why these defaults:
benchmarks/README.md (``cdi_refine.py``, ``cdi_network.py``).

Every shrink-wrap is guarded (``shrinkwrap.guard``, :class:`ShrinkWrap`): the new support
is tried with a few ER iterations and kept only when the loss then has not risen by more
than a tolerance (during HIO) or at all (during the gradient steps); otherwise the support
stays and the threshold is lowered. A fixed threshold that suits a simulated crystal with
sharp facets cuts the soft edges and weak parts of a measured one, and its support then
shrinks at every shrink-wrap while the loss rises.

The settings are the reconstruct config's ``cdi`` section, complete (defaults filled in by
the config loader or the modality's ``settings``). The model (the modality's
``build_model``) offers:

* ``backend``, ``shape`` (Z, Y, X), ``counts`` (photons, zero frequency at the corner),
  ``total`` (sum of the counts), ``er_step`` (the gradient step that amounts to one ER
  iteration);
* ``rescaled(scale)``: the model with the counts in units of ``scale`` photons;
* ``embed(a)``: ``a`` (the grid or a smaller centred box) on the grid;
* ``loss(rho)`` (real scalar Tensor), ``modulus_projection(rho)``, ``r_factor(rho)``,
  ``fit_scale(rho)`` (``rho`` times the least-squares scale to the data);
* for network starts, ``network_prediction(network, device)`` and
  ``prediction_start(support, phase)``.

Arrays go through the backend's ``xp`` (NumPy or CuPy); results are NumPy arrays in data
units (``sum |rho|^2 = sum counts``, Parseval with the ortho FFT).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from xrayflow import ad
from xrayflow.backend import fftfreq, fftn, fftshift, to_numpy
from xrayflow.solvers.optimizers import Adam, GradientDescent, ParamSettings

__all__ = [
    "ESTIMATE_HIO",
    "RANDOM_START_HIO",
    "ShrinkWrap",
    "autocorrelation_support",
    "centre",
    "gaussian_blur",
    "oversampling",
    "random_start",
    "refine",
    "refine_from_network",
    "refine_from_prediction",
    "shrink_wrap",
]

#: HIO iterations before the gradient steps when ``hio.iterations`` is null: from a random
#: start, and from a given estimate.
RANDOM_START_HIO = 200
ESTIMATE_HIO = 20


# ----------------------------------------------------------------------------- support
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
    """Support ``blur(|rho|, sigma) > threshold * max`` (bool, same layout as ``rho``;
    ``sigma`` in voxels, ``threshold`` a fraction)."""
    b = gaussian_blur(backend.xp.abs(rho), sigma, backend)
    return b > threshold * b.max()


def autocorrelation_support(model, threshold: float = 0.1):
    """Support of the object's autocorrelation ``|F^-1{I}|`` above ``threshold * max``,
    centred (bool (Z, Y, X)). It contains every centred copy of the object; shrink-wrap
    tightens it."""
    be = model.backend
    auto = be.xp.abs(be.ifftn(model.counts.astype(be.complex_dtype)))
    auto = fftshift(auto)
    return auto > threshold * auto.max()


def random_start(model, rng, support=None, threshold: float = 0.1):
    """Random phases (uniform in [0, 2 pi)) with a flat amplitude inside ``support``
    (default: :func:`autocorrelation_support` at ``threshold``), scaled so that
    ``sum |rho|^2 = sum counts``.

    Returns ``(rho, support)``: complex (Z, Y, X) in the centred layout and the bool support.
    """
    be = model.backend
    xp = be.xp
    if support is None:
        support = autocorrelation_support(model, threshold)
    support = xp.asarray(support, dtype=bool)
    phase = xp.asarray(rng.uniform(0.0, 2.0 * np.pi, support.shape), dtype=be.real_dtype)
    amp = np.sqrt(model.total / max(int(support.sum()), 1))
    rho = (amp * support) * xp.exp(1j * phase)
    return rho.astype(be.complex_dtype), support


class ShrinkWrap:
    """The shrink-wrap schedule of one run, with its guard.

    ``sw`` is the ``shrinkwrap`` section; ``sigma`` the first Gaussian width (voxels). Each
    call shrink-wraps once at the current width and threshold, then lets the width decay
    towards ``sigma_min``. The guard (``guard.iterations`` > 0) runs that many ER iterations
    on the new support and keeps it when the loss then is at most ``1 + tolerance`` times
    the loss before; otherwise it keeps the old support and estimate and multiplies the
    threshold by ``guard.loosen`` (not below ``guard.threshold_min``). ``threshold`` (the
    current one) and ``rejected`` (shrink-wraps refused so far) are reported in the result.
    """

    def __init__(self, sw: dict, sigma: float):
        self.cfg = sw
        self.sigma = float(sigma)
        self.threshold = float(sw["threshold"])
        self.rejected = 0

    def __call__(self, model, rho, support, tolerance: float):
        """Shrink-wrap ``rho`` (zero outside ``support``); returns ``(rho, support)``."""
        sw, guard = self.cfg, self.cfg["guard"]
        new = shrink_wrap(rho, self.sigma, self.threshold, model.backend)
        self.sigma = max(float(sw["sigma_min"]), self.sigma * float(sw["decay"]))
        if not guard["iterations"]:
            return rho * new, new
        before = float(model.loss(ad.const(rho)).data)
        trial = rho * new
        for _ in range(int(guard["iterations"])):
            trial = model.modulus_projection(trial) * new
        if float(model.loss(ad.const(trial)).data) <= (1.0 + tolerance) * before:
            return trial, new
        self.rejected += 1
        floor = min(self.threshold, float(guard["threshold_min"]))
        self.threshold = max(floor, self.threshold * float(guard["loosen"]))
        return rho, support


# ----------------------------------------------------------------------------- HIO / ER
def _hio(model, rho, support, beta: float, n: int):
    """``n`` hybrid input-output iterations from ``rho``."""
    xp = model.backend.xp
    for _ in range(n):
        p = model.modulus_projection(rho)
        rho = xp.where(support, p, rho - beta * p)
    return rho


def _hio_shrinkwrap(model, rho, support, cfg: dict, n: int, wrap: ShrinkWrap, stop, norm: float):
    """``n`` HIO iterations in blocks of ``hio.every`` (0: one block, fixed support), each
    followed by ``hio.er`` ER iterations, a guarded shrink-wrap (``wrap``, tolerance
    ``shrinkwrap.guard.hio_tolerance``) and, when ``stop`` is set, a stop check on the
    normalised loss (data term / ``norm``).

    Returns ``(rho, support, HIO iterations run, normalised losses after each block,
    stopped)``.
    """
    hio = cfg["hio"]
    if not hio["every"]:
        rho = _hio(model, rho, support, float(hio["beta"]), n) * support
        return rho, support, n, [], False
    tolerance = float(cfg["shrinkwrap"]["guard"]["hio_tolerance"])
    done, losses = 0, []
    while done < n:
        k = min(int(hio["every"]), n - done)
        rho = _hio(model, rho, support, float(hio["beta"]), k) * support
        done += k
        for _ in range(int(hio["er"])):
            rho = model.modulus_projection(rho) * support
        rho, support = wrap(model, rho, support, tolerance)
        if stop is not None:
            losses.append(float(model.loss(ad.const(rho)).data) / norm)
            if losses[-1] <= float(stop):
                return rho, support, done, losses, True
    return rho, support, done, losses, False


# ----------------------------------------------------------------------------- refine
def refine(model, init, support, config: dict, rng=None) -> dict:
    """Retrieve the complex object from the counts of ``model``.

    Args:
        model: the far-field model (see the module docstring).
        init: complex start, on the data grid or a smaller centred box, e.g. a network's
            ``support * exp(i phase)``; rescaled to the data by least squares. None:
            :func:`random_start`.
        support: bool start support (same layout/size rules as ``init``). None: the
            autocorrelation support (random start) or a shrink-wrap of ``|init|`` at
            ``sigma_min``.
        config: the settings (the ``cdi`` section, complete): ``iterations``, ``optimizer``
            {kind, lr, beta1, beta2}, ``shrinkwrap`` {every, start, sigma, sigma_min, decay,
            threshold, guard}, ``autocorrelation_threshold``, ``hio`` {iterations (null:
            :data:`RANDOM_START_HIO` from a random start, :data:`ESTIMATE_HIO` from
            ``init``), beta, every, er}, ``stop_loss``, ``starts``; ``loss`` is the
            model's.
        rng: ``numpy.random.Generator`` of the random starts; default seed 0.

    Returns:
        dict with ``object`` (complex, data grid, centred, data units), ``support`` (bool),
        ``loss`` (history, normalised: data term / sum of counts; for ``gaussian`` the
        squared amplitude R-factor), ``r_factor`` (final), ``iterations`` (gradient steps
        run), ``hio_iterations``, ``hio_loss`` (normalised loss after each HIO block, with
        ``stop_loss``), ``stopped`` (``stop_loss`` reached), ``threshold`` (the final
        shrink-wrap threshold) and ``rejected_shrinkwraps`` (refused by the guard),
        ``starts`` (random starts run; the other fields are the kept start's), ``time_s``
        (all starts, s) and ``config``.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    t0 = time.perf_counter()
    best, runs = None, 0
    while runs < (int(config["starts"]) if init is None else 1):
        res = _refine_one(model, init, support, config, rng)
        runs += 1
        if best is None or res["stopped"] or res["r_factor"] < best["r_factor"]:
            best = res
        if res["stopped"]:
            break
    return {**best, "starts": runs, "time_s": time.perf_counter() - t0}


def _refine_one(model, init, support, cfg: dict, rng) -> dict:
    """One :func:`refine` run from ``init`` or one random start."""
    be = model.backend
    xp = be.xp
    total = model.total
    if total <= 0:
        raise ValueError("data holds no counts")
    sw = cfg["shrinkwrap"]
    if support is not None:
        support = model.embed(xp.asarray(support, dtype=bool))
    if init is None:
        rho, support = random_start(model, rng, support, cfg["autocorrelation_threshold"])
    else:
        rho = model.embed(xp.asarray(init, dtype=be.complex_dtype))
        if support is None:
            support = shrink_wrap(rho, sw["sigma_min"], sw["threshold"], be)
    # hold rho in units of the rms amplitude over the start support (Adam's lr is then
    # dimensionless); the counts are scaled accordingly
    scale = total / max(int(support.sum()), 1)
    model = model.rescaled(scale)
    rho = (rho / np.sqrt(scale)).astype(be.complex_dtype)
    if init is not None:
        rho = model.fit_scale(rho)
    rho *= support
    norm = total / scale
    n_hio = cfg["hio"]["iterations"]
    n_hio = int((RANDOM_START_HIO if init is None else ESTIMATE_HIO) if n_hio is None else n_hio)
    # an estimate already has the crystal's shape: its support is not blurred more widely
    wrap = ShrinkWrap(sw, sw["sigma"] if init is None else sw["sigma_min"])
    stop = cfg["stop_loss"]
    rho, support, n_hio, hio_loss, stopped = _hio_shrinkwrap(
        model, rho, support, cfg, n_hio, wrap, stop, norm
    )

    opt = cfg["optimizer"]
    if opt["kind"] == "adam":
        optimizer = Adam({"rho": ParamSettings(lr=float(opt["lr"]))}, opt["beta1"], opt["beta2"])
    else:
        optimizer = GradientDescent({"rho": ParamSettings(lr=model.er_step * float(opt["lr"]))})
    params = {"rho": rho}
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
        optimizer.step(params, {"rho": g}, it)
        if sw["every"] and it >= sw["start"] and it % int(sw["every"]) == 0:
            rho, support = wrap(model, rho * support, support, float(sw["guard"]["tolerance"]))
            params["rho"] = rho
        rho *= support
    return {
        "object": to_numpy(rho * np.sqrt(scale)),
        "support": to_numpy(support),
        "loss": np.asarray(history, dtype=np.float64),
        "r_factor": model.r_factor(rho),
        "iterations": it,
        "hio_iterations": n_hio,
        "hio_loss": np.asarray(hio_loss, dtype=np.float64),
        "stopped": stopped,
        "threshold": wrap.threshold,
        "rejected_shrinkwraps": wrap.rejected,
        "config": cfg,
    }


# ----------------------------------------------------------------------------- result layout
def _circular_centre(weights, axis: int) -> float:
    """Centre of mass of ``weights`` (real >= 0) along ``axis`` on the circle of the
    array's length: in voxels from index 0, in (-n/2, n/2]."""
    n = weights.shape[axis]
    profile = weights.sum(axis=tuple(a for a in range(weights.ndim) if a != axis))
    z = np.sum(profile * np.exp(2j * np.pi * np.arange(n) / n))
    return float(np.angle(z) * n / (2 * np.pi))


def centre(rho, support) -> tuple[np.ndarray, np.ndarray, dict]:
    """``rho`` (complex NumPy array, the centred layout of :func:`refine`) with the
    ambiguities of far-field phase retrieval fixed, and its ``support`` moved with it.

    1. The linear phase ramp is removed: the centre of mass of ``|F{rho}|^2`` (the fitted
       pattern, DC at index 0; on the circle) is ``k`` voxels of the Fourier grid from the
       zero frequency (the Bragg peak's offset from the middle of a centred pattern), and
       ``rho`` is multiplied by ``exp(-2 pi i sum_a k_a (r_a - n_a//2) / n_a)``.
    2. The centre of mass of ``|rho|`` (on the circle) is moved to the middle index
       ``n_a//2`` of each axis by a circular shift of whole voxels.
    3. The global phase is set so that the amplitude-weighted mean phase inside ``support``
       is 0 (``sum_support rho`` real and positive).

    Returns ``(rho, support, info)``; ``info``: ``phase_ramp`` (``k``, (ndim,) float64,
    voxels of the Fourier grid: ``rho * exp(+2 pi i sum_a k_a (r_a - n_a//2) / n_a)`` fits the
    data again, up to a global phase) and ``shift`` ((ndim,) int64, voxels rolled).
    """
    rho = np.asarray(rho)
    support = np.asarray(support, dtype=bool)
    shape = rho.shape
    intensity = np.abs(fftn(rho)) ** 2
    k = np.array([_circular_centre(intensity, a) for a in range(rho.ndim)])
    phase = 0.0
    for a, n in enumerate(shape):
        r = (np.arange(n) - n // 2).reshape([-1 if b == a else 1 for b in range(rho.ndim)])
        phase = phase + k[a] * r / n
    rho = rho * np.exp(-2j * np.pi * phase).astype(rho.dtype)
    amp = np.abs(rho)
    shift = np.zeros(rho.ndim, np.int64)
    for a, n in enumerate(shape):
        s = int(np.rint(n // 2 - _circular_centre(amp, a))) % n
        shift[a] = s - n if s > n // 2 else s
    rho = np.roll(rho, tuple(shift), axis=tuple(range(rho.ndim)))
    support = np.roll(support, tuple(shift), axis=tuple(range(rho.ndim)))
    total = rho[support].sum() if support.any() else rho.sum()
    if abs(total) > 0:
        rho = rho * (np.conj(total) / abs(total)).astype(rho.dtype)
    return rho, support, {"phase_ramp": k, "shift": shift}


def oversampling(rho, threshold: float = 0.1) -> np.ndarray:
    """Linear oversampling ratio per axis: the array's length over the object's extent,
    the voxels of the projection on that axis of ``|rho| > threshold * max |rho|`` (on the
    circle: the length minus the longest empty run); NaN for a zero object. Phasing needs
    at least 2 per axis. (The shrink-wrapped support is no measure: it has a margin of
    about ``sigma_min`` voxels and, where the guard loosened it, more.)"""
    amp = np.abs(np.asarray(rho))
    inside = amp > threshold * amp.max()
    out = np.full(amp.ndim, np.nan)
    for a, n in enumerate(amp.shape):
        proj = inside.any(axis=tuple(b for b in range(amp.ndim) if b != a))
        if proj.any():
            filled = np.flatnonzero(proj)
            gaps = np.diff(np.concatenate([filled, [filled[0] + n]])) - 1
            out[a] = n / (n - gaps.max())
    return out


# ----------------------------------------------------------------------------- network start
def refine_from_prediction(model, support, phase, config: dict) -> dict:
    """:func:`refine` from a network's prediction of the crystal box (support probability
    and phase (rad), (m, m, m), e.g. one of a batch): the model's ``prediction_start``
    (start, loose support and, when ``hio.iterations`` is null, the HIO iterations).

    Returns :func:`refine`'s dict plus ``start`` (the start on the data grid, unscaled).
    """
    start = model.prediction_start(support, phase)
    cfg = copy.deepcopy(config)
    if cfg["hio"]["iterations"] is None:
        cfg["hio"]["iterations"] = start["hio_iterations"]
    res = refine(model, start["init"], start["support"], cfg)
    return {**res, "start": start["init"]}


def refine_from_network(model, network, config: dict, device: str = "cpu") -> dict:
    """The network's prediction for the model's counts (a model file or a loaded network,
    on ``device``), then :func:`refine_from_prediction`.

    Returns :func:`refine`'s dict with ``time_s`` including the network, plus
    ``network_time_s``, ``network_support`` and ``network_phase`` (crystal box) and
    ``start`` (the start on the data grid, unscaled).
    """
    t0 = time.perf_counter()
    sup, ph, t_net = model.network_prediction(network, device)
    res = refine_from_prediction(model, sup, ph, config)
    res.update(
        time_s=time.perf_counter() - t0,
        network_time_s=t_net,
        network_support=sup,
        network_phase=ph,
    )
    return res
