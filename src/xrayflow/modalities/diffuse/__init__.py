"""Diffuse X-ray scattering of disordered 2D crystals and CNN regression of their
short-range order (after Welberry, Chan et al.): the encoding (Warren–Cowley coefficients on
neighbour vectors, :mod:`.encoding`), Monte Carlo lattices that reach a target encoding
(:mod:`.lattice`), their diffuse intensity and the closed-form forward map
(:mod:`.diffraction`), the simulate stage (:mod:`.simulate`; config section ``diffuse``),
the networks' training hooks (:mod:`.training`) and the evaluation of predicted encodings
(:mod:`.evaluation`: R², MAE, image-space R² of re-simulated images).

``far_field`` is False: the images are computed on a reciprocal-space grid (reciprocal
lattice units), not from a detector geometry.
"""

from xrayflow.modalities.diffuse import simulate
from xrayflow.modalities.registry import Modality

MODALITY = Modality(
    name="diffuse",
    description="diffuse scattering of disordered crystals (short-range-order regression)",
    far_field=False,
    simulate=simulate.simulate,
    simulate_sections=simulate.SIMULATE_SECTIONS,
    simulate_memory=simulate.memory_parts,
    simulate_check=simulate.check_config,
    training="xrayflow.modalities.diffuse.training",
    evaluator="xrayflow.modalities.diffuse.evaluation",
)
