"""Every command the README and the docs pages give parses with today's options: ``xlgen`` subcommands, the
benchmark scripts and the project's modules run with ``python -m`` (or ``accelerate launch -m``). Parsing only:
nothing is trained or read."""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from xlgen.service.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("training.", "service.", "clustering.", "xlgen.")
OPERATORS = set(";|&<>()")
"""Characters of the shell's control and redirection operators (the lexer returns runs of them as one token)."""


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
"""The README and every docs page."""


def _lines(pages: list[Path] = PAGES) -> list[tuple[str, str]]:
    """(page, line) of the pages' shell code blocks, one command line each (continuations joined)."""
    out = []
    for page in pages:
        blocks = re.findall(r"^```(?:bash|sh)\n(.*?)^```", page.read_text(), re.S | re.M)
        out += [(page.name, line) for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return out


def _commands(line: str) -> list[list[str]]:
    """The simple commands of one line, split at pipes, lists and redirections."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    out: list[list[str]] = [[]]
    for token in lexer:
        if set(token) <= OPERATORS:
            out.append([])
        else:
            out[-1].append(token)
    return [c for c in out if c]


def _program(words: list[str]) -> tuple[str, list[str]] | None:
    """(what to parse with, its arguments) for a command this test checks, else None."""
    words = [w for w in words if w != "..."]  # the README's "and so on"
    while words and (re.fullmatch(r"\w+=.*", words[0]) or words[0] in ("exec", "time", "nohup")):
        words = words[1:]  # environment assignments and prefixes before the command word
    if not words:
        return None
    name = Path(words[0]).name
    if name == "xlgen":
        return "xlgen", words[1:]
    if re.fullmatch(r"python3?(\.\d+)?", name) and len(words) > 1 and re.fullmatch(r"benchmarks/\w+\.py", words[1]):
        return words[1], words[2:]
    if re.fullmatch(r"python3?(\.\d+)?|accelerate|torchrun", name):  # python -m, accelerate launch -m, torchrun -m
        for i, w in enumerate(words[:-1]):
            if w == "-m" and words[i + 1].startswith(PACKAGES):
                return "-m " + words[i + 1], words[i + 2:]
    return None


def readme_commands(pages: list[Path] = PAGES) -> list[tuple[str, str, list[str]]]:
    found = []
    for page, line in _lines(pages):
        if "$" in line:  # shell variables and loops: their values are not known here
            continue
        for words in _commands(line):
            program = _program(words)
            if program is not None:
                found.append((f"{page}: {line.strip()}", *program))
    return found


COMMANDS = readme_commands()


class _Parsed(Exception):
    """Raised in place of running a script once its options parsed."""


def test_the_readme_gives_commands_of_every_kind():
    kinds = {program.split()[0] if program.startswith("-m") else Path(program).parent.name or program for _, program, _ in COMMANDS}
    assert {"xlgen", "benchmarks", "-m"} <= kinds, kinds
    assert len(COMMANDS) > 40
    pages = {line.split(":")[0] for line, _, _ in COMMANDS}
    assert {"README.md", "cli.md", "benchmarks.md", "service.md", "active-learning.md"} <= pages, pages


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize(("line", "program", "args"), COMMANDS, ids=[c[0][:80] for c in COMMANDS])
def test_readme_command_parses(line: str, program: str, args: list[str], monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    try:
        if program == "xlgen":
            build_parser(only=args[0] if args and not args[0].startswith("-") else "").parse_args(args)
            return
        original = argparse.ArgumentParser.parse_args

        def parse_then_stop(self, argv=None, namespace=None):  # type: ignore[no-untyped-def]
            original(self, argv, namespace)
            raise _Parsed

        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        if program.startswith("-m "):
            monkeypatch.setattr(sys, "argv", [program[3:], *args])
            with pytest.raises(_Parsed):
                runpy.run_module(program[3:], run_name="__main__", alter_sys=True)
        else:
            monkeypatch.setattr(sys, "argv", [program, *args])
            monkeypatch.syspath_prepend(str(ROOT))
            with pytest.raises(_Parsed):
                runpy.run_path(str(ROOT / program), run_name="__main__")
    except SystemExit as e:
        if e.code not in (0, None):
            pytest.fail(f"documented command does not parse: {line}\n{capsys.readouterr().err[-1500:]}")
