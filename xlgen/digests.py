"""Digests that identify weights: the one place they are computed.

* :func:`weight_files_digest`: the weight files of a model directory (full weights or a LoRA
  adapter, with their configs and the base a LoRA adapter needs); an export records it and is
  stale once it changes.
* :func:`model_version`: that digest plus the model's settings, threshold and metrics
  (``xlgen.json``): what the service reports as the served model's version and what score caches key on.
* :func:`state_digest`: the parameters of a module in memory (equal on every rank of a distributed
  run; a model that was never saved gets its version from it).
* :func:`encoder_digest`: a sentence encoder's weights (with one weight file, that file's sha256, so the
  packaged encoder's digest is the published one): the identity the embedding cache and a saved
  retriever refer to; :func:`file_sha256` memoises a file's digest per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

_CHUNK = 1 << 22
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()

ENCODER_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model.bin", "model.bin")
"""Weight files of a sentence-transformers directory (any module's folder)."""
IGNORED_FOLDERS = {"onnx", "openvino", ".git", ".cache"}
"""Folders of a sentence-transformers directory that hold alternative backends' copies of the weights."""


def _update_file(h: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)


def weight_files_digest(model_dir: str | Path) -> str:
    """SHA-256 (24 hex digits) of a model directory's weight files, their configs and, for a LoRA
    adapter (at the root, or in ``adapter/`` in format 1), the name of its base: any retraining
    changes it. Files a layout does not have count as absent, so a directory keeps its digest, and
    its exports stay valid, across versions that add files."""
    model_dir = Path(model_dir)
    files = [model_dir / n for n in ("config.json", "generation_config.json", "adapter_config.json")]
    files += sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    if (model_dir / "adapter").is_dir():
        files += sorted(p for p in (model_dir / "adapter").rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.relative_to(model_dir).as_posix().encode())
            _update_file(h, f)
    meta_path = model_dir / "xlgen.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    h.update(json.dumps(meta.get("settings", {}).get("source", "")).encode())  # a LoRA adapter's base
    return h.hexdigest()[:24]


def model_version(model_dir: str | Path) -> str:
    """A short (12 hex digits) version of a saved model: its weights and its ``xlgen.json`` (settings,
    decoding defaults, threshold, metrics). Equal for the same model, different after a retraining."""
    model_dir = Path(model_dir)
    h = hashlib.sha256(weight_files_digest(model_dir).encode())
    meta = model_dir / "xlgen.json"
    if meta.is_file():
        h.update(meta.read_bytes())
    return h.hexdigest()[:12]


def state_digest(module: Any, extra: str = "") -> str:
    """SHA-256 of a module's parameters and buffers in memory (name, dtype-independent float32 bytes),
    plus ``extra`` (e.g. a threshold)."""
    h = hashlib.sha256(extra.encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, memoised per process by (real path, size, modification time).

    Args:
        path: The file.

    Returns:
        The 64-character hex digest.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _FILE_DIGESTS.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        _FILE_DIGESTS[key] = digest
    return digest


def encoder_weight_files(model_dir: str | Path) -> list[Path]:
    """The weight files of a model directory, sorted by relative path (other backends' copies excluded)."""
    root = Path(model_dir)
    found: set[Path] = set()
    for pattern in ENCODER_WEIGHT_PATTERNS:
        for p in root.rglob(pattern):
            rel = p.relative_to(root)
            if p.is_file() and not (set(rel.parts[:-1]) & IGNORED_FOLDERS):
                found.add(p)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def encoder_digest(model_dir: str | Path) -> str:
    """Digest of a sentence-transformers directory's weights.

    With one weight file it is that file's sha256 (so the packaged encoder's digest is the published
    digest of its weights); with several, the sha256 of the lines ``"<relative path> <sha256>"``.

    Raises:
        FileNotFoundError: If the directory holds no weight file.
    """
    files = encoder_weight_files(model_dir)
    if not files:
        raise FileNotFoundError(f"no weight file ({', '.join(ENCODER_WEIGHT_PATTERNS)}) under {model_dir}")
    if len(files) == 1:
        return file_sha256(files[0])
    lines = "".join(f"{p.relative_to(model_dir).as_posix()} {file_sha256(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def module_digest(module: Any) -> str:
    """:func:`state_digest` prefixed ``sd-``, for an encoder loaded by hub name whose files are not at
    hand: never equal to a file digest."""
    return "sd-" + state_digest(module)
