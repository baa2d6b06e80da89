"""Displacement and strain of a Bragg CDI crystal from the phase of ρ = |ρ| exp(−i G·u)
(xrayflow.modalities.bragg_cdi.strain): known displacement fields are recovered, also when
the phase wraps, for reflections along any axis, in metres or in voxels; and their VTK
image export (xrayflow.io.vtk) for ParaView."""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np
import pytest

from xrayflow.errors import DataError
from xrayflow.io.vtk import read_vti, write_vti
from xrayflow.modalities.bragg_cdi.simulate import strain_phase
from xrayflow.modalities.bragg_cdi.strain import (
    amplitude_support,
    displacement,
    g_vector,
    strain,
    strain_entries,
)

N = 32
D111 = 2.355e-10  # Au 111, m
VOXEL = np.array([10e-9, 10e-9, 10e-9])  # (z, y, x), m


def _crystal(radius: float = 11.0) -> tuple[np.ndarray, np.ndarray]:
    """A ball of ``radius`` voxels at the box centre: (support, coordinates (3, Z, Y, X) in
    voxels from the centre)."""
    r = np.indices((N, N, N), dtype=np.float64) - N // 2
    return (r**2).sum(axis=0) <= radius**2, r


def _measured(support, g) -> np.ndarray:
    """Voxels of ``support`` with a neighbour inside along every axis G has a component on
    (elsewhere the strain is NaN: the ball's poles along such an axis)."""
    has = support.copy()
    for axis in np.flatnonzero(g):
        has &= np.roll(support, 1, axis) | np.roll(support, -1, axis)
    return has


def _rho(support, g, u_g_along, voxel=VOXEL, sign=-1):
    """ρ = |ρ| exp(sign·i |G| u_G), |ρ| 1 inside (0.05 outside)."""
    phase = sign * np.linalg.norm(g) * u_g_along
    return np.where(support, 1.0, 0.05) * np.exp(1j * phase)


def test_uniform_strain_with_phase_wraps_along_x():
    support, r = _crystal()
    g = g_vector(D111, [0, 0, 1])
    eps0 = 2.5e-3  # 0.67 rad per voxel: the phase wraps twice across the crystal
    u = eps0 * r[2] * VOXEL[2]
    rho = _rho(support, g, u)
    assert np.ptp(np.linalg.norm(g) * u[support]) > 4 * np.pi
    u_rec = displacement(rho, support, g, VOXEL)
    np.testing.assert_allclose(u_rec[support], u[support] - u[support].mean(), atol=1e-14)
    eps = strain(rho, support, g, VOXEL)
    measured = _measured(support, g)
    np.testing.assert_allclose(eps[measured], eps0, rtol=1e-9)
    assert np.isnan(u_rec[~support]).all() and np.isnan(eps[~measured]).all()


def test_quadratic_displacement_gives_linear_strain():
    support, r = _crystal()
    g = g_vector(D111, [0, 0, 1])
    a = 3e-4 / VOXEL[2]  # u = a x^2 (x in m): strain 2 a x, up to 6.6e-3; the phase wraps
    x = r[2] * VOXEL[2]
    rho = _rho(support, g, a * x**2)
    eps = strain(rho, support, g, VOXEL)
    # central differences are exact for a quadratic; one-sided ones at the surface are off
    # by a * voxel
    m = _measured(support, g)
    np.testing.assert_allclose(eps[m], 2 * a * x[m], atol=1.01 * a * VOXEL[2])
    interior = support & np.roll(support, 1, 2) & np.roll(support, -1, 2)
    np.testing.assert_allclose(eps[interior], 2 * a * x[interior], atol=1e-12)
    u = displacement(rho, support, g, VOXEL)
    want = a * x[support] ** 2
    np.testing.assert_allclose(u[support], want - want.mean(), atol=1e-15)


