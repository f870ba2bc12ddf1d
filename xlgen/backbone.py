"""The generator on a pretrained sentence encoder: its token states are the T5's inputs.

The ``t5`` backbone reads a document with its own T5 encoder, trained from scratch on a few thousand
documents. The ``sentence-encoder`` backbone reads it with the retriever's pretrained sentence encoder
(the packaged all-MiniLM-L6-v2), which knows English: the one encoder pass that gives the retriever its
pooled vector also gives the generator the token states the vector was pooled from
(:meth:`xlgen.encoders.SentenceEncoder.encode_states`), so tagging reads each document once. The
encoder stays frozen (what the retriever was fitted on stays true); what learns is a stock
``T5ForConditionalGeneration`` of the encoder's width:

* its encoder (``reader_layers`` T5 blocks, from scratch) reads the frozen token states followed by the
  retriever's candidates, as the ``t5`` backbone's input carries them, as ``inputs_embeds``::

      [s_1 ... s_n] <sep> earn <sep> acq </s>      s_i: the sentence encoder's state of token i

  A text position holds the placeholder id ``<text>`` in the id sequence, and its embedding is replaced
  by the token's state (:func:`input_embeddings`); the candidates are label pieces embedded as usual.
* its decoder (``decoder_layers`` blocks, from scratch) generates the labels, cross-attending to the
  encoder's output as any T5 does, so every decoding backend that takes encoder states serves it
  (transformers' ``generate``, the ONNX Runtime graphs).

Labels are written in the encoder's own WordPiece pieces (:func:`label_tokenizer`), restricted to the
pieces the labels use: a vocabulary of a few hundred ids instead of 30,522, so the output layer costs
little, and every piece starts from the sentence encoder's embedding of it (:func:`init_from_encoder`),
so label words start with their pretrained meaning (T5 ties the output layer to those embeddings).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import T5ForConditionalGeneration

from xlgen.tokenizer import SEP, TASK_CLUSTERS, TASK_LABELS, PretrainedTokenizer, Tokenizer

BACKBONES = ("t5", "sentence-encoder")
"""What reads a document for the generator: its own T5 encoder, or the pretrained sentence encoder."""

TEXT = "<text>"
"""Placeholder id of a text position: its embedding is the sentence encoder's token state."""

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"


@dataclass(frozen=True)
class DecoderShape:
    """The trained part of a ``sentence-encoder`` generator (its width is the encoder's).

    Attributes:
        reader_layers: T5 encoder blocks over the frozen token states and the candidates.
        decoder_layers: T5 decoder blocks.
        num_heads: Attention heads (the width must divide by it).
        d_ff: Feed-forward size (gated GELU).
        dropout_rate: Dropout everywhere.
    """

    reader_layers: int = 0
    decoder_layers: int = 2
    num_heads: int = 6
    d_ff: int = 1024
    dropout_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.reader_layers < 0 or self.decoder_layers < 1 or self.num_heads < 1 or self.d_ff < 1:
            raise ValueError("reader_layers must be >= 0; decoder_layers, num_heads and d_ff >= 1")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError("dropout_rate must lie in [0, 1)")


class EmbeddedInput(list):
    """A ``sentence-encoder`` model's input ids (``<text>`` at the text positions) with the token states
    those positions take: ``states`` is ``(n_text, d)``, one row per ``<text>`` id, in order."""

    states: np.ndarray

    def __init__(self, ids: Iterable[int], states: np.ndarray) -> None:
        super().__init__(ids)
        self.states = states


def _encoder_location(name: str) -> str:
    """Where the sentence encoder ``name`` loads from: the packaged model's folder, a local
    sentence-transformers directory, or the hub name as it is."""
    from pathlib import Path

    from xlgen.encoders.packaged import is_packaged, packaged_model_dir

    if is_packaged(name):
        return str(packaged_model_dir())
    local = Path(name).expanduser()
    return str(local) if local.is_dir() else name


def encoder_tokenizer(name: str) -> Any:
    """The sentence encoder's own Hugging Face tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_encoder_location(name))


def encoder_width(name: str) -> int:
    """The sentence encoder's hidden size, from its transformer's config."""
    from transformers import AutoConfig

    return int(AutoConfig.from_pretrained(_encoder_location(name)).hidden_size)


def label_tokenizer(source: Any, labels: Iterable[str]) -> PretrainedTokenizer:
    """A WordPiece tokenizer over the pieces of ``source`` (the sentence encoder's tokenizer) that
    ``labels`` use, with its normalisation and pre-tokenisation, and the project's special tokens.

    Ids: ``<pad>`` 0 (also T5's decoder start), ``</s>`` 1, ``<unk>`` 2, ``<sep>``, ``<labels>``, ``<clusters>``,
    ``<text>``, then the pieces, most used first.

    Raises:
        ValueError: If ``source`` is not a WordPiece tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    backend = source.backend_tokenizer
    model = backend.model
    if type(model).__name__ != "WordPiece":
        raise ValueError(f"the sentence-encoder backbone needs a WordPiece encoder tokenizer, not {type(model).__name__}")
    prefix = getattr(model, "continuing_subword_prefix", "##")
    counts = Counter(piece for label in labels for piece in source.tokenize(label))
    specials = [PAD, EOS, UNK, SEP, TASK_LABELS, TASK_CLUSTERS, TEXT]
    theirs = set(getattr(source, "all_special_tokens", ()))  # the encoder's [UNK] of a character it lacks is our <unk>
    pieces = sorted((p for p in counts if p not in specials and p not in theirs), key=lambda p: (-counts[p], p))
    vocab = {tok: i for i, tok in enumerate(specials + pieces)}
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token=UNK, continuing_subword_prefix=prefix,
                                    max_input_chars_per_word=getattr(model, "max_input_chars_per_word", 100)))
    tk.normalizer = backend.normalizer
    tk.pre_tokenizer = backend.pre_tokenizer
    tk.decoder = decoders.WordPiece(prefix=prefix)
    tk.add_special_tokens(specials)
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    return PretrainedTokenizer(hf, n_cluster_tokens=0)


