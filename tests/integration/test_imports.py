"""Every module of the project imports first, alone, in a fresh interpreter: no import cycle hides
behind an import order (one interpreter per module, so it is an integration test)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.unit.test_architecture import ROOT, project_modules


@pytest.mark.parametrize("module", sorted(project_modules()))
def test_every_module_imports_on_its_own(module: str) -> None:
    """Importing one module first, alone, in a fresh interpreter works (no order-dependent cycle)."""
    r = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
