"""Image and learning metrics with explicit conventions (NumPy + scipy.ndimage only).

* :func:`ssim`: Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 13, 600 (2004), Gaussian window
  sigma = 1.5 truncated at 3.5 sigma (11 taps), K1 = 0.01, K2 = 0.03, population
  (co)variances, borders of half a window cropped before averaging: the same number as
  ``skimage.metrics.structural_similarity(a, b, data_range=..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` for 2D images and 3D volumes. ``data_range`` is
  required: no guessing from the dtype.
* :func:`psnr`: ``10 log10(data_range^2 / MSE)`` with an explicit ``data_range``.
* :func:`r2_score`: coefficient of determination (as scikit-learn, uniform average).
* :func:`average_precision` / :func:`mean_average_precision`: scikit-learn's
  ``average_precision_score`` (step-wise sum of precision times recall increments, ties
  grouped), per class, then the mean over classes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = [
    "average_precision",
    "mean_average_precision",
    "mse",
    "nrmse",
    "psnr",
    "r2_score",
    "ssim",
    "ssim_map",
]

K1, K2, SIGMA, TRUNCATE = 0.01, 0.03, 1.5, 3.5


def _real_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        raise ValueError("metric needs real images: compare amplitude and phase separately")
    return a.astype(np.float64), b.astype(np.float64)


def _check_range(data_range) -> float:
    if data_range is None:
        raise ValueError("data_range is required (e.g. target max - min, 1, or 2*pi)")
    dr = float(data_range)
    if not np.isfinite(dr) or dr <= 0:
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    return dr


def ssim_map(a, b, data_range, sigma: float = SIGMA) -> np.ndarray:
    """Local SSIM at every pixel (before the border crop), float64, same shape as the input."""
    x, y = _real_pair(a, b)
    dr = _check_range(data_range)
    win = 2 * int(TRUNCATE * sigma + 0.5) + 1
    if any(n < win for n in x.shape):
        raise ValueError(
            f"SSIM needs every axis >= {win} pixels (Gaussian window, sigma={sigma}); "
            f"got shape {x.shape}"
        )

    def filt(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, sigma=sigma, truncate=TRUNCATE, mode="reflect")

    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    c1 = (K1 * dr) ** 2
    c2 = (K2 * dr) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux * ux + uy * uy + c1) * (vx + vy + c2)
    return num / den


def ssim(a, b, data_range, *, mask=None, sigma: float = SIGMA) -> float:
    """Mean structural similarity of two real images/volumes (see module docstring).

    Args:
        a, b: real arrays of the same shape (2D or 3D), every axis >= 11 pixels.
        data_range: dynamic range of the images (required), e.g. ``ref.max() - ref.min()``
            for amplitudes, 1 for phase mapped to [0, 1], 2*pi for raw phase.
        mask: optional boolean array: average the SSIM map over ``mask`` (within the
            cropped interior) instead of over the whole interior. Not a scikit-image
            option; without ``mask`` the result equals scikit-image's.
    """
    s = ssim_map(a, b, data_range, sigma=sigma)
    pad = (2 * int(TRUNCATE * sigma + 0.5) + 1 - 1) // 2
    inner = tuple(slice(pad, n - pad) for n in s.shape)
    if mask is None:
        return float(s[inner].mean(dtype=np.float64))
    m = np.broadcast_to(np.asarray(mask, dtype=bool), s.shape)[inner]
    if not m.any():
        return float("nan")
    return float(s[inner][m].mean(dtype=np.float64))


def mse(a, b) -> float:
    """Mean squared error of two real arrays."""
    x, y = _real_pair(a, b)
    return float(np.mean((x - y) ** 2, dtype=np.float64))


def psnr(a, b, data_range) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)`` (inf if equal).

    ``a`` is the reference (the argument order does not change the value).
    """
    dr = _check_range(data_range)
    err = mse(a, b)
    if err == 0:
        return float("inf")
    return float(10.0 * np.log10(dr * dr / err))


