"""The cost curve from 10^3 to 10^6 labels: every component of the retriever stage and its use, per cell
of a grid of label counts and train sizes, on synthetic XMC corpora (benchmarks/synthetic.py).

    python benchmarks/scale.py                                   # the default grid, the table, the plot
    python benchmarks/scale.py --labels 1000 100000 --docs 100000 --encoder static
    python benchmarks/scale.py --report                          # table, exponents and plot from the saved cells

Each cell (labels L, train documents N) is run as stages, each in its own Python process, so that its
peak memory is its own: ``embed`` (train, dev, test and label texts through a cell-local embedding
cache), ``retriever`` (the retriever stage as ``xlgen train --variant retrieval`` fits it: each label
source fitted and scored leak free on train, the fusion's retriever stage fitted on those candidates,
the threshold tuned on dev, the stage saved), ``serve`` (the saved stage loaded as the service loads
it, test documents tagged, the next batch selected from the pool by ``label_entropy``) and
``generator`` (the generator's SentencePiece tokenizer trained on texts and label strings, its
corpus-statistics embedding initialisation over the label space, and timed optimizer steps, from which
an epoch's time is extrapolated and marked so). Within a stage, every component's peak resident memory
is measured alone (the kernel's high-water mark is reset before it, ``/proc/self/clear_refs``), so a
peak includes what the stage already held, as it would in the product.

A stage runs under the cell's caps (wall time and resident memory, stated in the table; the parent
polls the child's memory and stops it at the cap): the first component that exceeds one is named as
what breaks first, and the stages after it in that cell are not run. Results go to
``benchmarks/results/scale.json`` (every cell and component), ``scale.md`` (the table and the fitted
growth exponents: the slope of log cost on log labels at fixed documents, and on log documents at fixed
labels) and ``scale.png`` (log-log cost against labels and documents).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import SyntheticConfig, SyntheticCorpus  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("embed", "retriever", "serve", "generator")
COMPONENTS = ("embed", "knn", "label_text", "linear", "candidates", "fusion_fit", "dev_tuning", "save", "load", "tagging", "selection",
              "tokenizer", "generator_init", "generator_epoch")
"""Components in table order; each stage reports its own."""
TAG_DOCS = 1000
GENERATOR_STEPS = 20


# ------------------------------------------------------------------------------------------- in a stage


def _status_mb(field: str) -> float:
    m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) / 1024 if m else float("nan")


class Recorder:
    """Wall time and peak resident memory of each component of one stage process."""

    def __init__(self, path: Path) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.path = path
        path.write_text("")

    def _emit(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as fh:  # read by the parent, also after a kill
            fh.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)

    @contextmanager
    def component(self, name: str, **extra: Any) -> Iterator[dict[str, Any]]:
        self._emit({"start": name})  # the parent names the component a cap stopped
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts at the current size
        row: dict[str, Any] = {"rss_before_mb": round(_status_mb("VmRSS"))}
        started = time.perf_counter()
        yield row
        row.update(wall_s=round(time.perf_counter() - started, 3), peak_rss_mb=round(_status_mb("VmHWM")), **extra)
        self.rows[name] = row
        self._emit({"component": name, **row})

    def close(self) -> None:
        """Writes every row again, with what the stage added to them after their component ended."""
        for name, row in self.rows.items():
            self._emit({"component": name, **row})


def _dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def _docs(cell: Path, split: str) -> list[Any]:
    from xlgen.data import read_documents

    return read_documents(cell / "data" / f"{split}.jsonl")


def _pool(cell: Path) -> list[Any]:
    from xlgen.data import iter_jsonl

    return list(iter_jsonl(str(cell / "data" / "pool.jsonl"), require_labels=False))


def _encoder(cell: Path, name: str, threads: int) -> tuple[Any, Any]:
    """The encoder (its conversions in xlgen's cache, shared) and the cell's own embedding cache."""
    from xlgen.encoders import EmbeddingCache, EncoderConfig, SentenceEncoder

    return SentenceEncoder.load(EncoderConfig(name=name, threads=threads)), EmbeddingCache(cell / "cache")


def stage_embed(cell: Path, args: argparse.Namespace, rec: Recorder) -> None:
    from xlgen.encoders.label_texts import complete_label_texts
    from xlgen.labels import LabelSpace

    encoder, cache = _encoder(cell, args.encoder, args.threads)
    train, dev, test = (_docs(cell, s) for s in ("train", "dev", "test"))
    texts = [d.text for d in [*train, *dev, *test]]
    labels = [t for lt in complete_label_texts(LabelSpace.from_documents(train).labels, {}) for t in lt.texts()]
    with rec.component("embed", n_texts=len(texts) + len(labels)) as row:
        encoder.encode(texts, cache=cache)
        encoder.encode(labels, cache=cache)
    row["docs_per_s"] = round((len(texts) + len(labels)) / row_wall(row), 1) if row_wall(row) else None


def row_wall(row: dict[str, Any]) -> float:
    return float(row.get("wall_s") or 0.0)


def stage_retriever(cell: Path, args: argparse.Namespace, rec: Recorder) -> None:
    """The retriever stage as ``xlgen.training.guidance.build_retrieval`` fits it, one component at a time."""
    from xlgen.decoding import cut
    from xlgen.encoders import LabelRetriever, RetrieverConfig
    from xlgen.encoders.candidates import Candidates, merge_sources
    from xlgen.encoders.label_texts import complete_label_texts
    from xlgen.encoders.retriever import CHUNK_DOCS, label_matrix, label_vectors, train_fingerprint
    from xlgen.encoders.sources import SOURCES, TrainData
    from xlgen.fusion import Fusion, fit_retriever_stage
    from xlgen.labels import LabelSpace
    from xlgen.metrics import evaluate_predictions, tune_threshold

    encoder, cache = _encoder(cell, args.encoder, args.threads)
    train, dev = _docs(cell, "train"), _docs(cell, "dev")
    config = RetrieverConfig(encoder=encoder.name, encoder_quantization=encoder.numerics, jobs=args.threads)
    space = LabelSpace.from_documents(train)
    names = list(space.labels)
    texts = complete_label_texts(names, {})
    counts = {x: space.count(x) for x in names}
    vectors = encoder.encode([d.text for d in train], cache=cache)  # (n_train, dim), from the cache
    lvecs = label_vectors(encoder, texts, cache)  # (n_labels, dim)
    data = TrainData([d.text for d in train], vectors, label_matrix(train, names))
    sources = {}
    for name in config.sources:
        with rec.component(name):
            sources[name] = SOURCES[name](config)
            sources[name].fit(data, lvecs)
    # leak-free train candidates as LabelRetriever.score_train makes them, chunk by chunk (the linear source
    # cross-fits on its first call), each source's share of the time kept
    per_source = dict.fromkeys(sources, 0.0)
    with rec.component("candidates") as row:
        parts = []
        for a in range(0, len(train), CHUNK_DOCS):
            rows = np.arange(a, min(a + CHUNK_DOCS, len(train)))
            blocks = []
            for name, source in sources.items():
                started = time.perf_counter()
                blocks.append(source.score_train(data.texts[a : a + CHUNK_DOCS], vectors[rows], rows, config.candidates))
                per_source[name] += time.perf_counter() - started
            # code from before the label-text fix has no pair scores: its rows held every label
            known = [getattr(src, "pair_scores", lambda v: None)(vectors[rows]) for src in sources.values()]
            parts.append(merge_sources(names, list(sources), blocks, config.candidates, known))
        candidates = Candidates.concat(parts)
        row.update(candidate_rows=len(candidates.label_ids), **{f"{k}_s": round(v, 2) for k, v in per_source.items()})
    with rec.component("fusion_fit"):
        stage = fit_retriever_stage(candidates, [d.labels for d in train], counts)
    del candidates, parts
    retriever = LabelRetriever(config, encoder, texts, counts, lvecs, sources, train_fingerprint(train), cache)
    fusion = Fusion(stage, None, config.candidates)
    with rec.component("dev_tuning") as row:
        cands = retriever.score([d.text for d in dev])
        scores = [f.scores for f in fusion.fuse(cands, counts, None)]
        threshold, dev_f1 = tune_threshold([d.labels for d in dev], scores, 1)
        pred = [[x for x, _ in cut(s, threshold, 1)] for s in scores]
        m = evaluate_predictions([d.labels for d in dev], pred, scores, counts)
        row.update(dev_micro_f1=round(dev_f1, 4), dev_macro_f1=round(m["macro_f1"], 4), threshold=threshold)
    out = cell / "model"
    with rec.component("save") as row:
        retriever.save(out / "retriever")
        fusion.save(out / "fusion.json")
        (out / "stage.json").write_text(json.dumps({"threshold": threshold}))
    row["model_mb"] = _dir_mb(out)


def _stage_model(cell: Path) -> Any:
    from xlgen.encoders import LabelRetriever
    from xlgen.fusion import Fusion
    from xlgen.training.al_retriever import RetrieverStageModel

    retriever = LabelRetriever.load(cell / "model" / "retriever")
    threshold = json.loads((cell / "model" / "stage.json").read_text())["threshold"]
    return RetrieverStageModel(retriever, Fusion.load(cell / "model" / "fusion.json"), threshold)


def stage_serve(cell: Path, args: argparse.Namespace, rec: Recorder) -> None:
    """Start-up (the saved stage loaded as ``XLGenModel.load`` loads a retrieval model's guidance), tagging
    and next-batch selection."""
    from xlgen.active.selection import SelectionConfig, select_batch
    from xlgen.decoding import cut

    _encoder(cell, args.encoder, args.threads)  # the encoder's conversion or distillation made before the timing
    test = _docs(cell, "test")[:TAG_DOCS]
    pool = _pool(cell)
    with rec.component("load"):
        model = _stage_model(cell)
    texts = [d.text for d in test]
    model.embeddings(texts)  # tagging below measures the label scoring; the embed component measures the encoder
    with rec.component("tagging", n_docs=len(texts)) as row:
        scores = model.label_probabilities(texts)
        labels = [cut(s, model.threshold, 1) for s in scores]
    row["docs_per_s"] = round(len(texts) / row_wall(row), 1)
    row["labels_per_doc"] = round(float(np.mean([len(x) for x in labels])), 2)
    model.embeddings([d.text for d in pool])
    with rec.component("selection", n_pool=len(pool)) as row:
        sel = select_batch(model, pool, SelectionConfig(strategy="label_entropy", batch_size=100))
    row["docs_per_s"] = round(len(pool) / row_wall(row), 1)
    row["selected"] = len(sel.indices)


def stage_generator(cell: Path, args: argparse.Namespace, rec: Recorder) -> None:
    """The generator's label-dependent set-up, measured whole, and its optimizer steps, timed."""
    import torch

    from xlgen.initialization import init_embeddings
    from xlgen.labels import LabelSpace
    from xlgen.model import ModelSettings, XLGenModel
    from xlgen.modeling import PRESETS, build_from_preset
    from xlgen.tokenizer import SentencePieceTokenizer
    from xlgen.training.config import TrainConfig
    from xlgen.training.guidance import Objective
    from xlgen.training.train import BucketBatchSampler, Collator, build_optimizer, training_examples

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = _docs(cell, "train")
    space = LabelSpace.from_documents(train)
    cfg = TrainConfig()
    with rec.component("tokenizer"):
        tok = SentencePieceTokenizer.train([d.text for d in train], [x for d in train for x in d.labels],
                                           vocab_size=PRESETS[cfg.preset].vocab_size)
    with rec.component("generator_init", vocab=len(tok)):
        t5 = build_from_preset(cfg.preset, len(tok), tok.pad_id, tok.eos_id)
        init_embeddings(t5, train, tok, space.labels)
    xm = XLGenModel(t5, tok, space, ModelSettings(source=f"preset:{cfg.preset}", max_input_length=cfg.max_input_length,
                                                  max_target_length=cfg.max_target_length))
    examples = training_examples(xm, train)
    sampler = BucketBatchSampler([len(x.input_ids) for x in examples], cfg.batch_size, 0)
    collate = Collator(xm, train, examples, sampler, 0)
    objective = Objective(xm.model)
    optimizer = build_optimizer(cfg, xm.model)
    batches = iter(sampler)
    steps_per_epoch = len(sampler)

    def step() -> None:
        loss, _ = objective(**collate(next(batches)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    objective.train()
    step()  # the first step allocates the optimizer's state
    with rec.component("generator_epoch", steps_timed=GENERATOR_STEPS, steps_per_epoch=steps_per_epoch,
                       estimated=True) as row:
        for _ in range(GENERATOR_STEPS):
            step()
    per_step = row_wall(row) / GENERATOR_STEPS
    row.update(s_per_step=round(per_step, 4), steps_wall_s=row["wall_s"], wall_s=round(per_step * steps_per_epoch, 1))


STAGE_FUNCS: dict[str, Callable[[Path, argparse.Namespace, Recorder], None]] = {
    "embed": stage_embed, "retriever": stage_retriever, "serve": stage_serve, "generator": stage_generator}


# ------------------------------------------------------------------------------------------- the parent


def run_stage(stage: str, cell: Path, args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Runs one stage in a child process under the caps; returns its components and what broke (or None)."""
    import psutil

    cmd = [sys.executable, __file__, "--stage", stage, "--cell", str(cell), "--encoder", args.encoder,
           "--threads", str(args.threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    log = open(cell / f"{stage}.log", "w")  # noqa: SIM115 - closed below, after the child
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    child = psutil.Process(proc.pid)
    started, peak, broke = time.perf_counter(), 0.0, None
    while proc.poll() is None:
        time.sleep(0.25)
        try:
            rss = sum(p.memory_info().rss for p in [child, *child.children(recursive=True)]) / 2**20
        except psutil.NoSuchProcess:
            break
        peak = max(peak, rss)
        elapsed = time.perf_counter() - started
        if rss > args.memory_cap_gb * 1024 or elapsed > args.time_cap_s:
            broke = {"cap": "memory" if rss > args.memory_cap_gb * 1024 else "time", "rss_mb": round(rss),
                     "elapsed_s": round(elapsed)}
            proc.kill()
            proc.wait()
    log.close()
    records = cell / f"{stage}.jsonl"
    lines = records.read_text().splitlines() if records.is_file() else []
    rows: dict[str, dict[str, Any]] = {}
    running = None
    for line in lines:
        if line.startswith("{"):
            d = json.loads(line)
            if "start" in d:
                running = d["start"]
            else:
                rows[d.pop("component")] = d
                running = None
    if broke is None and proc.returncode != 0:
        tail = (cell / f"{stage}.log").read_text()[-800:]
        broke = {"cap": "error", "error": tail.strip().splitlines()[-1] if tail.strip() else f"exit {proc.returncode}"}
    if broke is not None:
        broke.update(stage=stage, component=running)
    return rows, broke


def run_cell(n_labels: int, n_docs: int, args: argparse.Namespace) -> dict[str, Any]:
    cell = Path(args.work) / f"{args.encoder}-L{n_labels}-N{n_docs}"
    cfg = SyntheticConfig(n_labels=n_labels, n_train=n_docs, n_dev=args.dev, n_test=TAG_DOCS, n_pool=args.pool)
    if not (cell / "data" / "synthetic.json").is_file() or json.loads((cell / "data" / "synthetic.json").read_text()) != \
            json.loads(json.dumps(cfg.__dict__)):
        started = time.perf_counter()
        SyntheticCorpus(cfg).write(cell / "data")
        print(f"  data written in {time.perf_counter() - started:.0f} s", flush=True)
    out: dict[str, Any] = {"labels": n_labels, "docs": n_docs, "encoder": args.encoder, "threads": args.threads,
                           "tag": args.tag, "caps": {"memory_gb": args.memory_cap_gb, "time_s_per_stage": args.time_cap_s},
                           "components": {}, "broke": None}
    for stage in args.stages:
        print(f"  {stage} ...", flush=True)
        rows, broke = run_stage(stage, cell, args)
        out["components"].update(rows)
        if broke is not None:
            out["broke"] = broke
            print(f"  broke: {broke}", flush=True)
            break
    return out


def _load_results(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["cells"] if path.is_file() else []


def _key(c: dict[str, Any]) -> tuple:
    return (c["labels"], c["docs"], c["encoder"], c.get("tag", ""))


def fit_exponents(cells: list[dict[str, Any]], axis: str, fixed: str) -> dict[str, dict[str, float]]:
    """Per component, the least-squares slope of log wall time on log ``axis`` at each value of ``fixed``
    with at least two cells; the value at the largest such ``fixed`` is reported."""
    out: dict[str, dict[str, float]] = {}
    for comp in COMPONENTS:
        by: dict[int, list[tuple[float, float]]] = {}
        for c in cells:
            row = c["components"].get(comp)
            if row and row.get("wall_s", 0) > 0:
                by.setdefault(c[fixed], []).append((c[axis], row["wall_s"]))
        usable = {k: v for k, v in by.items() if len({x for x, _ in v}) >= 2}
        if usable:
            k = max(usable)
            x, y = np.log10([p[0] for p in usable[k]]), np.log10([p[1] for p in usable[k]])
            out[comp] = {"exponent": round(float(np.polyfit(x, y, 1)[0]), 2), fixed: k, "points": len(x)}
    return out


def markdown(cells: list[dict[str, Any]]) -> str:
    cols = [c for c in COMPONENTS if any(c in x["components"] for x in cells)]
    head = "| encoder | labels | train docs | " + " | ".join(cols) + " | model MB | tagging docs/s | breaks first |"
    lines = [head, "|" + "---|" * (len(cols) + 6)]
    for c in sorted(cells, key=lambda c: (c.get("tag", ""), c["encoder"], c["labels"], c["docs"])):
        comp = c["components"]
        cells_txt = []
        for k in cols:
            r = comp.get(k)
            cells_txt.append("-" if r is None else f"{r['wall_s']:.1f} s / {r['peak_rss_mb'] / 1024:.1f} G"
                             + ("*" if r.get("estimated") else ""))
        broke = c.get("broke")
        why = "-" if broke is None else f"{broke.get('component') or broke['stage']} ({broke['cap']})"
        size = comp.get("save", {}).get("model_mb", "-")
        tag = comp.get("tagging", {}).get("docs_per_s", "-")
        name = c["encoder"] + (f" ({c['tag']})" if c.get("tag") else "")
        lines.append(f"| {name} | {c['labels']:,} | {c['docs']:,} | " + " | ".join(cells_txt) + f" | {size} | {tag} | {why} |")
    return "\n".join(lines)


def exponents_markdown(cells: list[dict[str, Any]]) -> str:
    by_labels, by_docs = fit_exponents(cells, "labels", "docs"), fit_exponents(cells, "docs", "labels")
    lines = ["| component | exponent in labels | at train docs | exponent in train docs | at labels |", "|---|---|---|---|---|"]
    for comp in COMPONENTS:
        a, b = by_labels.get(comp), by_docs.get(comp)
        if a or b:
            at_docs = f"{a['docs']:,}" if a else "-"
            at_labels = f"{b['labels']:,}" if b else "-"
            lines.append(f"| {comp} | {a['exponent'] if a else '-'} | {at_docs} | {b['exponent'] if b else '-'} | {at_labels} |")
    return "\n".join(lines)


def plot(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, axis, fixed in ((axes[0], "labels", "docs"), (axes[1], "docs", "labels")):
        values = [c[fixed] for c in cells]
        if not values:
            continue
        # the fixed value with the most cells along the axis
        k = max(set(values), key=lambda v: (len({c[axis] for c in cells if c[fixed] == v}), v))
        for comp in COMPONENTS:
            pts = sorted((c[axis], c["components"][comp]["wall_s"]) for c in cells
                         if c[fixed] == k and comp in c["components"] and c["components"][comp]["wall_s"] > 0)
            if len(pts) >= 2:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=comp)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(axis)
        ax.set_ylabel("wall time (s)")
        ax.set_title(f"cost against {axis} ({fixed} = {k:,})")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


DOCS = ROOT / "docs" / "scale.md"
MARKERS = ("<!-- scale.py table -->\n", "<!-- /scale.py table -->\n")
"""docs/scale.md's generated part lies between these lines; the plot goes to docs/assets/results/scale.png."""


def report(cells: list[dict[str, Any]], out: Path, docs: Path = DOCS) -> str:
    """Writes the table and exponents (``out`` with ``.md``), the plot (``.png``), and both into ``docs``."""
    import shutil

    current = [c for c in cells if not c.get("tag")]
    text = markdown(cells) + "\n\n" + exponents_markdown(current) + "\n"
    out.with_suffix(".md").write_text(text)
    plot(current, out.with_suffix(".png"))
    if docs.is_file() and all(m in docs.read_text() for m in MARKERS):
        page = docs.read_text()
        head, rest = page.split(MARKERS[0], 1)
        tail = rest.split(MARKERS[1], 1)[1]
        docs.write_text(head + MARKERS[0] + text + MARKERS[1] + tail)
        assets = docs.parent / "assets" / "results"
        assets.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out.with_suffix(".png"), assets / "scale.png")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", type=int, nargs="+", default=[1000, 10_000, 100_000])
    p.add_argument("--docs", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--encoder", default="static", help="the sentence encoder of every cell (static or all-MiniLM-L6-v2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--dev", type=int, default=2000, help="dev documents per cell")
    p.add_argument("--pool", type=int, default=10_000, help="pool documents per cell (next-batch selection)")
    p.add_argument("--memory-cap-gb", type=float, default=10.0, help="resident memory cap of every stage process")
    p.add_argument("--time-cap-s", type=float, default=1800.0, help="wall-time cap of every stage process")
    p.add_argument("--tag", default="", help="label of these cells (e.g. 'before': a measurement before a fix)")
    p.add_argument("--work", default=str(ROOT / "runs" / "scale"))
    p.add_argument("--output", default=str(RESULTS / "scale.json"))
    p.add_argument("--report", action="store_true", help="only write the table and the plot from --output")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    p.add_argument("--cell", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:  # a child: one stage of one cell
        import torch

        torch.set_num_threads(args.threads)
        rec = Recorder(Path(args.cell) / f"{args.stage}.jsonl")
        STAGE_FUNCS[args.stage](Path(args.cell), args, rec)
        rec.close()
        return
    out = Path(args.output)
    cells = _load_results(out)
    if not args.report:
        for n_docs in args.docs:
            for n_labels in args.labels:
                if n_labels > 12 * n_docs:
                    continue
                print(f"== {args.encoder}: {n_labels:,} labels x {n_docs:,} train documents", flush=True)
                cell = run_cell(n_labels, n_docs, args)
                cells = [c for c in cells if _key(c) != _key(cell)] + [cell]
                out.write_text(json.dumps({"cells": cells}, indent=1) + "\n")
    print(report(cells, out))


if __name__ == "__main__":
    main()
