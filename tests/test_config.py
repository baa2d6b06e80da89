"""Config loading: YAML, --set overrides, schema validation, defaults, messages naming keys."""

import pytest

from xrayflow.config import (
    apply_overrides,
    dump_yaml,
    fill_defaults,
    load_config,
    parse_override,
    read_yaml,
)
from xrayflow.errors import ConfigError

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["energy_ev"],
    "properties": {
        "energy_ev": {"type": "number", "exclusiveMinimum": 0},
        "name": {"type": "string", "default": "x"},
        "probe": {
            "type": "object",
            "default": {},
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["gaussian", "zone_plate"], "default": "gaussian"},
                "waist": {"type": "number", "default": 1e-6},
            },
        },
        "items": {"type": "array", "default": [], "items": {"type": "integer"}},
    },
}


def _msg(overrides, cfg=None):
    with pytest.raises(ConfigError) as exc:
        load_config(cfg or {"energy_ev": 1}, SCHEMA, overrides, name="simulate")
    return str(exc.value)


def test_defaults_filled_and_overrides_parsed_as_yaml():
    cfg = load_config({"energy_ev": 8000}, SCHEMA, ["probe.waist=2e-6", "items=[1, 2]"])
    assert cfg["probe"] == {"kind": "gaussian", "waist": 2e-6}
    assert cfg["name"] == "x"
    assert cfg["items"] == [1, 2]
    assert isinstance(cfg["probe"]["waist"], float)


def test_yaml_exponent_without_dot_is_float(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("energy_ev: 8e3\nprobe: {waist: 1e-6}\n")
    cfg = load_config(p, SCHEMA)
    assert cfg["energy_ev"] == 8000.0 and cfg["probe"]["waist"] == 1e-6


def test_negative_energy_message_names_key():
    msg = _msg(["energy_ev=-5"])
    assert msg.startswith("simulate.energy_ev: -5")
    assert "minimum of 0" in msg


def test_unknown_key_suggests_closest():
    msg = _msg(["probe.waistt=1"])
    assert "simulate.probe.waistt: unknown key" in msg
    assert "did you mean 'waist'" in msg


def test_bad_enum_suggests():
    msg = _msg(["probe.kind=gausian"])
    assert "simulate.probe.kind" in msg and "did you mean 'gaussian'" in msg


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"simulate\.energy_ev: required key is missing"):
        load_config({}, SCHEMA, name="simulate")


def test_schema_prefix_accepted_in_set():
    cfg = load_config({"energy_ev": 1}, SCHEMA, ["simulate.energy_ev=7"], name="simulate")
    assert cfg["energy_ev"] == 7


def test_override_errors():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("novalue")
    with pytest.raises(ConfigError, match="energy_ev"):
        apply_overrides({"energy_ev": 1}, ["energy_ev.x=2"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        read_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst, SCHEMA)


def test_dump_roundtrip():
    import numpy as np
    import yaml

    cfg = {"a": np.float64(1.5), "b": (1, 2), "c": {"d": np.arange(2)}}
    assert yaml.safe_load(dump_yaml(cfg)) == {"a": 1.5, "b": [1, 2], "c": {"d": [0, 1]}}


def test_fill_defaults_nested():
    cfg = fill_defaults({}, SCHEMA)
    assert cfg["probe"]["kind"] == "gaussian"


def test_all_shipped_schemas_are_valid_draft2020():
    from jsonschema import Draft202012Validator

    from xrayflow.config import load_schema, schema_names

    assert "simulate" in schema_names()
    for name in schema_names():
        Draft202012Validator.check_schema(load_schema(name))


def test_simulate_schema_closed_everywhere():
    from xrayflow.config import load_schema

    def walk(node, path):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, path
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(load_schema("simulate"), "simulate")
