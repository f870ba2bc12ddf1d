"""Tokenizers, input and target encoding.

A model built from a config gets a SentencePiece model trained on the training texts and every
label string; a pretrained model keeps its own tokenizer, with the project's special tokens added.
Both sit behind :class:`Tokenizer`, so nothing else knows which one it has.

Special tokens: ``<sep>`` joins labels in a target, so a label may contain spaces; ``<labels>`` and
``<clusters>`` are the task prefixes (generate labels / generate cluster ids); ``<c0>`` ... are
reserved for label-cluster ids.
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


def cluster_token(i: int) -> str:
    """The token naming label cluster ``i``."""
    return f"<c{i}>"


def special_tokens(n_cluster_tokens: int) -> list[str]:
    return [SEP, TASK_LABELS, TASK_CLUSTERS] + [cluster_token(i) for i in range(n_cluster_tokens)]


class Tokenizer:
    """What the rest of the project needs of a tokenizer.

    Attributes:
        pad_id: Padding id, also T5's decoder start id.
        eos_id: End of sequence.
        sep_id: The label separator.
        n_cluster_tokens: How many ``<cN>`` tokens exist.
    """

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

    def save(self, directory: Path) -> None:
        raise NotImplementedError

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
        return cls(buf.getvalue(), n_cluster_tokens)

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

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "spiece.model").write_bytes(self.model_proto)
        meta = {"kind": self.kind, "n_cluster_tokens": self.n_cluster_tokens}
        (directory / "xlgen_tokenizer.json").write_text(json.dumps(meta))


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
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode([int(i) for i in ids], skip_special_tokens=False)).strip()

    def token_id(self, token: str) -> int:
        i = self.hf.convert_tokens_to_ids(token)
        if i is None or i == self.hf.unk_token_id:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return int(i)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(directory))
        meta = {"kind": self.kind, "n_cluster_tokens": self.n_cluster_tokens}
        (directory / "xlgen_tokenizer.json").write_text(json.dumps(meta))


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Loads what :meth:`Tokenizer.save` wrote."""
    directory = Path(directory)
    meta = json.loads((directory / "xlgen_tokenizer.json").read_text())
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
