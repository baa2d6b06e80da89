"""Configuration: YAML files, ``--set`` overrides, JSON-schema validation, defaults.

Every stage describes its configuration in ``src/xrayflow/schemas/<stage>.schema.json``
(JSON Schema draft 2020-12, ``additionalProperties: false`` on every object so that a
misspelt key fails). :func:`load_config` reads the YAML file (or takes a dict), applies
``--set a.b=value`` overrides (the value is parsed as YAML, so ``--set scan.step=1.5e-6`` is a
float and ``--set probe.modes=[1,2]`` a list), fills in the schema defaults and validates.
Every failure raises :class:`~xrayflow.errors.ConfigError` whose message starts with the
dotted key path, prefixed by the schema name, e.g.::

    simulate.energy_ev: -5 is less than the minimum of 0
    simulate.probe.waistt: unknown key; did you mean 'waist'?

The same dotted path (with or without the schema-name prefix) is accepted by ``--set``.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from xrayflow.errors import ConfigError

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

__all__ = [
    "ConfigError",
    "SafeLoader",
    "apply_overrides",
    "dump_yaml",
    "fill_defaults",
    "get_path",
    "key_error",
    "load_config",
    "load_schema",
    "parse_override",
    "read_yaml",
    "schema_names",
    "set_path",
    "validate",
]


# --------------------------------------------------------------------------- YAML
class SafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but ``1e-6`` (no dot) is a float, as in YAML 1.2 and JSON, and
    a key given twice in one mapping is an error (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # keys merged in with << may be overridden by design
                key = self.construct_object(key_node, deep=True)
                try:
                    line = first.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:  # unhashable key: PyYAML reports it below
                    continue
                if line != key_node.start_mark.line + 1:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first given on line {line})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _yaml_load(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=SafeLoader)  # SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}") from None


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file with :class:`SafeLoader`; ConfigError if missing or malformed."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {str(p)!r} is a directory, not a YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read: {exc}") from None
    return _yaml_load(text, str(p))


def _plain(obj: Any) -> Any:
    """Convert numpy scalars/arrays and tuples into plain YAML/JSON-able Python objects."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and type(obj).__module__.split(".")[0] in ("numpy", "cupy"):
        return _plain(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dump_yaml(config: Mapping) -> str:
    """Serialise a config dict to YAML (block style, keys in insertion order)."""
    return yaml.safe_dump(_plain(config), sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------- paths
def _fmt_path(parts: Iterable[Any], prefix: str | None = None) -> str:
    out = prefix or ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out = f"{out}.{p}" if out else str(p)
    return out or "(root)"


def get_path(config: Mapping, dotted: str, default: Any = ...) -> Any:
    """Value at ``a.b.c`` (list items by integer component); ``default`` if given and missing."""
    node: Any = config
    for part in dotted.split("."):
        try:
            if isinstance(node, list):
                node = node[int(part)]
            else:
                node = node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            if default is ...:
                raise ConfigError(f"{dotted}: required key is missing") from None
            return default
    return node


def set_path(config: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c = value``, creating intermediate mappings."""
    parts = [p for p in dotted.split(".")]
    if not dotted or any(p == "" for p in parts):
        raise ConfigError(f"--set {dotted!r}: key must be a dotted path such as 'scan.step'")
    node: Any = config
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            try:
                node = node[int(part)]
            except (ValueError, IndexError):
                raise ConfigError(
                    f"{'.'.join(parts[: i + 1])}: not a valid index into a list"
                ) from None
            continue
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict | list):
            raise ConfigError(
                f"{'.'.join(parts[: i + 1])}: is a value ({nxt!r}), cannot set "
                f"sub-key {parts[i + 1]!r}"
            )
        node = nxt
    last = parts[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ConfigError(f"{dotted}: not a valid index into a list") from None
    else:
        node[last] = value


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``'a.b=value'`` into ``('a.b', yaml_value)``."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set scan.step=1e-6")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: empty key")
    value = _yaml_load(raw, f"--set {key}") if raw.strip() else None
    return key, value


def apply_overrides(config: dict, overrides: Sequence[str], schema: str | None = None) -> dict:
    """Apply ``KEY=VALUE`` overrides in order (in place; returns ``config``).

    A leading ``<schema>.`` on the key is dropped when the config has no such top-level key,
    so the dotted paths printed in error messages can be pasted back into ``--set``.
    """
    for item in overrides or ():
        key, value = parse_override(item)
        if schema and key.startswith(schema + ".") and schema not in config:
            key = key[len(schema) + 1 :]
        set_path(config, key, value)
    return config


# --------------------------------------------------------------------------- schemas
def schema_names() -> list[str]:
    """Names of the schemas shipped in ``xrayflow/schemas``."""
    return sorted(p.name[: -len(".schema.json")] for p in SCHEMA_DIR.glob("*.schema.json"))


@cache
def _load_schema_cached(name: str) -> str:
    path = SCHEMA_DIR / f"{name}.schema.json"
    if not path.is_file():
        known = ", ".join(schema_names()) or "none"
        raise ConfigError(f"unknown config schema {name!r} (known: {known})")
    return path.read_text(encoding="utf-8")


def load_schema(name_or_schema: str | Mapping) -> dict:
    """The schema dict for a schema name (``"simulate"``) or the dict itself (copied)."""
    if isinstance(name_or_schema, Mapping):
        return copy.deepcopy(dict(name_or_schema))
    return json.loads(_load_schema_cached(name_or_schema))


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    """Follow local ``$ref`` (``#/$defs/...``) and merge ``allOf`` members shallowly."""
    seen = 0
    while isinstance(schema, Mapping) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            break
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**node, **extra}
        seen += 1
    return schema


def _properties(schema: Mapping, root: Mapping) -> dict:
    schema = _resolve(schema, root)
    props = dict(schema.get("properties", {}))
    for sub in schema.get("allOf", []):
        props.update(_properties(sub, root))
    return props


def fill_defaults(config: Any, schema: Mapping, root: Mapping | None = None) -> Any:
    """Insert schema ``default`` values for missing keys, recursively (in place).

    Objects that are absent but whose schema gives ``default: {}`` are created and then
    filled from their own properties' defaults.
    """
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if isinstance(config, dict):
        for key, sub in _properties(schema, root).items():
            sub_r = _resolve(sub, root)
            if key not in config and "default" in sub_r:
                config[key] = copy.deepcopy(sub_r["default"])
            if key in config:
                fill_defaults(config[key], sub_r, root)
    elif isinstance(config, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in config:
                fill_defaults(item, items, root)
    return config


def key_error(path: str, problem: str) -> ConfigError:
    """A ConfigError whose message is ``'<path>: <problem>'`` (for semantic checks)."""
    return ConfigError(f"{path}: {problem}")


def _format_error(err, schema_name: str | None, root_schema: Mapping) -> str:
    assert isinstance(err, ValidationError)
    path = list(err.absolute_path)
    v = err.validator
    if v == "additionalProperties" and isinstance(err.instance, Mapping):
        allowed = list(_properties(err.schema, root_schema))
        extras = [k for k in err.instance if k not in allowed]
        key = extras[0] if extras else "?"
        msg = f"{_fmt_path([*path, key], schema_name)}: unknown key"
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.5)
        if close:
            msg += f"; did you mean {close[0]!r}?"
        if allowed:
            msg += f" (known keys here: {', '.join(sorted(allowed))})"
        return msg
    if v == "required":
        m = re.match(r"'([^']+)' is a required property", err.message)
        key = m.group(1) if m else str(err.validator_value)
        return f"{_fmt_path([*path, key], schema_name)}: required key is missing"
    if v == "enum":
        close = difflib.get_close_matches(
            str(err.instance), [str(x) for x in err.validator_value], n=1, cutoff=0.5
        )
        hint = f"; did you mean {close[0]!r}?" if close else ""
        choices = ", ".join(repr(x) for x in err.validator_value)
        return f"{_fmt_path(path, schema_name)}: {err.instance!r} is not one of {choices}{hint}"
    if v == "type" and err.instance is None:
        return f"{_fmt_path(path, schema_name)}: no value given (expected {err.validator_value})"
    return f"{_fmt_path(path, schema_name)}: {err.message}"


def validate(config: Mapping, schema: str | Mapping, name: str | None = None) -> None:
    """Validate ``config`` against ``schema``; raise ConfigError naming the first bad key."""

    sch = load_schema(schema)
    if name is None and isinstance(schema, str):
        name = schema
    validator = Draft202012Validator(sch, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = list(validator.iter_errors(config))
    if not errors:
        return
    # Report the shallowest problem first (a missing/unknown section before its contents).
    errors.sort(key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    err = best_match([errors[0]])
    msg = _format_error(err, name, sch)
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    raise ConfigError(msg)


def _reject_non_finite(node: Any, name: str | None, parts: tuple = ()) -> None:
    """NaN passes every JSON-schema range check (all comparisons are false) and no setting
    means anything by inf (limits are switched off with null): refuse both."""
    if isinstance(node, float) and not math.isfinite(node):
        what = "NaN is not a valid value" if math.isnan(node) else f"{node} is not a finite number"
        raise ConfigError(f"{_fmt_path(parts, name)}: {what}")
    if isinstance(node, Mapping):
        for k, v in node.items():
            _reject_non_finite(v, name, (*parts, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _reject_non_finite(v, name, (*parts, i))


def load_config(
    path_or_dict: str | os.PathLike | Mapping | None,
    schema: str | Mapping,
    overrides: Sequence[str] = (),
    name: str | None = None,
) -> dict:
    """Read, override, fill defaults and validate a configuration.

    Args:
        path_or_dict: YAML file path, a mapping (deep-copied), or None (empty config).
        schema: schema name (``"simulate"`` -> ``schemas/simulate.schema.json``) or a dict.
        overrides: ``["a.b=value", ...]`` applied in order; values parsed as YAML.
        name: prefix for key paths in messages (default: the schema name).

    Returns:
        A new plain dict with defaults filled in.
    """
    if name is None and isinstance(schema, str):
        name = schema
    if path_or_dict is None:
        cfg: Any = {}
    elif isinstance(path_or_dict, Mapping):
        cfg = _plain(copy.deepcopy(dict(path_or_dict)))
    else:
        cfg = read_yaml(path_or_dict)
        if cfg is None:
            cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{name or 'config'}: the top level must be a mapping of keys to values, "
            f"got {type(cfg).__name__}"
        )
    apply_overrides(cfg, overrides, name)
    _reject_non_finite(cfg, name)
    sch = load_schema(schema)
    fill_defaults(cfg, sch)
    validate(cfg, sch, name)
    return cfg
