"""A model directory is a Hugging Face model directory: plain transformers (and peft) calls load it,
tokenize as xlgen does, and decode what ``xlgen predict`` decodes; older directories still load."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

from tests.conftest import shared_dataset
from xlgen.backends.torch_backend import generation_kwargs
from xlgen.data import read_documents, write_jsonl
from xlgen.decoding import DecodingConfig
from xlgen.digests import weight_files_digest
from xlgen.model import XLGenModel
from xlgen.modeling import build_from_preset
from xlgen.service.cli import main
from xlgen.tokenizer import (
    SEP,
    TASK_CLUSTERS,
    TASK_LABELS,
    SentencePieceTokenizer,
    Tokenizer,
    cluster_token,
    encode_input,
    encode_target,
    special_tokens,
)
from xlgen.training.config import TrainConfig
from xlgen.training.train import run

TIE = 1e-4  # score gap under which float noise between two batchings may reorder beams or cross the threshold

ODD_TEXTS = [
    "", " ", "  leading and trailing  ", "tab\tand\nnew line", "multi   space", "emoji 😀🙏🏽 and CJK 日本語テキスト",
    "ﬁ ligature ① ＡＢＣ fullwidth", "zero\u200bwidth", "bell\x07char", "\u00a0no-break\u00a0", "עברית ภาษาไทย",
    "!!!!! ..........", "C++ & C# <b>bold</b>",
]
CONTROL_LITERALS = ["</s> <pad> <unk> <0x41> literal control pieces", "<s>struck</s>", "a<pad>b"]
"""Texts that spell SentencePiece's control or byte pieces: encoded as text, as SentencePiece does,
when the vocabulary has their characters (see :mod:`xlgen.hf_tokenizer`)."""


def _texts(n_per_dataset: int = 400) -> list[str]:
    texts = []
    for name in ("goemotions", "stackexchange3", "reuters21578"):
        with gzip.open(shared_dataset(name) / "dev.jsonl.gz", "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"][:20_000] for line in itertools.islice(f, n_per_dataset)]
    return texts


def _labels() -> list[str]:
    labels = []
    for name in ("goemotions", "stackexchange3", "reuters21578"):
        labels += [line.split("\t")[0] for line in (shared_dataset(name) / "labels.txt").read_text().splitlines() if line]
    return labels


def assert_same_ids(tok: Tokenizer, hf, texts: list[str], labels: list[str], max_length: int) -> None:  # type: ignore[no-untyped-def]
    """The Hugging Face tokenizer encodes texts, task inputs and label targets to xlgen's ids and
    decodes them back alike."""
    assert len(hf) == len(tok)
    assert (hf.pad_token_id, hf.eos_token_id) == (tok.pad_id, tok.eos_id)
    for t in special_tokens(tok.n_cluster_tokens):
        assert hf.convert_tokens_to_ids(t) == tok.token_id(t), t
    for t in texts + labels:
        assert hf(t)["input_ids"] == tok.encode(t) + [tok.eos_id], t
        assert hf.decode(tok.encode(t)).strip() == tok.decode(tok.encode(t)).strip(), t
    for t in texts:
        for task in (TASK_LABELS, TASK_CLUSTERS):
            assert hf(task + t, truncation=True, max_length=max_length)["input_ids"] == encode_input(tok, t, max_length, task), t
    for k in range(0, len(labels) - 3, 3):
        group = labels[k : k + 3]
        assert hf(SEP.join(group))["input_ids"] == encode_target(tok, group), group
        assert hf(f" {SEP} ".join(group))["input_ids"] == encode_target(tok, group), group
    ids = [tok.token_id(cluster_token(0)), tok.sep_id, tok.token_id(cluster_token(tok.n_cluster_tokens - 1)), tok.eos_id]
    assert hf(f"{cluster_token(0)}{SEP}{cluster_token(tok.n_cluster_tokens - 1)}")["input_ids"] == ids
    assert [x.strip() for x in hf.decode(encode_target(tok, labels[:3])[:-1]).split(SEP)] == [
        tok.decode(tok.encode(x)).strip() for x in labels[:3]]


def parse(hf, ids: list[int]) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """The model card's parsing: up to eos, without padding, split at <sep>, stripped, each once."""
    ids = [i for i in itertools.takewhile(lambda i: i != hf.eos_token_id, ids) if i != hf.pad_token_id]
    return tuple(dict.fromkeys(x.strip() for x in hf.decode(ids).split(SEP) if x.strip()))


