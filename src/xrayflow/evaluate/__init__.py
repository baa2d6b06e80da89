"""Evaluate stage: alignment (ambiguity removal), image metrics, FRC/FSC, figures, CLI.

Modules: :mod:`~xrayflow.evaluate.alignment`, :mod:`~xrayflow.evaluate.metrics`,
:mod:`~xrayflow.evaluate.frc`, :mod:`~xrayflow.evaluate.figures`,
:mod:`~xrayflow.evaluate.report` (``evaluate``, ``evaluate_files``, ``read_object``),
:mod:`~xrayflow.evaluate.cli`. ``xrayflow.evaluate.frc`` is the module (the
function is ``xrayflow.evaluate.frc.frc``).
"""

from xrayflow.evaluate.alignment import (
    align,
    fourier_shift,
    register_subpixel,
    remove_global_phase,
    remove_phase_ramp,
    remove_twin,
)
from xrayflow.evaluate.frc import half_bit_threshold, one_bit_threshold, resolution
from xrayflow.evaluate.metrics import mean_average_precision, psnr, r2_score, ssim
from xrayflow.evaluate.report import evaluate, evaluate_files, read_object

__all__ = [
    "align",
    "evaluate",
    "evaluate_files",
    "fourier_shift",
    "half_bit_threshold",
    "mean_average_precision",
    "one_bit_threshold",
    "psnr",
    "r2_score",
    "read_object",
    "register_subpixel",
    "remove_global_phase",
    "remove_phase_ramp",
    "remove_twin",
    "resolution",
    "ssim",
]
