"""Precise batch norm: running statistics recomputed as the plain average over batches."""

import torch

from xrayflow.networks import GlobalBatchNorm
from xrayflow.train.loop import precise_bn


def test_precise_bn_is_the_average_of_the_batch_statistics():
    torch.manual_seed(0)
    bn = GlobalBatchNorm(3, 2, momentum=0.1)
    model = torch.nn.Sequential(torch.nn.Dropout(0.5), bn)
    batches = [{"input": torch.randn(4, 3, 5, 5) * (k + 1) + k} for k in range(5)]
    model.train()
    for b in batches[:2]:  # stale running averages from "training"
        model(b["input"])
    rng = torch.get_rng_state()
    n = precise_bn(model, iter(batches), 3, lambda b: b)
    assert n == 3
    x = torch.stack([b["input"] for b in batches[:3]])  # (3, 4, C, 5, 5)
    means = x.mean(dim=(1, 3, 4))  # per batch, per channel
    vars_ = x.transpose(1, 2).reshape(3, 3, -1).var(dim=-1, unbiased=True)
    torch.testing.assert_close(bn.running_mean, means.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, vars_.mean(0), rtol=1e-5, atol=1e-5)
    assert bn.momentum == 0.1 and model.training  # restored
    # dropout stayed off (eval) during the pass: the inputs were not masked, no RNG drawn
    assert torch.equal(torch.get_rng_state(), rng)


def test_precise_bn_without_batch_norm_does_nothing():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))
    assert precise_bn(model, iter([{"input": torch.ones(1, 1, 2, 2)}]), 5, lambda b: b) == 0
