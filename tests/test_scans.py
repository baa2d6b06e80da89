"""Scan trajectories and the position <-> pixel conventions (docs/physics.md)."""

import numpy as np
import pytest
from scipy.spatial import cKDTree

from xrayflow.errors import PhysicsError
from xrayflow.scans import (
    add_jitter,
    check_positions_fit,
    fermat_spiral,
    fermat_spiral_radius,
    object_shape_for_scan,
    pixels_to_positions,
    positions_to_pixels,
    raster_scan,
    rotation_series,
)


def test_raster_step_count_and_centre():
    pos = raster_scan(3, 5, (2e-6, 1e-6))
    assert pos.shape == (15, 2)
    np.testing.assert_allclose(pos.mean(axis=0), 0.0, atol=1e-18)
    np.testing.assert_allclose(np.unique(np.diff(np.unique(pos[:, 0]))), 2e-6)
    np.testing.assert_allclose(np.unique(np.diff(np.unique(pos[:, 1]))), 1e-6)
    # row-major: y is constant along the first row, x increases
    assert np.all(pos[:5, 0] == pos[0, 0]) and np.all(np.diff(pos[:5, 1]) > 0)
    snake = raster_scan(2, 4, 1.0, snake=True)
    assert np.all(np.diff(snake[4:, 1]) < 0)


def test_fermat_spiral_spacing_and_coverage():
    step = 0.5e-6
    pos = fermat_spiral(800, step)
    assert pos.shape == (800, 2)
    np.testing.assert_allclose(pos[0], 0.0)
    d, _ = cKDTree(pos).query(pos, k=2)
    assert np.median(d[:, 1]) == pytest.approx(step, rel=0.05)
    # no clusters: every point has a neighbour between 0.5 and 1.5 steps
    assert d[:, 1].min() > 0.5 * step and d[:, 1].max() < 1.5 * step
    # uniform area coverage: the points fill a disc of the predicted radius evenly
    r_max = fermat_spiral_radius(800, step)
    r = np.hypot(pos[:, 0], pos[:, 1])
    assert r.max() == pytest.approx(r_max, rel=0.01)
    inner = np.mean(r < r_max / np.sqrt(2))  # half the disc area holds half the points
    assert inner == pytest.approx(0.5, abs=0.01)
    # four quadrants get a quarter each
    q = np.histogram(np.arctan2(pos[:, 0], pos[:, 1]), bins=4, range=(-np.pi, np.pi))[0]
    np.testing.assert_allclose(q / 800, 0.25, atol=0.02)


def test_jitter_std_and_determinism():
    pos = np.zeros((20000, 2))
    j = add_jitter(pos, 3e-9, rng=1)
    assert j.std(axis=0) == pytest.approx([3e-9, 3e-9], rel=0.03)
    np.testing.assert_array_equal(j, add_jitter(pos, 3e-9, rng=1))
    assert not np.array_equal(j, add_jitter(pos, 3e-9, rng=2))
    assert np.all(pos == 0)  # input untouched


def test_rotation_series_radians():
    a = rotation_series(4)
    np.testing.assert_allclose(a, np.deg2rad([0, 45, 90, 135]))
    b = rotation_series(3, -90, 90, endpoint=True)
    np.testing.assert_allclose(b, [-np.pi / 2, 0, np.pi / 2])


def test_positions_to_pixels_centre_convention_and_round_trip():
    obj, probe, px = (100, 80), (32, 32), 10e-9
    c = positions_to_pixels([[0.0, 0.0]], px, obj, probe)
    # probe axis (index n//2 of the window) on the object centre (index N//2)
    np.testing.assert_allclose(c[0] + np.array(probe) // 2, np.array(obj) // 2)
    np.testing.assert_allclose(c[0], [34, 24])
    # +y moves the window down by position/pixel_size pixels
    c2 = positions_to_pixels([[25e-9, -10e-9]], px, obj, probe)
    np.testing.assert_allclose(c2[0] - c[0], [2.5, -1.0])
    pos = fermat_spiral(50, 40e-9)
    back = pixels_to_positions(positions_to_pixels(pos, px, obj, probe), px, obj, probe)
    np.testing.assert_allclose(back, pos, atol=1e-20)
    # odd object / odd probe: same convention
    c3 = positions_to_pixels([[0.0, 0.0]], px, (51, 51), (11, 11))
    np.testing.assert_allclose(c3[0], [20, 20])


def test_object_shape_for_scan_fits_and_is_tight():
    pos = raster_scan(4, 6, 70e-9)
    px, probe = 10e-9, (64, 64)
    shape = object_shape_for_scan(pos, px, probe, margin_px=3)
    assert (shape[0] - 64) % 2 == 0 and (shape[1] - 64) % 2 == 0
    corners = positions_to_pixels(pos, px, shape, probe)
    check_positions_fit(corners, shape, probe)
    assert corners.min() >= 3
    assert (corners[:, 0] + 64).max() <= shape[0] - 3
    assert corners.min() <= 5  # not much bigger than needed
    assert shape[1] > shape[0]  # wider scan in x


def test_off_grid_raises_physics_error():
    probe, obj = (32, 32), (64, 64)
    check_positions_fit([[0, 0], [32, 32]], obj, probe)
    for bad in ([-0.5, 0], [0, 32.5], [33, 0], [np.nan, 0]):
        with pytest.raises(PhysicsError):
            check_positions_fit([[1, 1], bad], obj, probe)
    with pytest.raises(PhysicsError, match="larger than the object"):
        check_positions_fit([[0, 0]], (16, 64), probe)
    far = positions_to_pixels([[1e-6, 0]], 10e-9, obj, probe)
    with pytest.raises(PhysicsError, match="fall off"):
        check_positions_fit(far, obj, probe)
