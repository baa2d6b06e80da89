"""The modality registry: built-ins, plug-ins, schemas, and stages free of modality names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import xrayflow
from xrayflow.errors import ConfigError
from xrayflow.modalities import (
    BUILTIN,
    Modality,
    get_modality,
    modalities,
    register,
    stage_schema,
    unregister,
)

#: Packages and modules of the stages (and the CLI), which dispatch through the registry.
STAGES = ("simulate", "reconstruct", "train", "evaluate", "export", "solvers", "cli.py")
#: Older names of built-in modalities that must not come back.
OLD_NAMES = ("bragg_cdi3d", "cdi3d", "bcdi")


def test_builtins_are_registered_with_their_package_name():
    mods = modalities()
    assert tuple(mods)[: len(BUILTIN)] == BUILTIN
    for name in BUILTIN:
        assert mods[name].name == name
        assert mods[name].simulate is not None
        # a modality is reconstructed by a solver, or its results are a network's predictions
        assert (mods[name].build_model is None) == (mods[name].evaluator is not None)


def test_unknown_modality_names_the_key_and_the_closest_name():
    with pytest.raises(ConfigError, match=r"model\.type: unknown modality 'ptycho3d'.*'ptycho2d'"):
        get_modality("ptycho3d", "model.type")


def test_stage_schemas_list_the_registered_modalities():
    assert stage_schema("simulate")["properties"]["modality"]["enum"] == list(BUILTIN)
    rec = stage_schema("reconstruct")["properties"]["model"]["properties"]["type"]["enum"]
    assert rec == [n for n in BUILTIN if modalities()[n].build_model is not None]
    assert "scattering" in BUILTIN and "scattering" not in rec


def test_a_plugin_adds_its_name_and_sections_and_leaves_again():
    section = {"type": "object", "default": {}, "additionalProperties": False, "properties": {}}
    register(Modality("plugin_x", simulate=len, simulate_sections={"plugin_x": section}))
    try:
        sch = stage_schema("simulate")
        assert "plugin_x" in sch["properties"]["modality"]["enum"]
        assert sch["properties"]["plugin_x"] == section
        assert (
            "plugin_x"
            not in stage_schema("reconstruct")["properties"]["model"]["properties"]["type"]["enum"]
        )
        with pytest.raises(ValueError, match="already registered"):
            register(Modality("plugin_x"))
    finally:
        unregister("plugin_x")
    assert "plugin_x" not in modalities()


def test_modality_fields_are_checked():
    with pytest.raises(ValueError, match="evaluate"):
        Modality("bad", evaluate="pixels")
    with pytest.raises(ValueError, match="solver"):
        Modality("bad", solver="magic")


def test_no_stage_names_a_modality():
    """Stages look modalities up in the registry; none may test or mention a name."""
    names = sorted({*BUILTIN, *OLD_NAMES}, key=len, reverse=True)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    root = Path(xrayflow.__file__).parent
    files = [
        p for s in STAGES for p in ([root / s] if s.endswith(".py") else (root / s).rglob("*"))
    ]
    hits = [
        f"{p.relative_to(root)}:{i}: {line.strip()}"
        for p in files
        if p.suffix in (".py", ".json")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert hits == []
