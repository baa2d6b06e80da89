"""Registry of simulated modalities.

A modality is a function ``(config: dict, rng: numpy.random.Generator, backend: Backend) ->
DiffractionData``. It receives the validated config (defaults filled in), a generator seeded
from ``config["seed"]`` (split it with ``rng.spawn`` for independent streams) and the array
backend; it returns the data with ``attrs["modality"]`` set, ground truth in ``truth``.
The stage adds config and provenance and writes the CXI file.

New modalities (e.g. structured-illumination fluorescence, tagged scattering) plug in
without touching the core::

    from xrayflow.simulate import register_modality

    @register_modality("fluorescence_si", description="...",
                       section="fluorescence",
                       schema={"type": "object", "additionalProperties": False,
                               "default": {}, "properties": {...}})
    def fluorescence_si(config, rng, backend):
        ...

``section``/``schema`` add a config section (validated with the other keys); the modality
name is added to the ``modality`` enum.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xrayflow.errors import ConfigError

ModalityFn = Callable[[dict, Any, Any], Any]


@dataclass
class Modality:
    name: str
    fn: ModalityFn
    description: str = ""
    sections: dict[str, dict] = field(default_factory=dict)

    def __call__(self, config, rng, backend):
        return self.fn(config, rng, backend)


MODALITIES: dict[str, Modality] = {}


def register_modality(
    name: str,
    fn: ModalityFn | None = None,
    *,
    description: str = "",
    section: str | None = None,
    schema: dict | None = None,
    replace: bool = False,
):
    """Register ``fn`` as modality ``name`` (usable as a decorator)."""

    def deco(f: ModalityFn) -> ModalityFn:
        if name in MODALITIES and not replace:
            raise ValueError(f"modality {name!r} is already registered")
        sections = {section: copy.deepcopy(schema)} if section and schema else {}
        MODALITIES[name] = Modality(name, f, description or (f.__doc__ or "").strip(), sections)
        return f

    return deco(fn) if fn is not None else deco


def get_modality(name: str) -> Modality:
    if name not in MODALITIES:
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(name, list(MODALITIES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"simulate.modality: unknown modality {name!r}{hint} (known: {', '.join(MODALITIES)})"
        )
    return MODALITIES[name]


def simulate_schema() -> dict:
    """The simulate schema with registered modalities and their config sections."""
    from xrayflow.config import load_schema  # noqa: PLC0415

    sch = load_schema("simulate")
    enum = sch["properties"]["modality"]["enum"]
    for name, mod in MODALITIES.items():
        if name not in enum:
            enum.append(name)
        for sec, sub in mod.sections.items():
            sch["properties"].setdefault(sec, copy.deepcopy(sub))
    return sch
