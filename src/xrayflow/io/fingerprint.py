"""Fingerprints of everything that determines a result: the config and the input files.

A checkpoint stores the fingerprint of the run that wrote it; ``--resume`` continues only
when the new run has the same one, so a changed data file, model or config starts a fresh
run instead of returning the old result.

A file's fingerprint is the SHA-256 of its content up to :data:`FULL_HASH_BYTES` (about
0.75 s per GiB on one core); a larger file is identified by its size, its modification time (ns)
and the SHA-256 of its first and last :data:`EDGE_BYTES`, so that resuming a multi-TB
beamtime does not read it all again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

FULL_HASH_BYTES = 1 << 30
EDGE_BYTES = 64 << 20
_BLOCK = 8 << 20


def file_fingerprint(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of the content (small files) or ``sampled:<hex>`` (large ones)."""
    p = Path(path)
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as f:
        if st.st_size <= FULL_HASH_BYTES:
            while block := f.read(_BLOCK):
                h.update(block)
            return "sha256:" + h.hexdigest()
        h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        h.update(f.read(EDGE_BYTES))
        f.seek(st.st_size - EDGE_BYTES)
        h.update(f.read(EDGE_BYTES))
    return "sampled:" + h.hexdigest()


def run_fingerprint(config: Mapping, files: Mapping[str, str | os.PathLike | None]) -> str:
    """One hex digest of ``config`` (JSON, sorted keys) and of each named input file."""
    doc = {
        "config": config,
        "files": {k: (file_fingerprint(v) if v is not None else None) for k, v in files.items()},
    }
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
