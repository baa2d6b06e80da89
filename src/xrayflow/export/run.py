"""The export stage: one result file in, one file (or folder) in another code's format out."""

from __future__ import annotations

import os
from pathlib import Path

from xrayflow.errors import ConfigError
from xrayflow.export.result import read_result
from xrayflow.io.outputs import check_outputs
from xrayflow.modalities import get_modality, modalities

__all__ = ["export", "formats_for"]


def formats_for(modality: str | None = None) -> dict[str, list[str]]:
    """Export formats by modality: ``{modality: [formats]}`` for every registered modality
    that has some, or for ``modality`` alone."""
    mods = {modality: get_modality(modality)} if modality else modalities()
    return {name: sorted(m.exports) for name, m in mods.items() if m.exports}


def export(
    result_path: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    data_path: str | os.PathLike | None = None,
) -> Path:
    """Write ``result_path`` (an xrayflow reconstruction result) as format ``fmt`` to
    ``out``; returns ``out``.

    ``data_path``: the data file the result was reconstructed from, read only for geometry
    the result does not record. Refused before anything is written (XrayflowError naming
    the file or format): a missing or unreadable result, a file that is not an xrayflow
    result, a format its modality does not support (the message lists those it does), an
    ``out`` that is the result or the data file (also through a link), a directory where a
    file is written, or in a missing directory. The output appears only when complete.
    """
    if not fmt:
        raise ConfigError("--format is required")
    result = read_result(result_path, data_path)
    modality = get_modality(result.modality, f"{str(result_path)!r}: model attribute")
    writer = modality.exporter(str(fmt))
    kind = getattr(writer, "output_kind", "file")
    check_outputs(
        {"-o": out},
        {"RESULT": result_path, "--data": data_path},
        dirs=("-o",) if kind == "dir" else (),
    )
    return Path(writer(result, Path(out)))
