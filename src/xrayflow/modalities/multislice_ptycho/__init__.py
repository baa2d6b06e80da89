"""Far-field multislice ptychography of a thick object cut into slabs along the beam.

Simulation and model are those of :mod:`xrayflow.modalities.ptycho2d` with S slices and a
Fresnel (or angular-spectrum) propagator between them.
"""

from xrayflow.modalities.ptycho2d import model, simulate
from xrayflow.modalities.registry import PTYCHO_EXPORTS, Modality

MODALITY = Modality(
    name="multislice_ptycho",
    description="far-field ptychography of a thick sample",
    simulate=simulate.multislice_ptycho,
    simulate_memory=simulate.memory_parts,
    build_model=model.build,
    evaluate="object",
    exports=PTYCHO_EXPORTS,
)
