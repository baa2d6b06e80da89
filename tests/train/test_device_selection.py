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


def test_train_and_infer_configs_accept_xpu():
    from xrayflow.config import load_config

    cfg = load_config({"training": {"device": "xpu"}, "infer": {"device": "xpu"}}, "train")
    assert cfg["training"]["device"] == cfg["infer"]["device"] == "xpu"
    with pytest.raises(ConfigError, match="infer.device"):
        load_config({"infer": {"device": "tpu"}}, "train")


def test_a_missing_device_is_named_by_its_key(monkeypatch):
    monkeypatch.setattr(torch, "xpu", FakeXPU(0), raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="infer.device: xpu requested"):
        D.accelerator("xpu", "infer.device")
    with pytest.raises(ConfigError, match="training.device: cuda requested"):
        D.accelerator("cuda")
    assert D.accelerator("auto") == "cpu"


def test_inference_on_xpu_goes_to_the_xpu(xpu, monkeypatch, tmp_path):
    """infer() asks the same selection (it used to fall back to the CPU silently)."""
    from xrayflow.train import infer as I

    seen = []

    def stop(path, dev, build):
        seen.append(dev)
        raise RuntimeError("stop here")

    monkeypatch.setattr(I, "load_model", stop)
    (tmp_path / "d.h5").write_bytes(b"")
    with pytest.raises(RuntimeError, match="stop here"):
        I.infer(tmp_path / "m.pt", tmp_path / "d.h5", tmp_path / "o.h5", device="xpu")
    assert seen == [torch.device("xpu")]