def assert_same_top_beam(xm: XLGenModel, hf_best: list[tuple[str, ...]], texts: list[str]) -> None:
    """Plain generate's sequence per text is the beam the same search ranks first (the highest
    log-probability per token among xlgen's returned beams), away from near-ties."""
    compared = 0
    for text, best, pred in zip(texts, hf_best, xm.predict(texts), strict=True):
        ranked = sorted(pred.candidates, key=lambda c: -c.norm_logprob)
        if len(ranked) > 1 and ranked[0].norm_logprob - ranked[1].norm_logprob < TIE:
            continue
        assert best == tuple(xm.canonical(x) for x in ranked[0].labels), text
        compared += 1
    assert compared >= 0.8 * len(texts)


def run_card_snippet(model_dir: Path, texts: list[str]) -> list[dict]:
    """Runs the model card's Python snippet, in the model directory, on ``texts``."""
    card = (model_dir / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)  # type: ignore[union-attr]
    code, n = re.subn(r"^texts = .*$", lambda _: f"texts = {texts!r}", code, count=1, flags=re.M)
    assert n == 1
    out = subprocess.run([sys.executable, "-c", code], cwd=model_dir, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def xlgen_predict(model_dir: Path, texts: list[str], capsys: pytest.CaptureFixture[str]) -> list[dict]:
    capsys.readouterr()
    assert main(["predict", "--model", str(model_dir), "--device", "cpu", "--backend", "torch", *texts]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def assert_same_predictions(got: list[dict], want: list[dict], threshold: float) -> None:
    assert [g["text"] for g in got] == [w["text"] for w in want]
    for g, w in zip(got, want, strict=True):
        a = {x["label"]: x for x in g["labels"]}
        b = {x["label"]: x for x in w["labels"]}
        for label in set(a) ^ set(b):  # only labels at the threshold may fall on either side of it
            assert abs((a.get(label) or b[label])["score"] - threshold) < TIE, (g, w)
        for label in set(a) & set(b):
            assert abs(a[label]["score"] - b[label]["score"]) <= TIE and a[label]["new"] == b[label]["new"]


# ------------------------------------------------------------------------------------------ preset


def test_preset_tokenizer_loads_with_auto_tokenizer_and_gives_xlgen_ids(tiny_model_dir: Path):
    xm = XLGenModel.load(tiny_model_dir)
    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert type(hf).__name__ == "TokenizersBackend" and hf.model_max_length == xm.settings.max_input_length
    assert_same_ids(xm.tokenizer, hf, _texts() + ODD_TEXTS, _labels(), xm.settings.max_input_length)
    # the default truncation cuts at the model's input length, eos kept
    long = " ".join(_texts(20))
    assert hf(TASK_LABELS + long, truncation=True)["input_ids"] == encode_input(xm.tokenizer, long, xm.settings.max_input_length)


def test_a_larger_sentencepiece_vocabulary_converts_exactly(tmp_path: Path):
    """More pieces, fewer byte fallbacks and more equal-scoring segmentations (``!!!!`` + ``!``)."""
    texts, labels = _texts(1000), _labels()
    tok = SentencePieceTokenizer.train(texts[::2], labels, vocab_size=4000, n_cluster_tokens=16)
    tok.save(tmp_path / "tok", max_length=128)
    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert all(tok.encode(c)[-1] not in tok.cluster_ids() and len(tok.encode(c)) <= 2 for c in "</>0x")  # in the vocabulary
    assert_same_ids(tok, hf, texts[1::2] + ODD_TEXTS + CONTROL_LITERALS, labels, 128)


def test_generation_config_holds_the_decoding_defaults(tiny_model_dir: Path):
    xm = XLGenModel.load(tiny_model_dir)
    config = GenerationConfig.from_pretrained(tiny_model_dir)
    kw = generation_kwargs(xm.decoding, xm.tokenizer.eos_id, xm.tokenizer.pad_id)
    assert {k: getattr(config, k) for k in kw if k != "num_return_sequences"} == {k: v for k, v in kw.items() if k != "num_return_sequences"}
    assert config.num_beams == 5 and config.max_new_tokens == xm.decoding.max_new_tokens and not config.do_sample
    assert config.num_return_sequences in (None, 1)  # plain generate returns one sequence per input
    assert AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).generation_config.num_beams == 5
    # sampling's top-k 0 is off, also when transformers fills in its defaults
    assert generation_kwargs(DecodingConfig(strategy="sample", top_k=0), 1, 0)["top_k"] == 0


def test_plain_generate_gives_the_top_beam_of_xlgen_predict(tiny_model_dir: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]):
    texts = [d.text for d in read_documents(tiny_data / "test.jsonl")][:30]
    hf = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        best = model.generate(**hf([TASK_LABELS + t for t in texts], truncation=True, padding=True, return_tensors="pt"))
    xm = XLGenModel.load(tiny_model_dir, backend="torch")
    assert_same_top_beam(xm, [parse(hf, row.tolist()) for row in best], texts)
    # the model card's snippet reproduces `xlgen predict`: labels, scores, the threshold, the new flags
    got = run_card_snippet(tiny_model_dir, texts[:10])
    assert_same_predictions(got, xlgen_predict(tiny_model_dir, texts[:10], capsys), xm.threshold)


