"""Inference backends on the tiny model: batching, the numpy search against ``generate``, export and
reload, equivalence with torch, stale exports, fallbacks, and the service and ``xlgen select`` on
each backend. Tests of a backend whose library is missing skip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from xlgen.backends import BACKENDS, Cancelled, StaleExport, decode, installed, length_batches, pick, read_export
from xlgen.backends import search as numpy_search
from xlgen.backends.batching import pad_batch
from xlgen.backends.onnx_graphs import CrossGraph, DecoderStepGraph, check_step
from xlgen.backends.torch_backend import TorchBackend, sequence_logprobs
from xlgen.data import read_documents, write_jsonl
from xlgen.decoding import DecodingConfig, label_scores
from xlgen.digests import weight_files_digest
from xlgen.model import XLGenModel, export_model
from xlgen.service.cli import main as xlgen

torch.set_num_threads(1)

EXPORTED = [pytest.param(name, marks=pytest.mark.skipif(not installed(name), reason=f"{name} is not installed"))
            for name in ("onnxruntime", "ctranslate2")]
LOGPROB_TOL = {"onnxruntime": 1e-4, "ctranslate2": 2e-3}  # float32 CTranslate2 fuses and reorders more


@pytest.fixture(scope="module")
def exported(trained_tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model directory with every installed backend exported (CTranslate2 computing in float32)."""
    path = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(trained_tiny_run / "model", path)
    for name in ("onnxruntime", "ctranslate2"):
        if installed(name):
            export_model(path, name, compute_type="float32")
    return path


@pytest.fixture(scope="module")
def texts(tiny_data: Path) -> list[str]:
    return [d.text for d in read_documents(tiny_data / "test.jsonl")[:40]]


def test_length_batches_sort_and_cap_by_tokens():
    lengths = [5, 50, 7, 3, 50, 20]
    assert list(length_batches(lengths, batch_size=4)) == [[3, 0, 2, 5], [1, 4]]
    # at most 60 padded tokens: the 20-token input starts a new batch, each 50-token input is alone
    assert list(length_batches(lengths, batch_size=32, max_tokens=60)) == [[3, 0, 2], [5], [1], [4]]


def test_should_stop_ends_decoding_between_batches(tiny_model, texts):
    """The check runs before every batch; once it says stop, no further batch is decoded."""
    cfg = DecodingConfig(strategy="greedy", max_new_tokens=8, batch_size=4)
    backend = TorchBackend(tiny_model.t5, tiny_model.tokenizer.eos_id, tiny_model.tokenizer.pad_id)
    calls = []
    generated = []
    real_generate = backend.generate
    backend.generate = lambda *a: generated.append(1) or real_generate(*a)  # type: ignore[method-assign]
    inputs = tiny_model.encode_inputs(texts[:12])  # three batches of four
    with pytest.raises(Cancelled, match="4 of 12"):
        decode(backend, tiny_model.tokenizer, inputs, cfg, should_stop=lambda: calls.append(1) or len(calls) > 1)
    assert len(calls) == 2 and len(generated) == 1
    # a check that never fires changes nothing
    plain = decode(backend, tiny_model.tokenizer, inputs, cfg)
    assert decode(backend, tiny_model.tokenizer, inputs, cfg, should_stop=lambda: False) == plain


class _TorchStepper:
    """The exported step graph run by torch, as a :class:`numpy_search.Stepper`."""

    def __init__(self, t5, states: torch.Tensor, mask: torch.Tensor, repeat: int) -> None:  # type: ignore[no-untyped-def]
        self.step_graph = DecoderStepGraph(t5)
        self.mask = mask.repeat_interleave(repeat, 0)
        self.cross = [c.repeat_interleave(repeat, 0) for c in CrossGraph(t5)(states)]
        shape = (len(self.mask), t5.config.num_heads, 0, t5.config.d_kv)
        self.past = [torch.zeros(shape) for _ in self.cross]

    def step(self, tokens: np.ndarray) -> np.ndarray:
        logp, *self.past = self.step_graph(torch.from_numpy(tokens).view(-1, 1), self.mask, *self.past, *self.cross)
        return logp.numpy()

    def select(self, rows: np.ndarray) -> None:
        idx = torch.from_numpy(rows)
        self.past, self.cross, self.mask = [p[idx] for p in self.past], [c[idx] for c in self.cross], self.mask[idx]


