"""3D Bragg coherent diffraction imaging of a strained crystal: simulation
(:mod:`.simulate`), differentiable far-field model (:mod:`.model`), reconstructed by the
phase-retrieval solver (:mod:`xrayflow.solvers.phase_retrieval`: HIO/ER with shrink-wrap,
then gradient refinement; settings: the reconstruct section ``cdi``,
``reconstruct.schema.json``), optionally from a network's prediction
(:mod:`.network_start`)."""

import json
from pathlib import Path

from xrayflow.config import load_config
from xrayflow.modalities.bragg_cdi import model, simulate
from xrayflow.modalities.registry import Modality

HERE = Path(__file__).parent
#: The reconstruct-config sections of this modality (``cdi``), a closed JSON schema.
RECONSTRUCT_SECTIONS = json.loads((HERE / "reconstruct.schema.json").read_text())


def settings(cdi: dict | None = None) -> dict:
    """The phase-retrieval settings: the ``cdi`` section ``cdi`` (partial or None) with the
    schema defaults filled in, validated (ConfigError naming ``cdi.<key>``)."""
    return load_config(cdi, RECONSTRUCT_SECTIONS["cdi"], name="cdi")


MODALITY = Modality(
    name="bragg_cdi",
    description="3D Bragg CDI of a strained faceted crystal",
    simulate=simulate.bragg_cdi,
    simulate_sections=json.loads((HERE / "simulate.schema.json").read_text()),
    simulate_memory=simulate.memory_parts,
    build_model=model.build,
    solver="phase_retrieval",
    reconstruct_sections=RECONSTRUCT_SECTIONS,
    training="xrayflow.modalities.bragg_cdi.training",
    evaluate="density",
    exports={
        "cohere": "xrayflow.export.cohere:write_results",
        "vtk": "xrayflow.export.vtk:write_density",
    },
)
