"""Device selection of init_distributed: CUDA first, then Intel GPUs through torch.xpu (mocked
here: no XPU on the test machine), then CPU; one GPU per node-local rank."""

import pytest
import torch

from xrayflow.errors import ConfigError
from xrayflow.train import distributed as D


class FakeXPU:
    def __init__(self, count):
        self.count = count
        self.current = None

    def is_available(self):
        return self.count > 0

    def device_count(self):
        return self.count

    def set_device(self, dev):
        self.current = dev


@pytest.fixture
def xpu(monkeypatch):
    fake = FakeXPU(2)
    monkeypatch.setattr(torch, "xpu", fake, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID", "RANK"):
        monkeypatch.delenv(var, raising=False)
    return fake


def test_auto_picks_xpu_without_cuda(xpu):
    info = D.init_distributed("auto")
    assert info.device == torch.device("xpu", 0)
    assert xpu.current == torch.device("xpu", 0)
    assert info.backend is None  # one rank: no process group


def test_xpu_follows_the_local_rank(xpu, monkeypatch):
    monkeypatch.setattr(D.dist, "is_xccl_available", lambda: True)
    monkeypatch.setattr(D.dist, "is_initialized", lambda: True)  # no real process group
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    info = D.init_distributed("auto")
    assert info.device == torch.device("xpu", 1)  # local rank 3 of 2 XPUs per node
    assert info.backend == "xccl"


def test_xpu_ranks_need_xccl(xpu, monkeypatch):
    monkeypatch.setattr(D.dist, "is_xccl_available", lambda: False)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="XCCL"):
        D.init_distributed("auto")


def test_explicit_devices_that_are_missing(xpu):
    xpu.count = 0
    assert D.init_distributed("auto").device == torch.device("cpu")
    with pytest.raises(ConfigError, match="xpu requested"):
        D.init_distributed("xpu")
    with pytest.raises(ConfigError, match="cuda requested"):
        D.init_distributed("cuda")
