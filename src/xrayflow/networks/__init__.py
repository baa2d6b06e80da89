"""Neural networks below the stages: architectures, model files and loss helpers (torch).

Imported by the train stage, by the modalities' training hooks
(``xrayflow.modalities.<name>.training``), by the Bragg CDI network start and by the
reconstruct stage's network method (:mod:`.siren`); it imports
torch at module top, so import it only where torch is needed. It knows no modality: a
network is described by its number of spatial axes and its heads (physical quantities,
:data:`~.encoder_decoder.HEADS`).

Modules: :mod:`.layers` (global batch norm, conv blocks), :mod:`.encoder_decoder` (the
encoder with one decoder per head), :mod:`.files` (model files), :mod:`.losses` (per-sample
loss terms shared by the training hooks), :mod:`.physics` (``xrayflow.ad`` physics as torch
functions), :mod:`.siren` (a SIREN coordinate network fitted per sample to
structured-illumination counts), :mod:`.cnn` (image → vector networks: multi-label tags of
scattering images, encodings of disordered crystals).
"""

from xrayflow.networks.cnn import (
    EncodingRegressor,
    TagClassifier,
    balanced_pos_weight,
    multilabel_bce,
    regression_loss,
)
from xrayflow.networks.encoder_decoder import (
    HEADS,
    EncoderDecoder,
    count_parameters,
    network_options,
)
from xrayflow.networks.files import (
    MODEL_FORMAT,
    atomic_torch_save,
    jsonable,
    load_model,
    save_model,
)
from xrayflow.networks.layers import GlobalBatchNorm

__all__ = [
    "HEADS",
    "MODEL_FORMAT",
    "EncoderDecoder",
    "EncodingRegressor",
    "GlobalBatchNorm",
    "TagClassifier",
    "atomic_torch_save",
    "count_parameters",
    "jsonable",
    "load_model",
    "balanced_pos_weight",
    "multilabel_bce",
    "network_options",
    "regression_loss",
    "save_model",
]
