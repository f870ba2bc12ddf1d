"""Where the benchmarks find their datasets: the bundled copy first, then ../shared/data."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def dataset_dir(name: str) -> Path:
    local = ROOT / "data" / name
    return local if local.is_dir() else SHARED / name
