"""Dataclass configs <-> command-line options.

Each config field carries its help text in ``metadata["help"]``; :func:`add_arguments` turns the
fields into argparse options (``--field-name``) and :func:`from_arguments` builds the frozen config
back, so a config's documentation and its ``--help`` are the same text.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def opt(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with its help text (and optional ``choices``)."""
    return dataclasses.field(default=default, metadata={"help": help, **kw})


def _base_type(tp: Any) -> tuple[Any, bool]:
    """``(type, optional)`` of a field annotation such as ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Adds one option per field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        tp, _ = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        help_text = f.metadata["help"] + (f" (default: {default})" if default is not None else "")
        if tp is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(tp) is tuple:
            group.add_argument(flag, dest=f.name, nargs="+", default=default, help=help_text)
        else:
            group.add_argument(
                flag, dest=f.name, type=tp, default=default, help=help_text, choices=f.metadata.get("choices")
            )


def from_arguments(cls: type[T], args: argparse.Namespace, **overrides: Any) -> T:
    """Builds ``cls`` from parsed options (fields without an option keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if isinstance(values.get(f.name), list):
            values[f.name] = tuple(values[f.name])
    values.update(overrides)
    return cls(**values)
