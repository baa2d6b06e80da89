"""The hierarchical tag vocabulary of scattering images (multi-label classification).

Dotted names ``family.group.tag`` after the NSLS-II tag families (Wang, Yager, Yu et al.):
what the image shows (``features``), its overall character and problems (``image``), the
instrument (``instrumental``) and the kind of sample (``sample``). Every tag of a simulated
image is set by the term of the generator that caused it (:mod:`.terms`, :mod:`.generator`).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import numpy as np

from xrayflow.errors import ConfigError

#: Every tag, in the order of the tag vectors' columns.
TAGS: tuple[str, ...] = (
    # what the image shows
    "features.main.ring",  # a sharp ring (powder ring, lamellar order)
    "features.main.halo",  # a broad ring (amorphous halo)
    "features.main.diffuse_low_q",  # power law, Guinier, Ornstein-Zernike, Debye-Bueche
    "features.main.diffuse_high_q",  # intensity rising towards the detector edge
    "features.variations.many_rings",  # at least `many_rings` rings on the image
    "features.variations.oval_ring",  # elliptically distorted rings
    "features.variations.symmetry_ring",  # rings made of n-fold arcs (texture)
    "features.variations.symmetry_halo",  # a halo made of n-fold arcs
    "features.variations.higher_orders",  # rings at integer multiples of a first order
    "features.other.coherent_speckle",  # speckle of a coherent beam on the scattering
    "features.other.background",  # a flat background
    "features.other.high_background",  # above the mean scattering (also tagged background)
    # the image as a whole
    "image.general.weak_scattering",
    "image.general.intermediate_scattering",
    "image.general.strong_scattering",
    "image.general.form_factor",  # form-factor oscillations of dilute particles
    "image.general.structure_factor",  # Bragg peaks or rings of a particle lattice
    "image.problem.blocked",  # part of the image in the shadow of an obstruction
    "image.problem.zingers",  # isolated very bright pixels (cosmic rays)
    "image.problem.saturation",  # pixels clipped at the detector's maximum
    "image.problem.parasitic_slit_scattering",  # streaks through the beam centre
    "image.problem.windowed",  # scattering cut off outside a window (flight-tube exit)
    # the instrument
    "instrumental.beam.direct_beam",  # the direct beam on the detector (no beamstop)
    "instrumental.beam.off_image",  # the beam centre outside the image
    "instrumental.beamstop.circular",  # the beamstop's disc on the image
    "instrumental.beamstop.linear",  # its arm of constant width on the image
    "instrumental.beamstop.wedge",  # its arm widening towards the image edge
    "instrumental.detector.gaps",  # insensitive gaps between detector modules
    # the sample
    "sample.type.amorphous",
    "sample.type.single_crystal",
    "sample.type.polycrystalline",
    "sample.type.large_grains",
)


def check_tags(names: Iterable[str], key: str) -> tuple[int, ...]:
    """Indices into :data:`TAGS` of ``names``; ConfigError naming ``key`` (and the closest
    known tag) for an unknown or repeated name."""
    out: list[int] = []
    for i, name in enumerate(names):
        if name not in TAGS:
            close = difflib.get_close_matches(str(name), TAGS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{key}[{i}]: unknown tag {name!r}{hint}")
        if TAGS.index(name) in out:
            raise ConfigError(f"{key}[{i}]: tag {name!r} is listed twice")
        out.append(TAGS.index(name))
    return tuple(out)


def tag_vector(tags: Iterable[str], names: Sequence[str] = TAGS) -> np.ndarray:
    """(len(names),) uint8: 1 where ``names[i]`` is in ``tags``."""
    present = set(tags)
    return np.array([name in present for name in names], dtype=np.uint8)