def nrmse(est, ref) -> float:
    """``||est - ref|| / ||ref||`` (complex allowed)."""
    est = np.asarray(est)
    ref = np.asarray(ref)
    if est.shape != ref.shape:
        raise ValueError(f"shape mismatch: {est.shape} vs {ref.shape}")
    den = float(np.linalg.norm(ref))
    num = float(np.linalg.norm(est - ref))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def r2_score(y_true, y_pred, multioutput: str = "uniform_average"):
    """Coefficient of determination ``1 - SS_res / SS_tot`` per output column.

    As scikit-learn (``force_finite=True``): a constant target gives 1.0 for a perfect
    prediction and 0.0 otherwise. ``multioutput``: ``"uniform_average"`` (mean over
    outputs) or ``"raw_values"`` (array).
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.shape != yp.shape:
        raise ValueError(f"shape mismatch: y_true {yt.shape} vs y_pred {yp.shape}")
    if yt.ndim == 1:
        yt, yp = yt[:, None], yp[:, None]
    if yt.shape[0] < 2:
        raise ValueError("r2_score needs at least two samples")
    ss_res = np.sum((yt - yp) ** 2, axis=0)
    ss_tot = np.sum((yt - yt.mean(axis=0)) ** 2, axis=0)
    out = np.ones(yt.shape[1])
    nz = ss_tot != 0
    out[nz] = 1.0 - ss_res[nz] / ss_tot[nz]
    out[~nz & (ss_res != 0)] = 0.0
    if multioutput == "raw_values":
        return out
    if multioutput != "uniform_average":
        raise ValueError("multioutput must be 'uniform_average' or 'raw_values'")
    return float(out.mean())


def average_precision(y_true, y_score) -> float:
    """Average precision of one binary problem, as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in decreasing
    order (tied scores form one threshold). NaN when there is no positive sample.
    """
    yt = np.asarray(y_true).ravel().astype(bool)
    ys = np.asarray(y_score, dtype=np.float64).ravel()
    if yt.shape != ys.shape:
        raise ValueError(f"shape mismatch: y_true {yt.shape} vs y_score {ys.shape}")
    npos = int(yt.sum())
    if npos == 0:
        return float("nan")
    order = np.argsort(-ys, kind="mergesort")
    ys, yt = ys[order], yt[order]
    last = np.r_[np.nonzero(np.diff(ys))[0], ys.size - 1]  # last index of each threshold
    tp = np.cumsum(yt)[last].astype(np.float64)
    predicted = (last + 1).astype(np.float64)
    precision = tp / predicted
    recall = tp / npos
    dr = np.diff(np.r_[0.0, recall])
    return float(np.sum(dr * precision))


def mean_average_precision(y_true, y_score, *, per_class: bool = False):
    """Mean over classes of the per-class average precision (one-vs-rest).

    Args:
        y_true: integer class labels ``(N,)`` in ``0..C-1``, or a binary indicator
            matrix ``(N, C)``.
        y_score: scores ``(N, C)`` (probabilities or logits; only the order matters).
        per_class: also return the array of per-class AP.

    Classes without any positive sample have an undefined AP (NaN) and are left out of
    the mean (scikit-learn would warn and count them as 0).
    """
    ys = np.asarray(y_score, dtype=np.float64)
    if ys.ndim != 2:
        raise ValueError(f"y_score must be (N, C), got shape {ys.shape}")
    yt = np.asarray(y_true)
    if yt.ndim == 1:
        if yt.shape[0] != ys.shape[0]:
            raise ValueError(f"y_true has {yt.shape[0]} labels for {ys.shape[0]} score rows")
        labels = yt.astype(np.int64)
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= ys.shape[1]:
            raise ValueError(f"labels must lie in 0..{ys.shape[1] - 1}")
        ind = np.zeros(ys.shape, dtype=bool)
        ind[np.arange(labels.size), labels] = True
    else:
        if yt.shape != ys.shape:
            raise ValueError(f"shape mismatch: y_true {yt.shape} vs y_score {ys.shape}")
        ind = yt.astype(bool)
    ap = np.array([average_precision(ind[:, c], ys[:, c]) for c in range(ys.shape[1])])
    valid = ~np.isnan(ap)
    m = float(ap[valid].mean()) if valid.any() else float("nan")
    return (m, ap) if per_class else m
