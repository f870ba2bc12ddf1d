"""The ``sentence-encoder`` backbone on a tiny sentence encoder: label pieces of the encoder's vocabulary,
embeddings started from the encoder's, one encoder pass per tagging call, training on the frozen token
states, save/load equality, and the dev gate."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from xlgen.backbone import TEXT, DecoderShape, build_generator, embedded_inputs, init_from_encoder, label_tokenizer
from xlgen.data import read_documents, write_jsonl
from xlgen.decoding import DecodingConfig
from xlgen.fusion import gate_generator
from xlgen.model import XLGenModel

ROOT = Path(__file__).resolve().parents[2]


def _source(tiny_encoder_dir: Path):  # type: ignore[no-untyped-def]
    from xlgen.backbone import encoder_tokenizer

    return encoder_tokenizer(str(tiny_encoder_dir))


def test_label_pieces_are_the_encoders_and_decode_back(tiny_encoder_dir: Path) -> None:
    src = _source(tiny_encoder_dir)
    labels = ["stock market", "oil price", "happy", "python code", "stock market", "crude2"]
    tok = label_tokenizer(src, [*labels, "oil-price"])  # "-" is not in the tiny encoder's vocabulary: its [UNK]
    vocab = tok.hf.get_vocab()
    assert (tok.pad_id, tok.eos_id) == (0, 1) and TEXT in vocab and tok.sep_id == vocab["<sep>"]
    pieces = {p for x in labels for p in src.tokenize(x)}
    assert set(vocab) - {"<pad>", "</s>", "<unk>", "<sep>", "<labels>", "<clusters>", TEXT} == pieces  # only what labels use
    for x in labels:  # the encoder's own pieces, and back to the label
        assert [tok.hf.convert_ids_to_tokens(i) for i in tok.encode(x)] == src.tokenize(x)
        assert tok.decode(tok.encode(x)) == x
    assert tok.hf.convert_ids_to_tokens(tok.encode("oil-price")) == ["oil", "<unk>", "price"]
    assert set(tok.hf.convert_ids_to_tokens(tok.encode("zebra"))) <= {"<unk>", "##r"}  # unused pieces do not exist


def test_piece_embeddings_start_from_the_encoders(tiny_encoder_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(tiny_encoder_dir), device="cpu")
    src = st.tokenizer
    tok = label_tokenizer(src, ["stock market", "happy"])
    t5 = build_generator(len(tok), 32, DecoderShape(1, 1, 2, 64), tok.pad_id, tok.eos_id)
    words = st[0].auto_model.get_input_embeddings().weight
    assert init_from_encoder(t5, tok, words, src) == 3  # stock, market, happy
    ours = t5.get_input_embeddings().weight
    for piece in ("stock", "market", "happy"):
        a, b = ours[tok.hf.convert_tokens_to_ids(piece)], words[src.convert_tokens_to_ids(piece)]
        assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9999  # same direction, T5's scale
    assert t5.lm_head.weight.data_ptr() == ours.data_ptr()  # tied: the output layer starts from them too


def test_a_t5_with_more_decoder_than_encoder_layers_decodes_every_strategy() -> None:
    """transformers sizes generate's cache by the encoder's layer count; the backend's own cache grows."""
    from xlgen.backends.torch_backend import TorchBackend

    t5 = build_generator(20, 32, DecoderShape(reader_layers=1, decoder_layers=2, num_heads=2, d_ff=64), 0, 1).eval()
    backend = TorchBackend(t5, 1, 0)
    ids = torch.randint(3, 20, (2, 5))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for cfg in (DecodingConfig(strategy="beam", num_beams=3, max_new_tokens=5), DecodingConfig(strategy="greedy", max_new_tokens=5),
                    DecodingConfig(strategy="sample", num_samples=3, max_new_tokens=5)):
            out = backend.generate(ids, mask, None, cfg, np.random.default_rng(0))
            assert len(out.tokens) == 2 * cfg.num_return


def test_embedded_inputs_cut_the_text_and_keep_the_candidates(tiny_encoder_dir: Path) -> None:
    tok = label_tokenizer(_source(tiny_encoder_dir), ["stock market", "happy"])
    states = [np.ones((9, 4), np.float32), np.ones((2, 4), np.float32)]
    suffix = [tok.sep_id, *tok.encode("happy")]
    a, b = embedded_inputs(tok, states, [suffix, []], max_length=6)
    text = tok.token_id(TEXT)
    assert a == [text] * 3 + suffix + [tok.eos_id] and a.states.shape == (3, 4)  # 6 ids: the text cut, not the candidates
    assert b == [text, text, tok.eos_id] and b.states.shape == (2, 4)


