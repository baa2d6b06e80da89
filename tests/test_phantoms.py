"""Voxel phantoms: determinism, geometry of each generator, δ/β mapping."""

import numpy as np
import pytest
from scipy.spatial import Delaunay

from xrayflow.errors import PhysicsError
from xrayflow.optics.materials import refractive_index
from xrayflow.phantoms import (
    PHANTOMS,
    Phantom,
    battery_cathode,
    convex_polyhedron_mask,
    faceted_crystals,
    hollow_cone,
    make_phantom,
    siemens_star,
)

VOX = 10e-9


def test_siemens_star_spoke_count_and_z_range():
    p = siemens_star((6, 128, 128), VOX, spokes=16, z_range=(2, 4))
    assert p.labels.dtype == np.uint8 and p.materials == ["vacuum", "gold"]
    assert not p.labels[:2].any() and not p.labels[4:].any()
    np.testing.assert_array_equal(p.labels[2], p.labels[3])
    # angular profile on a circle of radius 40 px: count vacuum -> gold transitions
    theta = np.linspace(0, 2 * np.pi, 2000, endpoint=False)
    iy = np.round(64 + 40 * np.sin(theta)).astype(int)
    ix = np.round(64 + 40 * np.cos(theta)).astype(int)
    ring = p.labels[2, iy, ix].astype(int)
    assert np.sum(np.diff(np.r_[ring, ring[0]]) == 1) == 16
    assert ring.mean() == pytest.approx(0.5, abs=0.03)
    t = siemens_star((10, 64, 64), VOX, spokes=8, thickness=4 * VOX)
    assert t.meta["z_range"] == (3, 7) and t.labels[3:7].any() and not t.labels[:3].any()
    full = siemens_star((3, 64, 64), VOX, spokes=8, radius=20 * VOX)
    assert full.labels.all(axis=0).sum() == full.labels[0].sum()  # all slices
    yy, xx = np.mgrid[:64, :64] - 32
    assert not full.labels[0][np.hypot(yy, xx) > 20].any()


