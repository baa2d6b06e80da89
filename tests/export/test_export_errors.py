"""``xrayflow export``: bad inputs exit with status 2 and one line naming the file or the
format, nothing is written, inputs are never overwritten; the formats come from the
modality registry."""

from __future__ import annotations

import os
from dataclasses import replace

import h5py
import numpy as np
import pytest

from xrayflow.cli import main
from xrayflow.errors import ConfigError
from xrayflow.io.hdf5 import write_h5
from xrayflow.modalities import BUILTIN, Modality, get_modality, register, unregister


def _run(capsys, *args) -> tuple[int, str]:
    rc = main(["export", *map(str, args)])
    err = capsys.readouterr().err
    return rc, err


def test_wrong_format_for_the_modality_lists_the_supported_ones(ptycho_result, tmp_path, capsys):
    out = tmp_path / "c"
    rc, err = _run(capsys, ptycho_result, "--format", "cohere", "-o", out)
    assert rc == 2 and not out.exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "ptycho2d result cannot be exported as 'cohere'" in err
    assert "ptychodus, ptypy" in err


def test_bragg_cdi_result_is_not_a_ptychodus_product(bragg_result, tmp_path, capsys):
    rc, err = _run(capsys, bragg_result, "-f", "ptychodus", "-o", tmp_path / "p.h5")
    assert rc == 2 and "bragg_cdi" in err and "cohere, vtk" in err
    assert not (tmp_path / "p.h5").exists()


def test_unknown_format_name(ptycho_result, tmp_path, capsys):
    rc, err = _run(capsys, ptycho_result, "-f", "hdf4", "-o", tmp_path / "x")
    assert rc == 2 and "'hdf4'" in err and "ptychodus, ptypy" in err


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.h5"
    rc, err = _run(capsys, missing, "-f", "ptychodus", "-o", tmp_path / "p.h5")
    assert rc == 2 and str(missing) in err and "does not exist" in err
    assert not (tmp_path / "p.h5").exists()


def test_not_a_result(ptycho_data, tmp_path, capsys):
    """A CXI data file is HDF5 but no result: the message names the file."""
    rc, err = _run(capsys, ptycho_data, "-f", "ptychodus", "-o", tmp_path / "p.h5")
    assert rc == 2 and str(ptycho_data) in err and "not an xrayflow reconstruction result" in err


def test_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    rc, err = _run(capsys, bad, "-f", "vtk", "-o", tmp_path / "v.vti")
    assert rc == 2 and str(bad) in err and "Traceback" not in err


@pytest.mark.parametrize("fmt", ["ptychodus", "ptypy"])
def test_output_is_the_input(ptycho_result, fmt, tmp_path, capsys):
    before = ptycho_result.read_bytes()
    rc, err = _run(capsys, ptycho_result, "-f", fmt, "-o", ptycho_result)
    assert rc == 2 and "would overwrite the input" in err
    assert ptycho_result.read_bytes() == before
    link = tmp_path / "link.h5"
    os.symlink(ptycho_result, link)
    rc, err = _run(capsys, ptycho_result, "-f", fmt, "-o", link)
    assert rc == 2 and "would overwrite the input" in err
    assert ptycho_result.read_bytes() == before


def test_output_folder_holding_the_input(bragg_result, capsys):
    """cohere writes a folder: the result's own folder would swallow the input."""
    before = bragg_result.read_bytes()
    rc, err = _run(capsys, bragg_result, "-f", "cohere", "-o", bragg_result.parent)
    assert rc == 2 and "would overwrite the input" in err
    assert bragg_result.read_bytes() == before


def test_output_in_a_missing_directory(ptycho_result, tmp_path, capsys):
    out = tmp_path / "missing" / "p.h5"
    rc, err = _run(capsys, ptycho_result, "-f", "ptychodus", "-o", out)
    assert rc == 2 and "does not exist" in err and not out.parent.exists()


def test_missing_format_and_output(ptycho_result, capsys):
    rc, err = _run(capsys, ptycho_result, "-o", "x.h5")
    assert rc == 2 and "--format FMT is required" in err and "ptycho2d: ptychodus, ptypy" in err
    rc, err = _run(capsys, ptycho_result, "-f", "ptypy")
    assert rc == 2 and "-o OUT is required" in err


