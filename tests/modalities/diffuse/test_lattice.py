"""Monte Carlo lattices: the target encoding is reached within the tolerance (dimensions
3, 8, 15 on 64×64 lattices), seeding, the nearest-neighbour Ising limit against Onsager,
the update classes, the starting interactions, random targets, and bad inputs."""

import numpy as np
import pytest
from scipy.special import ellipk

from xrayflow.errors import ConfigError
from xrayflow.modalities.diffuse.encoding import (
    measure_correlations,
    neighbour_vectors,
    symmetry_mates,
    zone_spectrum,
)
from xrayflow.modalities.diffuse.lattice import (
    check_reachable,
    clapp_moss_interactions,
    class_periods,
    monte_carlo,
    pair_bound,
    random_encoding,
    sample_lattices,
    update_classes,
)

#: The stated tolerance of the Monte Carlo (|achieved − target| per variable).
TOLERANCE = 0.02


@pytest.mark.parametrize("dim", [3, 8, 15])
def test_monte_carlo_reaches_random_targets_within_tolerance(dim):
    v = neighbour_vectors(dim)
    rng = np.random.default_rng(10 + dim)
    for _ in range(3):
        target = random_encoding(v, rng)
        r = monte_carlo(target, v, rng=rng, shape=(64, 64), n_lattices=3, tolerance=TOLERANCE)
        assert r.converged, (dim, r.max_error, r.sweeps)
        assert r.lattices.shape == (3, 64, 64) and r.lattices.dtype == np.uint8
        assert np.all(r.lattices.reshape(3, -1).sum(axis=1) == 2048)  # composition kept
        np.testing.assert_allclose(measure_correlations(r.lattices, v), r.achieved, atol=1e-12)
        assert np.abs(r.achieved - target).max() <= TOLERANCE
        assert r.max_error == pytest.approx(np.abs(r.achieved - target).max())
        np.testing.assert_array_equal(r.target, target)


def test_monte_carlo_reaches_a_target_off_half_concentration():
    v = neighbour_vectors(8)
    rng = np.random.default_rng(4)
    target = random_encoding(v, rng, concentration=0.3)
    r = monte_carlo(target, v, rng=rng, shape=(64, 64), concentration=0.3)
    assert r.converged and np.abs(r.achieved - target).max() <= TOLERANCE
    assert np.all(r.lattices.mean(axis=(1, 2)) == pytest.approx(round(0.3 * 4096) / 4096))


def test_monte_carlo_is_seeded():
    v = neighbour_vectors(8)
    target = random_encoding(v, np.random.default_rng(0))
    a, b, c = (
        monte_carlo(target, v, rng=np.random.default_rng(s), shape=(32, 32)) for s in (5, 5, 6)
    )
    np.testing.assert_array_equal(a.lattices, b.lattices)
    np.testing.assert_array_equal(a.achieved, b.achieved)
    assert a.sweeps == b.sweeps
    assert not np.array_equal(a.lattices, c.lattices)


@pytest.mark.parametrize("coupling", [0.2, 0.3])
def test_nearest_neighbour_interactions_follow_onsager(coupling):
    """J on (1, 0), (0, 1) only at c = ½ is the square Ising model with K = −J/4 (zero
    magnetisation): its nearest-neighbour α = <σσ> from Onsager's exact energy."""
    v = np.array([[1, 0], [0, 1]])
    j = -4.0 * coupling
    lat = sample_lattices(
        [j, j], v, rng=np.random.default_rng(0), shape=(64, 64), n_lattices=4, sweeps=300
    )
    alpha = measure_correlations(lat, v).mean()
    k2 = 2 * coupling
    modulus = 2 * np.sinh(k2) / np.cosh(k2) ** 2
    exact = 0.5 / np.tanh(k2) * (1 + 2 / np.pi * (2 * np.tanh(k2) ** 2 - 1) * ellipk(modulus**2))
    assert alpha == pytest.approx(exact, abs=0.02)


