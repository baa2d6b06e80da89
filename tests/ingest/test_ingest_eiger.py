"""An Eiger-style master file (external links to two bitshuffle/LZ4 data files, dark and
flat frames, gain and offset in ADU, a pixel mask, a saturated reading, a beamstop mask and
a positions CSV in µm) ingests into the CXI file written directly from the ground truth,
and ``xrayflow reconstruct`` gives the same result on both."""

from __future__ import annotations

import h5py
import numpy as np
from conftest import ROOT, bad_pixels, cli, window

from xrayflow.io.cxi import DiffractionData, read_cxi, write_cxi


def truth_cxi(simulated, path) -> DiffractionData:
    """The CXI the ingest should produce, written with ``write_cxi`` from the truth."""
    truth = read_cxi(simulated, truth=False)
    good = ~bad_pixels()[window()]
    d = DiffractionData(
        data=truth.data * good,
        energy_ev=8000.0,
        distance=2.0,
        pixel_size=(75e-6, 75e-6),
        positions=truth.positions,
        mask=good,
        attrs={"modality": "ptycho2d"},
    )
    write_cxi(path, d)
    return d


def test_eiger_master_ingests_to_the_truth_and_reconstructs_alike(simulated, beamline):
    expected = truth_cxi(simulated, beamline / "truth.cxi")
    rc, out, err = cli("ingest", "-c", beamline / "ingest.yaml", "--out", beamline / "in.cxi")
    assert rc == 0, err
    assert "16 frames of 32x32" in out
    got = read_cxi(beamline / "in.cxi")
    np.testing.assert_array_equal(got.data, expected.data)
    np.testing.assert_array_equal(got.mask, expected.mask)
    np.testing.assert_allclose(got.positions, expected.positions, rtol=1e-12, atol=1e-20)
    np.testing.assert_allclose(got.energy_ev, 8000.0, rtol=1e-12)
    assert got.distance == 2.0 and got.pixel_size == (75e-6, 75e-6)
    assert got.attrs["modality"] == "ptycho2d" and got.attrs["binning"] == 1
    with h5py.File(beamline / "in.cxi") as f:
        ds = f["entry_1/instrument_1/detector_1/data"]
        assert ds.chunks == (1, 32, 32) and ds.compression == "gzip"

    results = {}
    for name in ("truth", "in"):
        rc, _, err = cli(
            "reconstruct", "-c", ROOT / "config/reconstruct/ptycho2d.yaml",
            "--data", beamline / f"{name}.cxi", "--out", beamline / f"{name}_recon.h5",
            "--set", "optimizer.iterations=3",
        )  # fmt: skip
        assert rc == 0, err
        with h5py.File(beamline / f"{name}_recon.h5") as f:
            results[name] = {k: f[k][()] for k in ("object", "probe", "loss")}
    for key in ("object", "probe", "loss"):
        np.testing.assert_allclose(results["in"][key], results["truth"][key], rtol=1e-5, atol=1e-6)