@torch.inference_mode()
def test_numpy_search_reproduces_generate(tiny_model, texts):
    """Greedy and beam search over the exported step graph give generate's sequences, with the
    rescoring pass's log-probs."""
    t5, tok = tiny_model.t5, tiny_model.tokenizer
    assert check_step(t5) < 1e-4
    ids, mask = pad_batch(tiny_model.encode_inputs(texts[:12]), tok.pad_id, "cpu")
    states = t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    s = numpy_search.SearchSettings(tok.pad_id, tok.eos_id, max_new_tokens=12)
    for cfg, found in [
        (DecodingConfig(strategy="greedy", max_new_tokens=12), numpy_search.greedy(_TorchStepper(t5, states, mask, 1), 12, s)),
        (DecodingConfig(strategy="beam", num_beams=4, max_new_tokens=12), numpy_search.beam(_TorchStepper(t5, states, mask, 4), 12, 4, s)),
    ]:
        ref = TorchBackend(t5, tok.eos_id, tok.pad_id).generate(ids, mask, states, cfg, np.random.default_rng(0))
        assert found.tokens == ref.tokens, cfg.strategy
        np.testing.assert_allclose(found.logprob, ref.logprob, atol=1e-4)


@pytest.mark.parametrize("name", EXPORTED)
def test_export_reload_and_match_torch(exported: Path, texts: list[str], name: str):
    """Greedy: the same sequences as torch; beam: the same best sequence, label scores within tolerance."""
    info = read_export(exported, name)
    assert info.backend == name and info.weights == weight_files_digest(exported)
    fast, ref = XLGenModel.load(exported, backend=name), XLGenModel.load(exported, backend="torch")
    assert fast.backend is not None and fast.backend.name == name and ref.backend is None
    inputs = ref.encode_inputs(texts)
    tol = LOGPROB_TOL[name]
    for cfg in (DecodingConfig(strategy="greedy", max_new_tokens=16), DecodingConfig(strategy="beam", num_beams=5, max_new_tokens=16)):
        got, want = fast.candidates(inputs, cfg), ref.candidates(inputs, cfg)
        for g, w in zip(got, want, strict=True):
            assert g[0].labels == w[0].labels and g[0].n_tokens == w[0].n_tokens
            assert g[0].logprob == pytest.approx(w[0].logprob, abs=tol)
            gs, ws = label_scores(g, cfg.strategy), label_scores(w, cfg.strategy)
            assert max(abs(gs.get(x, 0.0) - ws.get(x, 0.0)) for x in set(gs) | set(ws)) < 10 * tol
        if cfg.strategy == "greedy":
            assert [[c.labels for c in g] for g in got] == [[c.labels for c in w] for w in want]


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_sampling_scores_are_exact_and_seeded(exported: Path, texts: list[str]):
    """Sampled sequences carry the model's own (unwarped) log-probs; a seed repeats them."""
    name = "onnxruntime"
    fast = XLGenModel.load(exported, backend=name)
    inputs = fast.encode_inputs(texts[:10])
    cfg = DecodingConfig(strategy="sample", num_samples=4, top_k=20, top_p=0.9, temperature=0.8, max_new_tokens=16, seed=3)
    got = fast.candidates(inputs, cfg)
    assert got == fast.candidates(inputs, cfg)
    t5, tok = fast.t5, fast.tokenizer
    ids, mask = pad_batch(inputs, tok.pad_id, "cpu")
    (backend,) = fast.backend.members
    gen = backend.generate(ids, mask, backend.encode(ids, mask), cfg, np.random.default_rng(0))
    width = max(len(t) for t in gen.tokens)
    seqs = torch.tensor([[tok.pad_id, *t] + [tok.pad_id] * (width - len(t)) for t in gen.tokens])
    with torch.inference_mode():
        states = t5.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        want, _ = sequence_logprobs(t5, states.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), seqs, tok.eos_id)
    np.testing.assert_allclose(gen.logprob, want.numpy(), atol=LOGPROB_TOL[name])


