"""The core of an active-learning simulation: rounds of select, reveal, retrain, evaluate.

The labels of a labelled pool are hidden and revealed on request. From a seeded random initial set,
each round selects a batch (:func:`xlgen.active.selection.select_batch`), reveals its gold labels,
retrains and evaluates. Every strategy starts from the same initial set and the same first model.
How a model is trained and evaluated is the caller's (:class:`Learner`), so that this package
needs no training loop: ``xlgen.training.active_learning`` trains the generator; a model that needs no
gradient steps plugs in the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xlgen.active.selection import ScoreCache, SelectionConfig, select_batch
from xlgen.data import Document
from xlgen.progress import progress_bar


@dataclass(frozen=True)
class Learner:
    """How the simulated learner trains and is measured.

    Attributes:
        train: ``train(labelled documents, previous model or None, round) -> model``.
        evaluate: ``evaluate(model) -> {"micro_f1": ..., "macro_f1": ..., ...}`` on the test set.
        save: ``save(model, path)``; ``load(path)`` gives it back, so that every strategy starts from
            the same round-0 model (defaults: :meth:`xlgen.model.XLGenModel.save` / ``load``).
        load: See ``save``.
    """

    train: Callable[[list[Document], Any, int], Any]
    evaluate: Callable[[Any], dict[str, float]]
    save: Callable[[Any, Path], None] | None = None
    load: Callable[[Path], Any] | None = None


@dataclass(frozen=True)
class RoundsConfig:
    """The round schedule.

    Attributes:
        initial: Randomly labelled documents to start from.
        batch: Documents selected and revealed per round.
        rounds: Selection rounds.
        seed: Seed of the initial set.
        progress: Show a progress bar.
    """

    initial: int = 100
    batch: int = 100
    rounds: int = 3
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if min(self.initial, self.batch, self.rounds) < 1:
            raise ValueError("initial, batch and rounds must be positive")


def _save(model: Any, path: Path) -> None:
    model.save(path)


def _load(path: Path) -> Any:
    from xlgen.model import XLGenModel

    return XLGenModel.load(path)


def run_strategies(
    pool: Sequence[Document],
    strategies: Sequence[str],
    learner: Learner,
    selection: Callable[[str, int], SelectionConfig],
    rounds: RoundsConfig,
    round0_dir: Path,
) -> dict[str, list[dict]]:
    """Every strategy's curve for one seed: ``{strategy: [point per round]}``, round 0 shared.

    Args:
        pool: The labelled pool (labels are revealed as documents are selected).
        strategies: Acquisition function names.
        learner: Trains and evaluates.
        selection: ``selection(strategy, round) -> SelectionConfig`` of a round.
        rounds: The schedule.
        round0_dir: Where the shared round-0 model is kept while the strategies run.

    Each point: ``round``, ``labelled``, ``share``, ``train_s``, ``acq_s`` (what scoring the pool
    cost), ``n_scored``, ``selected`` (pool indices chosen in that round) and the learner's metrics.
    """
    if len(pool) < rounds.initial + rounds.batch * rounds.rounds:
        raise ValueError("the pool is smaller than initial + batch * rounds")
    save, load = learner.save or _save, learner.load or _load
    rng = np.random.default_rng(rounds.seed)
    initial = [int(i) for i in rng.choice(len(pool), rounds.initial, replace=False)]
    started = time.perf_counter()
    first = learner.train([pool[i] for i in initial], None, 0)
    point0 = {"round": 0, "labelled": len(initial), "share": len(initial) / len(pool), "train_s": time.perf_counter() - started,
              "acq_s": 0.0, "n_scored": 0, "selected": initial, **learner.evaluate(first)}
    save(first, round0_dir)
    cache = ScoreCache()  # round 0's model is shared, so strategies decode its pool once
    curves: dict[str, list[dict]] = {}
    bar = progress_bar(total=len(strategies) * rounds.rounds, desc=f"seed {rounds.seed}", disable=not rounds.progress)
    for name in strategies:
        model = load(round0_dir)
        labelled = list(initial)
        points = [dict(point0)]
        for r in range(1, rounds.rounds + 1):
            bar.set_description(f"seed {rounds.seed} {name} round {r}")
            taken = set(labelled)
            unlabelled = [i for i in range(len(pool)) if i not in taken]
            sel = select_batch(model, [pool[i] for i in unlabelled], selection(name, r), cache,
                               labelled=[pool[i] for i in labelled])
            chosen = [unlabelled[i] for i in sel.indices]
            labelled += chosen  # reveal the gold labels
            t0 = time.perf_counter()
            model = learner.train([pool[i] for i in labelled], model, r)
            points.append({"round": r, "labelled": len(labelled), "share": len(labelled) / len(pool),
                           "train_s": time.perf_counter() - t0, "acq_s": sel.seconds, "n_scored": sel.n_scored,
                           "selected": chosen, **learner.evaluate(model)})
            bar.update(1)
            bar.set_postfix(f1=f"{points[-1]['micro_f1']:.3f}")
        curves[name] = points
    bar.close()
    return curves
