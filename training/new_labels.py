"""``xlgen simulate-new-labels``: cold-start active learning for labels added by name, measured.

K labels with at least ``min_train`` train documents are hidden from the train split; the rest are the
old labels. The hidden labels are then added by name only; the train documents are the pool whose
binary questions ("does this document carry label c?") are answered from the hidden gold labels. After
every ``step`` answers each new label's vector becomes the normalised mean of its name and its positives
(exactly what ``LabelRetriever.add_label(name, examples=positives)`` computes); an old label's vector is
its name plus its train documents (``--old-vectors prototype``, the replay of old pairs) or its name
alone. The test split is ranked against all labels: recall@10 of the new labels (on test documents that carry one) against the
number of answers, and recall@10 of the old labels before the new ones arrived and after (what the new
labels take from them). Orders: ``greedy`` (a new label uniformly at random, its best-ranked unasked
document) against ``random``. Writes ``new_labels.json``, ``new_labels.md`` and ``new_labels.png``.

With ``--fine-tune-at N [N ...]`` the bi-encoder itself also learns from the answers: at each N answers of
an order, a copy of the encoder is fine-tuned (in-batch negatives, :func:`xlgen.training.retriever.fine_tune_bi_encoder`)
on the (positive document, new label name) pairs found so far plus ``--replay`` (document, old label name)
pairs drawn from the old labels' train documents (the replay against forgetting; 0 turns it off), the pool
and the test split are embedded again with it, and the same recall@k is measured in that space
(``fine_tuned`` points of the run).

    xlgen simulate-new-labels --data ../shared/data/reuters21578 --output-dir runs/new_labels/reuters21578
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from xlgen.active.new_labels import ORDERS, candidate_questions, order_questions, recall_at_k, rocchio
from xlgen.config import add_arguments, from_arguments, opt
from xlgen.data import find_split, read_documents
from xlgen.encoders.config import ENCODER_QUANTIZATIONS
from xlgen.encoders.label_texts import label_name_text


@dataclass(frozen=True)
class NewLabelConfig:
    """Settings of the new-label simulation."""

    data: str = opt(None, "dataset folder with train and test splits (JSON Lines)")
    output_dir: str = opt("runs/new_labels", "where new_labels.json, .md and .png are written")
    hidden: int = opt(20, "labels hidden from train and added back by name")
    min_train: int = opt(20, "a hidden label has at least this many train documents")
    top_n: int = opt(100, "questions per new label: its most similar pool documents")
    answers: int | None = opt(None, "answers in all (default: every question)")
    step: int = opt(50, "answers between two evaluations (and prototype updates)")
    orders: tuple[str, ...] = opt(ORDERS, "question orders compared")
    seeds: tuple[int, ...] = opt((0, 1, 2), "seeds: each draws its hidden labels and its orders")
    encoder: str = opt("all-MiniLM-L6-v2", "sentence encoder (the packaged all-MiniLM-L6-v2, a directory or a hub name)")
    encoder_quantization: str = opt("float32", "the encoder's CTranslate2 weights on the CPU: float32 (the torch vectors) or int8 "
                                               "(about 1.8x faster; the quality benchmark's embeddings are shared through the cache)",
                                    choices=ENCODER_QUANTIZATIONS)
    old_vectors: str = opt("prototype", "old labels' vectors: 'prototype' (name + their train documents, as the new labels "
                           "get name + positives: the replay of old pairs) or 'name' (name only)", choices=("prototype", "name"))
    k: int = opt(10, "recall@k cut-off")
    max_test: int | None = opt(None, "use the first N test documents (default: all)")
    fine_tune_at: tuple[int, ...] = opt((), "answer counts at which the bi-encoder is fine-tuned on the positives so far "
                                            "(plus --replay old pairs) and measured again (slow: the pool is embedded again)")
    replay: int = opt(2000, "old (document, label) pairs replayed in each fine-tuning (0: none)")
    fine_tune_epochs: float = opt(1.0, "epochs of each bi-encoder fine-tuning")
    fine_tune_negatives: bool = opt(False, "with --fine-tune-at, the documents answered no are hard negatives of their "
                                           "label in each fine-tuning (the triplet label text, a positive, the rejected "
                                           "document), as the service's retraining uses them")
    negative_weight: float = opt(0.0, "weight of the documents answered no, subtracted from a new label's vector "
                                      "(Rocchio: mean(name, positives) - W * mean(negatives)); 0: not used")

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("--data is required")
        if self.hidden < 1 or self.min_train < 1 or self.top_n < 1 or self.step < 1 or self.k < 1:
            raise ValueError("--hidden, --min-train, --top-n, --step and --k must be positive")
        if self.answers is not None and self.answers < 1:
            raise ValueError("--answers must be positive")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.negative_weight < 0:
            raise ValueError("--negative-weight must not be negative")
        if any(n < 1 for n in self.fine_tune_at) or self.replay < 0 or self.fine_tune_epochs <= 0:
            raise ValueError("--fine-tune-at counts must be positive, --replay not negative, --fine-tune-epochs positive")
        for how in self.orders:
            if how not in ORDERS:
                raise ValueError(f"unknown order {how!r}; choose from {', '.join(ORDERS)}")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def old_label_vectors(cfg: NewLabelConfig, name_vecs: np.ndarray, old: list[str], train: list, pool: np.ndarray) -> np.ndarray:
    """The old labels' vectors: their names (``name_vecs``, one row per label of ``old``), plus with
    ``--old-vectors prototype`` their train documents (the hidden labels taken out), normalised."""
    if cfg.old_vectors != "prototype":
        return name_vecs
    out = name_vecs.copy()
    index = {x: j for j, x in enumerate(old)}
    for i, d in enumerate(train):
        for x in d.labels:
            if x in index:
                out[index[x]] += pool[i]
    return _unit(out)


def point(answers: int, positives: int, queries: np.ndarray, old_vecs: np.ndarray, new_vecs: np.ndarray, old: list[str],
          hidden: list[str], gold: list[set[str]], k: int) -> dict:
    """One point of a curve: the test split ranked against the old labels and the new labels' current
    vectors (``new_vecs``, normalised here), recall@k of each group."""
    all_vecs = np.concatenate([old_vecs, _unit(new_vecs)])  # (n_old + n_new, dim)
    scores = queries @ all_vecs.T  # (n_test, n_labels)
    labels = old + hidden
    return {"answers": answers, "positives": positives, "new_recall": recall_at_k(scores, labels, gold, set(hidden), k),
            "old_recall": recall_at_k(scores, labels, gold, set(old), k)}


def simulate_new_labels(cfg: NewLabelConfig, progress: bool = True) -> dict:
    """Runs the simulation; returns (and writes) the results."""
    from xlgen.encoders import EmbeddingCache, EncoderConfig, SentenceEncoder

    data = Path(cfg.data)
    train = read_documents(find_split(data, "train"))
    test = read_documents(find_split(data, "test"))[: cfg.max_test]
    counts = Counter(x for d in train for x in d.labels)
    eligible = sorted(x for x, c in counts.items() if c >= cfg.min_train)
    if len(eligible) < 2:
        raise ValueError(f"{data}: fewer than 2 labels with at least {cfg.min_train} train documents")
    encoder = SentenceEncoder.load(EncoderConfig(name=cfg.encoder, quantization=cfg.encoder_quantization))
    cache = EmbeddingCache()
    pool = encoder.encode([d.text for d in train], cache=cache, progress=progress)  # (n_pool, dim)
    queries = encoder.encode([d.text for d in test], cache=cache, progress=progress)  # (n_test, dim)
    names = sorted(counts)
    name_vecs = dict(zip(names, encoder.encode([label_name_text(x) for x in names], cache=cache), strict=True))
    gold_test = [set(d.labels) for d in test]
    runs = []
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        hidden = sorted(str(x) for x in rng.choice(eligible, min(cfg.hidden, len(eligible) - 1), replace=False))
        old = [x for x in names if x not in set(hidden)]
        old_vecs = old_label_vectors(cfg, np.stack([name_vecs[x] for x in old]), old, train, pool)  # (n_old, dim)
        before = recall_at_k(queries @ old_vecs.T, old, gold_test, set(old), cfg.k)
        new_names = np.stack([name_vecs[x] for x in hidden])  # (n_new, dim)
        questions = candidate_questions(pool @ _unit(new_names).T, hidden, cfg.top_n)
        for how in cfg.orders:
            seq = order_questions(questions, how, seed)[: cfg.answers]
            sums = new_names.copy()  # name + positives, normalised when scored
            n_pos = np.ones(len(hidden))
            neg, n_neg = np.zeros_like(new_names), np.zeros(len(hidden))  # the documents answered no
            found: list[tuple[str, int]] = []
            rejected: list[tuple[str, int]] = []
            curve = [point(0, 0, queries, old_vecs, sums, old, hidden, gold_test, cfg.k)]
            fine_tuned = []
            for n, (label, i) in enumerate(seq, 1):
                j = hidden.index(label)
                if label in train[i].labels:  # the annotator says yes
                    sums[j] += pool[i]
                    n_pos[j] += 1
                    found.append((label, i))
                else:
                    neg[j] += pool[i]
                    n_neg[j] += 1
                    rejected.append((label, i))
                if n % cfg.step == 0 or n == len(seq):
                    vecs = rocchio(sums, n_pos, neg, n_neg, cfg.negative_weight)
                    curve.append(point(n, len(found), queries, old_vecs, vecs, old, hidden, gold_test, cfg.k))
                if n in cfg.fine_tune_at:
                    fine_tuned.append(fine_tuned_point(cfg, seed, n, found, train, test, old, hidden, gold_test, pool, progress,
                                                       rejected if cfg.fine_tune_negatives else []))
            runs.append({"seed": seed, "order": how, "hidden": hidden, "old_recall_before": before, "curve": curve,
                         "fine_tuned": fine_tuned})
    result = {"config": asdict(cfg), "encoder": encoder.name, "n_pool": len(train), "n_test": len(test), "runs": runs}
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "new_labels.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "new_labels.md").write_text(format_table(result) + "\n")
    plot(result, out / "new_labels.png")
    return result


def fine_tuned_point(cfg: NewLabelConfig, seed: int, answers: int, found: list[tuple[str, int]], train: list, test: list,
                     old: list[str], hidden: list[str], gold_test: list[set[str]], base_pool: np.ndarray, progress: bool,
                     rejected: Sequence[tuple[str, int]] = ()) -> dict:
    """Fine-tunes a copy of the encoder on the positives ``found`` (label, pool index), ``cfg.replay`` old pairs and
    the hard negatives ``rejected`` (label, pool index answered no), embeds pool, test and label names with it, and
    measures recall@k there, old labels before and after the new ones arrive; ``drift`` is one minus the mean
    cosine between a pool document's vectors before (``base_pool``) and after."""
    import tempfile
    import time

    from xlgen.data import Document
    from xlgen.encoders import EncoderConfig, SentenceEncoder
    from xlgen.training.retriever import Answer, BiEncoderConfig, fine_tune_bi_encoder

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    old_set = set(old)
    old_pairs = [(i, x) for i, d in enumerate(train) for x in d.labels if x in old_set]
    replay = [old_pairs[j] for j in rng.choice(len(old_pairs), min(cfg.replay, len(old_pairs)), replace=False)] if cfg.replay else []
    docs = [Document(f"new{n}", train[i].text, (label,)) for n, (label, i) in enumerate(found)]
    docs += [Document(f"old{n}", train[i].text, (label,)) for n, (i, label) in enumerate(replay)]
    with tempfile.TemporaryDirectory(prefix="xlgen-new-labels-") as work:
        if len(docs) >= 2:
            path = fine_tune_bi_encoder(cfg.encoder, docs, BiEncoderConfig(output_dir=str(Path(work) / "encoder"),
                                                                           epochs=cfg.fine_tune_epochs, seed=seed),
                                        answers=[Answer(train[i].text, label, False) for label, i in rejected])
            encoder = SentenceEncoder.load(EncoderConfig(name=str(path), quantization=cfg.encoder_quantization))
        else:
            encoder = SentenceEncoder.load(EncoderConfig(name=cfg.encoder, quantization=cfg.encoder_quantization))
        pool = encoder.encode([d.text for d in train], progress=progress)  # no cache: a throw-away encoder
        queries = encoder.encode([d.text for d in test], progress=progress)
        names = encoder.encode([label_name_text(x) for x in old + hidden])
    old_vecs = old_label_vectors(cfg, names[: len(old)], old, train, pool)
    sums = names[len(old):].copy()
    for label, i in found:
        sums[hidden.index(label)] += pool[i]
    before = recall_at_k(queries @ old_vecs.T, old, gold_test, old_set, cfg.k)
    out = point(answers, len(found), queries, old_vecs, sums, old, hidden, gold_test, cfg.k)
    drift = float(1.0 - np.mean(np.sum(_unit(pool) * _unit(base_pool), axis=1)))
    out.update(old_recall_before=before, pairs=len(docs), replay=len(replay), hard_negatives=len(rejected), drift=drift,
               seconds=round(time.perf_counter() - started, 1))
    return out