@pytest.mark.skipif(not installed("ctranslate2"), reason="ctranslate2 is not installed")
def test_auto_picks_an_export_and_falls_back_to_torch(exported: Path, texts: list[str]):
    xm = XLGenModel.load(exported)
    assert xm.backend is not None and xm.backend.name == "ctranslate2"  # the fastest present
    beam = DecodingConfig(strategy="beam", max_new_tokens=16)
    sample = DecodingConfig(strategy="sample", max_new_tokens=16)
    fastest = xm.backend.members[0]
    assert pick(xm.backend, xm.model, beam) is fastest
    # CTranslate2 samples too (seeded through a fresh translator per decoding call)
    assert pick(xm.backend, xm.model, sample) is fastest
    ct2 = XLGenModel.load(exported, backend="ctranslate2")
    assert ct2.backend is not None and pick(ct2.backend, ct2.model, sample) is ct2.backend.members[0]
    xm.model.train()  # MC dropout runs on torch
    assert pick(xm.backend, xm.model, beam) is None
    xm.model.eval()
    with torch.no_grad():  # weights updated in place (training): the export no longer matches
        next(xm.model.parameters()).add_(0.01)
    assert pick(xm.backend, xm.model, beam) is None
    assert len(xm.candidates(xm.encode_inputs(texts[:3]), beam)) == 3


@pytest.mark.skipif(not installed("ctranslate2"), reason="ctranslate2 is not installed")
def test_stale_export_is_refused_and_save_drops_exports(exported: Path, tmp_path: Path):
    path = tmp_path / "model"
    shutil.copytree(exported, path)
    xm = XLGenModel.load(path, backend="torch")
    with torch.no_grad():
        next(xm.t5.parameters()).mul_(1.5)
    xm.t5.save_pretrained(str(path))  # new weights under the old exports
    with pytest.raises(StaleExport):
        read_export(path, "ctranslate2")
    with pytest.raises(StaleExport):
        XLGenModel.load(path, backend="ctranslate2")
    assert XLGenModel.load(path).backend is None  # auto: torch, with a warning
    xm.save(path)
    assert not (path / "ct2").exists() and not (path / "onnx").exists()
    with pytest.raises(FileNotFoundError, match="xlgen export"):
        XLGenModel.load(path, backend="ctranslate2")


