"""Complex refractive index ``n = 1 − δ + iβ`` of named materials, via xraydb.

``refractive_index(name, energy_ev) -> (delta, beta)`` uses ``xraydb.xray_delta_beta``
(Chantler/Elam tables) from the chemical formula and mass density. The registry
:data:`MATERIALS` holds elements, window/substrate materials and battery-electrode compounds;
some entries have aliases (e.g. ``"silicon_nitride"`` and ``"Si3N4"`` are the same material).
Densities are room-temperature bulk values in g/cm³ (thin films can be less dense: pass a
:class:`Material` with your own density).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xrayflow.errors import PhysicsError
from xrayflow.optics.constants import wavelength

__all__ = [
    "MATERIALS",
    "Material",
    "attenuation_coefficient",
    "material_names",
    "get_material",
    "refractive_index",
]


@dataclass(frozen=True)
class Material:
    """A homogeneous material: chemical ``formula`` (xraydb syntax) and ``density`` in g/cm³.

    ``formula=None`` means vacuum (δ = β = 0).
    """

    name: str
    formula: str | None
    density: float
    description: str = ""


_DEFS: list[tuple[tuple[str, ...], str | None, float, str]] = [
    (("vacuum",), None, 0.0, "no material"),
    (
        ("air",),
        "(N2)0.7808(O2)0.2095Ar9.34e-3(CO2)4.1e-4",
        1.225e-3,
        "dry air at 15 °C, sea level",
    ),
    (("water", "H2O"), "H2O", 1.0, "liquid water"),
    (("gold", "Au"), "Au", 19.32, ""),
    (("tungsten", "W"), "W", 19.25, ""),
    (("platinum", "Pt"), "Pt", 21.45, ""),
    (("silicon", "Si"), "Si", 2.329, ""),
    (("silicon_nitride", "Si3N4"), "Si3N4", 3.17, "LPCVD membrane value (bulk 3.44)"),
    (("glass", "SiO2", "silica"), "SiO2", 2.20, "fused silica"),
    (("carbon", "C"), "C", 2.0, "amorphous carbon"),
    (("graphite",), "C", 2.26, "anode graphite"),
    (("diamond",), "C", 3.51, ""),
    (("nickel", "Ni"), "Ni", 8.908, ""),
    (("copper", "Cu"), "Cu", 8.96, ""),
    (("aluminium", "aluminum", "Al"), "Al", 2.70, ""),
    (("iron", "Fe"), "Fe", 7.874, ""),
    (("cobalt", "Co"), "Co", 8.90, ""),
    (("titanium", "Ti"), "Ti", 4.506, ""),
    (("lithium", "Li"), "Li", 0.534, ""),
    (("kapton", "polyimide"), "C22H10N2O5", 1.42, "polyimide window"),
    (("pmma",), "C5H8O2", 1.18, ""),
    (("protein",), "H50C30N9O10S1", 1.35, "average protein"),
    (
        ("lithium_cobalt_oxide", "LiCoO2", "LCO"),
        "LiCoO2",
        5.05,
        "cathode active material",
    ),
    (
        ("lithium_iron_phosphate", "LiFePO4", "LFP"),
        "LiFePO4",
        3.60,
        "cathode active material (olivine)",
    ),
    (
        ("lithium_manganese_oxide", "LiMn2O4", "LMO"),
        "LiMn2O4",
        4.28,
        "cathode active material (spinel)",
    ),
    (
        ("nmc111", "NMC111", "LiNi0.33Mn0.33Co0.33O2"),
        "LiNi0.3333Mn0.3333Co0.3333O2",
        4.75,
        "layered oxide cathode",
    ),
    (("binder", "PVDF", "pvdf"), "C2H2F2", 1.78, "polyvinylidene fluoride binder"),
    (("carbon_black",), "C", 1.8, "conductive additive"),
    (
        ("electrolyte", "LiPF6_EC_DMC"),
        "C3H4O3",
        1.32,
        "carbonate electrolyte (approximated as ethylene carbonate)",
    ),
]

#: name -> Material (aliases map to the same object).
MATERIALS: dict[str, Material] = {}
for _names, _formula, _density, _desc in _DEFS:
    _m = Material(_names[0], _formula, _density, _desc)
    for _n in _names:
        MATERIALS[_n] = _m
del _names, _formula, _density, _desc, _m


def material_names() -> list[str]:
    """All registered names (aliases included), sorted case-insensitively."""
    return sorted(MATERIALS, key=str.lower)


def get_material(name_or_material) -> Material:
    """Look up a material by name (exact, then case-insensitive) or pass a Material through."""
    if isinstance(name_or_material, Material):
        return name_or_material
    if isinstance(name_or_material, str):
        m = MATERIALS.get(name_or_material)
        if m is not None:
            return m
        low = {k.lower(): v for k, v in MATERIALS.items()}
        m = low.get(name_or_material.lower())
        if m is not None:
            return m
    raise PhysicsError(
        f"unknown material {name_or_material!r}; known materials: {', '.join(material_names())}"
    )


def refractive_index(name_or_material, energy_ev):
    """``(delta, beta)`` of ``n = 1 − δ + iβ`` at photon energy ``energy_ev`` (eV).

    Scalars for a scalar energy, float64 arrays for an array of energies.
    """
    m = get_material(name_or_material)
    e = np.asarray(energy_ev, dtype=np.float64)
    if not np.all(np.isfinite(e)) or np.any(e <= 0):
        raise PhysicsError(f"energy_ev must be positive, got {energy_ev!r}")
    if m.formula is None or m.density == 0:
        if e.ndim == 0:
            return 0.0, 0.0
        return np.zeros(e.shape), np.zeros(e.shape)
    import xraydb  # imported here: 1.3 s, only needed for optical constants

    flat = e.ravel()
    d = np.empty(flat.shape)
    b = np.empty(flat.shape)
    for i, en in enumerate(flat):
        try:
            di, bi, _ = xraydb.xray_delta_beta(m.formula, m.density, float(en))
        except Exception as exc:  # xraydb raises various errors outside its tables
            raise PhysicsError(
                f"xraydb cannot compute delta/beta for {m.name} ({m.formula}) at {en} eV: {exc}"
            ) from exc
        d[i], b[i] = di, bi
    if e.ndim == 0:
        return float(d[0]), float(b[0])
    return d.reshape(e.shape), b.reshape(e.shape)


def attenuation_coefficient(name_or_material, energy_ev):
    """Linear intensity attenuation coefficient ``μ = 4πβ/λ`` in 1/m."""
    _, beta = refractive_index(name_or_material, energy_ev)
    return 4.0 * np.pi * np.asarray(beta) / wavelength(energy_ev)
