"""Tagged SAXS/WAXS detector images for multi-label classification (NSLS-II; Wang, Yager,
Yu et al.): a physics-based generator (:mod:`.detector`, :mod:`.terms`, :mod:`.generator`),
the tag vocabulary (:mod:`.tags`), the simulate stage (:mod:`.simulate`; config section
``scattering``), the Fourier–Bessel features (:mod:`.fourier_bessel`), the networks'
training hooks (:mod:`.training`) and the evaluation of their tag predictions
(:mod:`.evaluation`: average precision, mAP).

``far_field`` is False: the images are computed with the exact flat-detector geometry
(``2θ = atan(r/D)``), not the paraxial FFT model whose angle limit would refuse wide-angle
(WAXS) detectors.
"""

from xrayflow.modalities.registry import Modality
from xrayflow.modalities.scattering import simulate

MODALITY = Modality(
    name="scattering",
    description="tagged SAXS/WAXS detector images (multi-label classification)",
    far_field=False,
    simulate=simulate.simulate,
    simulate_sections=simulate.SIMULATE_SECTIONS,
    simulate_memory=simulate.memory_parts,
    simulate_check=simulate.check_config,
    training="xrayflow.modalities.scattering.training",
    evaluator="xrayflow.modalities.scattering.evaluation",
)
