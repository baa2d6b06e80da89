"""3D Bragg coherent diffraction imaging of a strained crystal: simulation
(:mod:`.simulate`), differentiable far-field model (:mod:`.model`), reconstructed by phase
retrieval (HIO/ER with shrink-wrap, then gradient refinement), optionally from a network's
prediction (:mod:`.training`)."""

import json
from pathlib import Path

from xrayflow.modalities.bragg_cdi import model, simulate
from xrayflow.modalities.registry import Modality

HERE = Path(__file__).parent

MODALITY = Modality(
    name="bragg_cdi",
    description="3D Bragg CDI of a strained faceted crystal",
    simulate=simulate.bragg_cdi,
    simulate_sections=json.loads((HERE / "simulate.schema.json").read_text()),
    simulate_memory=simulate.memory_parts,
    build_model=model.BraggCDIModel,
    solver="phase_retrieval",
    reconstruct_sections=json.loads((HERE / "reconstruct.schema.json").read_text()),
    training="xrayflow.modalities.bragg_cdi.training",
    evaluate="density",
)
