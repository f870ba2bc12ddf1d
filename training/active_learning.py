"""Active-learning simulation: acquisition strategies against random on a labelled dataset.

The labels of a training split are hidden and revealed on request: from a seeded random initial
set, each round selects a batch (:func:`xlgen.selection.select_batch`), reveals its gold labels,
retrains (continuing from the last model, or from scratch) and evaluates on test. Every strategy
of a seed starts from the same initial set and the same first model; several seeds give a spread.

A fixed random pool of ``pool_size`` training documents is shared by all seeds; its tokenizer is
trained once on the pool texts and the label names (both known before any annotation), so models
of every round and strategy share it and a model can continue from the last one.

Output (``output_dir``): ``active_learning.json`` (config, curves per strategy and seed, summary)
and ``active_learning.png`` (mean test micro-F1 against the share of the pool labelled, with the
min-max spread over seeds).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from clustering import assign_new_labels
from training.config import DEFAULT_DATA, TrainConfig
from training.train import build_model, fit
from xlgen.acquisition import STRATEGIES
from xlgen.config import opt
from xlgen.data import Document, find_split, read_documents
from xlgen.decoding import DecodingConfig
from xlgen.ensemble import EnsembleConfig
from xlgen.evaluation import Evaluator
from xlgen.labels import LabelSpace
from xlgen.model import XLGenModel
from xlgen.modeling import PRESETS
from xlgen.selection import ScoreCache, SelectionConfig, select_batch
from xlgen.tokenizer import SentencePieceTokenizer, Tokenizer

log = logging.getLogger("xlgen.active_learning")
RETRAIN = ("continue", "scratch")


@dataclass(frozen=True)
class SimulationConfig:
    """An active-learning simulation (``xlgen simulate-al``)."""

    data: str = opt(DEFAULT_DATA, "dataset folder holding train/dev/test splits")
    output_dir: str = opt("runs/al/goemotions", "folder for active_learning.json and active_learning.png")
    strategies: tuple[str, ...] = opt(("random", "margin", "vote", "beal"), "acquisition strategies (random is always added)")
    seeds: tuple[int, ...] = opt((0, 1), "seeds: each draws its own initial set and trains its own models")
    pool_size: int | None = opt(1000, "pool: a fixed random sample of this many train documents (all if not set)")
    initial: int = opt(100, "randomly labelled documents to start from")
    batch: int = opt(100, "documents selected and revealed per round")
    rounds: int = opt(3, "selection rounds")
    retrain: str = opt("continue", "continue from the last model, or train from scratch each round", choices=RETRAIN)
    preset: str = opt("cpu", "model shape", choices=tuple(PRESETS))
    variant: str = opt("base", "model variant; the 'cluster' strategy needs bcl or mcg (clusters come from the initial set, labels revealed later join their nearest cluster)", choices=("base", "bcl", "mcg"))
    vocab_size: int = opt(2000, "SentencePiece vocabulary of the pool tokenizer")
    max_input_length: int = opt(64, "input tokens per document")
    max_target_length: int = opt(32, "target tokens per document")
    initial_steps: int = opt(80, "optimizer steps of the first model and of every from-scratch retraining")
    round_steps: int = opt(40, "optimizer steps of each continued retraining")
    train_batch_size: int = opt(16, "documents per optimizer step")
    lr: float = opt(1e-2, "peak learning rate (Adafactor, as in training)")
    dev_size: int = opt(100, "dev documents (threshold tuning after each retraining)")
    test_size: int = opt(300, "test documents evaluated after each round")
    pool_sample: int | None = opt(None, "score only a random sample of this many unlabelled documents per round")
    diversity: bool = opt(False, "diverse batches: K-means over the best candidates' encoder embeddings")
    drop_top: float = opt(0.0, "drop this share of the most uncertain documents as likely noise")
    mc_dropout: int = opt(0, "extra MC-dropout members of the ensemble")
    full_data_steps: int = opt(300, "optimizer steps of the reference model trained on the whole pool; 0 skips it")
    threads: int | None = opt(1, "CPU threads for torch")
    progress: bool = opt(True, "show a progress bar per round")

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
        if self.retrain not in RETRAIN:
            raise ValueError(f"--retrain must be one of {', '.join(RETRAIN)}")
        if min(self.initial, self.batch, self.rounds, self.initial_steps, self.round_steps, self.dev_size, self.test_size) < 1:
            raise ValueError("initial, batch, rounds, steps, dev_size and test_size must be positive")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if "cluster" in self.strategies and self.variant == "base":
            raise ValueError("the cluster strategy needs --variant bcl or mcg")
        if self.pool_size is not None and self.pool_size < self.initial + self.batch * self.rounds:
            raise ValueError("the pool is smaller than initial + batch * rounds")

    @property
    def all_strategies(self) -> tuple[str, ...]:
        """The strategies, random first (always included)."""
        return ("random", *[s for s in self.strategies if s != "random"])


# ------------------------------------------------------------------------------------------- setup


def load_data(cfg: SimulationConfig) -> tuple[list[Document], list[Document], list[Document]]:
    """The pool (a fixed sample of train), and fixed samples of dev and test."""
    rng = np.random.default_rng(12345)

    def sample(docs: list[Document], n: int | None) -> list[Document]:
        if n is None or n >= len(docs):
            return docs
        return [docs[i] for i in np.sort(rng.choice(len(docs), n, replace=False))]

    split = {s: read_documents(find_split(cfg.data, s)) for s in ("train", "dev", "test")}
    return sample(split["train"], cfg.pool_size), sample(split["dev"], cfg.dev_size), sample(split["test"], cfg.test_size)


def pool_tokenizer(cfg: SimulationConfig, pool: Sequence[Document]) -> Tokenizer:
    """A SentencePiece model of the pool texts and each label name once (no label frequencies)."""
    names = sorted({x for d in pool for x in d.labels})
    return SentencePieceTokenizer.train([d.text for d in pool], names, vocab_size=cfg.vocab_size, seed=0)


def train_config(cfg: SimulationConfig, out: Path, steps: int, seed: int) -> TrainConfig:
    return TrainConfig(
        data=cfg.data, output_dir=str(out), preset=cfg.preset, vocab_size=cfg.vocab_size,
        max_input_length=cfg.max_input_length, max_target_length=cfg.max_target_length, max_steps=steps,
        eval_every=steps, batch_size=cfg.train_batch_size, lr=cfg.lr, dev_limit=50, seed=seed,
        resume=False, overwrite=True, progress=False, variant=cfg.variant,
    )


def train_model(
    cfg: SimulationConfig, tok: Tokenizer, docs: Sequence[Document], dev: Sequence[Document], seed: int, out: Path,
    previous: XLGenModel | None = None,
) -> XLGenModel:
    """Trains on ``docs`` (continuing ``previous`` if given), then tunes the threshold on ``dev``.

    Continuing keeps the weights and the shared tokenizer and refreshes the label space (train
    counts) from ``docs``.
    """
    steps = cfg.round_steps if previous is not None else cfg.initial_steps
    tcfg = train_config(cfg, out, steps, seed)
    label_space = LabelSpace.from_documents(docs)
    set_seed(seed)
    if previous is not None:
        if previous.clusters is not None:  # labels revealed since the clustering join their nearest cluster
            assign_new_labels(previous.clusters, docs, features_dir=previous.cluster_features)
        xm = XLGenModel(previous.model, tok, label_space, previous.settings, previous.decoding, clusters=previous.clusters,
                        cluster_features=previous.cluster_features, cluster_head=previous.cluster_head,
                        cluster_decoding=previous.cluster_decoding)
    else:
        clusters_dir = out.parent / f"clusters-{seed}"
        shutil.rmtree(clusters_dir, ignore_errors=True)  # never a clustering of another run
        xm = build_model(tcfg, tok, label_space, docs, work_dir=clusters_dir)
        xm.decoding = DecodingConfig(max_new_tokens=cfg.max_target_length)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fit(tcfg, xm, docs, dev, Accelerator(cpu=True))
    shutil.rmtree(out, ignore_errors=True)  # fit's best/ and checkpoint/: the model in memory is final
    xm.model.eval()
    xm.threshold = Evaluator(dev).run(xm, tune=True).metrics["threshold"]
    return xm


def evaluate(xm: XLGenModel, test: Sequence[Document]) -> dict[str, float]:
    m = Evaluator(test)(xm)
    return {"micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]}


# ---------------------------------------------------------------------------------------- simulate


def simulate_seed(
    cfg: SimulationConfig, seed: int, pool: list[Document], dev: list[Document], test: list[Document], tok: Tokenizer,
    work: Path,
) -> dict[str, list[dict]]:
    """Every strategy's curve for one seed: ``{strategy: [point per round]}``, round 0 shared."""
    rng = np.random.default_rng(seed)
    initial = [int(i) for i in rng.choice(len(pool), cfg.initial, replace=False)]
    started = time.perf_counter()
    first = train_model(cfg, tok, [pool[i] for i in initial], dev, seed, work / "train")
    point0 = {"round": 0, "labelled": cfg.initial, "share": cfg.initial / len(pool), "train_s": time.perf_counter() - started,
              "acq_s": 0.0, "n_scored": 0, **evaluate(first, test)}
    first.save(work / "round0")
    cache = ScoreCache()  # round 0's model is shared, so strategies decode its pool once
    ensemble = EnsembleConfig(max_new_tokens=cfg.max_target_length, mc_dropout=cfg.mc_dropout)
    curves: dict[str, list[dict]] = {}
    bar = tqdm(total=len(cfg.all_strategies) * cfg.rounds, desc=f"seed {seed}", disable=not cfg.progress)
    for name in cfg.all_strategies:
        xm = XLGenModel.load(work / "round0")
        labelled = list(initial)
        points = [dict(point0)]
        for r in range(1, cfg.rounds + 1):
            bar.set_description(f"seed {seed} {name} round {r}")
            taken = set(labelled)
            unlabelled = [i for i in range(len(pool)) if i not in taken]
            scfg = SelectionConfig(strategy=name, batch_size=cfg.batch, diversity=cfg.diversity, pool_sample=cfg.pool_sample,
                                   drop_top=cfg.drop_top, seed=seed * 1000 + r, ensemble=ensemble)
            sel = select_batch(xm, [pool[i] for i in unlabelled], scfg, cache)
            labelled += [unlabelled[i] for i in sel.indices]  # reveal the gold labels
            t0 = time.perf_counter()
            docs = [pool[i] for i in labelled]
            xm = train_model(cfg, tok, docs, dev, seed + r, work / "train", previous=xm if cfg.retrain == "continue" else None)
            points.append({"round": r, "labelled": len(labelled), "share": len(labelled) / len(pool),
                           "train_s": time.perf_counter() - t0, "acq_s": sel.seconds, "n_scored": sel.n_scored,
                           **evaluate(xm, test)})
            bar.update(1)
            bar.set_postfix(f1=f"{points[-1]['micro_f1']:.3f}")
        curves[name] = points
    bar.close()
    shutil.rmtree(work / "round0", ignore_errors=True)
    return curves


