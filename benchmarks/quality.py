"""Quality of every model the project offers on one dataset, measured side by side in one run.

    python benchmarks/quality.py --dataset goemotions --epochs 3 --threads 2
    python benchmarks/quality.py --dataset stackexchange3 --epochs 3 --threads 2 --baseline-jobs 2
    python benchmarks/quality.py --dataset goemotions --epochs 1 --threads 1 --skip baseline generator --reuse --fusion-features counts document
    python benchmarks/quality.py --merge benchmarks/results/quality_*.json --output benchmarks/results/quality.json

Rows (test split, full; every threshold tuned on dev for micro-F1, at least one label per document):

* ``tfidf+logreg``: TF-IDF + one-vs-rest logistic regression (benchmarks/baselines.py);
* ``retriever: knn`` / ``label_text`` / ``linear``: each source of the label retriever alone (``linear``
  is the TF-IDF ⊕ encoder linear ranker: one-vs-rest LR up to 200 labels, the omikuji tree above);
* ``generator``: the ``cpu``-preset T5 alone (variant base), beam 5;
* ``guided generator``: the ``retrieval`` variant's generator, candidates in its input, its own beam mass;
* ``fused``: the ``retrieval`` variant as served: generator and retriever fused (its dev-tuned threshold);
* ``fused without generator``: the fusion's retriever stage alone on the same candidates;
* ``fused, generator stage features: F`` (``--fusion-features F ...``): the fused model with its generator stage
  refitted on dev with another feature set (same generator, same candidates; threshold on the refit's
  out-of-fold dev scores, as training does), and ``fused without generator, stage refitted on dev: F``, the
  same refit with the generator's features all zero (what the generator adds under the same calibration);
* ``generator on the sentence encoder`` / ``fused, generator on the sentence encoder``: the same rows for the
  ``sentence-encoder`` backbone (``xlgen train --backbone sentence-encoder``: the retriever's frozen encoder reads the
  document once for both; ``--encoder-generator-epochs``), with the dev gate's decision in ``gate_*`` columns; the
  retriever's rows come once, from whichever backbone trains first (both fit the same retriever);
* ``retriever stage``: with ``--skip retrieval encoder-generator`` and without ``--skip retriever``, the same retriever and
  retriever stage fitted without training a generator (each source alone, then the calibrated stage):
  the rows that a large dataset can afford when a generator epoch does not fit the time at hand.

Columns: micro/macro-F1, P@1, P@5, macro-F1 per train-count bucket of the labels (0, 1, 2-5, >5, and
1-5 together), train seconds (embedding included, cached embeddings make it smaller) and tagging
seconds per 1,000 test documents. Writes ``benchmarks/results/quality_<dataset>.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.baselines import tfidf_logreg  # noqa: E402
from benchmarks.data_dirs import dataset_dir  # noqa: E402
from benchmarks.provenance import stamped  # noqa: E402
from xlgen.data import Document, find_split, read_documents  # noqa: E402
from xlgen.decoding import cut  # noqa: E402
from xlgen.encoders.config import ENCODER_QUANTIZATIONS  # noqa: E402
from xlgen.fusion import GENERATOR_FEATURE_SETS, Fusion, fit_generator_stage  # noqa: E402
from xlgen.metrics import evaluate_predictions, macro_f1, tune_threshold  # noqa: E402

COLUMNS = ("micro_f1", "macro_f1", "p_at_1", "p_at_5", "macro_f1_tail_0", "macro_f1_tail_1", "macro_f1_tail_2_5",
           "macro_f1_tail_1_5", "macro_f1_tail_gt5")
HEADER = ("| dataset | model | micro-F1 | macro-F1 | P@1 | P@5 | macro 0 | macro 1 | macro 2-5 | macro 1-5 | macro >5 "
          "| train s | tag s / 1k docs |")


def metrics_of(gold: list[tuple[str, ...]], scores: list[dict[str, float]], threshold: float, counts: dict[str, int]) -> dict[str, float]:
    """The project's metrics at ``threshold``, plus macro-F1 over the labels seen 1-5 times in train."""
    pred = [[x for x, _ in cut(s, threshold, 1)] for s in scores]
    m = evaluate_predictions(gold, pred, scores, counts)
    tail = sorted({x for g in gold for x in g if 1 <= counts.get(x, 0) <= 5})
    m["macro_f1_tail_1_5"] = macro_f1(gold, pred, tail) if tail else float("nan")
    m["threshold"] = threshold
    return m


