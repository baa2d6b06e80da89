"""The image-to-vector networks (tag classifier, encoding regressor) and their losses: shapes
from 64² to 1000², which inputs each view depends on, parameter counts, loss values, toy
problems learned on CPU, activation estimates, gradients and deterministic initialisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from xrayflow.errors import ConfigError
from xrayflow.networks.cnn import (
    ConvTrunk,
    EncodingRegressor,
    TagClassifier,
    balanced_pos_weight,
    multilabel_bce,
    regression_loss,
)
from xrayflow.networks.encoder_decoder import count_parameters
from xrayflow.networks.layers import GlobalBatchNorm

COEF = (1, 20, 30)  # Fourier–Bessel map: 20 angular × 30 radial orders


def _classifier(view: str, size: int = 64, **kw) -> TagClassifier:
    torch.manual_seed(0)
    return TagClassifier(view, 7, size, COEF, **kw)


@pytest.mark.parametrize("view", ["image", "coefficients", "joint"])
@pytest.mark.parametrize("size", [64, 256])
def test_classifier_shapes(view, size):
    net = _classifier(view, size)
    out = net(torch.rand(3, size, size), torch.rand(3, *COEF))
    assert set(out) == set(net.heads) == {"tags"}
    assert out["tags"].shape == (3, 7) and net.output_size == 7 and net.input_size == size
    assert net.ndim == 2


def test_large_images_run_through_a_stem():
    net = _classifier("joint", 1000).eval()
    assert net.image.feature_size == (7, 7)  # 1000 -> stem 4, 2 -> 125 -> 4 pools
    with torch.no_grad():
        out = net(torch.rand(1, 1000, 1000), torch.rand(1, *COEF))
    assert out["tags"].shape == (1, 7) and torch.isfinite(out["tags"]).all()
    # 256 -> one stride-2 conv; 64 keeps its size; the coefficient map pools to 2 × 3
    assert _classifier("image", 256).image.feature_size == (8, 8)
    assert _classifier("image", 64).image.feature_size == (4, 4)
    assert _classifier("coefficients").coefficients.feature_size == (2, 3)
    small = ConvTrunk((3, 5), (8, 8), norm="none")
    assert small.feature_size == (3, 5) and small(torch.rand(2, 1, 3, 5)).shape == (2, 16)


def test_views_depend_on_their_inputs_only():
    torch.manual_seed(1)
    x, c = torch.rand(2, 64, 64), torch.rand(2, *COEF)
    x2, c2 = x + torch.rand_like(x), c + torch.rand_like(c)
    with torch.no_grad():
        joint = _classifier("joint").eval()
        base = joint(x, c)["tags"]
        assert not torch.allclose(joint(x2, c)["tags"], base)
        assert not torch.allclose(joint(x, c2)["tags"], base)
        image = _classifier("image").eval()
        assert torch.equal(image(x, c)["tags"], image(x, c2)["tags"])
        assert torch.equal(image(x)["tags"], image(x, c)["tags"])
        coef = _classifier("coefficients").eval()
        assert torch.equal(coef(x, c)["tags"], coef(x2, c)["tags"])
        assert torch.equal(coef(None, c)["tags"], coef(x, c)["tags"])
        assert not torch.allclose(coef(x, c2)["tags"], coef(x, c)["tags"])


def test_missing_views_and_bad_options():
    x = torch.rand(2, 64, 64)
    for view in ("coefficients", "joint"):
        with pytest.raises(ValueError, match="coefficients"):
            _classifier(view)(x)
    with pytest.raises(ValueError, match="image"):
        _classifier("joint")(None, torch.rand(2, *COEF))
    with pytest.raises(ConfigError, match="view"):
        TagClassifier("both", 3, 64, COEF)
    with pytest.raises(ConfigError, match="coefficient shape"):
        TagClassifier("joint", 3, 64, None)
    with pytest.raises(ConfigError, match="size"):
        EncodingRegressor(3, 64, "medium")
    with pytest.raises(ConfigError, match="norm"):
        EncodingRegressor(3, 64, norm="layer")


def test_norm_layers_are_global_batch_norm():
    for norm, kind in (("batch", GlobalBatchNorm), ("group", torch.nn.GroupNorm)):
        net = _classifier("joint", norm=norm)
        assert sum(isinstance(m, kind) for m in net.modules()) == 8 + 6
    net = _classifier("joint", norm="none")
    assert not any(isinstance(m, (GlobalBatchNorm, torch.nn.GroupNorm)) for m in net.modules())


def test_parameter_counts():
    for dim in (3, 8, 15):
        small = count_parameters(EncodingRegressor(dim, 64, "small"))
        large = count_parameters(EncodingRegressor(dim, 64, "large"))
        print(f"encoding dim {dim}: small {small:,}, large {large:,} parameters")
        assert 0.1e6 <= small <= 0.4e6 and 4e6 <= large <= 10e6
        # grid pooling: only the stem depends on the image size (at 256: a stride-2 conv to 16
        # channels and its norm, and the first level's conv takes 16 channels instead of 1)
        stem = 16 * 9 + 2 * 16 + 15 * 16 * 9
        assert count_parameters(EncodingRegressor(dim, 256, "small")) == small + stem
        # the linear read-out: 32 × 32 cells (at most the image side) to dim outputs
        readout = count_parameters(EncodingRegressor(dim, 64, readout=8))
        assert small - readout == (32 * 32 - 8 * 8) * dim
    counts = {v: count_parameters(_classifier(v, 256)) for v in ("image", "coefficients", "joint")}
    print("classifier at 256², 20 × 30 coefficients, 7 tags:", counts)
    shared = 256 + 256 * 7 + 7  # one head in the joint view: its hidden bias and output layer
    assert counts["joint"] == counts["image"] + counts["coefficients"] - shared


def test_multilabel_bce():
    torch.manual_seed(2)
    logits, targets = torch.randn(5, 4), (torch.rand(5, 4) > 0.5).float()
    pw = torch.tensor([1.0, 3.0, 10.0, 0.5])
    for w in (None, pw):
        got = multilabel_bce(logits, targets, w)
        for b in range(5):
            ref = F.binary_cross_entropy_with_logits(logits[b], targets[b], pos_weight=w)
            assert torch.allclose(got[b], ref)
    # -log σ(0) = ln 2 for a positive; -log(1 - σ(ln 3)) = ln 4 for a negative
    tiny = torch.tensor([[0.0, math.log(3.0)]])
    assert multilabel_bce(tiny, torch.tensor([[1, 0]])).item() == pytest.approx(1.5 * math.log(2))
    weighted = multilabel_bce(tiny, torch.tensor([[1, 0]]), torch.tensor([2.0, 5.0]))
    assert weighted.item() == pytest.approx(2 * math.log(2))


def test_balanced_pos_weight():
    w = balanced_pos_weight([10, 50, 0, 1, 100, 80], 100)
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx([9.0, 1.0, 100.0, 99.0, 1.0, 1.0])
    w = balanced_pos_weight(torch.tensor([10, 0, 1]), 100, max_weight=20.0)
    assert w.tolist() == pytest.approx([9.0, 20.0, 20.0])
    with pytest.raises(ValueError):
        balanced_pos_weight(np.array([101]), 100)


def test_regression_loss():
    pred, target = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    assert regression_loss(pred, target).tolist() == pytest.approx([2.5, 5.0])
    assert regression_loss(pred, target, "mae").tolist() == pytest.approx([1.5, 2.0])
    with pytest.raises(ConfigError):
        regression_loss(pred, target, "huber")


def _shapes(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images with a spot, a horizontal, a vertical and a diagonal bar, each present with
    probability 1/2 at a random place (tag k <-> shape k)."""
    tags = rng.random((n, 4)) < 0.5
    img = 0.1 * rng.standard_normal((n, 32, 32))
    for i in range(n):
        r, c = rng.integers(4, 24, 2)
        if tags[i, 0]:
            img[i, r : r + 3, c : c + 3] += 1
        if tags[i, 1]:
            img[i, r, c - 4 : c + 5] += 1
        if tags[i, 2]:
            img[i, r - 4 : r + 5, c] += 1
        if tags[i, 3]:
            d = np.arange(-4, 5)
            img[i, r + d, c + d] += 1
    return img.astype(np.float32), tags.astype(np.float32)


