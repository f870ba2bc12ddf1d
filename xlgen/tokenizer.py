"""Tokenizers, input and target encoding.

A model built from a config gets a SentencePiece model trained on the training texts and every
label string; a pretrained model keeps its own tokenizer, with the project's special tokens added.
Both sit behind :class:`Tokenizer`, so nothing else knows which one it has.

Special tokens: ``<sep>`` joins labels in a target, so a label may contain spaces; ``<labels>`` and
``<clusters>`` are the task prefixes (generate labels / generate cluster ids); ``<c0>`` ... are
reserved for label-cluster ids.

:meth:`Tokenizer.save` writes a folder that ``transformers.AutoTokenizer.from_pretrained`` also
loads, with the same ids: ``tokenizer.json`` + ``tokenizer_config.json`` beside the project's own
``xlgen_tokenizer.json`` (and ``spiece.model`` for SentencePiece, see :mod:`xlgen.hf_tokenizer`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

SEP = "<sep>"
TASK_LABELS = "<labels>"
TASK_CLUSTERS = "<clusters>"
DEFAULT_CLUSTER_TOKENS = 256
META_FILE = "xlgen_tokenizer.json"
SCORE_STEP = 1 / 256
"""Grid of a trained SentencePiece model's piece scores (see :func:`quantize_scores`)."""


def cluster_token(i: int) -> str:
    """The token naming label cluster ``i``."""
    return f"<c{i}>"


def special_tokens(n_cluster_tokens: int) -> list[str]:
    return [SEP, TASK_LABELS, TASK_CLUSTERS] + [cluster_token(i) for i in range(n_cluster_tokens)]


class Tokenizer:
    """What the rest of the project needs of a tokenizer.

    Attributes:
        kind: Which implementation (written to ``xlgen_tokenizer.json``).
        pad_id: Padding id, also T5's decoder start id.
        eos_id: End of sequence.
        sep_id: The label separator.
        n_cluster_tokens: How many ``<cN>`` tokens exist.
    """

    kind: str
    pad_id: int
    eos_id: int
    sep_id: int
    n_cluster_tokens: int

    def __len__(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Ids of ``text``, without end-of-sequence."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def token_id(self, token: str) -> int:
        raise NotImplementedError

    def save(self, directory: Path, max_length: int | None = None) -> None:
        """Writes the tokenizer in its own form and in Hugging Face form.

        Args:
            directory: Folder to write (created if missing).
            max_length: Input length (eos included) that ``AutoTokenizer``'s ``truncation=True``
                cuts to; None keeps the tokenizer's own.
        """
        raise NotImplementedError

    def _save_meta(self, directory: Path) -> None:
        meta = {"kind": self.kind, "n_cluster_tokens": self.n_cluster_tokens}
        (directory / META_FILE).write_text(json.dumps(meta))

    def cluster_ids(self) -> list[int]:
        return [self.token_id(cluster_token(i)) for i in range(self.n_cluster_tokens)]


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece unigram model trained for this project (pad 0, eos 1, unk 2)."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes, n_cluster_tokens: int):
        import sentencepiece as spm

        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.n_cluster_tokens = n_cluster_tokens
        self.pad_id, self.eos_id = self.sp.pad_id(), self.sp.eos_id()
        self.sep_id = self.token_id(SEP)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        labels: Iterable[str],
        vocab_size: int = 8000,
        n_cluster_tokens: int = DEFAULT_CLUSTER_TOKENS,
        max_sentences: int = 300_000,
        seed: int = 0,
    ) -> SentencePieceTokenizer:
        """Trains on ``texts`` plus every label string (labels once per occurrence, so frequent
        labels become single pieces).

        Args:
            texts: Training texts.
            labels: Label strings, with repetition.
            vocab_size: Target size; smaller corpora get fewer pieces (soft limit).
            n_cluster_tokens: Cluster-id tokens to reserve.
            max_sentences: Sentences sampled for training.
            seed: Seed of that sampling.
        """
        import sentencepiece as spm

        sentences = [t.replace("\n", " ") for t in texts] + [str(x) for x in labels]
        specials = special_tokens(n_cluster_tokens)
        buf = io.BytesIO()
        spm.set_random_generator_seed(seed)
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=buf,
            # room for the special tokens, the 256 byte pieces, every character, and some pieces
            vocab_size=max(vocab_size, len(specials) + 256 + len(set("".join(sentences))) + 64),
            model_type="unigram",
            pad_id=0,
            eos_id=1,
            unk_id=2,
            bos_id=-1,
            user_defined_symbols=specials,
            byte_fallback=True,
            character_coverage=0.9995,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            hard_vocab_limit=False,
            num_threads=2,
            minloglevel=2,
        )
        return cls(quantize_scores(buf.getvalue()), n_cluster_tokens)

    def __len__(self) -> int:
        return int(self.sp.get_piece_size())

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.sp.decode([int(i) for i in ids]))

    def token_id(self, token: str) -> int:
        i = int(self.sp.piece_to_id(token))
        if i == self.sp.unk_id() and token != self.sp.id_to_piece(i):
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return i

    def save(self, directory: Path, max_length: int | None = None) -> None:
        from xlgen.hf_tokenizer import spm_to_hf

        directory.mkdir(parents=True, exist_ok=True)
        (directory / "spiece.model").write_bytes(self.model_proto)
        spm_to_hf(self.model_proto, max_length).save_pretrained(str(directory))
        self._save_meta(directory)


