"""Dataclass configs <-> command-line options.

Each config field carries its help text in ``metadata["help"]``; :func:`add_arguments` turns the
fields into argparse options (``--field-name``) and :func:`from_arguments` builds the frozen config
back, so a config's documentation and its ``--help`` are the same text. Parsers use
:class:`HelpFormatter`, which appends each default once.
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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` with each option's default shown once, at the end of its help.

    Nothing is added to an option that is required, has no default (None), is a plain on/off flag
    (``store_true``), or whose help text already speaks of its default (``"(default: the model's)"``).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        flag = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        if (not action.option_strings or action.required or flag or default is None or default is argparse.SUPPRESS
                or "default" in text.lower()):
            return action.help
        shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), title: str | None = None,
                  unset: bool = False) -> None:
    """Adds one option per field of dataclass ``cls`` (the parser's :class:`HelpFormatter` shows
    the defaults).

    Args:
        parser: Where the options go, in a group named ``title`` (default: the class name).
        cls: A dataclass whose fields carry ``metadata["help"]`` (see :func:`opt`).
        skip: Fields left out.
        unset: Every option defaults to None (for overrides of saved settings: see
            :func:`overrides`) instead of the field's default.
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        tp, _ = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        default = None if unset else f.default
        help_text = f.metadata["help"]
        if tp is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(tp) is tuple:
            item = (typing.get_args(tp) or (str,))[0]
            convert: Any = item if item in (int, float) else str
            group.add_argument(flag, dest=f.name, nargs="+", default=default, help=help_text, type=convert,
                               choices=f.metadata.get("choices"))
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


def overrides(cls: type, args: Any) -> dict[str, Any]:
    """The fields of ``cls`` that ``args`` (parsed options added with ``unset``, or a request body)
    sets, i.e. those not None."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if getattr(args, f.name, None) is not None}


def request_fields(cls: type) -> list[tuple[str, Any]]:
    """``(name, type)`` of the fields of ``cls`` marked ``request`` in their metadata, each type
    carrying its bounds (``request=(low, high)``), its ``choices`` as a ``Literal`` and its help as the
    description: the request schema's copy of those fields (see ``xlgen.service.schemas``)."""
    from typing import Annotated, Literal

    import msgspec

    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(cls):
        if "request" not in f.metadata:
            continue
        tp, _ = _base_type(hints[f.name])
        if f.metadata.get("choices"):
            tp = Literal[tuple(f.metadata["choices"])]  # type: ignore[misc]
        bounds = f.metadata["request"]
        meta = msgspec.Meta(ge=bounds[0], le=bounds[1], description=f.metadata["help"]) if bounds else \
            msgspec.Meta(description=f.metadata["help"])
        out.append((f.name, Annotated[tp, meta]))
    return out
