"""2D far-field ptychography of a thin object (the projection approximation).

The forward model and its simulation are the one-slice case of far-field multislice
ptychography (:mod:`.simulate`, :mod:`.model`; ``multislice_ptycho`` uses them with S
slices).
"""

from functools import partial

from xrayflow.modalities.ptycho2d import model, simulate
from xrayflow.modalities.registry import PTYCHO_EXPORTS, Modality

MODALITY = Modality(
    name="ptycho2d",
    description="2D far-field ptychography of the projected phantom",
    simulate=simulate.ptycho2d,
    simulate_memory=partial(simulate.memory_parts, single_slice=True),
    build_model=partial(model.build, single_slice=True),
    training="xrayflow.modalities.ptycho2d.training",
    evaluate="object",
    exports=PTYCHO_EXPORTS,
)
