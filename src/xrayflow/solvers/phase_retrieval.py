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
from xrayflow.backend import fftfreq, fftshift, to_numpy
from xrayflow.solvers.optimizers import Adam, GradientDescent, ParamSettings

__all__ = [
    "ESTIMATE_HIO",
    "RANDOM_START_HIO",
    "autocorrelation_support",
    "gaussian_blur",
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


# ----------------------------------------------------------------------------- HIO / ER
def _hio(model, rho, support, beta: float, n: int):
    """``n`` hybrid input-output iterations from ``rho``."""
    xp = model.backend.xp
    for _ in range(n):
        p = model.modulus_projection(rho)
        rho = xp.where(support, p, rho - beta * p)
    return rho


def _hio_shrinkwrap(model, rho, support, cfg: dict, n: int, sigma: float, stop, norm: float):
    """``n`` HIO iterations in blocks of ``hio.every`` (0: one block, fixed support), each
    followed by ``hio.er`` ER iterations, a shrink-wrap (width ``sigma``, then decaying) and,
    when ``stop`` is set, a stop check on the normalised loss (data term / ``norm``).

    Returns ``(rho, support, sigma, HIO iterations run, normalised losses after each block,
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
            threshold}, ``autocorrelation_threshold``, ``hio`` {iterations (null:
            :data:`RANDOM_START_HIO` from a random start, :data:`ESTIMATE_HIO` from
            ``init``), beta, every, er}, ``stop_loss``, ``starts``; ``loss`` is the
            model's.
        rng: ``numpy.random.Generator`` of the random starts; default seed 0.

    Returns:
        dict with ``object`` (complex, data grid, centred, data units), ``support`` (bool),
        ``loss`` (history, normalised: data term / sum of counts; for ``gaussian`` the
        squared amplitude R-factor), ``r_factor`` (final), ``iterations`` (gradient steps
        run), ``hio_iterations``, ``hio_loss`` (normalised loss after each HIO block, with
        ``stop_loss``), ``stopped`` (``stop_loss`` reached), ``starts`` (random starts run;
        the other fields are the kept start's), ``time_s`` (all starts, s) and ``config``.
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
    sigma = float(sw["sigma"] if init is None else sw["sigma_min"])
    stop = cfg["stop_loss"]
    rho, support, sigma, n_hio, hio_loss, stopped = _hio_shrinkwrap(
        model, rho, support, cfg, n_hio, sigma, stop, norm
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
            support = shrink_wrap(rho * support, sigma, sw["threshold"], be)
            sigma = max(float(sw["sigma_min"]), sigma * float(sw["decay"]))
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
        "config": cfg,
    }


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
