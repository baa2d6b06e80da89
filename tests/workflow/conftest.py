"""Fixtures of the workflow tests (helpers live in wfhelpers.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from wfhelpers import make_workdir


@pytest.fixture
def workdir(tmp_path):
    """Scratch work directory: copy of config/, link to workflow/, placeholder stage configs."""
    return make_workdir(tmp_path / "wd")