def test_model_card_says_how_to_prompt_and_parse(tiny_model_dir: Path):
    xm = XLGenModel.load(tiny_model_dir)
    card = (tiny_model_dir / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: transformers" in front and "pipeline_tag: text2text-generation" in front
    for needle in (TASK_LABELS, SEP, "labels.json", f"{xm.threshold:.4g}", str(xm.settings.max_input_length),
                   "generation_config.json", "probability mass"):
        assert needle in card, needle


# -------------------------------------------------------------------------------- pretrained + LoRA


@pytest.fixture(scope="module")
def lora_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LoRA model over a local pretrained T5 whose SentencePiece tokenizer lacks xlgen's tokens (as a
    downloaded t5-small does), so that training adds them and resizes the embeddings."""
    import sentencepiece as spm

    data = tmp_path_factory.mktemp("lora_data")
    for split, n in (("train", 200), ("dev", 20), ("test", 20)):
        write_jsonl(read_documents(tiny_data / f"{split}.jsonl")[:n], data / f"{split}.jsonl")
    base = tmp_path_factory.mktemp("t5_base")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(d.text for d in read_documents(tiny_data / "train.jsonl")),
                                   model_writer=buf, vocab_size=500, model_type="unigram", pad_id=0, eos_id=1, unk_id=2,
                                   bos_id=-1, hard_vocab_limit=False, minloglevel=2)
    (base / "spiece.model").write_bytes(buf.getvalue())
    build_from_preset("tiny", 500, 0, 1).save_pretrained(str(base))
    out = tmp_path_factory.mktemp("lora_run")
    cfg = TrainConfig(data=str(data), output_dir=str(out), base_model=str(base), lora=True, lora_r=4, max_steps=4,
                      eval_every=4, batch_size=16, lr=5e-3, max_target_length=8, max_input_length=48, progress=False,
                      data_license="apache-2.0")
    return run(cfg).model_dir, base


def test_lora_directory_loads_with_peft_auto_class(lora_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from peft import AutoPeftModelForSeq2SeqLM

    model_dir, base = lora_run
    assert json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base.resolve())
    xm = XLGenModel.load(model_dir, backend="torch")
    assert len(xm.tokenizer) > AutoModelForSeq2SeqLM.from_pretrained(base).get_input_embeddings().weight.shape[0]  # resized
    hf = AutoTokenizer.from_pretrained(model_dir)
    texts = _texts(60)
    assert_same_ids(xm.tokenizer, hf, texts + ODD_TEXTS + CONTROL_LITERALS, _labels()[:300], xm.settings.max_input_length)

    model = AutoPeftModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    config = GenerationConfig.from_pretrained(model_dir)
    docs = texts[:6]
    with torch.no_grad():
        best = model.generate(**hf([TASK_LABELS + t for t in docs], truncation=True, padding=True, return_tensors="pt"),
                              generation_config=config)
    assert_same_top_beam(xm, [parse(hf, row.tolist()) for row in best], docs)
    card = (model_dir / "README.md").read_text()
    assert "library_name: peft" in card and "license: apache-2.0" in card and "AutoPeftModelForSeq2SeqLM" in card
    got = run_card_snippet(model_dir, docs[:3])
    assert_same_predictions(got, xlgen_predict(model_dir, docs[:3], capsys), xm.threshold)


# -------------------------------------------------------------------------------------- format 1


def to_format_1(model_dir: Path) -> None:
    """Rewrites a model directory in the layout of format 1: tokenizer in ``tokenizer/``, LoRA adapter
    in ``adapter/``, no model card, T5's own generation config (none beside an adapter)."""
    meta = json.loads((model_dir / "xlgen.json").read_text())
    (model_dir / "tokenizer").mkdir()
    for name in ("xlgen_tokenizer.json", "spiece.model", "tokenizer.json", "tokenizer_config.json"):
        if (model_dir / name).is_file():
            shutil.move(str(model_dir / name), model_dir / "tokenizer" / name)
    if meta["settings"]["lora"]:
        (model_dir / "adapter").mkdir()
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.move(str(model_dir / name), model_dir / "adapter" / name)
        (model_dir / "generation_config.json").unlink()
    else:
        config = json.loads((model_dir / "config.json").read_text())
        (model_dir / "generation_config.json").write_text(json.dumps(
            {"_from_model_config": True, "decoder_start_token_id": config["decoder_start_token_id"],
             "eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"], "use_cache": True}, indent=2))
    (model_dir / "README.md").unlink()
    meta["format_version"] = 1
    meta.pop("data_license", None)
    (model_dir / "xlgen.json").write_text(json.dumps(meta, indent=1))


