"""Atomic directory writes: a folder is written beside its target, then renamed over it.

Readers see the old folder or the new one, never a half-written one; a crash leaves at most a
hidden ``.NAME.*`` sibling behind, which the next write of the same target removes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_dir(target: str | Path, mode: int = 0o755) -> Iterator[Path]:
    """Yields an empty temporary folder beside ``target``; on a clean exit it replaces ``target``.

    Args:
        target: The folder to (re)write.
        mode: Permissions of the new folder (``mkdtemp`` makes it private; a service user must read it).

    Raises:
        Whatever the body raised; ``target`` is then left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        tmp.chmod(mode)
        replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(source: str | Path, target: str | Path) -> None:
    """Renames folder ``source`` over ``target`` (which may exist): two renames, the old one removed after."""
    source, target = Path(source), Path(target)
    if not target.exists():
        os.replace(source, target)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)
