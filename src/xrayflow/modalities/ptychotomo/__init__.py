"""Ptycho-tomography: multislice far-field ptychography of a δ/β volume at a series of
rotation angles about y; the unknown is the volume (:mod:`.simulate`, :mod:`.model`)."""

from functools import partial

from xrayflow.modalities.ptycho2d.simulate import memory_parts
from xrayflow.modalities.ptychotomo import model, simulate
from xrayflow.modalities.registry import Modality

MODALITY = Modality(
    name="ptychotomo",
    description="multislice ptychography at a series of angles",
    simulate=simulate.ptychotomo,
    simulate_memory=partial(memory_parts, rotation=True),
    build_model=model.build,
    object_memory=model.object_memory,
    rotation_series=True,
    evaluate="refractive",
    exports={"vtk": "xrayflow.export.vtk:write_refractive"},
)