def tuned_row(name: str, model: str, dev: list[Document], dev_scores: list[dict[str, float]], test: list[Document],
              test_scores: list[dict[str, float]], counts: dict[str, int], threshold: float | None = None, **extra: float) -> dict:
    """A row scored at a threshold tuned on dev (or the one given)."""
    if threshold is None:
        threshold, _ = tune_threshold([d.labels for d in dev], dev_scores, 1)
    return {"dataset": name, "model": model, **metrics_of([d.labels for d in test], test_scores, threshold, counts), **extra}


def subset_row(row: dict, test: list[Document], test_scores: list[dict[str, float]], counts: dict[str, int], n: int) -> dict:
    """``row``'s model at its own threshold on the first ``n`` test documents."""
    gold = [d.labels for d in test[:n]]
    return {**row, "model": f"{row['model']} [first {n} test docs]",
            **metrics_of(gold, test_scores[:n], row["threshold"], counts)}


def ablation_of(item: str | None) -> dict[str, object]:
    """``FIELD=VALUE`` as a training option of the field's type (``{}`` for none)."""
    if item is None:
        return {}
    import dataclasses

    from xlgen.training.config import TrainConfig

    field, sep, value = item.partition("=")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if not sep or field not in fields:
        raise SystemExit(f"--encoder-generator-ablations: {item!r} is not FIELD=VALUE of a training option")
    default = fields[field].default
    if isinstance(default, bool):
        return {field: value.lower() in ("1", "true", "yes")}
    return {field: value if default is None else type(default)(value)}


def cell(v: object) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.3f}"
    return str(v)


