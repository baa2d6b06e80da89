"""The layers of docs/architecture.md depend in one direction: no module imports a layer
above its own, no stage imports another stage, and parallel/ does not import io/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import xrayflow

ROOT = Path(xrayflow.__file__).parent
STAGES = ("simulate", "reconstruct", "train", "evaluate", "ingest", "export")
ABOVE_PHYSICS = ("operators", "ad", "networks", "modalities", "solvers", *STAGES, "cli")
#: package or module -> the xrayflow packages it must not import
FORBIDDEN = {
    "backend": ("optics", "geometry", *ABOVE_PHYSICS),
    "optics": ABOVE_PHYSICS,
    "geometry": ABOVE_PHYSICS,
    "illumination": ABOVE_PHYSICS[1:],  # probes are propagated with the operators
    "scans": ABOVE_PHYSICS,
    "detector": ABOVE_PHYSICS,
    "phantoms": ABOVE_PHYSICS,
    "operators": ABOVE_PHYSICS[1:],
    "ad": ABOVE_PHYSICS[2:],
    "networks": ABOVE_PHYSICS[3:],
    "modalities": ABOVE_PHYSICS[4:],
    "solvers": ABOVE_PHYSICS[5:],
    "parallel": ("io", *ABOVE_PHYSICS),
    "io": ABOVE_PHYSICS,
    **{s: (*(t for t in STAGES if t != s), "cli") for s in STAGES},
}


def _imports(path: Path) -> set[str]:
    """First component below ``xrayflow`` of every import in ``path`` (any nesting)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "xrayflow":
                names = [f"xrayflow.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n.split(".")[1] for n in names if n.startswith("xrayflow.")}
    return out


def _files(unit: str) -> list[Path]:
    pkg = ROOT / unit
    return sorted(pkg.rglob("*.py")) if pkg.is_dir() else [ROOT / f"{unit}.py"]


@pytest.mark.parametrize("unit", sorted(FORBIDDEN))
def test_no_import_points_up(unit):
    bad = [
        f"{p.relative_to(ROOT)} imports xrayflow.{m}"
        for p in _files(unit)
        for m in sorted(_imports(p) & set(FORBIDDEN[unit]))
    ]
    assert bad == []
