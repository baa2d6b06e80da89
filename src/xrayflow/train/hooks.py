"""The training hooks of a modality, and how the train stage finds them.

A modality on which a network can be trained names its training module in the registry
(``Modality.training = "xrayflow.modalities.<name>.training"``); that module defines, at
module level, what :class:`TrainingHooks` lists. The train stage resolves a name (the
config's ``data.kind`` and ``network.kind``, a shard's ``kind`` attribute) with
:func:`training_hooks`, which also accepts the names older files were written with
(``FORMER_NAMES``), and calls only these hooks: it never tests a modality's name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from xrayflow.errors import ConfigError, DataError
from xrayflow.modalities import get_modality, modalities

__all__ = ["OptionalHooks", "TrainingHooks", "shard_hooks", "trainable", "training_hooks"]


class TrainingHooks(Protocol):
    """What a modality's training module defines (a module satisfies this protocol).

    Constants:
        DATA_SECTION: JSON schema of the config section ``data.<name>`` (closed, with
            defaults), added to the train schema by ``stage_schema("train")``.
        FORMER_NAMES: names this modality's shards (``kind``) and model files (network
            ``kind``) were written with before; they are read as this modality.
        PATTERN_NDIM: axes of one diffraction pattern (2 or 3).
        TARGETS: the shard targets, which are also the network's heads.
        LOSS_EXTRAS: shard datasets besides inputs and targets (e.g. the probe) that the
            physics-consistency loss needs; loaded only for the loss modes that use it.
    """

    DATA_SECTION: dict
    FORMER_NAMES: tuple[str, ...]
    PATTERN_NDIM: int
    TARGETS: tuple[str, ...]
    LOSS_EXTRAS: tuple[str, ...]

    def shard_layout(
        self, data: dict
    ) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]], dict, dict[str, np.ndarray]]:
        """(pattern shape, ``{target: shape}``, shard attributes, extra datasets) of the
        shards of the validated ``data`` config section."""

    def simulate(
        self,
        data: dict,
        extras: dict[str, np.ndarray],
        sizes: Sequence[int],
        rng: np.random.Generator,
        backend,
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Yield, for each entry k of ``sizes``, k expected intensities (photons, zero
        frequency at the corner) and ``{target: k values}``, drawing from ``rng`` only.
        ``extras``: the shard's extra datasets (from :meth:`shard_layout`). The train
        stage draws the noise from the same ``rng`` between two blocks."""

    def task_memory(self, data: dict, rows: int) -> dict[str, float]:
        """Estimated peak bytes of simulating one block of ``rows`` patterns, by part."""

    def network(
        self, net_cfg: dict, input_size: int, output_size: int | None = None, **views
    ) -> torch.nn.Module:
        """The network for patterns of side ``input_size`` predicting targets of side
        ``output_size`` (the ``network`` config section; heads :attr:`TARGETS`); ``views``:
        the shapes of the further inputs, by name, when the shards have views."""

    def check(self, config: dict, target_size: int, output_size: int) -> None:
        """Checks of the train config against the shards beyond the schema (ConfigError
        naming the key)."""

    def losses(
        self, out: dict, batch: dict, loss_cfg: dict, extras: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Per-sample loss terms (each a (B,) tensor) and their weighted ``total``, of the
        network's output ``out`` against ``batch`` (``input``: the measured amplitude
        sqrt(counts), centred; one entry per target and per view) for the ``training.loss``
        section; ``extras``: the :attr:`LOSS_EXTRAS` datasets as tensors (empty for
        supervised), or what :meth:`loss_extras` returns."""


class OptionalHooks(Protocol):
    """What a training module may define besides :class:`TrainingHooks` (the train stage
    checks with ``hasattr``).

    Constants:
        NETWORK_SECTION, LOSS_SECTION: JSON schemas of the config sections
            ``network.<name>`` and ``training.loss.<name>``.
    """

    NETWORK_SECTION: dict
    LOSS_SECTION: dict

    def measure(self, expected, data: dict, rng: np.random.Generator) -> dict:
        """The network inputs of a block of :meth:`TrainingHooks.simulate`'s output
        (``expected``: what it yields for this modality, e.g. measured images with their
        masks; the default takes expected intensities):
        ``{"input": (k, *pattern), <view>: (k, *view shape), ...}`` (the views are further
        inputs of the same samples, passed to the network as keyword arguments); replaces
        the default (noise model, sqrt(counts), centred). :meth:`TrainingHooks.shard_layout`
        then gives the input shape as ``{"input": shape, <view>: shape}``."""

    def loss_extras(self, shards: Sequence, loss_cfg: dict, device) -> dict[str, torch.Tensor]:
        """Tensors the loss needs, computed from the training shards (e.g. the class
        weights of rare tags); replaces the loading of :attr:`TrainingHooks.LOSS_EXTRAS`."""

    def read_inputs(self, path, batch: int, meta: dict) -> Iterator[tuple[int, dict]]:
        """``xrayflow train --infer``: yield ``(number of samples in the file, {"input": ...,
        <view>: ...})`` blocks of at most ``batch`` samples of the CXI file ``path`` (the
        modality's documented layout; ``meta``: the model file's meta), checked; replaces
        the default reader of CXI patterns (shards are read as they are)."""

    def fit_input_size(self, inputs: np.ndarray, size: int) -> tuple[np.ndarray, dict]:
        """``xrayflow train --infer``: network inputs (B, *pattern) whose pattern is not the
        model's (``size`` per axis) brought to that size, and the root attributes of the
        output that record how (``resampled``: one line, also logged; further entries,
        e.g. the voxel size of the prediction relative to the data's); DataError when they
        cannot be. Without this hook such inputs are refused."""

    def infer_outputs(self, out: dict, meta: dict) -> dict[str, np.ndarray]:
        """``xrayflow train --infer``: the per-sample datasets written for the network's
        output ``out`` (e.g. probabilities from logits); default: one per head."""

    def infer_constants(self, meta: dict) -> dict[str, np.ndarray]:
        """``xrayflow train --infer``: datasets written once (e.g. the tag names)."""


def trainable() -> list[str]:
    """Names of the registered modalities with training hooks, in registry order."""
    return [name for name, mod in modalities().items() if mod.training is not None]


def training_hooks(name: str, key: str) -> tuple[str, TrainingHooks]:
    """(modality name, training hooks) for ``name``, a modality's name or a former name of
    its files. ConfigError naming ``key`` (where ``name`` came from) for an unknown name or
    a modality without training hooks."""
    for current in trainable():
        hooks = get_modality(current).training_hooks()
        if name == current or name in hooks.FORMER_NAMES:
            return current, hooks
    get_modality(name, key)  # unknown: ConfigError with the closest name
    raise ConfigError(
        f"{key}: no network can be trained on modality {name!r} (trainable: "
        f"{', '.join(trainable())})"
    )


def shard_hooks(info: dict) -> tuple[str, TrainingHooks]:
    """(modality name, training hooks) of a shard (:func:`xrayflow.train.shards.shard_info`):
    from its ``kind`` attribute, or, without one, the only trainable modality whose
    patterns have the shard's number of axes."""
    kind = info["attrs"].get("kind")
    if kind:
        return training_hooks(str(kind), f"{info['path']!r}: attribute 'kind'")
    ndim = len(info["input_shape"])
    fits = [n for n in trainable() if get_modality(n).training_hooks().PATTERN_NDIM == ndim]
    if len(fits) != 1:
        raise DataError(
            f"{info['path']!r}: no attribute 'kind' naming the modality of its {ndim}D patterns"
        )
    return training_hooks(fits[0], "kind")
