"""Photon energy, wavelength and wavenumber (SI units; energies in eV).

Physical constants come from :mod:`scipy.constants` (CODATA). ``E = h c / λ`` and
``k = 2π / λ``. All functions accept scalars or NumPy arrays.
"""

from __future__ import annotations

import numpy as np
from scipy import constants as _c

from xrayflow.errors import PhysicsError

#: Planck constant times speed of light, in eV·m (≈ 1.23984e-6 eV·m).
HC_EV_M: float = _c.h * _c.c / _c.e
#: Classical electron radius in m.
R_ELECTRON: float = _c.physical_constants["classical electron radius"][0]
#: Elementary charge in C (eV -> J conversion factor).
EV_TO_J: float = _c.e


#: Photon energies (eV) the models are meant for: soft to hard X-rays.
XRAY_ENERGY_RANGE_EV: tuple[float, float] = (100.0, 200e3)


def xray_energy_problem(energy_ev: float) -> str | None:
    """Why ``energy_ev`` is not an X-ray photon energy, with a hint when the value in keV
    (or meV) would be one; None when it is in :data:`XRAY_ENERGY_RANGE_EV`."""
    e = float(energy_ev)
    lo, hi = XRAY_ENERGY_RANGE_EV
    if lo <= e <= hi:
        return None
    hint = ""
    if lo <= e * 1e3 <= hi:
        hint = f"; did you mean {e * 1e3:g} eV ({e:g} keV)?"
    elif lo <= e * 1e-3 <= hi:
        hint = f"; did you mean {e * 1e-3:g} eV?"
    return (
        f"{e:g} eV is not an X-ray photon energy (expected {lo:g} eV to {hi / 1e3:g} keV; "
        f"the energy is given in eV){hint}"
    )


def _positive(value, name: str):
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise PhysicsError(f"{name} must be positive and finite, got {value!r}")
    return arr if arr.ndim else float(arr)


def wavelength(energy_ev):
    """Wavelength in metres of a photon of energy ``energy_ev`` (eV): ``λ = hc / E``."""
    return HC_EV_M / _positive(energy_ev, "energy_ev")


def energy_ev_from_wavelength(wavelength_m):
    """Photon energy in eV for a wavelength in metres: ``E = hc / λ``."""
    return HC_EV_M / _positive(wavelength_m, "wavelength_m")


def wavenumber(energy_ev):
    """Vacuum wavenumber ``k = 2π/λ`` in rad/m for a photon energy in eV."""
    return 2.0 * np.pi / wavelength(energy_ev)


def energy_ev_to_joule(energy_ev):
    """Photon energy in joules (as CXI files store it)."""
    return (
        np.asarray(energy_ev, dtype=np.float64) * EV_TO_J
        if np.ndim(energy_ev)
        else (float(energy_ev) * EV_TO_J)
    )


def joule_to_energy_ev(energy_j):
    """Photon energy in eV from joules."""
    return (
        np.asarray(energy_j, dtype=np.float64) / EV_TO_J
        if np.ndim(energy_j)
        else (float(energy_j) / EV_TO_J)
    )