def test_the_gate_serves_the_generator_only_where_it_beats_the_same_calibration_without_it() -> None:
    gold = [("a",), ("b",), ("a", "b"), ("c",)] * 5
    good = [{"a": 0.9, "b": 0.1}, {"b": 0.9, "a": 0.1}, {"a": 0.8, "b": 0.7}, {"c": 0.9}] * 5
    poor = [{"a": 0.6, "b": 0.5}, {"a": 0.6, "b": 0.5}, {"a": 0.8, "b": 0.2}, {"a": 0.6, "c": 0.5}] * 5
    on = gate_generator("auto", gold, good, poor)
    assert on.serve and on.dev_fused["micro_f1"] > on.dev_without["micro_f1"] and "served" in on.reason
    off = gate_generator("auto", gold, poor, good)
    assert not off.serve and "does not earn" in off.reason
    assert not gate_generator("auto", gold, good, good).serve  # equal: not above the margin
    assert gate_generator("always", gold, poor, good).serve and not gate_generator("never", gold, good, poor).serve
    with pytest.raises(ValueError, match="gate"):
        gate_generator("sometimes", gold, good, poor)


def test_the_gate_serves_a_generator_that_helps_the_rare_labels_at_no_micro_cost() -> None:
    """The frequent label ``a`` is right either way; the rare ``r`` is found only with the generator, at two wrong
    ``r``: micro-F1 the same to 0.0002, macro-F1 +0.33. Served for the rare labels; not with a higher macro bar."""
    gold = [("a", "r")] * 2 + [("a",)] * 98
    with_gen = [{"a": 0.9, "r": 0.8}] * 4 + [{"a": 0.9}] * 96
    without = [{"a": 0.9}] * 100
    on = gate_generator("auto", gold, with_gen, without)
    assert on.dev_fused["macro_f1"] - on.dev_without["macro_f1"] > 0.3
    assert abs(on.dev_fused["micro_f1"] - on.dev_without["micro_f1"]) < 0.002
    assert on.serve and "rare labels" in on.reason
    off = gate_generator("auto", gold, with_gen, without, macro_margin=0.5)
    assert not off.serve and "nor macro-F1" in off.reason


# ------------------------------------------------------------------------------------- a trained model


def _data(root: Path) -> Path:
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 300), ("dev", 60), ("test", 60)):
        write_jsonl(read_documents(ROOT / "data" / "goemotions" / f"{split}.jsonl.gz")[:n], data / f"{split}.jsonl")
    return data


def _config(data: Path, out: Path, encoder: Path, **kw):  # type: ignore[no-untyped-def]
    from xlgen.training.config import TrainConfig

    return TrainConfig(data=str(data), output_dir=str(out), max_steps=16, eval_every=8, batch_size=16, lr=3e-2, max_target_length=16,
                       max_input_length=48, progress=False, variant="retrieval", backbone="sentence-encoder", encoder=str(encoder),
                       encoder_quantization="int8", candidates_in_input=4, reader_layers=1, decoder_layers=2, decoder_heads=2,
                       decoder_ff=64, **kw)