def simulate(cfg: SimulationConfig) -> dict:
    """Runs the simulation, writes ``active_learning.json`` and ``.png``, and returns the JSON object."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool, dev, test = load_data(cfg)
    tok = pool_tokenizer(cfg, pool)
    full: dict[str, float] = {}
    if cfg.full_data_steps:
        started = time.perf_counter()
        full = evaluate(train_model(replace(cfg, initial_steps=cfg.full_data_steps), tok, pool, dev, 0, out / "work" / "train"), test)
        full["train_s"] = time.perf_counter() - started
        tqdm.write(f"full pool ({len(pool)} docs): test micro-F1 {full['micro_f1']:.4f}")
    runs = {seed: simulate_seed(cfg, seed, pool, dev, test, tok, out / "work") for seed in cfg.seeds}
    shutil.rmtree(out / "work", ignore_errors=True)
    curves = {name: {str(seed): runs[seed][name] for seed in cfg.seeds} for name in cfg.all_strategies}
    result = {
        "config": asdict(cfg),
        "pool_size": len(pool),
        "full_data": full,
        "curves": curves,
        "summary": summarize(curves, full.get("micro_f1")),
    }
    (out / "active_learning.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "active_learning.png", title=Path(cfg.data).name)
    return result


# --------------------------------------------------------------------------------------- summarize


def area_under_curve(share: Sequence[float], f1: Sequence[float]) -> float:
    """Trapezoid area under micro-F1 against the labelled share, divided by the share's range (a mean F1)."""
    x, y = np.asarray(share, dtype=float), np.asarray(f1, dtype=float)
    if len(x) < 2 or x[-1] == x[0]:
        return float(y.mean()) if len(y) else 0.0
    return float(((y[1:] + y[:-1]) / 2 * np.diff(x)).sum() / (x[-1] - x[0]))