def format_1_digest(model_dir: Path) -> str:
    """:func:`xlgen.digests.weight_files_digest` as format 1 computed it, for exports made then."""
    files = [model_dir / n for n in ("config.json", "generation_config.json")]
    files += sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
    files += sorted(p for p in (model_dir / "adapter").rglob("*") if p.is_file()) if (model_dir / "adapter").is_dir() else []
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.relative_to(model_dir).as_posix().encode())
            h.update(f.read_bytes())
    meta = json.loads((model_dir / "xlgen.json").read_text())
    h.update(json.dumps(meta.get("settings", {}).get("source", "")).encode())
    return h.hexdigest()[:24]


@pytest.mark.parametrize("kind", ["preset", "lora"])
def test_format_1_directories_still_load_and_keep_their_exports(kind: str, tiny_model_dir: Path, lora_run: tuple[Path, Path],
                                                                 tmp_path: Path):
    new = tiny_model_dir if kind == "preset" else lora_run[0]
    old = tmp_path / "old"
    shutil.copytree(new, old)
    to_format_1(old)
    assert not (old / "xlgen_tokenizer.json").exists() and (old / "tokenizer" / "xlgen_tokenizer.json").is_file()
    texts = _texts(2)
    a, b = XLGenModel.load(new, backend="torch"), XLGenModel.load(old, backend="torch")
    assert a.tokenizer.encode(texts[0]) == b.tokenizer.encode(texts[0]) and b.settings == a.settings
    assert [(p.labels, p.scores) for p in a.predict(texts)] == [(p.labels, p.scores) for p in b.predict(texts)]
    # an export made before format 2 keeps its digest, so it stays valid
    assert weight_files_digest(old) == format_1_digest(old)
    # saving again writes format 2
    b.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "xlgen.json").read_text())["format_version"] == 2
    assert AutoTokenizer.from_pretrained(tmp_path / "again")(texts[0])["input_ids"] == b.tokenizer.encode(texts[0]) + [b.tokenizer.eos_id]
    np.testing.assert_allclose([s for p in XLGenModel.load(tmp_path / "again").predict(texts) for s in p.scores],
                               [s for p in b.predict(texts) for s in p.scores], atol=1e-6)