def build_generator(vocab_size: int, width: int, shape: DecoderShape, pad_id: int, eos_id: int) -> T5ForConditionalGeneration:
    """A randomly initialised T5 of ``width`` (the sentence encoder's hidden size) and ``shape``."""
    if width % shape.num_heads:
        raise ValueError(f"the encoder width {width} does not divide into {shape.num_heads} heads")
    from xlgen.modeling import Preset, build_t5

    p = Preset(d_model=width, d_ff=shape.d_ff, num_layers=shape.reader_layers, num_decoder_layers=shape.decoder_layers,
               num_heads=shape.num_heads, d_kv=width // shape.num_heads, dropout_rate=shape.dropout_rate, vocab_size=vocab_size)
    return build_t5(p, vocab_size, pad_id, eos_id)


@torch.no_grad()
def init_from_encoder(t5: T5ForConditionalGeneration, tok: PretrainedTokenizer, word_embeddings: torch.Tensor, source: Any) -> int:
    """Starts each label piece's embedding (tied to the output layer) from the sentence encoder's
    embedding of the same piece, rescaled to T5's initial spread (standard deviation 1) so that the
    pretrained directions keep the scale the rest of the T5 starts at.

    Args:
        t5: The generator.
        tok: Its label tokenizer (:func:`label_tokenizer`).
        word_embeddings: The sentence encoder's ``(encoder_vocab, width)`` input embeddings.
        source: The sentence encoder's tokenizer (its piece -> id map).

    Returns:
        How many embeddings were copied.
    """
    shared = t5.get_input_embeddings().weight  # (vocab, width)
    if shared.shape[1] != word_embeddings.shape[1]:
        raise ValueError(f"generator width {shared.shape[1]} != encoder embedding width {word_embeddings.shape[1]}")
    source_vocab = source.get_vocab()
    rows = [(i, source_vocab[p]) for p, i in tok.hf.get_vocab().items() if p in source_vocab and p not in (PAD, EOS, UNK, TEXT)]
    if not rows:
        return 0
    ours, theirs = (torch.tensor(x) for x in zip(*rows, strict=True))
    vectors = word_embeddings[theirs].float()  # (n, width)
    shared[ours] = (vectors / vectors.std().clamp_min(1e-8)).to(shared.dtype)
    return len(rows)


def text_input(tok: Tokenizer, n_text: int, suffix: Sequence[int], max_length: int) -> list[int]:
    """``<text>`` x n (cut to fit) + ``suffix`` ids + eos, at most ``max_length`` ids: the text's
    positions are cut from the end, so the candidates always survive, as :func:`xlgen.tokenizer.encode_input` does."""
    budget = max_length - 1 - len(suffix)
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for the text")
    return [tok.token_id(TEXT)] * min(n_text, budget) + list(suffix) + [tok.eos_id]


def embedded_inputs(tok: Tokenizer, states: Sequence[np.ndarray], suffixes: Sequence[Sequence[int]] | None,
                    max_length: int) -> list[EmbeddedInput]:
    """Each text's :class:`EmbeddedInput`: its token states (cut as :func:`text_input` cuts) and its suffix."""
    suffixes = suffixes if suffixes is not None else [[] for _ in states]
    if len(suffixes) != len(states):
        raise ValueError("one suffix per text")
    out = []
    for s, suffix in zip(states, suffixes, strict=True):
        ids = text_input(tok, len(s), suffix, max_length)
        out.append(EmbeddedInput(ids, s[: len(ids) - 1 - len(suffix)]))
    return out


def padded_states(inputs: Sequence[EmbeddedInput], width: int, dim: int) -> torch.Tensor:
    """The text states of a batch at their positions, zeros elsewhere: ``(batch, width, dim)`` float32."""
    out = torch.zeros(len(inputs), width, dim)
    for row, x in enumerate(inputs):
        n = len(x.states)
        if n:
            out[row, :n] = torch.from_numpy(np.asarray(x.states, dtype=np.float32))
    return out


def input_embeddings(t5: T5ForConditionalGeneration, ids: torch.Tensor, text_states: torch.Tensor, text_id: int) -> torch.Tensor:
    """The T5 encoder's ``inputs_embeds``: the ids' embeddings, the text positions' replaced by their
    token states. ``ids`` ``(batch, len)``, ``text_states`` ``(batch, len, width)`` -> ``(batch, len, width)``."""
    emb = t5.get_input_embeddings()(ids)  # (batch, len, width)
    is_text = (ids == text_id).unsqueeze(-1)  # (batch, len, 1)
    return torch.where(is_text, text_states.to(device=emb.device, dtype=emb.dtype), emb)


def memory(t5: T5ForConditionalGeneration, ids: torch.Tensor, mask: torch.Tensor, text_states: torch.Tensor, text_id: int) -> torch.Tensor:
    """What the decoder cross-attends to: the T5 encoder's output over :func:`input_embeddings`,
    ``(batch, len, width)``."""
    embeds = input_embeddings(t5, ids, text_states, text_id)
    return t5.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state  # (batch, len, width)