def deficiency(f1: Sequence[float], random_f1: Sequence[float], reference: float) -> float | None:
    """``sum_r (ref - F1_r) / sum_r (ref - F1_random_r)``: below 1 beats random (Zhang and Plank, 2021)."""
    den = float(np.sum(reference - np.asarray(random_f1)))
    return float(np.sum(reference - np.asarray(f1))) / den if den > 0 else None


def share_to_reach(share: Sequence[float], f1: Sequence[float], target: float) -> float | None:
    """The first labelled share whose F1 reaches ``target`` (``None``: never within the simulation)."""
    return next((float(s) for s, y in zip(share, f1, strict=True) if y >= target - 1e-12), None)


def summarize(curves: dict[str, dict[str, list[dict]]], full_f1: float | None) -> dict[str, dict]:
    """Per strategy: micro-F1 AUC (mean, std over seeds), macro-F1 AUC, deficiency against random, the
    shares needed to reach 95% and 100% of full-pool micro-F1 (on the seed-mean curve), and acquisition
    seconds per 1,000 scored documents."""
    f1s = {n: {s: [p["micro_f1"] for p in pts] for s, pts in by_seed.items()} for n, by_seed in curves.items()}
    best = max(max(max(v) for v in by_seed.values()) for by_seed in f1s.values())
    reference = max(full_f1 or 0.0, best)
    out: dict[str, dict] = {}
    for name, by_seed in curves.items():
        seeds = list(by_seed)
        share = [p["share"] for p in by_seed[seeds[0]]]
        aucs = [area_under_curve(share, f1s[name][s]) for s in seeds]
        defs = [deficiency(f1s[name][s][1:], f1s["random"][s][1:], reference) for s in seeds]
        mean = np.mean([f1s[name][s] for s in seeds], axis=0)  # (n_rounds + 1,)
        scored = sum(p["n_scored"] for s in seeds for p in by_seed[s])
        acq = sum(p["acq_s"] for s in seeds for p in by_seed[s])
        valid = [d for d in defs if d is not None]
        macro = [area_under_curve(share, [p["macro_f1"] for p in by_seed[s]]) for s in seeds if "macro_f1" in by_seed[s][0]]
        out[name] = {
            "auc_mean": float(np.mean(aucs)),
            "auc_std": float(np.std(aucs)),
            "final_f1_mean": float(mean[-1]),
            "macro_auc_mean": float(np.mean(macro)) if macro else None,
            "deficiency": float(np.mean(valid)) if valid else None,
            "share_to_95": share_to_reach(share, mean, 0.95 * full_f1) if full_f1 else None,
            "share_to_100": share_to_reach(share, mean, full_f1) if full_f1 else None,
            "acq_s_per_1000": 1000 * acq / scored if scored else 0.0,
        }
    return out