def summary(result: dict) -> list[dict]:
    """Per order and answer count: mean and spread over seeds of new and old recall@k."""
    rows = []
    for how in result["config"]["orders"]:
        runs = [r for r in result["runs"] if r["order"] == how]
        for p in range(len(runs[0]["curve"])):
            pts = [r["curve"][p] for r in runs if p < len(r["curve"])]
            new = np.array([x["new_recall"] for x in pts])
            old = np.array([x["old_recall"] for x in pts])
            rows.append({"order": how, "answers": pts[0]["answers"], "positives": float(np.mean([x["positives"] for x in pts])),
                         "new_recall": float(new.mean()), "new_recall_std": float(new.std()), "old_recall": float(old.mean()),
                         "old_recall_before": float(np.mean([r["old_recall_before"] for r in runs]))})
    return rows


def format_table(result: dict) -> str:
    """A Markdown table of :func:`summary`."""
    k = result["config"]["k"]
    lines = [f"| order | answers | positives found | new labels recall@{k} | old labels recall@{k} (before: no new label) |",
             "|---|---|---|---|---|"]
    for r in summary(result):
        lines.append(f"| {r['order']} | {r['answers']} | {r['positives']:.1f} | {r['new_recall']:.3f} ± {r['new_recall_std']:.3f} "
                     f"| {r['old_recall']:.3f} ({r['old_recall_before']:.3f}) |")
    for r in fine_tuned_summary(result):
        negatives = ", no-answers as hard negatives" if result["config"].get("fine_tune_negatives") else ""
        lines.append(f"| {r['order']}, bi-encoder fine-tuned (replay {r['replay']}{negatives}) | {r['answers']} | {r['positives']:.1f} "
                     f"| {r['new_recall']:.3f} ± {r['new_recall_std']:.3f} | {r['old_recall']:.3f} ({r['old_recall_before']:.3f}) |")
    return "\n".join(lines)


