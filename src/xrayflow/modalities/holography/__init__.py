"""Near-field (in-line Fresnel) holography, plane-wave or cone-beam, at one or several
distances (:mod:`.simulate`, :mod:`.model`; config section ``holography``)."""

import json
from pathlib import Path

from xrayflow.modalities.holography import model, simulate
from xrayflow.modalities.registry import Modality

MODALITY = Modality(
    name="holography",
    description="near-field Fresnel holography",
    simulate=simulate.holography,
    simulate_sections=json.loads((Path(__file__).parent / "simulate.schema.json").read_text()),
    simulate_memory=simulate.memory_parts,
    simulate_check=simulate.check_config,
    far_field=False,
    build_model=model.build,
    real_space_frames=True,
    scanned=False,
    evaluate="object",
)