def test_crystals_deterministic_and_convex():
    a = faceted_crystals((40, 48, 48), VOX, 3, rng=7)
    b = faceted_crystals((40, 48, 48), VOX, 3, rng=7)
    c = faceted_crystals((40, 48, 48), VOX, 3, rng=8)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    inst = a.meta["instances"]
    assert set(np.unique(inst)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(inst > 0, a.support())
    zyx = np.argwhere(np.ones(a.shape, bool))
    for k, cr in enumerate(a.meta["crystals"]):
        mask = convex_polyhedron_mask(a.shape, VOX, cr["center"], cr["normals"], cr["offsets"])
        np.testing.assert_array_equal(inst == k + 1, mask)  # exactly its half-spaces
        assert mask.sum() > 50
        # independent convexity check: no voxel inside the hull of the crystal is missing
        pts = np.argwhere(mask)
        lo, hi = pts.min(0), pts.max(0) + 1
        box = zyx[np.all((zyx >= lo) & (zyx < hi), axis=1)]
        inside_hull = box[Delaunay(pts).find_simplex(box) >= 0]
        assert np.all(mask[tuple(inside_hull.T)])
        # random orientation: the normals are not the crystal axes
        assert np.abs(cr["normals"]).max() < 0.999
    # the crystals are separate
    assert len({tuple(cr["center"]) for cr in a.meta["crystals"]}) == 3
    with pytest.raises(PhysicsError, match="place"):
        faceted_crystals(
            (20, 20, 20), VOX, 30, rng=0, radius_range=(4 * VOX, 5 * VOX), max_tries=50
        )


def test_hollow_cone_wall_thickness_in_cross_section():
    shape, t = (64, 60, 64), 5 * VOX
    p = hollow_cone(
        shape, VOX, radius=28 * VOX, top_radius=10 * VOX, wall_thickness=t, height=50 * VOX
    )
    assert p.materials == ["vacuum", "glass"]
    for y in (15, 30, 50):  # cross-sections perpendicular to the y axis: rings in (z, x)
        sec = p.labels[:, y, :]
        row = sec[32, 32:]  # from the axis outwards along +x
        assert row[0] == 0  # hollow
        wall = np.flatnonzero(row)
        assert np.all(np.diff(wall) == 1)  # one contiguous wall
        assert len(wall) == pytest.approx(t / VOX, abs=1)
        frac = ((y - 30) * VOX + 25 * VOX) / (50 * VOX)
        outer = 10 + 18 * frac
        assert wall[-1] == pytest.approx(outer, abs=1)
        np.testing.assert_array_equal(sec, sec.T)  # round about the y axis
    # outside the height: empty; the cone widens downwards (+y)
    assert not p.labels[:, :5].any() and not p.labels[:, 56:].any()
    assert p.labels[:, 50].sum() > p.labels[:, 15].sum()


FR = {"LiCoO2": 0.12, "LiFePO4": 0.1, "LiMn2O4": 0.08}


@pytest.fixture(scope="module")
def cathode():
    return battery_cathode((32, 32, 32), 50e-9, rng=3, fractions=FR, porosity=0.2)


def test_battery_cathode_fractions_and_particles(cathode):
    fr, p = FR, cathode
    q = battery_cathode((32, 32, 32), 50e-9, rng=3, fractions=fr, porosity=0.2)
    np.testing.assert_array_equal(p.labels, q.labels)
    r = battery_cathode(
        (16, 16, 16), 50e-9, rng=4, fractions=fr, porosity=0.2, radius_range=(100e-9, 150e-9)
    )
    r2 = battery_cathode(
        (16, 16, 16), 50e-9, rng=5, fractions=fr, porosity=0.2, radius_range=(100e-9, 150e-9)
    )
    assert not np.array_equal(r.labels, r2.labels)
    got = p.fractions()
    for name, f in fr.items():
        assert got[name] == pytest.approx(f, abs=0.01)
    assert got["vacuum"] == pytest.approx(0.2, abs=1e-3)  # pores
    assert got["binder"] > 0 and got["carbon_black"] > 0
    assert p.meta["n_particles"] > 10
    # particles do not touch one another: no face-neighbours with different compounds
    lab = p.labels.astype(int)
    active = lab >= 3
    for ax in range(3):
        a, b = np.swapaxes(lab, 0, ax)[1:], np.swapaxes(lab, 0, ax)[:-1]
        aa, ab = np.swapaxes(active, 0, ax)[1:], np.swapaxes(active, 0, ax)[:-1]
        assert not np.any(aa & ab & (a != b))
    pil = battery_cathode(
        (24, 16, 24), 50e-9, rng=0, pillar=True, fractions=fr, radius_range=(100e-9, 150e-9)
    )
    zz, xx = np.mgrid[:24, :24]
    outside = np.hypot(zz - 12, xx - 12) > 11
    assert not pil.labels[outside[:, None, :].repeat(16, axis=1)].any()
    inside = pil.labels[~outside[:, None, :].repeat(16, axis=1)]
    assert np.mean(inside == 0) == pytest.approx(0.15, abs=0.01)  # default porosity


def test_delta_beta_matches_refractive_index(cathode):
    p = cathode
    e = 9000.0
    d, b = p.delta_beta(e)
    assert d.dtype == np.float64 and d.shape == p.shape
    for i, name in enumerate(p.materials):
        sel = p.labels == i
        assert sel.any()
        di, bi = refractive_index(name, e)
        assert np.all(d[sel] == di) and np.all(b[sel] == bi)
    assert len(set(np.unique(d))) == len(p.materials)
    dens = p.density()
    np.testing.assert_array_equal(dens, (p.labels != 0).astype(float))
    ds, bs, th = p.slices(e, 5)
    assert ds.shape == (5, 32, 32) and th.sum() == pytest.approx(32 * 50e-9)
    np.testing.assert_allclose((ds * th[:, None, None]).sum(0), d.sum(0) * 50e-9, rtol=1e-12)
    pd, pb = p.projected(e)
    np.testing.assert_allclose(pd, d.sum(0) * 50e-9)


def test_registry_and_validation():
    assert set(PHANTOMS) == {"siemens_star", "faceted_crystals", "hollow_cone", "battery_cathode"}
    a = make_phantom("faceted_crystals", (24, 24, 24), VOX, rng=2, n_crystals=1)
    b = make_phantom("faceted_crystals", (24, 24, 24), VOX, rng=2, n_crystals=1)
    np.testing.assert_array_equal(a.labels, b.labels)
    with pytest.raises(PhysicsError, match="unknown phantom"):
        make_phantom("teapot", (8, 8, 8), VOX)
    with pytest.raises(PhysicsError):
        Phantom(np.full((2, 2, 2), 3), ["vacuum", "gold"], VOX)
    with pytest.raises(PhysicsError, match="unknown material"):
        Phantom(np.ones((2, 2, 2), np.uint8), ["vacuum", "unobtainium"], VOX).delta_beta(8000)
