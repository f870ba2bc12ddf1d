"""A preset's SentencePiece model as a Hugging Face tokenizer that gives the same ids.

transformers' own ``T5Tokenizer`` cannot stand in for it: it rebuilds a Unigram model without byte
fallback and splits on whitespace before Metaspace, so characters outside the vocabulary become
``<unk>`` where SentencePiece writes their UTF-8 bytes. This module builds the ``tokenizers``
pipeline from the SentencePiece model proto instead, and wraps it in ``TokenizersBackend``, which
``AutoTokenizer`` loads verbatim from ``tokenizer.json``:

* model: Unigram over the same pieces, ids and scores, with byte fallback;
* normalizer: the model's precompiled character map (``nmt_nfkc``), then SentencePiece's
  whitespace rule (strip both ends, collapse runs of spaces);
* pre-tokenizer: Metaspace, ``▁`` prepended to every segment (the dummy prefix), split at ``▁``
  (pieces never span a word boundary: ``split_by_whitespace``);
* added tokens: the user-defined symbols (``<sep>``, ``<labels>``, ``<clusters>``, ``<c0>`` ...) as
  plain added tokens, so ``skip_special_tokens`` keeps ``<sep>`` when decoding; ``<pad>`` and
  ``</s>`` as special tokens;
* post-processor: ``</s>`` appended, as :func:`xlgen.tokenizer.encode_input` does.

Because every segment between added tokens gets the dummy prefix, ``"<labels>" + text`` encodes to
``[<labels>] + encode(text) + [</s>]`` and ``"a<sep>b"`` to the target of labels ``a`` and ``b``:
the compositions the model was trained on. The ids are SentencePiece's for every text but two
kinds: a text that itself contains one of the markup tokens (SentencePiece writes no ``▁`` after a
user-defined symbol inside a text), and a text that spells a control or byte piece (``</s>``,
``<0x41>``) with a character outside the vocabulary (SentencePiece never matches those pieces in
text; here they only lose to a path of ordinary pieces, see :data:`UNREACHABLE_SCORE`, and an
unknown character costs more). A model whose SentencePiece scores are not on the grid of
:func:`xlgen.tokenizer.quantize_scores` (trained before it) can also differ where two
segmentations score the same, about one text in 2,000.
"""

from __future__ import annotations

from typing import Any

# SentencePiece piece types (sentencepiece_model.proto)
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6

UNREACHABLE_SCORE = -1e6
"""Score given to pieces SentencePiece never matches in text (control, unknown, unused and byte
pieces): the Unigram model of ``tokenizers`` matches every vocabulary string, so a literal
``</s>`` or ``<0x41>`` in a text would otherwise become that piece at its score of 0."""


def parse_spm(model_proto: bytes) -> Any:
    """The ``ModelProto`` message of a serialized SentencePiece model."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]  # generated code
    proto.ParseFromString(model_proto)
    return proto


def spm_to_tokenizers(model_proto: bytes) -> Any:
    """The ``tokenizers.Tokenizer`` equivalent of a serialized SentencePiece Unigram model.

    Raises:
        ValueError: For a BPE or other non-Unigram SentencePiece model.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    proto = parse_spm(model_proto)
    trainer, norm = proto.trainer_spec, proto.normalizer_spec
    if trainer.model_type != 1:  # UNIGRAM
        raise ValueError("only SentencePiece Unigram models convert")
    matchable = (_NORMAL, _USER_DEFINED)
    vocab = [(p.piece, p.score if p.type in matchable else UNREACHABLE_SCORE) for p in proto.pieces]
    tok = Tokenizer(Unigram(vocab, unk_id=trainer.unk_id, byte_fallback=trainer.byte_fallback))

    steps: list[Any] = [normalizers.Precompiled(norm.precompiled_charsmap)] if norm.precompiled_charsmap else []
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always" if norm.add_dummy_prefix else "never")
    # SentencePiece's decoding: spaces back, byte pieces to characters, the dummy prefix dropped
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1 if norm.add_dummy_prefix else 0, 0)])
    tok.add_special_tokens([AddedToken(p.piece, special=True, normalized=False) for p in proto.pieces if p.type == _CONTROL])
    tok.add_tokens([AddedToken(p.piece, special=False, normalized=False) for p in proto.pieces if p.type == _USER_DEFINED])
    eos = proto.pieces[trainer.eos_id].piece
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, trainer.eos_id)])
    return tok


def spm_to_hf(model_proto: bytes, model_max_length: int | None = None) -> Any:
    """A ``transformers`` tokenizer (``TokenizersBackend``) with the ids of the SentencePiece model.

    Args:
        model_proto: The serialized SentencePiece model.
        model_max_length: Input length that ``truncation=True`` cuts to (eos included).
    """
    from transformers import TokenizersBackend

    proto = parse_spm(model_proto)
    trainer = proto.trainer_spec
    kwargs: dict[str, Any] = {"model_max_length": model_max_length} if model_max_length else {}
    return TokenizersBackend(
        tokenizer_object=spm_to_tokenizers(model_proto),
        eos_token=proto.pieces[trainer.eos_id].piece,
        pad_token=proto.pieces[trainer.pad_id].piece,
        unk_token=proto.pieces[trainer.unk_id].piece,
        # a literal "</s>" in a text is text, as SentencePiece reads it, not the end of the sequence
        split_special_tokens=True,
        **kwargs,
    )