def fine_tuned_summary(result: dict) -> list[dict]:
    """Per order and fine-tuning point: mean and spread over seeds (empty without ``--fine-tune-at``)."""
    rows = []
    for how in result["config"]["orders"]:
        runs = [r for r in result["runs"] if r["order"] == how and r.get("fine_tuned")]
        for p in range(min((len(r["fine_tuned"]) for r in runs), default=0)):
            pts = [r["fine_tuned"][p] for r in runs]
            new = np.array([x["new_recall"] for x in pts])
            rows.append({"order": how, "answers": pts[0]["answers"], "positives": float(np.mean([x["positives"] for x in pts])),
                         "new_recall": float(new.mean()), "new_recall_std": float(new.std()),
                         "old_recall": float(np.mean([x["old_recall"] for x in pts])),
                         "old_recall_before": float(np.mean([x["old_recall_before"] for x in pts])), "replay": pts[0]["replay"],
                         "seconds": float(np.mean([x["seconds"] for x in pts]))})
    return rows


def plot(result: dict, path: Path) -> None:
    """New labels' recall@k against answers per order (mean over seeds), old labels' recall dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary(result)
    fig, ax = plt.subplots(figsize=(6, 4))
    for how in result["config"]["orders"]:
        rs = [r for r in rows if r["order"] == how]
        x = [r["answers"] for r in rs]
        line = ax.plot(x, [r["new_recall"] for r in rs], marker="o", label=f"new labels, {how}")[0]
        ax.fill_between(x, [r["new_recall"] - r["new_recall_std"] for r in rs], [r["new_recall"] + r["new_recall_std"] for r in rs],
                        alpha=0.2, color=line.get_color())
        ax.plot(x, [r["old_recall"] for r in rs], linestyle="--", color=line.get_color(), label=f"old labels, {how}")
        tuned = [r for r in fine_tuned_summary(result) if r["order"] == how]
        if tuned:
            ax.plot([r["answers"] for r in tuned], [r["new_recall"] for r in tuned], marker="*", markersize=12, linestyle="none",
                    color=line.get_color(), label=f"new labels, {how}, bi-encoder fine-tuned")
    k = result["config"]["k"]
    ax.set_xlabel("binary answers")
    ax.set_ylabel(f"recall@{k}")
    ax.set_title(f"{Path(result['config']['data']).name}: {len(result['runs'][0]['hidden'])} labels added by name")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``xlgen simulate-new-labels``."""
    add_arguments(p, NewLabelConfig)


def cmd_simulate(args: argparse.Namespace) -> int:
    result = simulate_new_labels(from_arguments(NewLabelConfig, args))
    print(format_table(result))
    print(f"written to {args.output_dir}")
    return 0