def test_update_classes_partition_the_lattice_into_non_interacting_sites():
    shape, v = (24, 20), neighbour_vectors(15)
    periods = class_periods(shape, v)
    assert periods == (4, 4)
    mates, _ = symmetry_mates(v)
    rng = np.random.default_rng(0)
    for axis in (0, 1):
        offsets = rng.integers(0, periods[1 - axis], size=(2, shape[axis]))
        classes = update_classes(shape, periods, offsets, axis)
        for k in range(2):
            sites = np.sort(classes[:, k].ravel())
            np.testing.assert_array_equal(sites, np.arange(24 * 20))  # each site once
            for cls in classes[:, k]:
                r, c = np.divmod(cls, 20)
                dr = (r[:, None] - r[None, :]) % 24
                dc = (c[:, None] - c[None, :]) % 20
                pairs = {(int(a), int(b)) for a, b in zip(dr.ravel(), dc.ravel(), strict=True)}
                reach = {(m % 24, n % 20) for m, n in mates.tolist()}
                assert not pairs & reach  # no two sites of a class interact


def test_clapp_moss_reduces_to_the_weak_order_limit():
    v = neighbour_vectors(8)
    alpha = np.linspace(-1e-3, 1e-3, 8)
    j = clapp_moss_interactions(alpha, v, 0.5)
    np.testing.assert_allclose(j, -alpha / 0.25, rtol=0.02, atol=2e-5)


@pytest.mark.parametrize("c", [0.5, 0.2])
def test_random_encodings_are_reachable_and_seeded(c):
    v = neighbour_vectors(15)
    rng = np.random.default_rng(3)
    codes = np.array([random_encoding(v, rng, concentration=c, max_peak=4.0) for _ in range(50)])
    assert np.all(codes >= pair_bound(c)) and np.all(codes <= 1)
    assert all(zone_spectrum(a, v).max() <= 4.0 + 1e-9 for a in codes)
    assert codes.std(axis=0).min() > 0.02  # a spread to learn from
    again = random_encoding(v, np.random.default_rng(3), concentration=c)
    np.testing.assert_array_equal(again, codes[0])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": [-0.5, 0.0, 0.0], "concentration": 0.2},
         r"encoding: target correlation α\(1, 0\) = -0.5 is below -0.25.*concentration 0.2"),
        ({"target": [0.0, 1.2, 0.0]}, r"α\(0, 1\) = 1.2 is outside"),
        ({"shape": (2, 64)}, r"shape: lattice side 2 must exceed twice the reach"),
        ({"shape": (64,)}, r"shape must be \(L0, L1\)"),
        ({"concentration": 1.0}, r"concentration must be in \(0, 1\)"),
        ({"concentration": 1e-5}, r"concentration 1e-05 leaves no site"),
        ({"tolerance": 0.0}, "tolerance must be > 0"),
        ({"max_sweeps": 0}, "max_sweeps must be >= 1"),
        ({"n_lattices": 0}, "n_lattices must be >= 1"),
    ],
    ids=["bound", "range", "small", "1d", "c1", "c0", "tol", "sweeps", "lattices"],
)  # fmt: skip
def test_bad_inputs_raise_config_errors_naming_the_parameter(kwargs, match):
    kw = {"target": [0.0, 0.0, 0.0], "shape": (16, 16), **kwargs}
    with pytest.raises(ConfigError, match=match):
        monte_carlo(kw.pop("target"), neighbour_vectors(3), rng=np.random.default_rng(0), **kw)


def test_pair_bound_is_reachable_and_checked():
    assert pair_bound(0.5) == -1.0 and pair_bound(0.2) == pytest.approx(-0.25)
    assert pair_bound(0.8) == pytest.approx(-0.25)
    check_reachable([-0.25, 0.0, 1.0], neighbour_vectors(3), 0.2)
    with pytest.raises(ConfigError, match="inconsistent with the concentration"):
        check_reachable([-0.3, 0.0, 0.0], neighbour_vectors(3), 0.8)
