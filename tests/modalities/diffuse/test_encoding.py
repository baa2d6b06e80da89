"""The encoding: neighbour vectors, Warren–Cowley coefficients against brute force and
closed forms (uncorrelated, checkerboard, stripes), symmetry, and bad inputs."""

import numpy as np
import pytest

from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities.diffuse.encoding import (
    check_encoding,
    check_vectors,
    correlation_map,
    correlation_table,
    measure_correlations,
    multiplicities,
    neighbour_vectors,
    symmetry_mates,
    zone_modes,
    zone_spectrum,
)


def brute_force_alpha(lattices, m, n):
    """α(m, n) = <σ_i σ_{i+(m,n)}> / <c(1-c)> by np.roll, averaged over the lattices."""
    s = np.asarray(lattices, dtype=float)
    c = s.mean(axis=(1, 2), keepdims=True)
    sigma = s - c
    shifted = np.roll(sigma, shift=(-m, -n), axis=(1, 2))  # shifted[i] = σ[i + (m, n)]
    return float(np.mean(sigma * shifted) / np.mean(c * (1 - c)))


def test_neighbour_vectors_are_the_seed_table_corners_in_order():
    v15 = neighbour_vectors(15)
    assert v15[:3].tolist() == [[1, 0], [0, 1], [1, 1]]
    assert {tuple(x) for x in neighbour_vectors(3)} == {
        (m, n) for m in range(2) for n in range(2)
    } - {(0, 0)}
    assert {tuple(x) for x in neighbour_vectors(8)} == {
        (m, n) for m in range(3) for n in range(3)
    } - {(0, 0)}
    assert len({tuple(x) for x in v15}) == 15 and v15.max() == 3 and v15.min() == 0
    lengths = (v15**2).sum(axis=1)
    assert np.all(np.diff(lengths) >= 0)
    with pytest.raises(ConfigError, match="encoding dimension must be one of"):
        neighbour_vectors(4)


def test_uncorrelated_lattice_has_zero_alpha_within_statistical_error():
    rng = np.random.default_rng(0)
    k, side = 2, 128
    lat = (rng.random((k, side, side)) < 0.5).astype(np.uint8)
    alpha = measure_correlations(lat, neighbour_vectors(15))
    # each coefficient averages ~2 k side² products of unit variance (in Laue units)
    sigma = 1.0 / np.sqrt(2 * k * side * side)
    assert np.all(np.abs(alpha) < 5 * sigma), alpha
    assert correlation_map(lat)[0, 0] == pytest.approx(1.0)


def test_correlations_agree_with_brute_force_roll():
    rng = np.random.default_rng(1)
    lat = (rng.random((3, 20, 24)) < 0.3).astype(np.uint8)
    amap = correlation_map(lat)
    assert amap[0, 0] == pytest.approx(1.0)
    for m, n in [(1, 0), (0, 1), (2, 3), (-1, 2), (5, -7), (19, 23)]:
        assert amap[m % 20, n % 24] == pytest.approx(brute_force_alpha(lat, m, n), abs=1e-12)
    v = neighbour_vectors(15)
    expected = [0.5 * (brute_force_alpha(lat, m, n) + brute_force_alpha(lat, m, -n)) for m, n in v]
    np.testing.assert_allclose(measure_correlations(lat, v), expected, atol=1e-12)
    # inversion symmetry of the periodic autocorrelation
    assert amap[3, 5] == pytest.approx(amap[-3 % 20, -5 % 24], abs=1e-12)


def test_known_ordered_arrangements_are_reproduced_exactly():
    i, j = np.indices((16, 16))
    v = neighbour_vectors(15)
    checker = ((i + j) % 2).astype(np.uint8)
    np.testing.assert_allclose(
        measure_correlations(checker, v), (-1.0) ** v.sum(axis=1), atol=1e-12
    )
    stripes = (i % 2).astype(np.uint8)  # rows alternate: order along axis 0 only
    np.testing.assert_allclose(measure_correlations(stripes, v), (-1.0) ** v[:, 0], atol=1e-12)
    table = correlation_table(measure_correlations(checker, v), v)
    np.testing.assert_allclose(table, (-1.0) ** np.add.outer(range(4), range(4)), atol=1e-12)


def test_correlation_table_marks_unencoded_vectors():
    v = neighbour_vectors(3)
    t = correlation_table([0.1, -0.2, 0.3], v)
    assert t[0, 0] == 1.0 and t[1, 0] == 0.1 and t[0, 1] == -0.2 and t[1, 1] == 0.3
    assert np.isnan(t[2:, :]).all() and np.isnan(t[:, 2:]).all()


def test_mates_and_zone_modes_give_the_warren_cowley_sum():
    v = neighbour_vectors(8)
    mates, owner = symmetry_mates(v)
    assert multiplicities(v).tolist() == [2, 2, 4, 2, 2, 4, 4, 4]
    assert len(mates) == len(set(map(tuple, mates.tolist()))) == 24
    rng = np.random.default_rng(2)
    alpha = rng.uniform(-0.3, 0.3, len(v))
    grid = 16
    h = np.arange(grid) / grid
    direct = 1.0 + sum(
        alpha[o] * np.cos(2 * np.pi * (h[:, None] * m + h[None, :] * n))
        for (m, n), o in zip(mates.tolist(), owner, strict=True)
    )
    np.testing.assert_allclose(zone_spectrum(alpha, v, grid), direct, atol=1e-12)
    assert zone_modes(v, grid).shape == (grid, grid, 8)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: check_encoding([0.1, 1.5, 0.0], neighbour_vectors(3)), ConfigError,
         r"encoding: target correlation α\(0, 1\) = 1.5 is outside \[-1, 1\]"),
        (lambda: check_encoding([0.1, np.nan, 0.0], neighbour_vectors(3)), ConfigError,
         r"α\(0, 1\)"),
        (lambda: check_encoding([0.1, 0.2], neighbour_vectors(3)), ConfigError,
         "one value per neighbour vector"),
        (lambda: check_vectors([[0, 0], [1, 0]]), ConfigError, "neighbour vectors"),
        (lambda: check_vectors([[1, 0], [1, 0]]), ConfigError, "distinct"),
        (lambda: check_vectors([[1.0, 0.0]]), ConfigError, "integer"),
        (lambda: correlation_map(np.full((4, 4), 2)), DataError, "occupancies 0 or 1"),
        (lambda: correlation_map(np.ones((4, 4))), DataError, "one species only"),
        (lambda: correlation_map(np.ones(4)), DataError, "lattices must be"),
    ],
    ids=["range", "nan", "length", "origin", "duplicate", "float", "values", "one", "shape"],
)  # fmt: skip
def test_bad_inputs_raise_naming_the_parameter(call, error, match):
    with pytest.raises(error, match=match):
        call()
