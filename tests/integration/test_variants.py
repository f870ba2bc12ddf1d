"""The bcl and mcg variants end to end on the tiny preset: train, save, load, predict, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from xlgen.data import read_documents
from xlgen.decoding import DecodingConfig
from xlgen.evaluation import Evaluator
from xlgen.guidance.bcl import BCLGuidance
from xlgen.guidance.cluster import ClusterGuidance
from xlgen.guidance.mcg import MCGGuidance
from xlgen.model import XLGenModel
from xlgen.service.cli import main as cli
from xlgen.training.config import TrainConfig
from xlgen.training.guidance import Objective
from xlgen.training.train import Collator, run

TINY = dict(preset="tiny", max_steps=30, eval_every=30, batch_size=16, lr=3e-2, max_target_length=16, max_input_length=48,
            progress=False, n_clusters=4)


@pytest.fixture(scope="module", params=["bcl", "mcg"])
def variant_run(request: pytest.FixtureRequest, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param)
    run(TrainConfig(data=str(tiny_data), output_dir=str(out), variant=request.param, **TINY))  # type: ignore[arg-type]
    return request.param, out


def test_variant_trains_saves_and_reloads(variant_run: tuple[str, Path], tiny_data: Path) -> None:
    variant, out = variant_run
    model_dir = out / "model"
    assert (model_dir / "guidance" / "clusters.json").is_file() and (model_dir / "guidance" / "features").is_dir()
    assert not (out / "checkpoint").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["dev_cluster_micro_f1"] <= 1.0 and "test_micro_f1" in metrics
    m = XLGenModel.load(model_dir)
    g = m.guidance
    assert isinstance(g, ClusterGuidance) and m.settings.variant == variant == g.name and g.clusters.n_clusters == 4
    assert g.threshold == metrics["dev_cluster_threshold"]
    assert (g.head is not None) == (variant == "bcl")
    texts = ["thank you so much, this is wonderful", "why would anyone do that?"]
    m.decoding = DecodingConfig(max_new_tokens=12)
    if isinstance(g, MCGGuidance):
        g.decoding = DecodingConfig(max_new_tokens=8)
    preds = m.predict(texts)
    assert len(preds) == 2 and all(p.labels for p in preds)
    # save -> load gives the same model: same predictions, same head
    m.save(out / "copy")
    again = XLGenModel.load(out / "copy")
    again.decoding = m.decoding
    if isinstance(again.guidance, MCGGuidance):
        again.guidance.decoding = DecodingConfig(max_new_tokens=8)
    assert [p.all_scores for p in again.predict(texts)] == [p.all_scores for p in preds]
    assert isinstance(again.guidance, ClusterGuidance) and again.guidance.clusters.digest() == g.clusters.digest()
    if variant == "bcl":
        assert g.head is not None and again.guidance.head is not None
        for k, v in g.head.state_dict().items():
            torch.testing.assert_close(again.guidance.head.state_dict()[k], v)
        probs = m.plan(texts, report=True).cluster_probs
        assert probs is not None
        assert probs.shape == (2, 4) and ((probs > 0) & (probs < 1)).all()


@pytest.mark.parametrize("variant_run", ["mcg"], indirect=True)
def test_mcg_two_stage_inference(variant_run: tuple[str, Path], tiny_data: Path) -> None:
    variant, out = variant_run
    assert variant == "mcg"
    m = XLGenModel.load(out / "model")
    m.decoding = DecodingConfig(max_new_tokens=12)
    g = m.guidance
    assert isinstance(g, MCGGuidance)
    g.decoding = DecodingConfig(max_new_tokens=8)
    texts = ["thank you so much, this is wonderful", "why would anyone do that?"]
    clusters = g.above(g.cluster_probabilities(m, texts))
    assert len(clusters) == 2 and all(all(0 <= i < 4 for i in c) for c in clusters)
    assert any(clusters)  # an empty list is allowed (nothing generated), but not for every text
    # the label input ends with the predicted cluster tokens, then eos
    inputs = m.encode_inputs(texts)
    for ids, cs in zip(inputs, clusters, strict=True):
        assert ids[-1] == m.tokenizer.eos_id and ids[-1 - len(cs) : -1] == g.suffix(m, cs)
    # oracle: gold clusters appended
    docs = read_documents(tiny_data / "test.jsonl")[:12]
    oracle = Evaluator(docs, DecodingConfig(max_new_tokens=12), oracle_clusters=True)(m)
    assert 0.0 <= oracle["micro_f1"] <= 1.0 and "cluster_micro_f1" not in oracle
    gold = [g.clusters.clusters_of(d.labels) for d in docs]
    assert m.encode_inputs([d.text for d in docs], gold)[0][-1 - len(gold[0]) : -1] == g.suffix(m, gold[0])


def test_mcg_examples_and_bcl_batches(tiny_data: Path, tmp_path: Path) -> None:
    """mcg trains both tasks; a bcl batch carries multi-hot clusters; BCE adds to the loss."""
    from xlgen.labels import LabelSpace
    from xlgen.training.train import BucketBatchSampler, build_model, build_tokenizer, training_examples

    train = read_documents(tiny_data / "train.jsonl")[:40]
    for variant in ("mcg", "bcl"):
        cfg = TrainConfig(data=str(tiny_data), output_dir=str(tmp_path / variant), variant=variant, **TINY)  # type: ignore[arg-type]
        tok = build_tokenizer(cfg, train)
        xm = build_model(cfg, tok, LabelSpace.from_documents(train), train, tmp_path / variant / "clusters")
        examples = training_examples(xm, train)
        sampler = BucketBatchSampler([len(x.input_ids) for x in examples], 8, 0)
        collate = Collator(xm, train, examples, sampler, 0)
        g = xm.guidance
        assert isinstance(g, ClusterGuidance)
        if isinstance(g, MCGGuidance):
            assert len(examples) == 2 * len(train) and examples[len(train)].task == "clusters" and examples[len(train)].doc == 0
            batch = collate([0, len(train)])  # document 0 as label task, then as cluster task
            target = [t for t in batch["labels"][1].tolist() if t != -100]
            assert target == g.cluster_target(xm, g.clusters.clusters_of(train[0].labels))
            assert "clusters" not in batch
        else:
            assert isinstance(g, BCLGuidance)
            assert len(examples) == len(train)
            batch = collate([0, 1, 2])
            assert batch["clusters"].shape == (3, 4)
            assert batch["clusters"][0].tolist() == g.clusters.multi_hot(train[0].labels).tolist()
            xm.model.eval(), g.head.eval()
            with torch.no_grad():
                g.bcl_lambda = 0.0
                loss0, parts0 = Objective(xm.model, g)(**batch)
                g.bcl_lambda = 2.0
                loss2, parts2 = Objective(xm.model, g)(**batch)
            assert parts0["bce"] > 0
            assert loss2.item() == pytest.approx(parts2["xent"] + 2.0 * parts2["bce"], rel=1e-5)
            assert loss0.item() == pytest.approx(parts0["xent"], rel=1e-6)


def test_cluster_cli_then_train_with_it(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli(["cluster", "--data", str(tiny_data), "--output", str(tmp_path / "clusters"), "--n-clusters", "3"]) == 0
    assert '"clusters": 3' in capsys.readouterr().out
    out = tmp_path / "run"
    args = ["train", "--data", str(tiny_data), "--output-dir", str(out), "--variant", "mcg", "--clusters", str(tmp_path / "clusters"),
            "--preset", "tiny", "--max-steps", "2", "--batch-size", "16", "--max-input-length", "48", "--max-target-length", "16",
            "--no-progress"]
    assert cli(args) == 0
    m = XLGenModel.load(out / "model")
    assert isinstance(m.guidance, MCGGuidance) and m.guidance.clusters.n_clusters == 3
    assert cli(["evaluate", "--model", str(out / "model"), "--data", str(tiny_data), "--oracle-clusters", "--max-new-tokens", "8"]) == 0
    assert '"micro_f1"' in capsys.readouterr().out
    assert cli(["cluster", "--data", str(tiny_data), "--output", str(tmp_path / "x"), "--n-clusters", "1"]) == 2


def test_cluster_entropy_acquisition(variant_run: tuple[str, Path]) -> None:
    """``cluster`` ranks by the summed binary entropy of the cluster probabilities; it works on
    both guided variants and says why it cannot run on a base model."""
    import numpy as np

    from xlgen.active.acquisition import PoolOutputs, get_strategy
    from xlgen.active.selection import SelectionConfig, select_batch
    from xlgen.data import Document

    s = get_strategy("cluster")
    out = PoolOutputs(["a", "b", "c"], cluster_probs=np.array([[0.5, 0.5], [0.99, 0.01], [0.5, 0.01]]))
    scores = s.score(out)
    assert scores[0] == pytest.approx(2 * np.log(2)) and scores[0] > scores[2] > scores[1]
    _, run_dir = variant_run
    m = XLGenModel.load(run_dir / "model")
    m.decoding = DecodingConfig(max_new_tokens=8)
    if isinstance(m.guidance, MCGGuidance):
        m.guidance.decoding = DecodingConfig(max_new_tokens=8)
    pool = [Document(str(i), t) for i, t in enumerate(["I love it", "so sad today", "what?!", "thank you so much", "ok"])]
    sel = select_batch(m, pool, SelectionConfig(strategy="cluster", batch_size=2))
    assert len(sel.ids) == 2 and len(set(sel.ids)) == 2
    probs = m.plan([d.text for d in pool], report=True).cluster_probs
    expected = s.score(PoolOutputs([d.text for d in pool], cluster_probs=probs))
    assert sel.scores == pytest.approx(sorted(expected, reverse=True)[:2])


def test_cluster_strategy_needs_clusters(tiny_model: XLGenModel) -> None:
    from xlgen.active.selection import SelectionConfig, select_batch
    from xlgen.data import Document

    with pytest.raises(ValueError, match="label clusters"):
        select_batch(tiny_model, [Document("0", "hi"), Document("1", "yo")], SelectionConfig(strategy="cluster", batch_size=1))


def test_retraining_keeps_the_variant_and_places_new_labels(variant_run: tuple[str, Path], tiny_data: Path, tmp_path: Path) -> None:
    """The service retrains a guided model as the same variant over its clustering; a label first
    annotated after clustering joins its nearest cluster."""
    from xlgen.data import Document, write_jsonl
    from xlgen.service.jobs import RetrainManager
    from xlgen.training.train import main as train_main

    variant, run_dir = variant_run
    served = run_dir / "model"

    async def install(_: str) -> str:
        return ""

    jobs = RetrainManager(None, tmp_path, str(tiny_data), "--preset tiny --max-steps 2 --batch-size 16 --max-input-length 48 "
                          "--max-target-length 16", lambda: 0.0, install, serving_path=lambda: str(served))  # type: ignore[arg-type]
    cmd = jobs._command(tmp_path, {})
    assert cmd[cmd.index("--variant") + 1] == variant and cmd[cmd.index("--clusters") + 1] == str(served / "guidance")
    train = read_documents(tiny_data / "train.jsonl")
    grateful = [Document(f"n{d.id}", d.text, ["thankfulness"]) for d in train if "gratitude" in d.labels]
    write_jsonl(train + grateful, tmp_path / "train.jsonl")
    assert train_main(cmd[cmd.index("xlgen.training.train") + 1 :]) == 0
    m = XLGenModel.load(tmp_path / "run" / "model")
    base = XLGenModel.load(served)
    assert isinstance(m.guidance, ClusterGuidance) and isinstance(base.guidance, ClusterGuidance)
    assert m.settings.variant == variant and "thankfulness" in m.label_space
    new, old = m.guidance.clusters.assignment, base.guidance.clusters.assignment
    assert new["thankfulness"] == old["gratitude"]
    assert {k: v for k, v in new.items() if k != "thankfulness"} == old
    no_clusters = RetrainManager(None, tmp_path, str(tiny_data), "--variant base", lambda: 0.0, install,  # type: ignore[arg-type]
                                 serving_path=lambda: str(served))
    assert "--clusters" not in no_clusters._command(tmp_path, {})


def test_model_directory_format_1_still_loads(variant_run: tuple[str, Path], tmp_path: Path) -> None:
    """Directories saved before guidance became a component (``clusters/`` beside the weights,
    BCL's head at the root, settings under ``clusters`` in xlgen.json) load to the same model."""
    import shutil

    variant, run_dir = variant_run
    old = tmp_path / "old"
    shutil.copytree(run_dir / "model", old)
    meta = json.loads((old / "xlgen.json").read_text())
    guidance = meta.pop("guidance")
    (old / "guidance").rename(old / "clusters")
    legacy = {"threshold": guidance["threshold"], "decoding": guidance.get("decoding", {})}
    if variant == "bcl":
        (old / "clusters" / "cluster_head.safetensors").rename(old / "cluster_head.safetensors")
        legacy["head"] = guidance["head"]
    meta.update(format_version=1, clusters=legacy)
    (old / "xlgen.json").write_text(json.dumps(meta))
    m, again = XLGenModel.load(run_dir / "model"), XLGenModel.load(old)
    assert isinstance(again.guidance, type(m.guidance)) and isinstance(m.guidance, ClusterGuidance)
    assert isinstance(again.guidance, ClusterGuidance) and again.guidance.threshold == m.guidance.threshold
    assert again.guidance.features == old / "clusters" / "features"
    texts = ["thank you so much, this is wonderful", "why would anyone do that?"]
    for x in (m, again):
        x.decoding = DecodingConfig(max_new_tokens=8)
        if isinstance(x.guidance, MCGGuidance):
            x.guidance.decoding = DecodingConfig(max_new_tokens=8)
    assert [p.all_scores for p in again.predict(texts)] == [p.all_scores for p in m.predict(texts)]


def test_model_card_snippet_reproduces_predict(variant_run: tuple[str, Path], tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The card's plain-transformers code: the cluster head plays no part in bcl's labels; mcg runs
    its two stages (clusters from cluster_generation_config.json, then labels with their tokens)."""
    from tests.integration.test_hf_format import assert_same_predictions, run_card_snippet, xlgen_predict

    variant, out = variant_run
    model_dir = out / "model"
    assert (model_dir / "cluster_generation_config.json").is_file() == (variant == "mcg")
    texts = [d.text for d in read_documents(tiny_data / "test.jsonl")][:8]
    got = run_card_snippet(model_dir, texts)
    assert_same_predictions(got, xlgen_predict(model_dir, texts, capsys), XLGenModel.load(model_dir).threshold)
