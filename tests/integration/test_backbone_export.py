"""A ``sentence-encoder`` model on ONNX Runtime: the decoder graphs take the memory xlgen computes over the
token states (no encoder graph), agree with transformers' ``generate``, and CTranslate2 is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.conftest import build_tiny_sentence_model
from xlgen.data import read_documents, write_jsonl
from xlgen.decoding import DecodingConfig
from xlgen.model import XLGenModel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    root = tmp_path_factory.mktemp("se-export")
    mp = pytest.MonkeyPatch()
    mp.setenv("XLGEN_CACHE_DIR", str(root / "cache"))
    encoder = build_tiny_sentence_model(root / "encoder")
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 300), ("dev", 60), ("test", 30)):
        write_jsonl(read_documents(ROOT / "data" / "goemotions" / f"{split}.jsonl.gz")[:n], data / f"{split}.jsonl")
    run(TrainConfig(data=str(data), output_dir=str(root / "run"), max_steps=24, eval_every=24, batch_size=16, lr=3e-2,
                    max_target_length=16, max_input_length=48, progress=False, variant="retrieval", backbone="sentence-encoder",
                    encoder=str(encoder), encoder_quantization="int8", candidates_in_input=4, decoder_heads=2, decoder_ff=64,
                    generator="always"))
    yield root / "run" / "model"
    mp.undo()


def test_onnx_serves_the_model_as_torch_does_and_ctranslate2_is_refused(model_dir: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "xlgen.service.cli", "export", "--model", str(model_dir), "--backend", "all"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert [x.get("backend") for x in lines] == ["onnxruntime", "ctranslate2"] and "skipped" in lines[1]
    assert (model_dir / "onnx" / "decoder.onnx").is_file() and not (model_dir / "onnx" / "encoder.onnx").exists()
    assert not (model_dir / "ct2").exists()
    one = subprocess.run([sys.executable, "-m", "xlgen.service.cli", "export", "--model", str(model_dir), "--backend", "ctranslate2"],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 2 and "token states" in one.stderr and "Traceback" not in one.stderr

    texts = [d.text for d in read_documents(model_dir.parents[1] / "data" / "test.jsonl")]
    fast = XLGenModel.load(model_dir)
    assert fast.backend is not None and fast.backend.names == ("onnxruntime",)
    ref = XLGenModel.load(model_dir, backend="torch")
    for cfg in (DecodingConfig(max_new_tokens=8), DecodingConfig(strategy="greedy", max_new_tokens=8)):
        fast.decoding = ref.decoding = cfg
        a, b = fast.predict(texts, scoring="generator"), ref.predict(texts, scoring="generator")
        assert [p.labels for p in a] == [p.labels for p in b]
        for p, q in zip(a, b, strict=True):
            assert p.all_scores.keys() == q.all_scores.keys()
            assert all(abs(p.all_scores[k] - q.all_scores[k]) < 1e-3 for k in p.all_scores)


def test_an_int8_onnx_export_is_quantized_and_decodes_as_the_float_one_does(model_dir: Path) -> None:
    import onnx

    out = subprocess.run([sys.executable, "-m", "xlgen.service.cli", "export", "--model", str(model_dir), "--backend", "onnxruntime",
                          "--onnx-quantization", "int8"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((model_dir / "onnx" / "backend.json").read_text())["quantization"] == "int8"
    graph = onnx.load(str(model_dir / "onnx" / "decoder.onnx"))
    kinds = {n.op_type for n in graph.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= kinds, kinds  # the matrix products run in int8
    texts = [d.text for d in read_documents(model_dir.parents[1] / "data" / "test.jsonl")]
    fast, ref = XLGenModel.load(model_dir), XLGenModel.load(model_dir, backend="torch")
    assert fast.backend is not None and fast.backend.names == ("onnxruntime",)
    fast.decoding = ref.decoding = DecodingConfig(strategy="greedy", max_new_tokens=8)
    a, b = fast.predict(texts, scoring="generator"), ref.predict(texts, scoring="generator")
    same = sum(p.labels == q.labels for p, q in zip(a, b, strict=True))
    assert same >= 0.8 * len(texts), (same, len(texts))
    bad = subprocess.run([sys.executable, "-m", "xlgen.service.cli", "export", "--model", str(model_dir), "--backend", "onnxruntime",
                          "--onnx-quantization", "int4"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--onnx-quantization" in bad.stderr


def test_small_calls_decode_on_one_thread_and_agree_with_the_pool(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On two threads a call of at most SMALL_ROWS decoder rows (one text at beam 5) runs on the one-thread sessions,
    a larger one on the pool; the labels and scores are those of the pool alone (XLGEN_ONNX_SMALL_ROWS=0)."""
    import torch

    if not (model_dir / "onnx" / "decoder.onnx").is_file():
        subprocess.run([sys.executable, "-m", "xlgen.service.cli", "export", "--model", str(model_dir), "--backend", "onnxruntime"],
                       check=True, capture_output=True, timeout=600)
    texts = [d.text for d in read_documents(model_dir.parents[1] / "data" / "test.jsonl")][:8]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast = XLGenModel.load(model_dir)
        monkeypatch.setenv("XLGEN_ONNX_SMALL_ROWS", "0")
        pool = XLGenModel.load(model_dir)
    finally:
        torch.set_num_threads(threads)
    backend = fast.backend.members[0]  # type: ignore[union-attr]
    assert backend.small_rows == 16 and pool.backend.members[0].small_rows == 0  # type: ignore[union-attr]
    runs: list[str] = []
    for name in ("decoder", "decoder_one"):
        session = getattr(backend, name)
        monkeypatch.setattr(backend, name, _Spy(session, name, runs))
    cfg = DecodingConfig(max_new_tokens=8)  # beam 5
    fast.decoding = pool.decoding = cfg
    one = fast.predict(texts[:1], scoring="generator")
    assert runs and set(runs) == {"decoder_one"}
    runs.clear()
    many = fast.predict(texts, scoring="generator")  # 8 x 5 rows
    assert runs and set(runs) == {"decoder"}
    for got, want in ((one, pool.predict(texts[:1], scoring="generator")), (many, pool.predict(texts, scoring="generator"))):
        assert [p.labels for p in got] == [p.labels for p in want]
        assert all(abs(p.all_scores[k] - q.all_scores[k]) < 1e-4 for p, q in zip(got, want, strict=True) for k in q.all_scores)


class _Spy:
    """An ONNX Runtime session that records which of the backend's sessions ran."""

    def __init__(self, session, name: str, runs: list[str]) -> None:  # type: ignore[no-untyped-def]
        self.session, self.name, self.runs = session, name, runs

    def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.runs.append(self.name)
        return self.session.run(*args, **kwargs)
