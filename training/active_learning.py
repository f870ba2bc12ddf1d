"""Active-learning simulation of the generator: acquisition strategies against random on a labelled dataset.

The rounds themselves (select, reveal, retrain, evaluate) are :func:`xlgen.active.simulation.run_strategies`;
this module supplies the learner: a ``cpu``-preset generator retrained each round (continuing from the
last model, or from scratch) and evaluated on test. Several seeds give a spread.

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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from xlgen.active.acquisition import STRATEGIES
from xlgen.active.curves import plot, selection_stats, summarize
from xlgen.active.ensemble import MEMBER_SETS, MEMBER_SETS_HELP, EnsembleConfig
from xlgen.active.selection import SelectionConfig
from xlgen.active.simulation import Learner, RoundsConfig, run_strategies
from xlgen.config import opt
from xlgen.data import Document, find_split, read_documents
from xlgen.decoding import DecodingConfig
from xlgen.encoders.packaged import DEFAULT_ENCODER
from xlgen.evaluation import Evaluator
from xlgen.labels import LabelSpace
from xlgen.model import XLGenModel
from xlgen.modeling import PRESETS
from xlgen.progress import write
from xlgen.tokenizer import SentencePieceTokenizer, Tokenizer
from xlgen.training.config import DEFAULT_DATA, TrainConfig
from xlgen.training.guidance import refresh_guidance
from xlgen.training.train import build_model, fit

log = logging.getLogger("xlgen.active_learning")
RETRAIN = ("continue", "scratch")
LEARNERS = ("generator", "retriever")


@dataclass(frozen=True)
class SimulationConfig:
    """An active-learning simulation (``xlgen simulate-al``)."""

    data: str = opt(DEFAULT_DATA, "dataset folder holding train/dev/test splits")
    output_dir: str = opt("runs/al/goemotions", "folder for active_learning.json and active_learning.png")
    strategies: tuple[str, ...] = opt(("random", "margin", "vote", "beal_adapted", "beal"), "acquisition strategies (random is always added)")
    learner: str = opt("generator", "who learns each round: the generator (the cpu preset, retrained) or the retrieval model's retriever "
                       "stage (label retriever + calibrator refitted on the labelled documents: no gradient steps, so thousands of "
                       "pool documents and many rounds fit a CPU; strategies that read generated sequences do not apply)",
                       choices=LEARNERS)
    encoder: str = opt(DEFAULT_ENCODER, "retriever learner: the sentence encoder (default: the packaged all-MiniLM-L6-v2; a "
                       "sentence-transformers directory or hub name)")
    encoder_quantization: str = opt("int8", "retriever learner: the sentence encoder's CTranslate2 weights (float32 or int8)",
                                    choices=("float32", "int8"))
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
    members: str = opt("fast", MEMBER_SETS_HELP, choices=tuple(MEMBER_SETS))
    mc_passes: int = opt(10, "T of beal and bald: passes of the whole network with dropout on (the paper: 100)")
    full_data_steps: int = opt(300, "optimizer steps of the reference model trained on the whole pool; 0 skips it")
    threads: int | None = opt(1, "CPU threads for torch")
    progress: bool = opt(True, "show a progress bar per round")

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
        if self.retrain not in RETRAIN:
            raise ValueError(f"--retrain must be one of {', '.join(RETRAIN)}")
        if self.learner not in LEARNERS:
            raise ValueError(f"--learner must be one of {', '.join(LEARNERS)}")
        if self.learner == "retriever":
            from xlgen.active.selection import unsupported
            from xlgen.training.al_retriever import RetrieverStageModel

            refused = [s for s in self.strategies if unsupported(RetrieverStageModel, s)]  # type: ignore[arg-type]
            if refused:
                why = unsupported(RetrieverStageModel, refused[0])  # type: ignore[arg-type]
                raise ValueError(f"--learner retriever cannot run {', '.join(refused)}: {why}")
            if self.variant != "base":
                raise ValueError("--variant applies to the generator learner only")
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
        refresh_guidance(previous.guidance, docs)  # labels revealed since it was built (clusters: nearest centroid)
        xm = XLGenModel(previous.model, tok, label_space, previous.settings, previous.decoding, guidance=previous.guidance)
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
    learner = Learner(
        train=lambda docs, previous, r: train_model(cfg, tok, docs, dev, seed + r, work / "train",
                                                    previous=previous if cfg.retrain == "continue" else None),
        evaluate=lambda xm: evaluate(xm, test),
    )
    return run_strategies(pool, cfg.all_strategies, learner, selection_config(cfg, seed), rounds_config(cfg, seed), work / "round0")


def selection_config(cfg: SimulationConfig, seed: int) -> Callable[[str, int], SelectionConfig]:
    """``(strategy, round) -> SelectionConfig`` of one seed."""
    ensemble = EnsembleConfig(members=MEMBER_SETS[cfg.members], max_new_tokens=cfg.max_target_length, mc_dropout=cfg.mc_dropout,
                              mc_passes=cfg.mc_passes)
    return lambda name, r: SelectionConfig(strategy=name, batch_size=cfg.batch, diversity=cfg.diversity, pool_sample=cfg.pool_sample,
                                           drop_top=cfg.drop_top, seed=seed * 1000 + r, ensemble=ensemble)


def rounds_config(cfg: SimulationConfig, seed: int) -> RoundsConfig:
    return RoundsConfig(initial=cfg.initial, batch=cfg.batch, rounds=cfg.rounds, seed=seed, progress=cfg.progress)


def retriever_learner(cfg: SimulationConfig, pool: list[Document], dev: list[Document], test: list[Document]) -> tuple[Learner, dict[str, float]]:
    """The retriever-stage learner (:mod:`xlgen.training.al_retriever`) and its full-pool reference's test metrics.

    The encoder is loaded once and every text of the pool, dev and test is embedded once (through the
    on-disk cache) before the rounds; the reference is the same recipe fitted on the whole pool.
    """
    from xlgen.encoders import EmbeddingCache, EncoderConfig, RetrieverConfig, SentenceEncoder
    from xlgen.training.al_retriever import evaluate_stage_model, fit_stage_model

    encoder = SentenceEncoder.load(EncoderConfig(name=cfg.encoder, quantization=cfg.encoder_quantization))
    cache = EmbeddingCache()
    encoder.encode([d.text for d in [*pool, *dev, *test]], cache=cache, progress=cfg.progress)
    rcfg = RetrieverConfig(encoder=encoder.name, encoder_quantization=cfg.encoder_quantization)
    models: dict[str, Any] = {}
    learner = Learner(train=lambda docs, previous, r: fit_stage_model(docs, dev, encoder, cache, rcfg),
                      evaluate=lambda m: evaluate_stage_model(m, test),
                      save=lambda m, path: models.__setitem__(str(path), m), load=lambda path: models[str(path)])
    started = time.perf_counter()
    full = evaluate_stage_model(fit_stage_model(pool, dev, encoder, cache, rcfg), test) if cfg.full_data_steps else {}
    if full:
        full["train_s"] = time.perf_counter() - started
    return learner, full


def simulate(cfg: SimulationConfig) -> dict:
    """Runs the simulation, writes ``active_learning.json`` and ``.png``, and returns the JSON object."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool, dev, test = load_data(cfg)
    full: dict[str, float] = {}
    if cfg.learner == "retriever":
        learner, full = retriever_learner(cfg, pool, dev, test)
        runs = {seed: run_strategies(pool, cfg.all_strategies, learner, selection_config(cfg, seed),
                                     rounds_config(cfg, seed), out / "work" / "round0") for seed in cfg.seeds}
    else:
        tok = pool_tokenizer(cfg, pool)
        if cfg.full_data_steps:
            started = time.perf_counter()
            full = evaluate(train_model(replace(cfg, initial_steps=cfg.full_data_steps), tok, pool, dev, 0, out / "work" / "train"), test)
            full["train_s"] = time.perf_counter() - started
        runs = {seed: simulate_seed(cfg, seed, pool, dev, test, tok, out / "work") for seed in cfg.seeds}
    if full:
        write(f"full pool ({len(pool)} docs): test micro-F1 {full['micro_f1']:.4f}, macro-F1 {full['macro_f1']:.4f}")
    shutil.rmtree(out / "work", ignore_errors=True)
    curves = {name: {str(seed): runs[seed][name] for seed in cfg.seeds} for name in cfg.all_strategies}
    result = {
        "config": asdict(cfg),
        "pool_size": len(pool),
        "full_data": full,
        "curves": curves,
        "summary": summarize(curves, full.get("micro_f1"), full.get("macro_f1")),
        "selection": selection_stats(curves, [d.labels for d in pool]),
    }
    (out / "active_learning.json").write_text(json.dumps(result, indent=1))
    plot(result, out / "active_learning.png", title=Path(cfg.data).name)
    return result


