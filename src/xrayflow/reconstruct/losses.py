"""Data terms (re-exported from the models) and the per-pixel normalisation for reports."""

from xrayflow.models.ptychography import intensity_loss, loss_target

__all__ = ["intensity_loss", "loss_target", "LOSSES"]

#: gaussian: amplitude least squares (variance-stabilised Poisson); poisson: NLL.
LOSSES = ("gaussian", "poisson")
