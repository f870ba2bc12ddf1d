"""A real Label Studio against the real service: ``scripts/labelstudio_e2e.py`` end to end.

Runs when Label Studio is installed in its own virtual environment (``.ls-venv``, or
``$XLGEN_LS_VENV``), or when ``XLGEN_LS_E2E=1`` asks the script to install it there first (pip,
a few minutes); skips otherwise. ``XLGEN_LS_E2E=0`` skips it even when installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "labelstudio_e2e.py"


def label_studio_venv() -> Path:
    return Path(os.environ.get("XLGEN_LS_VENV", ROOT / ".ls-venv"))


def test_real_label_studio_end_to_end(tmp_path: Path) -> None:
    wanted = os.environ.get("XLGEN_LS_E2E", "")
    installed = (label_studio_venv() / "bin" / "label-studio").is_file()
    if wanted == "0":
        pytest.skip("XLGEN_LS_E2E=0")
    if not installed and wanted != "1":
        pytest.skip(f"Label Studio is not installed in {label_studio_venv()}: run `python scripts/labelstudio_e2e.py` "
                    "once (it installs it), or set XLGEN_LS_E2E=1")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--ls-venv", str(label_studio_venv()), "--tmp-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    lines = proc.stdout.splitlines()
    steps = [line for line in lines if line.startswith(("PASS", "FAIL"))]
    report = "\n".join(steps + [line for line in lines if line.startswith(("summary", "SETUP FAILED"))])
    details = (proc.stdout + proc.stderr)[-10000:]
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{report}\n\nthe output's end:\n{details}"
    assert len(steps) >= 14 and all(line.startswith("PASS") for line in steps), f"{report}\n\n{details}"
