"""Imaging modalities, one package each (simulation, differentiable model, config-schema
fragments, training hooks, evaluation kind), and the registry the stages dispatch through.

Shared building blocks of the modalities: :mod:`.simulation` (config sections -> probe,
scan, phantom, detector, photons; the simulation checks), :mod:`.losses` (the data terms),
:mod:`.transmission` (the object as a complex transmission or δ/β). Adding a modality:
a new package here plus one entry in :data:`BUILTIN` (``docs/adding-a-modality.md``).
"""

from xrayflow.modalities.registry import (
    EVALUATE_KINDS,
    Modality,
    get_modality,
    modalities,
    register,
    stage_schema,
    unregister,
)

#: The built-in modalities: ``xrayflow.modalities.<name>.MODALITY``, registered on first lookup.
BUILTIN = (
    "ptycho2d",
    "multislice_ptycho",
    "ptychotomo",
    "holography",
    "nearfield_ptycho",
    "bragg_cdi",
    "xrf_speckle",
    "scattering",
    "diffuse",
)

__all__ = [
    "BUILTIN",
    "EVALUATE_KINDS",
    "Modality",
    "get_modality",
    "modalities",
    "register",
    "stage_schema",
    "unregister",
]
