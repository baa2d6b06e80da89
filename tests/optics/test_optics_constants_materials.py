"""Photon energy/wavelength and xraydb-based refractive indices."""

import numpy as np
import pytest
import xraydb

from xrayflow.errors import PhysicsError
from xrayflow.operators import transmission
from xrayflow.optics import constants, materials


def test_wavelength_energy_roundtrip():
    # hc = 1.239841984e-6 eV m (CODATA 2018)
    assert constants.wavelength(12398.41984) == pytest.approx(1e-10, rel=1e-9)
    assert constants.energy_ev_from_wavelength(1e-10) == pytest.approx(12398.41984, rel=1e-9)
    e = np.array([5e3, 8e3, 17.5e3])
    np.testing.assert_allclose(constants.energy_ev_from_wavelength(constants.wavelength(e)), e)
    assert constants.wavenumber(10e3) == pytest.approx(2 * np.pi / constants.wavelength(10e3))
    with pytest.raises(PhysicsError):
        constants.wavelength(-1.0)


def test_gold_10kev_delta_beta_known_values():
    # CXRO (Henke) at 10 keV: delta = 2.99e-5, beta = 2.21e-6; Chantler tables agree within
    # a few percent. Free-electron check: delta = r_e lambda^2 n_a f1 / (2 pi), f1 ~ 73.6.
    d, b = materials.refractive_index("gold", 10_000.0)
    assert 2.90e-5 < d < 3.05e-5
    assert 2.0e-6 < b < 2.3e-6
    lam = constants.wavelength(10_000.0)
    n_atoms = 19.32 / 196.967 * 6.02214076e23 * 1e6  # atoms / m^3
    f1 = 79 + xraydb.f1_chantler("Au", 10_000.0)  # f1_chantler returns the anomalous part
    d_fe = constants.R_ELECTRON * lam**2 * n_atoms * f1 / (2 * np.pi)
    assert d == pytest.approx(d_fe, rel=0.02)


def test_registry_has_required_materials_and_aliases():
    for name in [
        "vacuum",
        "air",
        "water",
        "gold",
        "tungsten",
        "silicon",
        "silicon_nitride",
        "Si3N4",
        "glass",
        "carbon",
        "LiCoO2",
        "LiFePO4",
        "LiMn2O4",
        "binder",
        "PVDF",
        "nickel",
    ]:
        assert name in materials.MATERIALS
        d, b = materials.refractive_index(name, 8000.0)
        assert d >= 0 and b >= 0
    assert materials.MATERIALS["Si3N4"] is materials.MATERIALS["silicon_nitride"]
    assert materials.refractive_index("vacuum", 8000.0) == (0.0, 0.0)
    # denser/heavier -> larger delta
    assert materials.refractive_index("gold", 8e3)[0] > materials.refractive_index("LiCoO2", 8e3)[0]
    assert materials.refractive_index("LiCoO2", 8e3)[0] > materials.refractive_index("PVDF", 8e3)[0]


def test_unknown_material_lists_names():
    with pytest.raises(PhysicsError, match="known materials:.*gold"):
        materials.refractive_index("unobtainium", 8000.0)


def test_array_energies():
    d, b = materials.refractive_index("silicon", np.array([8e3, 12e3]))
    assert d.shape == (2,) and d[0] > d[1]  # delta ~ lambda^2 away from edges


def test_attenuation_exp_mu_dz():
    energy = 8000.0
    lam = constants.wavelength(energy)
    d, b = materials.refractive_index("nickel", energy)
    dz = 2e-6
    t = transmission(np.array([d]), np.array([b]), lam, dz, dtype=np.complex128)
    mu = 4 * np.pi * b / lam
    assert abs(t[0]) ** 2 == pytest.approx(np.exp(-mu * dz), rel=1e-12)
    assert materials.attenuation_coefficient("nickel", energy) == pytest.approx(mu)
    # independent tables: xraydb photo-absorption mu (1/cm) for Ni at 8 keV
    mu_photo = xraydb.material_mu("Ni", energy, density=8.908, kind="photo") * 100
    assert mu == pytest.approx(mu_photo, rel=0.05)


def test_phase_sign_negative_for_positive_delta():
    lam = 1e-10
    t = transmission(np.array([1e-6, 0.0]), np.array([0.0, 0.0]), lam, 1e-6, dtype=np.complex128)
    phase = np.angle(t[0])
    assert phase < 0
    assert phase == pytest.approx(-2 * np.pi / lam * 1e-6 * 1e-6)
    assert t[1] == 1.0
