"""Optimizers on a quadratic; checkpoint round trip of optimizer and RNG state."""

from __future__ import annotations

import numpy as np
import pytest

from xrayflow.errors import ConfigError
from xrayflow.io import checkpoint as ckpt
from xrayflow.solvers.optimizers import ParamSettings, make_optimizer

TARGET = np.array([1.0 + 2.0j, -0.5j, 3.0])
A = np.array([1.0, 4.0, 0.25])  # diagonal curvature


def _loss_grad(x):
    r = x - TARGET
    return float(np.sum(A * np.abs(r) ** 2)), 2 * A * r  # PyTorch convention


@pytest.mark.parametrize(
    "method,rule,lr,steps",
    [
        ("adam", "fixed", 0.1, 400),
        ("sgd", "fixed", 0.1, 300),
        ("sgd", "bb", 0.1, 100),
        ("sgd", "backtracking", 1.0, 100),
    ],
)
def test_optimizers_minimise_a_quadratic(method, rule, lr, steps):
    opt = make_optimizer(method, {"x": ParamSettings(lr=lr)}, rule=rule)
    params = {"x": np.zeros(3, complex)}
    for it in range(steps):
        loss, g = _loss_grad(params["x"])
        closure = (lambda p: _loss_grad(p["x"])[0]) if rule == "backtracking" else None
        if closure is not None:
            opt.step(params, {"x": g}, it, closure=closure, loss0=loss)
        else:
            opt.step(params, {"x": g}, it)
    np.testing.assert_allclose(params["x"], TARGET, atol=2e-2)


def test_schedule_and_bad_method():
    s = ParamSettings(lr=1.0, start=2, stop=4)
    assert [s.active(i) for i in range(6)] == [False, False, True, True, False, False]
    with pytest.raises(ConfigError):
        make_optimizer("newton", {"x": s})
    with pytest.raises(ConfigError):
        make_optimizer("sgd", {"x": s}, rule="magic")


def test_checkpoint_round_trip(tmp_path):
    opt = make_optimizer("adam", {"x": ParamSettings(lr=0.1)})
    params = {"x": np.zeros(3, complex)}
    for it in range(3):
        opt.step(params, {"x": _loss_grad(params["x"])[1]}, it)
    rng = np.random.default_rng(7)
    rng.random(5)
    path = tmp_path / "c.h5"
    ckpt.save_checkpoint(
        path,
        iteration=3,
        params=params,
        optimizer_state=opt.state_dict(),
        rng_state=ckpt.rng_state(rng),
        history={"loss": [3.0, 2.0, 1.0]},
        config={"a": 1},
    )
    c = ckpt.load_checkpoint(path)
    assert c["iteration"] == 3 and c["config"] == {"a": 1}
    np.testing.assert_array_equal(c["params"]["x"], params["x"])
    opt2 = make_optimizer("adam", {"x": ParamSettings(lr=0.1)})
    opt2.load_state_dict(c["optimizer"])
    p2 = {"x": params["x"].copy()}
    g = _loss_grad(params["x"])[1]
    opt.step(params, {"x": g}, 3)
    opt2.step(p2, {"x": g}, 3)
    np.testing.assert_array_equal(params["x"], p2["x"])
    assert ckpt.restore_rng(c["rng_state"]).random() == rng.random()