@pytest.fixture(scope="module")
def se_run(tiny_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    from xlgen.training.train import run

    root = tmp_path_factory.mktemp("backbone")
    mp = pytest.MonkeyPatch()
    mp.setenv("XLGEN_CACHE_DIR", str(root / "cache"))
    run(_config(_data(root), root / "run", tiny_encoder_dir, generator="always"))
    yield root
    mp.undo()


def test_trains_on_the_frozen_states_and_round_trips(se_run: Path) -> None:
    model_dir = se_run / "run" / "model"
    meta = json.loads((model_dir / "xlgen.json").read_text())
    assert meta["settings"]["backbone"] == "sentence-encoder" and meta["settings"]["source"].startswith("encoder:")
    assert meta["generator"]["serve"] is True and meta["generator"]["mode"] == "always"
    config = json.loads((model_dir / "config.json").read_text())
    assert (config["d_model"], config["num_layers"], config["num_decoder_layers"]) == (32, 1, 2)  # the encoder's width
    assert config["vocab_size"] < 120  # label pieces, not the encoder's whole vocabulary
    assert not (se_run / "run" / "checkpoint").exists()  # the token-state store went with the checkpoint
    m = XLGenModel.load(model_dir)
    m.decoding = DecodingConfig(max_new_tokens=8)
    texts = ["thank you so much!", "this is awful and I hate it"]
    preds = m.predict(texts)
    assert all(p.labels for p in preds) and all(set(p.labels) <= set(m.label_space.labels) for p in preds)
    m.save(se_run / "copy")
    again = XLGenModel.load(se_run / "copy")
    again.decoding = m.decoding
    assert [p.all_scores for p in again.predict(texts)] == [p.all_scores for p in preds]


def test_tagging_reads_each_document_once(se_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass of the sentence encoder gives the retriever its vectors and the generator its states."""
    from xlgen.encoders import SentenceEncoder

    m = XLGenModel.load(se_run / "run" / "model")
    m.decoding = DecodingConfig(max_new_tokens=8)
    calls: list[tuple[str, int]] = []
    real_states, real_encode = SentenceEncoder.encode_states, SentenceEncoder.encode

    def states(self, texts, **kw):  # type: ignore[no-untyped-def]
        calls.append(("encode_states", len(texts)))
        return real_states(self, texts, **kw)

    def encode(self, texts, **kw):  # type: ignore[no-untyped-def]
        calls.append(("encode", len(texts)))
        return real_encode(self, texts, **kw)

    monkeypatch.setattr(SentenceEncoder, "encode_states", states)
    monkeypatch.setattr(SentenceEncoder, "encode", encode)
    preds = m.predict(["thank you so much!", "this is awful", "what?"])
    assert calls == [("encode_states", 3)] and len(preds) == 3
    calls.clear()
    m.predict(["thank you so much!"], scoring="retriever")  # no generator: the vectors alone
    assert calls == [("encode", 1)]


def test_generated_labels_depend_on_the_text_states(se_run: Path) -> None:
    """The states are what the decoder reads: other states at the <text> positions change the beam's scores."""
    m = XLGenModel.load(se_run / "run" / "model")
    m.decoding = DecodingConfig(max_new_tokens=8)
    plan = m.plan(["thank you so much!"])
    inputs = m.encode_inputs(["thank you so much!"], plan=plan)
    a = m.candidates(inputs, m.decoding)
    inputs[0].states = np.zeros_like(inputs[0].states)
    b = m.candidates(inputs, m.decoding)
    assert [c.logprob for c in a[0]] != [c.logprob for c in b[0]]


def test_generator_never_serves_the_retriever_stage_alone(tiny_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from xlgen.backends import batching
    from xlgen.training.train import run

    monkeypatch.setenv("XLGEN_CACHE_DIR", str(tmp_path / "cache"))
    run(_config(_data(tmp_path), tmp_path / "run", tiny_encoder_dir, generator="never"))
    model_dir = tmp_path / "run" / "model"
    meta = json.loads((model_dir / "xlgen.json").read_text())
    assert meta["generator"]["serve"] is False and "retriever stage alone" in meta["generator"]["reason"]
    assert "retriever stage alone" in (model_dir / "README.md").read_text()
    log = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["generator_gate"]["serve"] for r in log if "generator_gate" in r] == [False]

    def no_decoding(*a, **kw):  # type: ignore[no-untyped-def]
        raise AssertionError("the generator ran")

    monkeypatch.setattr(batching, "decode", no_decoding)
    monkeypatch.setattr("xlgen.model.decode", no_decoding)
    m = XLGenModel.load(model_dir)
    preds = m.predict(["thank you so much!", "this is awful"])
    assert all(p.labels for p in preds) and all(set(p.sources[x]) <= {"knn", "label_text", "linear"} for p in preds for x in p.labels)
    assert m.threshold == meta["threshold"] and 0.0 < m.threshold < 1.0

    from tests.support import running, settings_for

    with running(settings_for(model_dir, tmp_path / "svc")) as c:  # /v1/model says what is served, and why
        info = c.get("/v1/model").json()
        assert info["backbone"] == "sentence-encoder" and info["generator"]["serve"] is False
        assert info["generator"]["mode"] == "never" and "retriever stage alone" in info["generator"]["reason"]
        r = c.post("/v1/tag", json={"texts": ["thank you so much!"]})
        assert r.status_code == 200 and r.json()["results"][0]["labels"], r.text


def test_the_model_cards_snippet_runs_with_plain_transformers(se_run: Path) -> None:
    """The card's code reads the text with sentence-transformers and generates with transformers alone."""
    import re
    import subprocess
    import sys

    model_dir = se_run / "run" / "model"
    card = (model_dir / "README.md").read_text()
    assert "inputs_embeds" in card and TEXT in card and "## Generator stage" in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)  # type: ignore[union-attr]
    out = subprocess.run([sys.executable, "-c", code], cwd=model_dir, capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    labels = set(json.loads((model_dir / "labels.json").read_text())["labels"])
    assert len(rows) == 2 and all(r["labels"] for r in rows)
    assert all(x["label"] in labels or x["new"] for r in rows for x in r["labels"])


def test_retraining_trains_the_same_backbone_and_shape(se_run: Path) -> None:
    import argparse

    from xlgen.config import from_arguments
    from xlgen.service.jobs import RetrainManager
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import add_arguments

    model_dir = se_run / "run" / "model"

    async def install(_: str) -> str:
        return ""

    def config(extra: str) -> TrainConfig:
        jobs = RetrainManager(None, se_run / "jobs", str(se_run / "data"), extra, lambda: 0.0, install,  # type: ignore[arg-type]
                              serving_path=lambda: str(model_dir))
        cmd = jobs._command(se_run / "jobs" / "j", {})
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        return from_arguments(TrainConfig, parser.parse_args(cmd[cmd.index("xlgen.training.train") + 1 :]))

    cfg = config("")
    assert (cfg.variant, cfg.backbone) == ("retrieval", "sentence-encoder")
    assert (cfg.reader_layers, cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ff) == (1, 2, 2, 64)  # the served shape, not the defaults
    cfg = config("--decoder-layers 3 --backbone t5")  # the operator's options win
    assert (cfg.backbone, cfg.decoder_layers) == ("t5", 3)
