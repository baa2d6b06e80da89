"""Model files: a trained network with its config and provenance, loadable without pickle.

A model file is a ``torch.save`` dictionary that loads with ``torch.load(weights_only=True)``:
``format`` (:data:`MODEL_FORMAT`), ``format_version``, ``state_dict`` (tensors) and JSON
strings ``config_json`` (the train config, its ``network`` section builds the network),
``provenance_json`` and ``meta_json`` (``input_size``, ``output_size`` and ``architecture``:
``{"ndim", "heads"}`` of the :class:`~xrayflow.networks.EncoderDecoder`, plus what the
writer adds). Files written before ``architecture`` was recorded are read from their
weights (the first convolution's rank, the decoders' names).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from xrayflow.errors import ConfigError, DataError
from xrayflow.io.atomic import atomic_path
from xrayflow.networks.encoder_decoder import EncoderDecoder, network_options

MODEL_FORMAT = "xrayflow-model"

__all__ = ["MODEL_FORMAT", "atomic_torch_save", "jsonable", "load_model", "save_model"]


def jsonable(obj):
    """``obj`` as plain JSON types (NumPy/torch scalars as numbers, anything else as str)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def atomic_torch_save(obj, path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (a reader never sees a partial file)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def save_model(
    path, model: EncoderDecoder, config: dict, provenance: dict, meta: dict | None = None
) -> Path:
    """Write weights + config + provenance + meta (JSON strings; ``meta`` gains the model's
    ``architecture``), loadable with weights_only=True."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    meta = {**(meta or {}), "architecture": {"ndim": model.ndim, "heads": list(model.heads)}}
    obj = {
        "format": MODEL_FORMAT,
        "format_version": 1,
        "state_dict": state,
        "config_json": json.dumps(jsonable(config)),
        "provenance_json": json.dumps(jsonable(provenance)),
        "meta_json": json.dumps(jsonable(meta)),
    }
    atomic_torch_save(obj, path)
    return Path(path)


def _architecture_of(state: dict) -> dict:
    """``{"ndim", "heads"}`` of a network from its weights (files without ``architecture``)."""
    heads = list(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("decoders.")))
    return {"ndim": state["encoder.0.weight"].dim() - 2, "heads": heads}


def load_model(path, device="cpu", build=None) -> tuple[EncoderDecoder, dict, dict, dict]:
    """Load a model file with ``weights_only=True``.

    ``build``: ``(config, meta) -> network`` for networks other than the
    :class:`EncoderDecoder` (the train stage passes the modality's). Returns (model in eval
    mode on ``device``, config, provenance, meta); DataError naming the file when it is
    missing, not a complete model file or inconsistent with its config.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{str(p)!r}: model file does not exist")
    try:
        obj = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:
        raise DataError(f"{str(p)!r}: not a loadable xrayflow model file: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != MODEL_FORMAT:
        raise DataError(f"{str(p)!r}: not an xrayflow model file")
    for key in ("state_dict", "config_json", "meta_json"):
        if key not in obj:
            raise DataError(f"{str(p)!r}: not a complete xrayflow model file (no {key!r})")
    try:
        config = json.loads(obj["config_json"])
        meta = json.loads(obj["meta_json"])
        prov = json.loads(obj.get("provenance_json") or "{}")
        if build is not None:
            model = build(config, meta)
        else:
            arch = meta.get("architecture") or _architecture_of(obj["state_dict"])
            options = network_options(config["network"], meta.get("output_size"))
            model = EncoderDecoder(arch["ndim"], arch["heads"], meta["input_size"], **options)
        model.load_state_dict(obj["state_dict"])
    except (ValueError, KeyError, TypeError, RuntimeError, ConfigError) as exc:
        what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise DataError(f"{str(p)!r}: inconsistent xrayflow model file ({what})") from None
    model.to(device).eval()
    return model, config, prov, meta