def markdown(rows: list[dict]) -> str:
    lines = [HEADER, "|" + "---|" * (len(COLUMNS) + 4)]
    for r in rows:
        cells = " | ".join(cell(r.get(c, float("nan"))) for c in COLUMNS)
        lines.append(f"| {r['dataset']} | {r['model']} | {cells} | {r.get('train_s', float('nan')):.0f} | "
                     f"{cell(r.get('tag_s_per_1k', float('nan')))} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="goemotions, reuters21578, stackexchange3 (../shared/data) or a dataset folder")
    p.add_argument("--epochs", type=float, default=3.0, help="generator epochs, the same for every dataset")
    p.add_argument("--max-input-length", type=int, default=128, help="generator input tokens of the text")
    p.add_argument("--candidates-in-input", type=int, default=10, help="retrieval candidates appended to the guided input")
    p.add_argument("--suffix-tokens", type=int, default=48, help="tokens the candidates may take (added to the input length)")
    p.add_argument("--preset", default="cpu", help="generator shape (tiny: a smoke test)")
    p.add_argument("--max-steps", type=int, default=None, help="stop each training after this many steps (a smoke test)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--baseline-jobs", type=int, default=1, help="processes fitting TF-IDF + LR's per-label problems")
    p.add_argument("--baseline-solver", nargs="+", default=["liblinear"], choices=("liblinear", "lbfgs"),
                   help="TF-IDF + LR fitted by scikit-learn's liblinear (one label at a time, to convergence) and/or "
                        "by L-BFGS over blocks of labels (--baseline-iterations; minutes on thousands of labels)")
    p.add_argument("--baseline-iterations", type=int, default=100, help="L-BFGS iterations of the lbfgs baseline")
    p.add_argument("--first-test", type=int, default=0,
                   help="also report every model on the first N test documents (rows marked so), to compare with a "
                        "reference measured on that subset only")
    p.add_argument("--encoder-generator-epochs", type=float, default=None,
                   help="epochs of the generator on the sentence encoder (default: --epochs); its steps cost a fraction of the T5's")
    p.add_argument("--encoder-input-length", type=int, default=176,
                   help="token states of the text plus candidate tokens the sentence-encoder generator reads")
    p.add_argument("--skip", nargs="*", default=[], choices=("baseline", "generator", "retrieval", "retriever", "encoder-generator"),
                   help="rows to leave out (retriever: the generator-free retriever-stage rows, run only when "
                        "retrieval is skipped)")
    p.add_argument("--encoder-generator-ablations", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="also train the sentence-encoder generator with one training option changed per item (e.g. "
                        "decoder_init=random reader_layers=2), each with its own rows, the retriever's shared")
    p.add_argument("--encoder-quantization", default="float32", choices=ENCODER_QUANTIZATIONS,
                   help="the sentence encoder's CTranslate2 weights")
    p.add_argument("--reuse", action="store_true",
                   help="use the models a previous run left in --runs-dir instead of training them again (train_s: that run's)")
    p.add_argument("--fusion-features", nargs="*", default=[], choices=tuple(GENERATOR_FEATURE_SETS),
                   help="also refit the fused model's generator stage on dev with these feature sets (same generator, same "
                        "candidates) and report each as a row")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "quality"))
    p.add_argument("--output", help="JSON file (default: benchmarks/results/quality_<dataset>.json)")
    p.add_argument("--merge", nargs="+", help="merge result files into --output and print one table")
    args = p.parse_args()

    if args.merge:
        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())["rows"]]
        Path(args.output).write_text(json.dumps(stamped({"rows": rows}), indent=1))
        print(markdown(rows))
        return
    if not args.dataset:
        p.error("give --dataset (or --merge)")
    import torch

    from xlgen.labels import LabelSpace
    from xlgen.model import XLGenModel
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.dataset) if Path(args.dataset).is_dir() else dataset_dir(args.dataset)
    name = data.name
    train, dev, test = (read_documents(find_split(data, s)) for s in ("train", "dev", "test"))
    space = LabelSpace.from_documents(train)
    counts = space.train_counts()
    out = Path(args.output or ROOT / "benchmarks" / "results" / f"quality_{name}.json")
    rows: list[dict] = []

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(stamped({"args": vars(args), "rows": rows}), indent=1))
        print(markdown(rows), flush=True)

    def add(row: dict, test_scores: list[dict[str, float]]) -> None:
        rows.append(row)
        if args.first_test:
            rows.append(subset_row(row, test, test_scores, counts, args.first_test))

    if "baseline" not in args.skip:
        for solver in args.baseline_solver:
            base = tfidf_logreg(train, dev, test, n_jobs=args.baseline_jobs, solver=solver, max_iter=args.baseline_iterations)
            model = "tfidf+logreg" if solver == "liblinear" else f"tfidf+logreg (L-BFGS, {args.baseline_iterations} iterations)"
            add({"dataset": name, "model": model, "train_s": base["train_s"],
                 **metrics_of([d.labels for d in test], base["test_scores"], base["threshold"], counts)}, base["test_scores"])
            save()
    texts_dev, texts_test = [d.text for d in dev], [d.text for d in test]

    def common(**kw: object) -> TrainConfig:
        values: dict[str, object] = {"data": str(data), "epochs": args.epochs, "threads": args.threads, "overwrite": True, "preset": args.preset,
                                     "max_steps": args.max_steps, "encoder_quantization": args.encoder_quantization}
        return TrainConfig(**{**values, **kw})  # type: ignore[arg-type]  # kw wins (the sentence-encoder generator's epochs)

    def train(cfg: TrainConfig) -> float:
        """Trains (or with --reuse reads the model a previous run left) and returns the training seconds."""
        model_dir = Path(cfg.output_dir) / "model"
        if args.reuse and (model_dir / "xlgen.json").is_file():
            print(f"reusing {model_dir}", flush=True)
            return float(json.loads((Path(cfg.output_dir) / "train_s.json").read_text())["train_s"]) \
                if (Path(cfg.output_dir) / "train_s.json").is_file() else float("nan")
        started = time.time()
        run(cfg)
        seconds = time.time() - started
        (Path(cfg.output_dir) / "train_s.json").write_text(json.dumps({"train_s": seconds}))
        return seconds

    if "generator" not in args.skip:
        cfg = common(output_dir=f"{args.runs_dir}/{name}-generator", max_input_length=args.max_input_length)
        train_s = train(cfg)
        m = XLGenModel.load(Path(cfg.output_dir) / "model")
        t0 = time.time()
        pt = m.predict(texts_test, threshold=0.0)
        tag = 1000 * (time.time() - t0) / len(test)
        pdv = m.predict(texts_dev, threshold=0.0)
        add(tuned_row(name, f"generator ({args.preset} preset, beam 5)", dev, [p.all_scores for p in pdv], test,
                      [p.all_scores for p in pt], counts, m.threshold, train_s=train_s, tag_s_per_1k=tag), [p.all_scores for p in pt])
        save()

    def source_rows(cands_dev, cands_test, retriever) -> None:  # type: ignore[no-untyped-def]
        """One row per retriever source alone, each with its own threshold tuned on dev."""
        for source in cands_test.sources:
            label = {"linear": "retriever: linear (tfidf+encoder)"}.get(source, f"retriever: {source}")
            add(tuned_row(name, label, dev, cands_dev.source_scores(source), test, cands_test.source_scores(source),
                          counts, train_s=retriever.fit_seconds.get(source, float("nan"))), cands_test.source_scores(source))

    sources_done = False

    def retrieval_rows(cfg: TrainConfig, names: dict[str, str]) -> None:
        """Trains (or reuses) a ``retrieval`` model and adds its rows: each retriever source and the retriever stage
        (once per run: both backbones fit the same retriever), its generator alone, fused, and the refits."""
        nonlocal sources_done
        train_s = train(cfg)
        m = XLGenModel.load(Path(cfg.output_dir) / "model")
        g = m.guidance
        t0 = time.time()
        plan_test = m.plan(texts_test)
        retrieve_s = time.time() - t0
        gen_test = m.predict(texts_test, threshold=0.0, plan=plan_test, scoring="generator")
        generate_s = time.time() - t0 - retrieve_s
        fused_test = g.rescore(m, plan_test, [p.all_scores for p in gen_test])
        fuse_s = time.time() - t0 - retrieve_s - generate_s
        plan_dev = m.plan(texts_dev)
        gen_dev = m.predict(texts_dev, threshold=0.0, plan=plan_dev, scoring="generator")
        cands_test, cands_dev = plan_test.extra["candidates"], plan_dev.extra["candidates"]
        per_k = 1000 / len(test)
        gate = m.generator_gate.to_dict() if m.generator_gate is not None else {}
        if not sources_done:
            source_rows(cands_dev, cands_test, g.retriever)
            t0 = time.time()
            no_gen_test = [p.all_scores for p in m.predict(texts_test, threshold=0.0, scoring="retriever")]  # as the gate serves it
            stage_s = time.time() - t0
            no_gen_dev = [f.scores for f in g.rescore(m, plan_dev, None, use_generator=False)]
            add(tuned_row(name, "fused without generator (retriever stage)", dev, no_gen_dev, test, no_gen_test, counts,
                          tag_s_per_1k=per_k * stage_s), no_gen_test)
            sources_done = True
        add(tuned_row(name, names["generator"], dev, [p.all_scores for p in gen_dev], test, [p.all_scores for p in gen_test], counts,
                      train_s=train_s, tag_s_per_1k=per_k * (retrieve_s + generate_s)), [p.all_scores for p in gen_test])
        # the fused threshold as training tuned it: on the out-of-fold dev scores of the generator stage (the model's
        # own threshold is the retriever stage's where the dev gate turned the generator off)
        _, oof = fit_generator_stage(g.fusion, cands_dev, g.counts, [p.all_scores for p in gen_dev], [d.labels for d in dev],
                                     features=g.generator_features)
        fused_threshold, _ = tune_threshold([d.labels for d in dev], oof, m.decoding.min_labels)
        add(tuned_row(name, names["fused"], dev, [], test, [f.scores for f in fused_test], counts, fused_threshold, train_s=train_s, tag_s_per_1k=per_k * (retrieve_s + generate_s + fuse_s),
                      candidate_recall=float(m.metrics.get("test_candidate_recall", float("nan"))),
                      gate_serves_generator=float(gate.get("serve", True)),
                      gate_dev_gain_micro=gate.get("dev_fused", {}).get("micro_f1", float("nan")) - gate.get("dev_without", {}).get("micro_f1", float("nan"))),
            [f.scores for f in fused_test])
        # the generator stage refitted on dev with other features (threshold on its OOF scores), and the same refit
        # without the generator (its features all zero): what the generator adds under the same calibration
        for features in args.fusion_features:
            for label, gdev, gtest in ((f"{names['refit']}: {features}", [p.all_scores for p in gen_dev], [p.all_scores for p in gen_test]),
                                       (f"{names['without']}: {features}", [{} for _ in dev], [{} for _ in test])):
                stage, oof = fit_generator_stage(g.fusion, cands_dev, g.counts, gdev, [d.labels for d in dev], features=features)
                threshold, _ = tune_threshold([d.labels for d in dev], oof, m.decoding.min_labels)
                refit = Fusion(g.fusion.retriever, stage, g.fusion.top).fuse(cands_test, g.counts, gtest)
                add(tuned_row(name, label, dev, [], test, [f.scores for f in refit], counts, threshold), [f.scores for f in refit])
        save()

    if "encoder-generator" not in args.skip:
        for ablation in [None, *args.encoder_generator_ablations]:
            changed = ablation_of(ablation)
            tag = "" if ablation is None else f" [{ablation}]"
            retrieval_rows(common(output_dir=f"{args.runs_dir}/{name}-encoder-generator" + ("" if ablation is None else f"-{ablation}"),
                                  variant="retrieval", backbone="sentence-encoder",
                                  epochs=args.encoder_generator_epochs or args.epochs, max_input_length=args.encoder_input_length,
                                  candidates_in_input=args.candidates_in_input, **changed),
                           {"generator": f"generator on the sentence encoder (own beam mass){tag}",
                            "fused": f"fused, generator on the sentence encoder (as served, dev gate auto){tag}",
                            "refit": f"fused, generator on the sentence encoder{tag}, stage features",
                            "without": f"fused without the sentence-encoder generator{tag}, stage refitted on dev"})

    if "retrieval" not in args.skip:
        retrieval_rows(common(output_dir=f"{args.runs_dir}/{name}-retrieval", variant="retrieval", generator="always",
                              max_input_length=args.max_input_length + args.suffix_tokens, candidates_in_input=args.candidates_in_input),
                       {"generator": "guided generator (retrieval variant, own beam mass)", "fused": "fused (retrieval variant as served)",
                        "refit": "fused, generator stage features", "without": "fused without generator, stage refitted on dev"})

    if "retrieval" in args.skip and "encoder-generator" in args.skip and "retriever" not in args.skip:
        from xlgen.training.guidance import build_retrieval

        started = time.time()
        g = build_retrieval(common(output_dir=f"{args.runs_dir}/{name}-retriever", variant="retrieval"), train)
        fit_s = time.time() - started
        t0 = time.time()
        cands_test = g.retriever.score(texts_test)
        retrieve_s = time.time() - t0
        cands_dev = g.retriever.score(texts_dev)
        source_rows(cands_dev, cands_test, g.retriever)
        stage_test = [f.scores for f in g.fusion.fuse(cands_test, g.counts, None)]
        stage_dev = [f.scores for f in g.fusion.fuse(cands_dev, g.counts, None)]
        add(tuned_row(name, "fused without generator (retriever stage)", dev, stage_dev, test, stage_test, counts,
                      train_s=fit_s, tag_s_per_1k=1000 * retrieve_s / len(test)), stage_test)
        save()


if __name__ == "__main__":
    main()
