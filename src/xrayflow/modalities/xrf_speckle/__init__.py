"""Speckle-illuminated X-ray fluorescence: element maps from fluorescence counts under K
sandpaper-speckle illuminations (:mod:`.diffusers`, :mod:`.fluorescence`, :mod:`.simulate`;
config section ``xrf_speckle``)."""

import json
from pathlib import Path

from xrayflow.modalities.registry import Modality
from xrayflow.modalities.xrf_speckle import model, simulate

#: The simulate-config section ``xrf_speckle``.
SIMULATE_SECTIONS = json.loads((Path(__file__).parent / "simulate.schema.json").read_text())

MODALITY = Modality(
    name="xrf_speckle",
    description="X-ray fluorescence under sandpaper-speckle illumination (structured XRF)",
    far_field=False,
    real_space_frames=True,
    simulate=simulate.simulate,
    simulate_sections=SIMULATE_SECTIONS,
    simulate_memory=simulate.memory_parts,
    simulate_check=simulate.check_config,
    evaluate="element_maps",
    build_model=model.build_model,
    solver="linear_inverse",
    reconstruct_sections=json.loads(
        (Path(__file__).parent / "reconstruct.schema.json").read_text()
    ),
)