@pytest.mark.skipif(not installed("ctranslate2"), reason="ctranslate2 is not installed")
def test_export_command_writes_a_manifest(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert xlgen(["export", "--model", str(tiny_model_dir), "--backend", "ctranslate2", "--quantization", "int8"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["backend"] == "ctranslate2" and line["quantization"] == "int8" and line["compute_type"] == "auto"
    xm = XLGenModel.load(tiny_model_dir)  # int8 on the CPU
    assert xm.backend.describe() == "ctranslate2 (int8 on cpu)"
    preds = xm.predict(["thank you so much!", "this is awful"], DecodingConfig(max_new_tokens=16))
    assert all(p.labels for p in preds)


def test_backend_names_agree_with_the_service():
    from xlgen.service.settings import BACKENDS as SERVICE_BACKENDS

    assert SERVICE_BACKENDS == BACKENDS


@pytest.mark.parametrize("name", ["torch", *EXPORTED])
def test_service_tags_on_each_backend(exported: Path, tmp_path: Path, name: str):
    from tests.support import running, settings_for

    with running(settings_for(exported, tmp_path / "svc", backend=name)) as client:
        served = client.app.state.runtime.holder.current
        assert served.backend.startswith(name)
        assert client.get("/v1/model").json()["backend"] == served.backend
        r = client.post("/v1/tag", json={"texts": ["thank you so much!", "this is awful"]})
        assert r.status_code == 200, r.text
        assert all(item["labels"] for item in r.json()["results"])


@pytest.mark.parametrize("name", ["torch", *EXPORTED])
def test_select_on_each_backend(exported: Path, tiny_data: Path, tmp_path: Path, name: str):
    """The ensemble strategy (beam + sampling members, one MC-dropout member on torch); torch decodes
    the wide member set, the exports the default fast one."""
    pool = tmp_path / "pool.jsonl"
    write_jsonl(read_documents(tiny_data / "test.jsonl")[:8], pool)
    out = tmp_path / "next.jsonl"
    members = ["--members", "wide"] if name == "torch" else []
    rc = xlgen(["select", "--model", str(exported), "--pool", str(pool), "--strategy", "vote", "--mc-dropout", "1", *members,
                "--batch-size", "3", "--output", str(out), "--device", "cpu", "--backend", name])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rc == 0 and [r["rank"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("name", EXPORTED)
def test_encoder_cache_is_shared(exported: Path, texts: list[str], name: str):
    """A second decoding reads every encoder state from the cache (the ensemble's habit)."""
    xm = XLGenModel.load(exported, backend=name)
    inputs = xm.encode_inputs(texts[:6])
    cache: dict[int, torch.Tensor] = {}
    calls: list[int] = []
    (backend,) = xm.backend.members
    encode = backend.encode
    backend.encode = lambda ids, mask: calls.append(len(ids)) or encode(ids, mask)  # type: ignore[method-assign]
    first = decode(backend, xm.tokenizer, inputs, DecodingConfig(strategy="greedy", max_new_tokens=16), cache)
    second = decode(backend, xm.tokenizer, inputs, DecodingConfig(strategy="greedy", max_new_tokens=16), cache)
    assert calls == [6] and first == second and sorted(cache) == list(range(6))
    assert cache[0].shape == (len(inputs[0]), xm.t5.config.d_model)


def test_draw_follows_the_warpers():
    rng = np.random.default_rng(0)
    logp = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 2000, dtype=np.float32))
    assert set(numpy_search.draw(logp, rng, top_k=1).tolist()) == {0}
    assert set(numpy_search.draw(logp, rng, top_p=0.4).tolist()) == {0}
    assert set(numpy_search.draw(logp, rng, top_p=0.75).tolist()) == {0, 1}  # 0.5 + 0.3 covers 0.75
    assert set(numpy_search.draw(logp, rng, top_k=3).tolist()) == {0, 1, 2}
    shares = np.bincount(numpy_search.draw(logp, rng), minlength=4) / 2000
    np.testing.assert_allclose(shares, [0.5, 0.3, 0.15, 0.05], atol=0.04)
    cold = np.bincount(numpy_search.draw(logp, rng, temperature=0.25), minlength=4) / 2000
    assert cold[0] > 0.85


@pytest.mark.skipif(not installed("ctranslate2"), reason="ctranslate2 is not installed")
def test_lora_model_exports_merged(tiny_model, texts: list[str], tmp_path: Path):
    """A LoRA model is merged into its base on export and decodes as the adapter does under torch."""
    import copy
    from dataclasses import replace

    from xlgen.modeling import LoraSettings, apply_lora

    base = tmp_path / "base"
    tiny_model.t5.save_pretrained(str(base))
    peft_model = apply_lora(copy.deepcopy(tiny_model.t5), LoraSettings(r=4))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.2)  # LoRA starts as a no-op; make it count
    xm = XLGenModel(model=peft_model.eval(), tokenizer=tiny_model.tokenizer, label_space=tiny_model.label_space,
                    settings=replace(tiny_model.settings, lora=True, source=str(base)))
    xm.save(tmp_path / "model")
    export_model(tmp_path / "model", "ctranslate2", compute_type="float32")
    fast, ref = XLGenModel.load(tmp_path / "model", backend="ctranslate2"), XLGenModel.load(tmp_path / "model", backend="torch")
    assert ref.settings.lora and fast.backend.name == "ctranslate2"
    cfg = DecodingConfig(strategy="greedy", max_new_tokens=16)
    inputs = ref.encode_inputs(texts[:20])
    got, want = fast.candidates(inputs, cfg), ref.candidates(inputs, cfg)
    assert [g[0].labels for g in got] == [w[0].labels for w in want]
    np.testing.assert_allclose([g[0].logprob for g in got], [w[0].logprob for w in want], atol=LOGPROB_TOL["ctranslate2"])


@pytest.mark.skipif(not installed("ctranslate2"), reason="ctranslate2 is not installed")
def test_a_swapped_in_model_gets_the_served_backend(tiny_model_dir: Path):
    """What the service does before swapping in a retrained model: export what the served one ran on."""
    from xlgen.service.inference import ensure_export, load_served_model

    ensure_export(tiny_model_dir, "ctranslate2")
    created = read_export(tiny_model_dir, "ctranslate2").created
    ensure_export(tiny_model_dir, "ctranslate2")  # valid already: kept
    assert read_export(tiny_model_dir, "ctranslate2").created == created
    served = load_served_model(tiny_model_dir, device="cpu", threads=1)
    assert served.backend == "ctranslate2 (int8 on cpu)" and served.model.backend.names == ("ctranslate2",)


@pytest.mark.parametrize("name", EXPORTED)
def test_predict_command_on_each_backend(exported: Path, name: str, capsys: pytest.CaptureFixture[str]):
    assert xlgen(["predict", "--model", str(exported), "--backend", name, "--device", "cpu", "thank you so much!"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert row["labels"] and row["text"] == "thank you so much!"