@pytest.mark.parametrize("direction", [[1, 0, 0], [0, 1, 1], [1, 1, 1]], ids=["z", "yx", "zyx"])
def test_reflection_along_another_axis_and_anisotropic_voxels(direction):
    support, r = _crystal()
    voxel = np.array([20e-9, 10e-9, 5e-9])
    g = g_vector(D111, direction)
    ghat = g / np.linalg.norm(g)
    eps0 = -1.5e-3  # compressive, u = eps0 (ĝ·r) ĝ, plus a component perpendicular to G
    pos = r * voxel[:, None, None, None]  # m
    u_g = eps0 * np.tensordot(ghat, pos, axes=1)
    rho = _rho(support, g, u_g)
    eps = strain(rho, support, g, voxel)
    np.testing.assert_allclose(eps[_measured(support, g)], eps0, rtol=1e-9)
    u = displacement(rho, support, g, voxel)
    np.testing.assert_allclose(u[support], u_g[support] - u_g[support].mean(), atol=1e-14)


def test_voxel_units_without_geometry_and_the_simulate_stage_sign():
    support, r = _crystal()
    g = g_vector(4.0, [0, 1, 0])  # d = 4 voxels: G in 1/voxel
    eps0 = 0.05  # 0.08 rad per voxel
    rho = _rho(support, g, eps0 * r[1])
    u = displacement(rho, support, g)
    want = eps0 * (r[1][support] - r[1][support].mean())
    np.testing.assert_allclose(u[support], want, atol=1e-12)
    np.testing.assert_allclose(strain(rho, support, g)[_measured(support, g)], eps0, rtol=1e-9)
    # the simulate stage's truth writes phase = +Q·u: phase_sign=+1 recovers its u along Q
    cfg = {"bragg": {"strain": {"amplitude": 3e-11, "correlation_length": 60e-9},
                     "q_direction": [0.0, 0.0, 1.0], "d_spacing": D111}}  # fmt: skip
    u3, phase, q = strain_phase(support, VOXEL[0], cfg, np.random.default_rng(1))
    rho = np.where(support, 1.0, 0.0) * np.exp(1j * phase)
    got = displacement(rho, support, q, VOXEL, phase_sign=+1)
    np.testing.assert_allclose(got[support], u3[2][support] - u3[2][support].mean(), atol=1e-15)
    wrong = displacement(rho, support, q, VOXEL)  # the default convention flips it
    np.testing.assert_allclose(wrong[support], -got[support], atol=1e-15)