class PretrainedTokenizer(Tokenizer):
    """A pretrained model's own tokenizer (``AutoTokenizer``) with the special tokens added."""

    kind = "pretrained"

    def __init__(self, hf_tokenizer: Any, n_cluster_tokens: int):
        self.hf = hf_tokenizer
        missing = [t for t in special_tokens(n_cluster_tokens) if t not in self.hf.get_vocab()]
        if missing:
            self.hf.add_tokens(missing, special_tokens=True)
        self.n_cluster_tokens = n_cluster_tokens
        self.pad_id = int(self.hf.pad_token_id)
        self.eos_id = int(self.hf.eos_token_id)
        self.sep_id = self.token_id(SEP)

    @classmethod
    def from_pretrained(cls, name_or_path: str, n_cluster_tokens: int = DEFAULT_CLUSTER_TOKENS) -> PretrainedTokenizer:
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(name_or_path), n_cluster_tokens)

    def __len__(self) -> int:
        return len(self.hf)

    def encode(self, text: str) -> list[int]:
        # verbose=False: a text longer than model_max_length is cut by encode_input, not an error
        return list(self.hf.encode(text, add_special_tokens=False, verbose=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode([int(i) for i in ids], skip_special_tokens=False)).strip()

    def token_id(self, token: str) -> int:
        i = self.hf.convert_tokens_to_ids(token)
        if i is None or i == self.hf.unk_token_id:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return int(i)

    def save(self, directory: Path, max_length: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(directory))
        if max_length is not None:
            config_file = directory / "tokenizer_config.json"
            config = json.loads(config_file.read_text())
            config["model_max_length"] = max_length
            config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        self._save_meta(directory)


def quantize_scores(model_proto: bytes, step: float = SCORE_STEP) -> bytes:
    """A SentencePiece model with its piece scores rounded to multiples of ``step``.

    SentencePiece adds path scores in float32, so two segmentations of equal score (``!!!!`` +
    ``!`` against ``!`` + ``!!!!``) tie-break by rounding error, which the ``tokenizers`` Unigram
    model (float64) cannot reproduce. On a grid of 1/256 the sums stay exact up to 65,536 in
    magnitude (texts of about 20,000 characters), both break ties alike, and the segmentations
    differ from the unrounded model's only at such ties.
    """
    from xlgen.hf_tokenizer import parse_spm

    proto = parse_spm(model_proto)
    for piece in proto.pieces:
        piece.score = round(piece.score / step) * step
    return proto.SerializeToString()


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Loads what :meth:`Tokenizer.save` wrote: a tokenizer folder, or a model directory (whose
    root holds the tokenizer, or in the layout before format 2 its ``tokenizer/`` folder).

    Raises:
        FileNotFoundError: If neither holds ``xlgen_tokenizer.json``.
    """
    directory = Path(directory)
    if not (directory / META_FILE).is_file() and (directory / "tokenizer" / META_FILE).is_file():
        directory = directory / "tokenizer"
    if not (directory / META_FILE).is_file():
        raise FileNotFoundError(f"{directory}: no tokenizer ({META_FILE} missing)")
    meta = json.loads((directory / META_FILE).read_text())
    if meta["kind"] == SentencePieceTokenizer.kind:
        return SentencePieceTokenizer((directory / "spiece.model").read_bytes(), meta["n_cluster_tokens"])
    from transformers import AutoTokenizer

    return PretrainedTokenizer(AutoTokenizer.from_pretrained(str(directory)), meta["n_cluster_tokens"])


def encode_input(
    tok: Tokenizer, text: str, max_length: int, task: str = TASK_LABELS, suffix: Sequence[int] = ()
) -> list[int]:
    """``task`` prefix + text ids (truncated) + ``suffix`` ids + eos, at most ``max_length`` ids.

    The text keeps its first word (the prefix is a token of its own) and is truncated from the
    end, so the suffix (cluster tokens for MCG) always survives.
    """
    budget = max_length - 2 - len(suffix)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for the text")
    return [tok.token_id(task)] + tok.encode(text)[:budget] + list(suffix) + [tok.eos_id]


def encode_target(tok: Tokenizer, labels: Sequence[str], max_length: int | None = None) -> list[int]:
    """Labels joined by ``<sep>``, then one eos; truncated at a label boundary to ``max_length``."""
    ids: list[int] = []
    for label in labels:
        piece = ([tok.sep_id] if ids else []) + tok.encode(label)
        if max_length is not None and len(ids) + len(piece) + 1 > max_length:
            break
        ids.extend(piece)
    return ids + [tok.eos_id]


def split_generated(tok: Tokenizer, ids: Sequence[int]) -> list[str]:
    """Generated ids -> label strings: stop at eos, skip padding, split at ``<sep>``."""
    chunks: list[list[int]] = [[]]
    for i in ids:
        i = int(i)
        if i == tok.eos_id:
            break
        if i == tok.pad_id:
            continue
        if i == tok.sep_id:
            chunks.append([])
        else:
            chunks[-1].append(i)
    out = []
    for chunk in chunks:
        s = tok.decode(chunk).strip() if chunk else ""
        if s and s not in out:
            out.append(s)
    return out
