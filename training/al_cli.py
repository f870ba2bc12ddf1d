"""Command-line glue of ``xlgen select`` and ``xlgen simulate-al``.

    xlgen select --model runs/goemotions/model --pool pool.jsonl --strategy vote --batch-size 200 --output next.jsonl
    xlgen simulate-al --data ../shared/data/goemotions --output-dir runs/al/goemotions --strategies random margin vote beal_adapted beal
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from xlgen.active.acquisition import STRATEGIES
from xlgen.active.curves import format_selection_table, format_table
from xlgen.active.ensemble import COMBINE, MEMBER_SETS, MEMBER_SETS_HELP, EnsembleConfig
from xlgen.backends import BACKENDS
from xlgen.config import add_arguments, from_arguments
from xlgen.data import read_documents
from xlgen.training.active_learning import SimulationConfig, simulate

# ------------------------------------------------------------------------------------------ select


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``xlgen select``."""
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--pool", required=True, help="JSON Lines file of unlabelled documents ({'id', 'text'})")
    p.add_argument("--output", help="ranked JSON Lines here (default: standard output)")
    p.add_argument("--labelled", help="JSON Lines of the documents labelled so far (coreset and dal compare the pool with them)")
    p.add_argument("--strategy", default="vote", choices=tuple(STRATEGIES), help="acquisition function")
    p.add_argument("--batch-size", type=int, default=None, help="documents to return (default: the whole pool, ranked)")
    p.add_argument("--diversity", action="store_true", help="K-means over the best candidates' encoder embeddings")
    p.add_argument("--pool-sample", type=int, default=None,
                   help="score only a seeded random sample of this many documents, drawn while the pool is streamed "
                        "(a reservoir: memory does not grow with the pool)")
    p.add_argument("--narrow", type=int, default=None,
                   help="retrieval models: keep per label only the N documents its retriever ranks highest, then score "
                        "those (after --pool-sample)")
    p.add_argument("--narrow-labels", nargs="+", default=(), help="narrow for these labels only (default: every label)")
    p.add_argument("--drop-top", type=float, default=0.0, help="drop this share of the most uncertain as likely noise")
    p.add_argument("--combine", default="vote", choices=COMBINE, help="how the ensemble members' label sets combine")
    p.add_argument("--mc-dropout", type=int, default=0, help="extra MC-dropout members of the ensemble")
    p.add_argument("--members", default="fast", choices=tuple(MEMBER_SETS), help=MEMBER_SETS_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of random scores, sub-sampling and K-means")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="inference backend: auto is the fastest valid export in the model directory (xlgen export), else torch")


def cmd_select(args: argparse.Namespace) -> int:
    """Writes one line per selected document: ``{"id", "rank", "score", "labels": [{"label", "score"}]}``.

    The pool is streamed (:func:`xlgen.active.stream.select_streaming`), except for the strategies that
    compare it with the labelled documents or pick their batch as a whole (``alps``); under ``accelerate
    launch`` / ``torch.distributed.run`` the processes share the narrowing and the scoring, and the first one
    writes the output.
    """
    import os

    from xlgen.devices import resolve_device

    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError("--batch-size must be positive")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    state = None
    device = resolve_device(args.device)
    if distributed:
        from accelerate import PartialState

        state = PartialState(cpu=device == "cpu")
        device = str(state.device)
    try:
        return _select(args, device, state, distributed)
    finally:  # every process tears its process group down before exit, rather than leave its threads to the interpreter's
        if state is not None:
            state.destroy_process_group()


def _select(args: argparse.Namespace, device: str, state: Any, distributed: bool) -> int:
    """:func:`cmd_select` on ``device``, sharing the work through ``state`` (accelerate's ``PartialState``) when given."""
    from xlgen.active.acquisition import get_strategy
    from xlgen.active.selection import SelectionConfig, select_batch
    from xlgen.active.stream import StreamConfig, select_streaming
    from xlgen.model import XLGenModel

    model = XLGenModel.load(args.model, device=device, backend=args.backend)
    ensemble = EnsembleConfig(members=MEMBER_SETS[args.members], combine=args.combine, mc_dropout=args.mc_dropout)
    cfg = SelectionConfig(strategy=args.strategy, batch_size=args.batch_size or 1, diversity=args.diversity,
                          pool_sample=args.pool_sample, drop_top=args.drop_top, seed=args.seed, ensemble=ensemble)
    strategy = get_strategy(args.strategy, args.seed)
    if strategy.uses_labelled or strategy.picks_batch:
        if args.narrow is not None or distributed:
            raise ValueError(f"--strategy {args.strategy} needs the whole pool at once (it compares it with the labelled "
                             "documents, or picks its batch as a whole): no --narrow, and one process")
        pool = read_documents(args.pool, require_labels=False)
        labelled = read_documents(args.labelled, require_labels=False) if args.labelled else []
        sel = select_batch(model, pool, replace(cfg, batch_size=args.batch_size or len(pool)), labelled=labelled)
        stats = {"pool": len(pool), "scored": sel.n_scored}
    else:
        stream = StreamConfig(sample=args.pool_sample, narrow=args.narrow, narrow_labels=tuple(args.narrow_labels))
        if args.batch_size is None:  # the whole (sampled, narrowed) pool, ranked
            cfg = replace(cfg, batch_size=10**12)
        sel, pool, stats = select_streaming(model, args.pool, cfg, stream, state)
    if state is not None and not state.is_main_process:
        return 0
    suggestions = sel.suggestions
    missing = [k for k, s in enumerate(suggestions) if not s]
    if missing:  # strategies that decode nothing: suggest the model's own prediction
        preds = model.predict([pool[sel.indices[k]].text for k in missing])
        for k, p in zip(missing, preds, strict=True):
            suggestions[k] = list(zip(p.labels, p.scores, strict=True))
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for rank, (i, score, labels) in enumerate(zip(sel.indices, sel.scores, suggestions, strict=True), 1):
            row = {"id": pool[i].id, "rank": rank, "score": round(score, 6),
                   "labels": [{"label": x, "score": round(s, 4)} for x, s in labels]}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in stats.items() if k.endswith("_s"))
    print(f"{len(sel.indices)} of {stats['pool']} documents ranked by {args.strategy} ({stats['scored']} scored"
          f"{', ' + timing if timing else ''}; {stats.get('processes', 1)} process(es))", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------- simulate


def add_simulate_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``xlgen simulate-al`` (one per :class:`SimulationConfig` field)."""
    add_arguments(p, SimulationConfig)


def cmd_simulate(args: argparse.Namespace) -> int:
    """Runs the simulation and prints the summary table."""
    cfg = from_arguments(SimulationConfig, args, seeds=tuple(int(s) for s in args.seeds))
    result = simulate(cfg)
    print(format_table(result, cfg.data.rstrip("/").rsplit("/", 1)[-1]))
    print(format_selection_table(result, cfg.data.rstrip("/").rsplit("/", 1)[-1]))
    print(f"curves: {cfg.output_dir}/active_learning.json, plot: {cfg.output_dir}/active_learning.png")
    return 0
