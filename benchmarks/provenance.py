"""Where a benchmark result came from: the command, the date, the machine and the commit, written into every
results JSON (``"provenance"``), so that ``benchmarks/render.py`` can print them under each table.

Files written before this existed have theirs in ``benchmarks/results/provenance.json``: the date and commit
of the last commit that changed the file, the command as the README of that time gave it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LEGACY = ROOT / "benchmarks" / "results" / "provenance.json"
"""The provenance of results written before the scripts recorded it."""


def _commit() -> str:
    """The checkout's commit, ``+dirty`` when its tracked files differ from it; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine() -> str:
    """The processor, its core count and the memory, e.g. ``x86_64, 2 cores, 24 GiB``."""
    parts = [platform.machine() or "unknown", f"{os.cpu_count()} cores"]
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        parts.append(f"{pages * size / 2**30:.0f} GiB")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name(0))
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    return ", ".join(parts)


def provenance(argv: list[str] | None = None) -> dict[str, str]:
    """The command that runs now (``python <script> <args>``), today's date, this machine and the commit."""
    args = sys.argv if argv is None else argv
    script = Path(args[0])
    with contextlib.suppress(ValueError):  # a script outside the checkout keeps its path as given
        script = script.resolve().relative_to(ROOT)
    return {"command": shlex.join(["python", str(script), *args[1:]]), "date": datetime.date.today().isoformat(),
            "machine": machine(), "commit": _commit()}


def stamped(result: Any, argv: list[str] | None = None) -> Any:
    """``result`` with its provenance: a dict gets a ``provenance`` key; a list of rows becomes ``{"rows": ..., "provenance": ...}``."""
    if isinstance(result, dict):
        return {**result, "provenance": provenance(argv)}
    return {"rows": result, "provenance": provenance(argv)}