def format_table(result: dict, dataset: str = "") -> str:
    """The summary as a Markdown table."""
    def cell(v: float | None, pct: bool = False) -> str:
        if v is None:
            return "not reached" if pct else "-"
        return f"{100 * v:.0f}%" if pct else f"{v:.3f}"

    rows = ["| dataset | strategy | micro-F1 AUC (mean ± std) | final micro-F1 | macro-F1 AUC | deficiency vs random "
            "| share to 95% | share to 100% | acq. s / 1k docs |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name, s in result["summary"].items():
        rows.append(f"| {dataset} | {name} | {s['auc_mean']:.3f} ± {s['auc_std']:.3f} | {s['final_f1_mean']:.3f} | "
                    f"{cell(s.get('macro_auc_mean'))} | "
                    f"{cell(s['deficiency'])} | {cell(s['share_to_95'], True)} | {cell(s['share_to_100'], True)} | "
                    f"{s['acq_s_per_1000']:.1f} |")
    return "\n".join(rows)


def plot(result: dict, path: Path, title: str = "", ax=None) -> None:  # type: ignore[no-untyped-def]
    """Mean test micro-F1 per strategy against the labelled share, min-max over seeds shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_seed in result["curves"].items():
        seeds = list(by_seed)
        x = 100 * np.array([p["share"] for p in by_seed[seeds[0]]])
        y = np.array([[p["micro_f1"] for p in by_seed[s]] for s in seeds])  # (n_seeds, n_rounds + 1)
        ax.plot(x, y.mean(0), marker="o", label=name, linestyle="--" if name == "random" else "-")
        ax.fill_between(x, y.min(0), y.max(0), alpha=0.15)
    if result["full_data"]:
        ax.axhline(result["full_data"]["micro_f1"], color="grey", linestyle=":", label="full pool")
    ax.set_xlabel("labelled share of the pool (%)")
    ax.set_ylabel("test micro-F1")
    ax.set_title(title)
    ax.legend(fontsize=8)
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
