"""X-ray fluorescence of the sample's elements and of the diffusers' grains.

Sensitivity of line ``e`` (detected counts per incident photon per g/cm² of the element,
i.e. cm²/g), thin sample::

    s_e = τ(E0) · f_shell · ω · p_line · Ω/4π · ε(E_line)

``τ`` the element's photoabsorption cross section at the beam energy ``E0`` (cm²/g,
xraydb ``mu_elam(..., kind="photo")``, Elam, Ravel & Sieber 2002); ``f_shell`` the share of
it in the line's shell from the edge jump ratios ``J`` (``1 − 1/J`` of that shell, times
``1/J`` of every deeper edge below ``E0``; Coster-Kronig transfers neglected); ``ω`` the
shell's fluorescence yield and ``p_line`` the line group's share of its emission
(xraydb ``fluor_yield``, ``xray_lines``); ``Ω`` the detector's solid angle (sr) and
``ε = T_Be(E)·(1 − exp(−μ_Si(E)·t_Si))`` the efficiency of a silicon drift detector behind a
beryllium window (xraydb ``material_mu``). **Self-absorption** of the incident beam and of
the fluorescence in the sample is neglected (thin-sample limit): counts are linear in the
element's areal mass.

Counts of pattern k in line e: ``y_ke = s_e·Σ_r I_k(r)·c_e(r) + β_e·Σ_j d_kj`` with ``I_k``
photons per pixel, ``c_e`` (g/cm²) the element map (:func:`element_maps`), ``d_kj`` the
counts of diffuser line j and ``β_e`` its spill into line e; Poisson noise on all of them
(:func:`poisson`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xrayflow.errors import PhysicsError
from xrayflow.optics.materials import get_material

#: Line groups (xraydb Siegbahn prefixes) and the shell they come from.
LINE_SHELLS = {"Ka": "K", "Kb": "K", "La": "L3"}
#: Line kinds (``signals/line_kind``).
SAMPLE, DIFFUSER = "sample", "diffuser"


def _xraydb():
    """xraydb, imported on first use: 1.3 s that every command would pay when the registry
    imports the modalities (as in :mod:`xrayflow.optics.materials`)."""
    import xraydb

    return xraydb


@dataclass(frozen=True)
class FluorescenceLine:
    """One detected fluorescence line and the factors of its sensitivity (module docstring)."""

    element: str
    line: str
    kind: str
    energy_ev: float
    edge_ev: float
    tau: float
    shell_fraction: float
    fluor_yield: float
    line_fraction: float
    solid_angle_fraction: float
    efficiency: float

    @property
    def name(self) -> str:
        return f"{self.element} {self.line}"

    @property
    def sensitivity(self) -> float:
        """``s_e``, counts per photon per g/cm² (cm²/g)."""
        return (
            self.tau
            * self.shell_fraction
            * self.fluor_yield
            * self.line_fraction
            * self.solid_angle_fraction
            * self.efficiency
        )


def element_symbol(name: str) -> str:
    """The symbol of element ``name`` (symbol, any case, or atomic number); PhysicsError when
    xraydb does not know it."""
    xdb = _xraydb()
    try:
        return xdb.atomic_symbol(xdb.atomic_number(str(name).strip().capitalize()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PhysicsError(f"xraydb does not know the element {name!r}") from None


def shell_fraction(element: str, shell: str, energy_ev: float) -> float:
    """Share of the photoabsorption at ``energy_ev`` in ``shell`` (jump-ratio approximation)."""
    edges = _xraydb().xray_edges(element)
    edge = edges[shell]
    frac = 1.0 - 1.0 / edge.jump_ratio
    for other in edges.values():
        if edge.energy < other.energy <= energy_ev and other.jump_ratio > 1.0:
            frac /= other.jump_ratio
    return frac


def detector_efficiency(energy_ev: float, window: float, sensor: float) -> float:
    """``ε(E)`` of a Si sensor ``sensor`` m thick behind a Be window ``window`` m thick."""
    xdb = _xraydb()
    mu_be = xdb.material_mu("Be", energy_ev)  # 1/cm
    mu_si = xdb.material_mu("Si", energy_ev)
    return math.exp(-mu_be * window * 100.0) * -math.expm1(-mu_si * sensor * 100.0)


def fluorescence_line(
    element: str, line: str, energy_ev: float, detector: dict, kind: str = SAMPLE
) -> FluorescenceLine:
    """Line ``line`` (a key of :data:`LINE_SHELLS`) of ``element`` at beam energy
    ``energy_ev`` (eV) seen by ``detector`` (``solid_angle`` sr, ``window_thickness`` and
    ``sensor_thickness`` m). PhysicsError for an unknown element, a line xraydb does not
    list for it, or a shell edge at or above the beam energy (no fluorescence)."""
    xdb = _xraydb()
    sym = element_symbol(element)
    shell = LINE_SHELLS[line]
    edges = xdb.xray_edges(sym)
    lines = xdb.xray_lines(sym, shell)
    if shell not in edges or not any(n.startswith(line) for n in lines):
        raise PhysicsError(f"xraydb lists no {line} line of {sym}")
    edge_ev = float(edges[shell].energy)
    omega, line_ev, prob = xdb.fluor_yield(sym, shell, line, energy_ev)
    if edge_ev >= energy_ev:
        raise PhysicsError(
            f"the {sym} {line} line ({line_ev:.0f} eV) needs the {shell} edge at {edge_ev:.0f} "
            f"eV, at or above the beam energy energy_ev = {energy_ev:g} eV: no fluorescence"
        )
    return FluorescenceLine(
        element=sym,
        line=line,
        kind=kind,
        energy_ev=float(line_ev),
        edge_ev=edge_ev,
        tau=float(xdb.mu_elam(sym, energy_ev, kind="photo")),
        shell_fraction=shell_fraction(sym, shell, energy_ev),
        fluor_yield=float(omega),
        line_fraction=float(prob),
        solid_angle_fraction=float(detector["solid_angle"]) / (4.0 * math.pi),
        efficiency=detector_efficiency(
            line_ev, detector["window_thickness"], detector["sensor_thickness"]
        ),
    )


def mass_fractions(formula: str) -> dict[str, float]:
    """Mass fraction of each element of a chemical ``formula`` (xraydb syntax)."""
    xdb = _xraydb()
    masses = {el: n * xdb.atomic_mass(el) for el, n in xdb.chemparse(formula).items()}
    total = sum(masses.values())
    return {el: m / total for el, m in masses.items()}


def element_maps(phantom, elements) -> np.ndarray:
    """Areal mass (E, ny, nx) float64 in g/cm² of each of ``elements`` (symbols) in the
    projected ``phantom``: Σ over its materials of mass fraction × density × path length."""
    vz_cm = phantom.voxel_size_zyx[0] * 100.0
    maps = np.zeros((len(elements), *phantom.shape[1:]))
    for index, name in enumerate(phantom.materials):
        m = get_material(name)
        if m.formula is None or m.density == 0:
            continue
        w = mass_fractions(m.formula)
        path = None
        for e, el in enumerate(elements):
            if el in w:
                if path is None:
                    path = (phantom.labels == index).sum(axis=0) * vz_cm
                maps[e] += w[el] * m.density * path
    return maps


def poisson(rng, expected, noisy: bool) -> np.ndarray:
    """Poisson counts of ``expected`` (float32), or the expected values when not ``noisy``."""
    lam = np.asarray(expected, dtype=np.float64)
    return (rng.poisson(lam) if noisy else lam).astype(np.float32)


def raster_scan(maps, sensitivity, photons_per_point: float, rng, noisy: bool):
    """A raster-scan XRF map: a focused beam of ``photons_per_point`` photons on each pixel,
    no diffusers. Returns the counts (E, ny, nx) float32 (Poisson) and their direct
    inversion ``counts / (s_e · photons_per_point)`` (g/cm², float32)."""
    s = np.asarray(sensitivity, dtype=np.float64)[:, None, None]
    counts = poisson(rng, s * np.asarray(maps) * photons_per_point, noisy)
    return counts, (counts / (s * photons_per_point)).astype(np.float32)
