"""Detector corrections of the ingest, on NumPy blocks of frames ``(k, ny, nx)``.

Order (docs/data-format.md, section 7): dark subtraction, offset and gain (ADU → photons),
flat-field division, optional rounding, negative values to 0, bad pixels to 0; then crop
around the diffraction centre and binning. :mod:`xrayflow.ingest.pipeline` maps
:func:`to_photons` over the Dask blocks.
"""

from __future__ import annotations

import numpy as np

from xrayflow.errors import ConfigError, DataError


def to_photons(
    raw: np.ndarray,
    dark: np.ndarray | None,
    flat: np.ndarray | None,
    gain: float,
    offset: float,
    rounding: bool,
    good: np.ndarray,
) -> np.ndarray:
    """Photons per pixel, float32: ``(raw − dark − offset) / gain / flat`` (raw, dark and
    offset in ADU, gain in ADU per photon, flat the normalised response), rounded to
    integers when ``rounding``, negatives set to 0 and pixels where ``good`` is False set
    to 0 (NaN there too). NaN or inf at a good pixel stays (the writer refuses it)."""
    x = raw.astype(np.float32)  # a copy: the caller's block is left alone
    if dark is not None:
        x -= dark
    if offset:
        x -= np.float32(offset)
    if gain != 1:
        x /= np.float32(gain)
    if flat is not None:
        x /= flat
    if rounding:
        np.rint(x, out=x)
    np.maximum(x, 0, out=x)  # NaN propagates
    x[:, ~good] = 0
    return x


def flat_response(
    flat_mean: np.ndarray, dark: np.ndarray | None, offset: float, min_response: float
) -> tuple[np.ndarray, np.ndarray]:
    """The normalised flat-field response and the pixels it leaves good.

    ``flat_mean`` (ADU) less the dark and the offset, divided by its median over the pixels
    that respond (> 0); pixels below ``min_response`` are bad (their response is set to 1).
    Returns ``(response float32, good bool)``.
    """
    resp = np.asarray(flat_mean, dtype=np.float64) - offset
    if dark is not None:
        resp = resp - dark
    positive = resp > 0
    if not positive.any():
        raise DataError("flat: the flat field (less dark and offset) has no positive pixel")
    resp = resp / np.median(resp[positive])
    good = resp >= min_response
    return np.where(good, resp, 1.0).astype(np.float32), good


def centre_of_mass(frame: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    """Centre of mass ``(y, x)`` (pixels) of ``frame`` over the good pixels."""
    w = np.where(good, frame, 0.0).astype(np.float64)
    total = w.sum()
    if not total > 0:
        raise DataError(
            "the mean frame has no counts on the good pixels: cannot find the diffraction "
            "centre (give crop.centre as [y, x])"
        )
    yy, xx = np.indices(w.shape)
    return float((w * yy).sum() / total), float((w * xx).sum() / total)


def crop_window(
    centre: tuple[float, float], shape, frame_shape: tuple[int, int]
) -> tuple[slice, slice]:
    """Rows and columns of the ``shape`` window whose pixel ``(ny//2, nx//2)`` is the
    (rounded) ``centre``; ConfigError naming ``crop.shape`` when it leaves the detector."""
    cy, cx = (int(np.rint(c)) for c in centre)
    y0, x0 = cy - shape[0] // 2, cx - shape[1] // 2
    y1, x1 = y0 + shape[0], x0 + shape[1]
    if y0 < 0 or x0 < 0 or y1 > frame_shape[0] or x1 > frame_shape[1]:
        raise ConfigError(
            f"ingest.crop.shape: {list(shape)} around the centre ({cy}, {cx}) spans rows "
            f"{y0}..{y1 - 1} and columns {x0}..{x1 - 1}, outside the "
            f"{frame_shape[0]}x{frame_shape[1]} detector; choose a smaller window"
        )
    return slice(y0, y1), slice(x0, x1)


def bin_good(good: np.ndarray, b: int) -> np.ndarray:
    """A binned pixel is good when all its ``b × b`` detector pixels are."""
    ny, nx = good.shape
    return good.reshape(ny // b, b, nx // b, b).all(axis=(1, 3))