def test_classifier_learns_toy_tags():
    rng = np.random.default_rng(3)
    x, y = (torch.from_numpy(a) for a in _shapes(256, rng))
    torch.manual_seed(3)
    net = TagClassifier("image", 4, 32, channels=(8, 16), hidden=32)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        idx = torch.from_numpy(rng.choice(256, 32, replace=False))
        loss = multilabel_bce(net(x[idx])["tags"], y[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = ((net(x)["tags"] > 0).float() == y).float().mean().item()
    print(f"toy tags: training accuracy {acc:.3f}")
    assert acc >= 0.95


def _correlated(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Warren–Cowley-like images 1 + Σ α_j cos 2π(h m_j + k n_j), neighbours (1,0), (0,1),
    (1,1), α_j uniform in ±0.5, with noise."""
    alpha = rng.uniform(-0.5, 0.5, (n, 3))
    h = np.arange(32) / 32
    waves = np.stack(
        [np.cos(2 * np.pi * (h[:, None] * m + h[None, :] * k)) for m, k in ((1, 0), (0, 1), (1, 1))]
    )
    img = 1 + np.einsum("nj,jxy->nxy", alpha, waves) + 0.05 * rng.standard_normal((n, 32, 32))
    return img.astype(np.float32), alpha.astype(np.float32)


def _fit_and_score(x, y, n_train: int, steps: int, seed: int, rng) -> np.ndarray:
    """R² per output on the held-out rows of a small regressor trained with Adam on the
    first ``n_train`` rows of images ``x`` and encodings ``y`` (numpy)."""
    x, y = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))
    torch.manual_seed(seed)
    net = EncodingRegressor(y.shape[1], x.shape[-1], "small")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(n_train, 32, replace=False))
        loss = regression_loss(net(x[idx])["encoding"], y[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(x[n_train:])["encoding"].numpy()
    truth = y[n_train:].numpy()
    return 1 - ((pred - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)


def test_regressor_fits_toy_encoding():
    rng = np.random.default_rng(4)
    x, y = _correlated(384, rng)
    r2 = _fit_and_score(x, y, 256, 100, 4, rng)
    print(f"toy encoding: held-out R² {r2}")
    assert r2.mean() > 0.9


def test_regressor_learns_diagonal_modes_of_a_diffuse_image():
    """Images of the Warren–Cowley modes, one per vector, axial and diagonal: the
    convolutional features alone left the diagonal ones unlearnt (R² < 0.6)."""
    rng = np.random.default_rng(6)
    h = np.linspace(-1, 1, 32, endpoint=False) + 1 / 32
    vectors = [(1, 0), (0, 1), (1, 1), (2, 1)]
    modes = np.stack(
        [np.outer(np.cos(2 * np.pi * m * h), np.cos(2 * np.pi * n * h)) for m, n in vectors]
    )
    y = rng.uniform(-0.3, 0.3, (512, len(vectors)))
    x = 1 + np.einsum("bv,vij->bij", y, modes) + rng.normal(0, 0.02, (512, 32, 32))
    r2 = _fit_and_score(x, y, 384, 150, 6, rng)
    assert r2.min() > 0.9, r2


def test_activation_bytes_grow_with_size():
    for make in (
        lambda n: _classifier("image", n),
        lambda n: _classifier("joint", n),
        lambda n: EncodingRegressor(8, n, "small"),
    ):
        train = [make(n).activation_bytes() for n in (64, 128, 1000)]
        infer = [make(n).activation_bytes(training=False) for n in (64, 128, 1000)]
        assert 0 < train[0] < train[1] < train[2] and 0 < infer[0] < infer[1] < infer[2]
        assert all(i < t for i, t in zip(infer, train, strict=True))
    # the first conv at 64²: 16 channels, conv + norm + ReLU kept for the backward pass
    assert _classifier("image").activation_bytes() > 4 * 3 * 16 * 64 * 64
    coef = _classifier("coefficients")
    assert coef.activation_bytes() == _classifier("coefficients", 1000).activation_bytes()


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_gradient_reaches_every_parameter(kind):
    torch.manual_seed(5)
    if kind == "classifier":
        net = TagClassifier("joint", 7, 64, COEF, dropout=0.1)
    else:
        net = EncodingRegressor(15, 64, "small", dropout=0.1)
    x = torch.rand(4, 64, 64)
    out = net(x, torch.rand(4, *COEF)) if isinstance(net, TagClassifier) else net(x)
    sum(v.square().sum() for v in out.values()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initialisation_is_deterministic():
    def state(seed, make):
        torch.manual_seed(seed)
        return make().state_dict()

    for make in (lambda: TagClassifier("joint", 5, 64, COEF), lambda: EncodingRegressor(8, 64)):
        a, b, c = state(0, make), state(0, make), state(1, make)
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)
