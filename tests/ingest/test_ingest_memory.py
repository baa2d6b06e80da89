"""Bounded memory: raw data files 4x larger than the memory limit set for the ingest
(``compute.max_memory_gb``) ingest with a peak resident-memory growth under that limit.

The ingest runs in a child process. After a small warm-up ingest (imports, thread pool) the
child reads its resident memory (``VmRSS``) and resets the kernel's peak mark (``5`` into
``/proc/self/clear_refs``); after the large ingest the peak (``VmHWM``) less that is the
growth (an upper bound where the reset is refused). ``getrusage``'s ``ru_maxrss`` is no
use here: it keeps the peak of the forked parent, the test process, across ``exec``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

LIMIT = 64 << 20  # bytes
FRAMES, SHAPE = 1024, (256, 256)  # uint32: 256 MiB = 4 x LIMIT
N_FILES = 4

CHILD = """
import json, sys
from xrayflow.config import load_config
from xrayflow.ingest.pipeline import ingest


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024


small, big = sys.argv[1:3]
ingest(load_config(small, "ingest"), small + ".cxi")
before = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS mark := current RSS
except OSError:
    pass  # the peak then includes the warm-up's: an upper bound still
ingest(load_config(big, "ingest"), big + ".cxi")
print(json.dumps({"before": before, "peak": status("VmHWM")}))
"""


def write_scan(folder, n_frames: int) -> str:
    """Master file + ``N_FILES`` uncompressed data files of ``n_frames`` uint32 frames (a
    bright centre over noise), written frame by frame; returns the master path."""
    rng = np.random.default_rng(1)
    yy, xx = np.indices(SHAPE)
    blob = 5000 * np.exp(-((yy - 130) ** 2 + (xx - 120) ** 2) / 200.0)
    per_file = n_frames // N_FILES
    master = folder / f"m{n_frames}_master.h5"
    with h5py.File(master, "w") as m:
        for i in range(N_FILES):
            name = f"m{n_frames}_data_{i + 1:06d}.h5"
            with h5py.File(folder / name, "w") as f:
                ds = f.create_dataset(
                    "entry/data/data", (per_file, *SHAPE), np.uint32, chunks=(1, *SHAPE)
                )
                for j in range(per_file):
                    ds[j] = rng.poisson(blob + 100)
            m[f"entry/data/data_{i + 1:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
        d = m.create_group("entry/instrument/detector")
        d["x_pixel_size"] = d["y_pixel_size"] = 75e-6
        d["detector_distance"] = 2.0
        d["saturation_value"] = 60000
        m["entry/instrument/beam/incident_wavelength"] = 1.55
        m["entry/dark"] = np.full(SHAPE, 100, np.uint32)
    return str(master)


def config(folder, master: str, name: str) -> str:
    cfg = {
        "master": master,
        "dark": {"key": "/entry/dark"},
        "crop": {"shape": [128, 128], "centre": "com"},
        "binning": 2,
        "output": {"compression": "lzf"},
        "compute": {"max_memory_gb": LIMIT / 2**30, "workers": 2},
    }
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.slow
def test_ingest_of_files_4x_the_memory_limit_stays_under_it(tmp_path):
    big = write_scan(tmp_path, FRAMES)
    small = write_scan(tmp_path, 8)
    raw_bytes = sum(p.stat().st_size for p in tmp_path.glob(f"m{FRAMES}_data_*.h5"))
    assert raw_bytes >= 4 * LIMIT
    cfg_small, cfg_big = config(tmp_path, small, "small.yaml"), config(tmp_path, big, "big.yaml")
    run = subprocess.run(
        [sys.executable, "-c", CHILD, cfg_small, cfg_big], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    mem = json.loads(run.stdout.strip().splitlines()[-1])
    growth = mem["peak"] - mem["before"]
    print(f"raw {raw_bytes / 2**20:.0f} MiB, limit {LIMIT / 2**20:.0f} MiB, "
          f"peak RSS growth {growth / 2**20:.1f} MiB")  # fmt: skip
    assert growth < LIMIT
    with h5py.File(cfg_big + ".cxi") as f:
        assert f["entry_1/instrument_1/detector_1/data"].shape == (FRAMES, 64, 64)
