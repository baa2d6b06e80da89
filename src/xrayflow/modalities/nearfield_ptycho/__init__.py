"""Near-field (Fresnel) ptychography with a structured beam, plane-wave or cone-beam
(:mod:`.simulate`, :mod:`.model`): the sample scanned across a diffuser-structured beam,
in-line holograms on the detector; single slice or multislice."""

from xrayflow.modalities.nearfield_ptycho import model, simulate
from xrayflow.modalities.registry import PTYCHO_EXPORTS, Modality

MODALITY = Modality(
    name="nearfield_ptycho",
    description="near-field ptychography with a structured (diffuser) beam",
    simulate=simulate.nearfield_ptycho,
    simulate_memory=simulate.memory_parts,
    far_field=False,
    build_model=model.build,
    real_space_frames=True,
    evaluate="object",
    exports=PTYCHO_EXPORTS,
)
