"""Fixtures of the offline unit tests: a tiny randomly initialised sentence-transformers model."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

WORDS = ["the", "market", "stock", "shares", "bank", "rates", "oil", "price", "crude", "wheat", "corn", "grain", "trade", "money", "dollar", "happy", "sad", "angry", "love", "hate", "great", "awful", "thanks", "sorry", "python", "java", "code", "bug", "error", "tag", "label"]


def build_tiny_sentence_model(out: Path, seed: int = 0) -> Path:
    """Saves a 2-layer, 32-dimensional BERT with mean pooling and normalisation as a sentence-transformers
    directory; a WordPiece vocabulary of the words above plus single letters."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    hf = out.parent / f"{out.name}-hf"
    hf.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789",
             *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789")]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    bert = BertModel(cfg)
    with torch.no_grad():  # words dominate positions, so that texts sharing words get close vectors
        bert.embeddings.word_embeddings.weight.normal_(0.0, 1.0)
        bert.embeddings.position_embeddings.weight.mul_(0.1)
    bert.save_pretrained(hf)
    tok.save_pretrained(hf)
    model = SentenceTransformer(modules=[Transformer(str(hf), max_seq_length=64), Pooling(32, pooling_mode="mean"),
                                         Normalize()], device="cpu")
    model.save(str(out))
    shutil.rmtree(hf)
    return out


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random sentence-transformers directory, built once per session."""
    return build_tiny_sentence_model(tmp_path_factory.mktemp("tiny_st") / "model")


@pytest.fixture()
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private xlgen cache root (embeddings, CTranslate2 conversions)."""
    root = tmp_path / "xlgen-cache"
    monkeypatch.setenv("XLGEN_CACHE_DIR", str(root))
    return root



LIBRARIES = r"(transformers|peft|sentence_transformers)(\.|$)"
KNOWN = (
    # peft 0.21.2 (the newest release) reads transformers' deprecated attribute itself when wrapping a model
    r"`is_gradient_checkpointing` is deprecated",
)


@pytest.fixture(autouse=True)
def deprecations_fail() -> None:
    """Deprecation warnings of the libraries the unit tests exercise fail them (the integration tests keep
    the project-wide ``ignore``): a deprecated call is fixed when the library announces it, not when it
    breaks. ``KNOWN`` lists the ones raised inside another library, out of this project's hands."""
    import warnings

    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("error", category=category, module=LIBRARIES)
    for message in KNOWN:
        warnings.filterwarnings("ignore", message=message)