def test_mask_and_entries():
    support, r = _crystal()
    g = g_vector(D111, [0, 0, 1])
    rho = _rho(support, g, 1e-3 * r[2] * VOXEL[2])
    rho[N // 2, N // 2, N // 2 + 10] *= 0.1  # a weak voxel inside the crystal
    mask = amplitude_support(rho, 0.2)
    assert mask.sum() == support.sum() - 1 and not mask[N // 2, N // 2, N // 2 + 10]
    assert not amplitude_support(rho, 0.2, support=np.zeros_like(support)).any()
    e = strain_entries(rho, g, VOXEL, support=support)
    assert e["@phase_convention"] == "phase = -G.u" and e["@displacement_units"] == "m"
    assert e["strain"].dtype == np.float32 and np.array_equal(e["mask"], mask)
    np.testing.assert_allclose(e["strain"][_measured(mask, g)], 1e-3, rtol=1e-5)
    assert strain_entries(rho, g / 1e8)["@displacement_units"] == "voxel"
    with pytest.raises(ValueError, match="phase_sign"):
        strain(rho, support, g, VOXEL, phase_sign=2)
    with pytest.raises(ValueError, match="nonzero G"):
        strain(rho, support, [0, 0, 0], VOXEL)


def _fields() -> tuple[dict, tuple, tuple]:
    """A strained crystal's VTK point data on a non-cubic grid (axis mix-ups show), its
    spacing and origin (z, y, x), m."""
    support, r = _crystal()
    g = g_vector(D111, [0, 1, 1])
    rho = _rho(support, g, 2e-3 * np.tensordot(g / np.linalg.norm(g), r * 1e-8, axes=1))
    e = strain_entries(rho, g, VOXEL, support=support)
    box = (slice(1, None), slice(2, None), slice(3, None))
    arrays = {
        "amplitude": np.abs(rho).astype(np.float32),
        "phase": np.angle(rho).astype(np.float32),
        "support": e["mask"],
        "displacement": e["displacement"],
        "strain": e["strain"],
    }
    spacing = (3e-8, 2e-8, 1e-8)
    arrays = {k: v[box] for k, v in arrays.items()}
    origin = tuple(-(n // 2) * s for n, s in zip(arrays["strain"].shape, spacing, strict=True))
    return arrays, spacing, origin


def test_vtk_image_round_trip_and_header(tmp_path):
    arrays, spacing, origin = _fields()
    path = write_vti(tmp_path / "crystal.vti", arrays, spacing, origin)
    back, grid = read_vti(path)
    assert list(back) == list(arrays) and grid == {"spacing": spacing, "origin": origin}
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v.astype(np.uint8) if v.dtype == bool else v)
    raw = path.read_bytes()
    start = raw.index(b"<AppendedData")
    root = ElementTree.fromstring(raw[:start] + b"</VTKFile>")
    assert root.attrib == {
        "type": "ImageData", "version": "1.0", "byte_order": "LittleEndian",
        "header_type": "UInt64",
    }  # fmt: skip
    nz, ny, nx = arrays["strain"].shape  # (31, 30, 29)
    image = root.find("ImageData")
    assert image.get("WholeExtent") == root.find("ImageData/Piece").get("Extent")
    assert image.get("WholeExtent") == f"0 {nx - 1} 0 {ny - 1} 0 {nz - 1}"
    assert image.get("Spacing") == "1e-08 2e-08 3e-08"  # x, y, z
    assert [float(v) for v in image.get("Origin").split()] == list(origin[::-1])
    assert root.find("ImageData/Piece/PointData").get("Scalars") == "amplitude"
    cols = [(a.get("Name"), a.get("type")) for a in root.iter("DataArray")]
    assert cols == [("amplitude", "Float32"), ("phase", "Float32"), ("support", "UInt8"),
                    ("displacement", "Float32"), ("strain", "Float32")]  # fmt: skip
    assert {a.get("format") for a in root.iter("DataArray")} == {"appended"}
    assert raw.endswith(b"</AppendedData>\n</VTKFile>\n")
    # VTK's point (i, j, k) is at flat index i + nx (j + ny k): the (Z, Y, X) C order
    data = raw.index(b"_", start) + 1
    amp = np.frombuffer(raw, "<f4", nx * ny * nz, data + 8)
    i, j, k = 5, 7, 11
    assert amp[i + nx * (j + ny * k)] == arrays["amplitude"][k, j, i]


def test_vtk_errors(tmp_path):
    arrays, spacing, origin = _fields()
    path = write_vti(tmp_path / "c.vti", arrays, spacing, origin)
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(DataError, match=r"c\.vti.*'strain' is truncated"):
        read_vti(path)
    (tmp_path / "x.vti").write_text("<VTKFile/>")
    with pytest.raises(DataError, match=r"x\.vti.*not a VTK image file"):
        read_vti(tmp_path / "x.vti")
    with pytest.raises(ValueError, match="no VTK type"):
        write_vti(tmp_path / "z.vti", {"rho": np.ones((2, 2, 2), complex)})
    with pytest.raises(ValueError, match="one shape"):
        write_vti(tmp_path / "z.vti", {"a": np.ones((2, 2, 2)), "b": np.ones((2, 2, 3))})
    assert not list(tmp_path.glob("z.vti*"))


def test_vtk_library_reads_it(tmp_path):
    """The reference reader (skipped when the vtk package is not installed)."""
    xml = pytest.importorskip("vtkmodules.vtkIOXML")
    from vtkmodules.util.numpy_support import vtk_to_numpy

    arrays, spacing, origin = _fields()
    path = write_vti(tmp_path / "crystal.vti", arrays, spacing, origin)
    reader = xml.vtkXMLImageDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    assert reader.GetErrorCode() == 0
    image = reader.GetOutput()
    shape = arrays["strain"].shape
    assert image.GetDimensions() == shape[::-1]
    np.testing.assert_allclose(image.GetSpacing(), spacing[::-1])
    np.testing.assert_allclose(image.GetOrigin(), origin[::-1])
    for k, v in arrays.items():
        got = vtk_to_numpy(image.GetPointData().GetArray(k)).reshape(shape)
        np.testing.assert_array_equal(got, v.astype(np.uint8) if v.dtype == bool else v)
