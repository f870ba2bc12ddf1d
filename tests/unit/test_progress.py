"""Progress bars: a redrawn bar on a terminal, a few plain lines in a pipe or a file."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from tests.conftest import ROOT
from xlgen.progress import LineProgress, progress_bar, write

SCRIPT = """
from xlgen.progress import progress_bar
with progress_bar(total=500, desc="embedding", unit="doc") as bar:
    for _ in range(500):
        bar.update(1)
"""


def _run(stderr: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr)


def test_a_pipe_gets_a_line_every_tenth_and_no_carriage_return():
    p = _run(subprocess.PIPE)
    _, err = p.communicate(timeout=120)
    text = err.decode()
    assert p.returncode == 0, text
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 11, lines  # 0%, 10%, ..., 100%
    assert lines[0].startswith("embedding:   0%") and "500/500" in lines[-1]
    assert [int(x.split("%")[0].split()[-1]) for x in lines] == list(range(0, 101, 10))


def test_a_terminal_gets_a_bar_redrawn_in_place():
    leader, follower = pty.openpty()
    # a terminal of 100 columns (a fresh pseudo-terminal has 0, where tqdm draws an empty bar)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    p = _run(follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed its end of the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert p.wait(timeout=120) == 0
    text = b"".join(chunks).decode()
    assert "\r" in text and "500/500" in text
    assert text.count("\n") <= 2  # one line, redrawn


def test_lines_in_a_file_and_write_between_them():
    out = io.StringIO()
    bar = progress_bar(total=20, desc="decode", file=out)
    assert isinstance(bar, LineProgress)
    for i in range(20):
        bar.update(1)
        if i == 4:
            write("a message", file=out)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert "a message" in lines and len(lines) == 12
    assert "20/20" in lines[-1]


def test_an_unknown_total_writes_at_start_and_end():
    out = io.StringIO()
    with progress_bar(desc="reading", file=out, unit="line") as bar:
        for _ in range(1000):
            bar.update(1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "1000" in lines[-1]


def test_disabled_writes_nothing():
    out = io.StringIO()
    with progress_bar(total=5, file=out, disable=True) as bar:
        bar.update(5)
    assert out.getvalue() == ""


def test_bad_step():
    with pytest.raises(ValueError, match="step"):
        LineProgress(total=3, step=0, file=io.StringIO())


def test_every_bar_is_made_by_progress_bar() -> None:
    """A bar made with tqdm itself writes carriage returns into a log file: only xlgen.progress makes them."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    made = []
    for folder in ("xlgen", "training", "service", "clustering"):
        for path in (root / folder).rglob("*.py"):
            if path.name == "progress.py" and path.parent.name == "xlgen":
                continue
            tree = ast.parse(path.read_text())
            names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("tqdm")
                     for a in n.names}
            made += [f"{path.relative_to(root)}:{n.lineno}" for n in ast.walk(tree)
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names]
    assert not made, made


def test_the_libraries_bars_are_off_in_a_log_and_on_at_a_terminal():
    code = """
import io, sys
from xlgen.progress import quiet_library_bars
class Tty(io.StringIO):
    def isatty(self): return True
turned_off = quiet_library_bars(Tty() if sys.argv[1] == 'tty' else io.StringIO())
from transformers.utils import logging
print(turned_off, logging.is_progress_bar_enabled())
"""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    out = {where: subprocess.run([sys.executable, "-c", code, where], capture_output=True, text=True, env=env, check=True).stdout.split()
           for where in ("tty", "log")}
    assert out == {"tty": ["False", "True"], "log": ["True", "False"]}


def test_the_libraries_bars_are_turned_off_after_their_import(monkeypatch):
    from transformers.utils import logging as hf_logging

    from xlgen.progress import quiet_library_bars

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    hf_logging.enable_progress_bar()
    try:
        assert quiet_library_bars(io.StringIO())
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
