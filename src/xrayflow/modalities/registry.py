"""The registry of imaging modalities: what each stage needs to know about one modality.

A modality is one package ``xrayflow.modalities.<name>`` that exports ``MODALITY``, a
:class:`Modality`; the built-in ones are listed once, in
:data:`xrayflow.modalities.BUILTIN`. The stages look a modality up by name
(:func:`get_modality`: the simulate config's ``modality``, the reconstruct config's
``model.type``, the train config's ``data.kind``, the ``modality``/``model`` attribute of
a file) and call its hooks; no stage tests a modality's name. A plug-in outside the package
registers itself with :func:`register`. ``docs/adding-a-modality.md`` walks through one.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from xrayflow.errors import ConfigError

#: Ways ``xrayflow evaluate`` compares a result with a reference (:attr:`Modality.evaluate`).
EVALUATE_KINDS = ("object", "refractive", "density", "element_maps")
#: Solvers of the reconstruct stage (:attr:`Modality.solver`).
SOLVERS = ("gradient", "phase_retrieval", "linear_inverse")
#: Names of export formats (:attr:`Modality.exports`).
_FORMAT_NAME = re.compile(r"[a-z][a-z0-9_]*")
#: The export formats of ptychography results (object slices, probe modes, scan
#: positions): the ptychodus/pty-chi product file and the PtyPy ``.ptyr`` file.
PTYCHO_EXPORTS = {
    "ptychodus": "xrayflow.export.ptychodus:write_product",
    "ptypy": "xrayflow.export.ptypy:write_ptyr",
}


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(copy.deepcopy(dict(d or {})))


@dataclass(frozen=True)
class Modality:
    """One imaging modality and its hooks into the four stages (all optional but the name).

    Simulate:
        simulate: ``(config, rng, backend) -> DiffractionData`` — the validated simulate
            config (defaults filled in), a ``numpy.random.Generator`` seeded from
            ``config["seed"]`` (split it with ``rng.spawn``), the array backend; returns the
            data with ground truth in ``truth`` and ``attrs["modality"]`` set.
        simulate_sections: simulate-config sections this modality adds, ``{section: JSON
            schema}`` (validated with the other keys; closed schemas, with defaults).
        simulate_memory: ``(config, streaming) -> {description: bytes}``, the large
            allocations of simulating ``config`` (checked before anything is allocated);
            ``streaming``: frames go to the output file batch by batch.
        simulate_check: ``(config) -> None``, checks of the modality's own config sections
            beyond the schema (ConfigError naming the key), run when the config is loaded.
        far_field: the detector is in the far field (its geometry is checked against the
            paraxial far-field model); False for near-field (real-space) frames.

    Reconstruct:
        build_model: ``(config, data, backend) -> model``, the differentiable model that
            the solver fits (for the gradient solver, the interface documented in
            :mod:`xrayflow.solvers.gradient`).
        solver: which solver of :mod:`xrayflow.solvers` the reconstruct stage runs:
            ``"gradient"`` (minibatch gradient descent over frames, MPI data parallel),
            ``"phase_retrieval"`` (one 3D pattern: HIO/ER with shrink-wrap, then gradient
            refinement) or ``"linear_inverse"`` (unknowns that enter the measurements
            linearly, e.g. maps behind bucket signals of patterns: L-BFGS-B, Adam or CGLS,
            MPI data parallel over patterns; the model interface of
            :mod:`xrayflow.solvers.linear_inverse`).
        reconstruct_sections: reconstruct-config sections this modality adds.
        object_memory: ``(config, data, real_bytes, complex_bytes) -> (description,
            bytes)`` of one copy of the object unknowns, when they are not S transmission
            slices on the object grid (the reconstruct memory estimate).
        rotation_series: frames carry rotation angles; a block of frames never spans two
            angles (the data are cut into blocks at angle changes).
        real_space_frames: frames are real-space images (near field) on the frame's
            sample-plane pixel, the object pixel; never FFT-shifted, need not be square.
        scanned: frames are taken at scan positions on an object grid that the windows
            tile (ptychography); False: every frame sees the whole object on the frame's
            grid (holography; a file with several scan positions is refused).

    Train:
        training: the module (dotted path) that provides the modality's training hooks
            (:mod:`xrayflow.train`), or None when no network is trained on it; imported only
            by the train stage (it may import torch).

    Evaluate:
        evaluate: how a result is compared with a reference, one of :data:`EVALUATE_KINDS`:
            ``object`` (2D complex transmission, up to a global phase), ``refractive`` (3D
            δ/β volume), ``density`` (3D complex density, up to a global phase, a shift and
            the conjugate twin).
        evaluator: the module (dotted path) of the modality's own evaluation, for results
            that are not images (e.g. a network's per-tag probabilities), or None. It
            defines ``evaluate(result_path, reference_path, config) -> (metrics, arrays)``
            (``metrics["kind"]`` names the comparison), ``write_figures(directory, metrics,
            arrays, config) -> [paths]``, ``summary_line(metrics, out) -> str`` and
            ``FIGURE_NAMES``; ``xrayflow evaluate`` calls it when the result or the
            reference file records this modality. Imported only by the evaluate stage.

    Export:
        exports: the formats ``xrayflow export`` writes this modality's results in,
            ``{format name: writer}``; a writer is a callable or its dotted path
            (``"package.module:function"``), imported only by the export stage. It is called
            as ``writer(result, out)`` with the opened result
            (:class:`xrayflow.export.result.ResultFile`) and the output path, writes ``out``
            atomically and returns it; a writer whose ``output_kind`` attribute is ``"dir"``
            writes a folder. The generic writers live in :mod:`xrayflow.export` (one module
            per target format). Empty: the results cannot be exported.
    """

    name: str
    description: str = ""
    simulate: Callable | None = None
    simulate_sections: Mapping[str, dict] = field(default_factory=dict)
    simulate_memory: Callable | None = None
    simulate_check: Callable | None = None
    far_field: bool = True
    build_model: Callable | None = None
    solver: str = "gradient"
    reconstruct_sections: Mapping[str, dict] = field(default_factory=dict)
    object_memory: Callable | None = None
    rotation_series: bool = False
    real_space_frames: bool = False
    scanned: bool = True
    training: str | None = None
    evaluate: str = "object"
    evaluator: str | None = None
    exports: Mapping[str, str | Callable] = field(default_factory=dict)

    def __post_init__(self):
        if self.evaluate not in EVALUATE_KINDS:
            raise ValueError(f"Modality.evaluate must be one of {EVALUATE_KINDS}")
        if self.solver not in SOLVERS:
            raise ValueError(f"Modality.solver must be one of {SOLVERS}")
        object.__setattr__(self, "simulate_sections", _frozen(self.simulate_sections))
        object.__setattr__(self, "reconstruct_sections", _frozen(self.reconstruct_sections))
        for fmt, writer in dict(self.exports or {}).items():
            if not (isinstance(fmt, str) and _FORMAT_NAME.fullmatch(fmt)):
                raise ValueError(f"Modality.exports: format names are lowercase words, got {fmt!r}")
            if not (callable(writer) or isinstance(writer, str)):
                raise ValueError(f"Modality.exports[{fmt!r}]: a callable or a dotted path")
        object.__setattr__(self, "exports", MappingProxyType(dict(self.exports or {})))

    def evaluator_module(self) -> Any:
        """The imported evaluation module (see :attr:`evaluator`), or None."""
        return None if self.evaluator is None else importlib.import_module(self.evaluator)

    def exporter(self, fmt: str) -> Callable:
        """The writer of export format ``fmt`` (see :attr:`exports`), imported; ConfigError
        listing the formats this modality supports when it has none of that name."""
        if fmt not in self.exports:
            known = ", ".join(sorted(self.exports)) or "none"
            raise ConfigError(
                f"a {self.name} result cannot be exported as {fmt!r}; the formats for "
                f"{self.name} are: {known}"
            )
        writer = self.exports[fmt]
        if callable(writer):
            return writer
        module, _, name = writer.partition(":") if ":" in writer else writer.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def training_hooks(self) -> Any:
        """The imported training module (see :attr:`training`)."""
        if self.training is None:
            raise ConfigError(f"no network can be trained on modality {self.name!r}")
        return importlib.import_module(self.training)


_REGISTRY: dict[str, Modality] = {}


def register(modality: Modality, replace: bool = False) -> Modality:
    """Add ``modality`` to the registry (a plug-in; the built-ins register on first lookup)."""
    if modality.name in _REGISTRY and not replace:
        raise ValueError(f"modality {modality.name!r} is already registered")
    _REGISTRY[modality.name] = modality
    return modality


def unregister(name: str) -> None:
    """Remove a plug-in modality (tests)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    from xrayflow.modalities import BUILTIN

    for name in BUILTIN:
        if name not in _REGISTRY:
            register(importlib.import_module(f"xrayflow.modalities.{name}").MODALITY)


def modalities() -> dict[str, Modality]:
    """All registered modalities by name (built-ins first)."""
    _load_builtins()
    return dict(_REGISTRY)


def get_modality(name: str, key: str = "modality") -> Modality:
    """The modality called ``name``; ConfigError naming ``key`` (the config key or file
    attribute it came from) with the closest known name when there is none."""
    known = modalities()
    if name not in known:
        close = difflib.get_close_matches(str(name), list(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}: unknown modality {name!r}{hint} (known: {', '.join(known)})")
    return known[name]


def stage_schema(stage: str) -> dict:
    """The JSON schema of ``stage`` (``simulate`` | ``reconstruct`` | ``train``) with every
    registered modality's name in its modality enum and its config sections added.

    ``train``: the modalities with training hooks name ``data.kind`` (default: the first of
    them) and ``network.kind`` (besides ``auto``); each adds its section ``data.<name>``
    (the hooks' ``DATA_SECTION``) and, when its hooks define them, ``network.<name>``
    (``NETWORK_SECTION``) and ``training.loss.<name>`` (``LOSS_SECTION``); this imports the
    training modules, hence torch.
    """
    from xrayflow.config import load_schema

    sch = load_schema(stage)
    props = sch["properties"]
    if stage == "train":
        data = props["data"]["properties"]
        names = [name for name, mod in modalities().items() if mod.training is not None]
        data["kind"].update(enum=names, default=names[0])
        props["network"]["properties"]["kind"]["enum"] = ["auto", *names]
        network = props["network"]["properties"]
        loss = props["training"]["properties"]["loss"]["properties"]
        for name in names:
            hooks = get_modality(name).training_hooks()
            data.setdefault(name, copy.deepcopy(hooks.DATA_SECTION))
            for sections, attr in ((network, "NETWORK_SECTION"), (loss, "LOSS_SECTION")):
                if hasattr(hooks, attr):
                    sections.setdefault(name, copy.deepcopy(getattr(hooks, attr)))
        return sch
    simulate = stage == "simulate"
    names = props["modality"] if simulate else props["model"]["properties"]["type"]
    attr = "simulate_sections" if simulate else "reconstruct_sections"
    names["enum"] = []
    for name, mod in modalities().items():
        if (mod.simulate if simulate else mod.build_model) is not None:
            names["enum"].append(name)
        for sec, sub in getattr(mod, attr).items():
            props.setdefault(sec, copy.deepcopy(dict(sub)))
    return sch
