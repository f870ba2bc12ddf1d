"""Reading multi-label text datasets.

Two layouts are understood:

* JSON Lines (plain or ``.gz``), one ``{"id": str, "text": str, "labels": [str, ...]}`` per line.
* The XMC raw-text layout: ``<split>_raw_texts.txt`` beside ``<split>_labels.txt``, one document per
  line, labels separated by spaces.

Every problem with the input raises :class:`DataError` naming the file and the line, so the command
line can print one clear message instead of a traceback.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data; the message names the file and, where known, the line."""


@dataclass(frozen=True)
class Document:
    """One document.

    Attributes:
        id: Identifier, unique within a dataset.
        text: The document text, never empty.
        labels: Gold labels in the order they were given (may be empty for unlabeled pools).
    """

    id: str
    text: str
    labels: tuple[str, ...] = field(default_factory=tuple)


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller's `with`


def _check_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise DataError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise DataError(f"{where}: empty text")
    return text


def _check_labels(labels: object, where: str, require_labels: bool) -> tuple[str, ...]:
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{where}: field 'labels' must be a list of strings")
    cleaned = []
    for label in labels:
        if not label.strip():
            raise DataError(f"{where}: empty label string")
        if label.strip() not in cleaned:
            cleaned.append(label.strip())
    if require_labels and not cleaned:
        raise DataError(f"{where}: no labels")
    return tuple(cleaned)


def iter_jsonl(path: str | Path, require_labels: bool = True) -> Iterator[Document]:
    """Yields the documents of a JSON Lines file (plain or gzip'd).

    Args:
        path: The file.
        require_labels: If true, a record without labels is an error; pools of unlabeled documents
            pass False and may omit the field.

    Raises:
        DataError: On a missing file, a malformed line, a missing or mistyped field, an empty text.
    """
    path = Path(path)
    for where, lineno, record in iter_records(path):
        if "text" not in record:
            raise DataError(f"{where}: missing field 'text'")
        text = _check_text(record["text"], where)
        if "labels" in record:
            labels = _check_labels(record["labels"], where, require_labels)
        elif require_labels:
            raise DataError(f"{where}: missing field 'labels'")
        else:
            labels = ()
        doc_id = record.get("id", f"{path.name}:{lineno}")
        yield Document(id=str(doc_id), text=text, labels=labels)


def iter_records(path: str | Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Yields ``(where, line number, object)`` for each non-blank line of a JSON Lines file (plain or
    gzip'd), ``where`` being ``"path:line"`` for error messages.

    Raises:
        DataError: On a missing file, a folder, an unreadable file, a line that is not a JSON object.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a JSON Lines file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{where}: expected a JSON object")
                yield where, lineno, record
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None


def read_xmc_raw(texts_path: str | Path, labels_path: str | Path) -> list[Document]:
    """Reads the XMC raw-text layout: one text per line, one space-separated label line per text.

    Raises:
        DataError: On missing files, differing line counts, empty texts or empty label lines.
    """
    texts_path, labels_path = Path(texts_path), Path(labels_path)
    for p in (texts_path, labels_path):
        if not p.is_file():
            raise DataError(f"{p}: no such file")
    with _open_text(texts_path) as ft:
        texts = ft.read().splitlines()
    with _open_text(labels_path) as fl:
        label_lines = fl.read().splitlines()
    if len(texts) != len(label_lines):
        raise DataError(
            f"{labels_path}: {len(label_lines)} label lines but {texts_path} has {len(texts)} texts"
        )
    docs = []
    for i, (text, label_line) in enumerate(zip(texts, label_lines, strict=True), start=1):
        _check_text(text, f"{texts_path}:{i}")
        labels = tuple(dict.fromkeys(label_line.split()))
        if not labels:
            raise DataError(f"{labels_path}:{i}: no labels")
        docs.append(Document(id=str(i - 1), text=text, labels=labels))
    return docs


def read_documents(path: str | Path, require_labels: bool = True) -> list[Document]:
    """Reads a dataset file in either layout.

    ``path`` is a JSON Lines file, or an XMC ``*_raw_texts.txt`` file whose ``*_labels.txt`` lies
    beside it.

    Raises:
        DataError: On any problem with the input, including an empty file.
    """
    path = Path(path)
    name = path.name
    if name.endswith("_raw_texts.txt"):
        docs = read_xmc_raw(path, path.with_name(name.replace("_raw_texts.txt", "_labels.txt")))
    else:
        docs = list(iter_jsonl(path, require_labels=require_labels))
    if not docs:
        raise DataError(f"{path}: no documents")
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise DataError(f"{path}: duplicate document id {doc.id!r}")
        seen.add(doc.id)
    return docs


def find_split(data_dir: str | Path, split: str) -> Path:
    """Finds the file of a split (``train``, ``dev``, ``test``) in a dataset folder.

    Raises:
        DataError: If the folder holds no file for that split.
    """
    data_dir = Path(data_dir)
    candidates = [
        data_dir / f"{split}.jsonl.gz",
        data_dir / f"{split}.jsonl",
        data_dir / f"{split}_raw_texts.txt",
    ]
    for c in candidates:
        if c.is_file():
            return c
    names = ", ".join(c.name for c in candidates)
    raise DataError(f"{data_dir}: no {split} split (looked for {names})")


def write_jsonl(docs: Iterable[Document], path: str | Path) -> None:
    """Writes documents as JSON Lines (gzip'd when the name ends in ``.gz``)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "text": d.text, "labels": list(d.labels)}) + "\n")


def data_hash(docs: Sequence[Document]) -> str:
    """A SHA-256 over ids, texts and labels, recorded in a model directory to name its data."""
    h = hashlib.sha256()
    for d in docs:
        h.update(json.dumps([d.id, d.text, list(d.labels)]).encode())
    return h.hexdigest()
