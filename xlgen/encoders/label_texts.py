"""The text a label is known by: its name, and optionally a description and example phrases.

A label file is JSON Lines, one ``{"label": str, "description": str, "examples": [str, ...]}`` per line
(``description`` and ``examples`` optional). A label without an entry is known by its name alone, with
``_`` and ``-`` read as spaces (``"mergers_acquisitions"`` -> ``"mergers acquisitions"``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xlgen.data import DataError, iter_records


def label_name_text(label: str) -> str:
    """A label's name as words: ``_`` and ``-`` become spaces, runs of whitespace one space."""
    return re.sub(r"\s+", " ", re.sub(r"[_-]", " ", label)).strip() or label


@dataclass(frozen=True)
class LabelText:
    """What a label is known by."""

    label: str
    """The label string, as in the data."""
    description: str | None = None
    """A sentence or two about the label; None if there is none."""
    examples: tuple[str, ...] = field(default_factory=tuple)
    """Example phrases or documents of the label."""

    def __post_init__(self) -> None:
        if not self.label.strip():
            raise ValueError("empty label")
        if self.description is not None and not self.description.strip():
            raise ValueError(f"label {self.label!r}: empty description (omit it instead)")
        if any(not isinstance(x, str) or not x.strip() for x in self.examples):
            raise ValueError(f"label {self.label!r}: examples must be non-empty strings")

    def texts(self) -> list[str]:
        """The texts whose embeddings are averaged into the label's vector: name, description, examples."""
        out = [label_name_text(self.label)]
        if self.description:
            out.append(self.description)
        out.extend(self.examples)
        return out

    def to_json(self) -> dict:
        """The label file record."""
        record: dict = {"label": self.label}
        if self.description is not None:
            record["description"] = self.description
        if self.examples:
            record["examples"] = list(self.examples)
        return record


def read_label_file(path: str | Path) -> dict[str, LabelText]:
    """Reads a JSON Lines label file.

    Raises:
        DataError: On a missing file, malformed JSON, a wrong field type or a repeated label, naming the
            file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    out: dict[str, LabelText] = {}
    for where, _, rec in iter_records(path):
        if not isinstance(rec.get("label"), str):
            raise DataError(f"{where}: each line needs a string field 'label'")
        desc = rec.get("description")
        examples = rec.get("examples", [])
        if desc is not None and not isinstance(desc, str):
            raise DataError(f"{where}: field 'description' must be a string")
        if not isinstance(examples, list) or not all(isinstance(x, str) for x in examples):
            raise DataError(f"{where}: field 'examples' must be a list of strings")
        label = rec["label"].strip()
        if label in out:
            raise DataError(f"{where}: label {label!r} appears twice")
        try:
            out[label] = LabelText(label, desc.strip() if desc and desc.strip() else None,
                                   tuple(x.strip() for x in examples if x.strip()))
        except ValueError as e:
            raise DataError(f"{where}: {e}") from e
    return out


def write_label_file(texts: Iterable[LabelText], path: str | Path) -> None:
    """Writes label texts as a JSON Lines label file (round-trips with :func:`read_label_file`)."""
    with open(path, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps(t.to_json(), ensure_ascii=False) + "\n")


def complete_label_texts(labels: Iterable[str], given: Mapping[str, LabelText] | None = None) -> list[LabelText]:
    """One :class:`LabelText` per label: the given one, else the name alone."""
    given = given or {}
    return [given.get(label, LabelText(label)) for label in labels]
