"""The static encoder (model2vec distilled from the packaged encoder), offline: the tiny random
sentence-transformers model stands in for the packaged teacher, so a distillation takes a second."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("model2vec")

import xlgen.encoders.static as static  # noqa: E402
from xlgen.data import Document  # noqa: E402
from xlgen.encoders import EmbeddingCache, EncoderConfig, LabelRetriever, RetrieverConfig, SentenceEncoder  # noqa: E402
from xlgen.encoders.packaged import EncoderUnavailableError  # noqa: E402
from xlgen.training.config import TrainConfig  # noqa: E402

TEXTS = ["the stock market rates", "oil price crude", "happy love great", "python code bug error", "sad awful sorry"]


@pytest.fixture()
def teacher(tiny_encoder_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The tiny model as the packaged teacher; counts the distillations."""
    pytest.importorskip("model2vec.distill")
    monkeypatch.setattr(static, "packaged_model_dir", lambda: tiny_encoder_dir)
    monkeypatch.setattr(static, "verify_weights", lambda path: "ab" * 32)
    calls = {"distill": 0}
    real = static.distill_packaged

    def counted(target: str | Path) -> Path:
        calls["distill"] += 1
        return real(target)

    monkeypatch.setattr(static, "distill_packaged", counted)
    return calls


def test_distilled_once_into_the_cache_keyed_by_the_teacher(teacher: dict[str, int], cache_dir: Path) -> None:
    first = SentenceEncoder.load("static")
    assert isinstance(first, static.StaticEncoder) and teacher["distill"] == 1
    assert first.path.parent == cache_dir / "encoders" and "abababababababab" in first.path.name
    assert (first.path / "model.safetensors").is_file() and (first.path / "xlgen_encoder.json").is_file()
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temporary folder left behind
    second = SentenceEncoder.load(EncoderConfig(name="static-all-MiniLM-L6-v2"))
    assert teacher["distill"] == 1 and second.digest == first.digest == static.static_digest("ab" * 32)
    assert first.digest != static.static_digest("cd" * 32)
    assert first.backend == "model2vec" and first.numerics == "float32"


def test_vectors_are_unit_means_and_the_same_on_threads_and_through_the_cache(teacher: dict[str, int], cache_dir: Path) -> None:
    enc = static.StaticEncoder.load(EncoderConfig(name="static", threads=1))
    vecs = enc.encode(TEXTS)  # (5, dim)
    assert vecs.shape == (len(TEXTS), enc.dim) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    # a static vector is the mean of its pieces' vectors: a text repeated gives the same vector
    np.testing.assert_allclose(enc.encode([TEXTS[0] + " " + TEXTS[0]])[0], vecs[0], atol=1e-5)
    two = static.StaticEncoder.load(EncoderConfig(name="static", threads=2))
    np.testing.assert_array_equal(two.encode(TEXTS * 3, batch_size=2), np.concatenate([vecs] * 3))
    cache = EmbeddingCache()
    np.testing.assert_array_equal(enc.encode(TEXTS, cache=cache), vecs)
    assert cache.count(enc.cache_key) == len(TEXTS)
    np.testing.assert_array_equal(enc.encode(list(reversed(TEXTS)), cache=cache), vecs[::-1])
    assert enc.encode([]).shape == (0, enc.dim)
    with pytest.raises(TypeError):
        enc.encode([1, 2])  # type: ignore[list-item]


def test_unsupported_settings_are_clear_errors(teacher: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="model2vec"):
        SentenceEncoder.load(EncoderConfig(name="static", backend="torch"))
    with pytest.raises(ValueError, match="CPU"):
        SentenceEncoder.load(EncoderConfig(name="static", device="cuda"))
    with pytest.raises(ValueError, match="does not name the static encoder"):
        static.StaticEncoder.load(EncoderConfig(name="all-MiniLM-L6-v2"))
    with pytest.raises(ValueError, match="--encoder static"):
        TrainConfig(variant="retrieval", fine_tune_encoder=True, encoder="static")


def test_missing_model2vec_names_the_extra(teacher: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "model2vec", None)
    with pytest.raises(EncoderUnavailableError, match=r"xlgen\[distill\]"):
        SentenceEncoder.load("static")


def test_retriever_with_the_static_encoder_round_trips(teacher: dict[str, int], tmp_path: Path) -> None:
    docs = [Document(f"d{i}", t, (t.split()[0], "all")) for i, t in enumerate(TEXTS * 4)]
    fitted = LabelRetriever.fit(docs, config=RetrieverConfig(encoder="static", sources=("knn", "label_text")))
    assert isinstance(fitted.encoder, static.StaticEncoder) and fitted.config.encoder == "static"
    fitted.save(tmp_path / "r")
    assert not (tmp_path / "r" / "encoder").exists()  # referred to by name and digest, not copied
    loaded = LabelRetriever.load(tmp_path / "r")
    assert isinstance(loaded.encoder, static.StaticEncoder)
    a, b = fitted.score(TEXTS), loaded.score(TEXTS)
    np.testing.assert_array_equal(a.label_ids, b.label_ids)
    np.testing.assert_array_equal(a.scores, b.scores)