def test_result_in_pixel_units_cannot_be_a_ptychodus_product(tmp_path, capsys):
    res = write_h5(
        tmp_path / "px.h5",
        {
            "object": np.ones((1, 8, 8), np.complex64),
            "probe": np.ones((1, 4, 4), np.complex64),
            "positions": np.zeros((1, 2)),
            "pixel_size": 1.0,
        },
        attrs={"model": "ptycho2d", "units": "pixels", "energy_ev": 8000.0, "distance": 1.0},
    )
    out = tmp_path / "p.h5"
    rc, err = _run(capsys, res, "-f", "ptychodus", "-o", out)
    assert rc == 2 and "pixels units" in err and "metres" in err and not out.exists()


def test_failed_export_leaves_an_existing_output_alone(ptycho_result, tmp_path, capsys):
    """An output that exists is replaced only by a complete export; a refused one leaves it
    and no temporary file behind."""
    out = tmp_path / "p.h5"
    out.write_bytes(b"previous")
    broken = tmp_path / "broken.h5"
    broken.write_bytes(ptycho_result.read_bytes())
    with h5py.File(broken, "a") as f:
        del f["probe"]
    rc, err = _run(capsys, broken, "-f", "ptychodus", "-o", out)
    assert rc == 2 and "'probe'" in err and str(broken) in err
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.h5", "p.h5"]
    assert main(["export", str(ptycho_result), "-f", "ptychodus", "-o", str(out)]) == 0
    assert h5py.is_hdf5(out)


def test_export_help_is_plain_text_without_config_options(capsys):
    assert main(["export", "--help"]) == 0
    text = capsys.readouterr().out
    for word in ("ptychodus", "ptypy", "cohere", "vtk", "--data"):
        assert word in text
    assert "--config" not in text and "--set" not in text
    assert "::" not in text and ":mod:" not in text and "``" not in text


def test_every_registered_writer_imports():
    """Each modality's exports resolve to callables (dotted paths are imported lazily)."""
    seen = set()
    for name in BUILTIN:
        mod = get_modality(name)
        for fmt in mod.exports:
            assert callable(mod.exporter(fmt))
            seen.add(fmt)
    assert seen == {"ptychodus", "ptypy", "cohere", "vtk"}
    assert set(get_modality("ptycho2d").exports) == {"ptychodus", "ptypy"}
    assert set(get_modality("bragg_cdi").exports) == {"cohere", "vtk"}
    assert set(get_modality("ptychotomo").exports) == {"vtk"}
    with pytest.raises(ConfigError, match="holography result cannot be exported as 'vtk'.*none"):
        get_modality("holography").exporter("vtk")


def test_exports_are_validated():
    with pytest.raises(ValueError, match="format names"):
        Modality(name="x", exports={"Bad Name": "a.b:c"})
    with pytest.raises(ValueError, match="callable or a dotted path"):
        Modality(name="x", exports={"fmt": 3})


def test_a_plugin_modality_brings_its_own_format(tmp_path, capsys):
    """The stage dispatches through the registry: a plug-in's writer (a callable) is used
    for results that record the plug-in's name, with the same output checks."""
    calls = []

    def write_text(result, out):
        calls.append(result.modality)
        out.write_text(f"{result.array('object').shape}")
        return out

    base = get_modality("ptycho2d")
    register(replace(base, name="toy_export", exports={"txt": write_text}))
    try:
        res = write_h5(
            tmp_path / "r.h5", {"object": np.ones((2, 3))}, attrs={"model": "toy_export"}
        )
        out = tmp_path / "o.txt"
        assert main(["export", str(res), "-f", "txt", "-o", str(out)]) == 0
        assert out.read_text() == "(2, 3)" and calls == ["toy_export"]
        rc, err = _run(capsys, res, "-f", "ptychodus", "-o", tmp_path / "p.h5")
        assert rc == 2 and "formats for toy_export are: txt" in err
    finally:
        unregister("toy_export")
