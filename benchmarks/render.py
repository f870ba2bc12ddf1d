"""Renders the benchmark tables of the guide (docs/*.md) and the README's headline table from benchmarks/results/*.json.

Tables are never typed: each sits between a directive and its end marker, and this script rewrites what lies
between them from the JSON file the directive names, followed by the command, date, machine and commit of the
run (the file's ``provenance``, or ``benchmarks/results/provenance.json`` for files written before the
scripts recorded it)::

    <!-- table rows file=quality_goemotions.json columns=model,micro_f1,macro_f1 -->
    ...generated...
    <!-- /table -->

    python benchmarks/render.py            # rewrite the tables of docs/*.md and README.md
    python benchmarks/render.py --check    # exit 1 if either is stale (the test suite runs this)

Views: ``rows`` (a table of a file's rows, ``columns`` and optionally ``models``, ``label``, ``ratio``),
``inference``, ``active_learning``, ``new_labels``, ``encoder_speed``, ``pipeline`` (benchmarks/inference_retrieval.py),
``service_load``, ``select_stream``, ``tagging_speed`` (benchmarks/tagging_speed.py), ``headline`` (the README's). Pictures a page shows are copied to docs/assets.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
TARGETS = (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md")
"""Every page of the guide and the README: a page holds tables where it has directives."""
ASSETS = ROOT / "docs" / "assets" / "results"
DIRECTIVE = re.compile(r"^<!-- table (?P<view>\w+)(?P<args>(?: [^\n]*?)?) -->\n(?P<body>.*?)^<!-- /table -->\n", re.S | re.M)
PICTURE = re.compile(r"!\[[^\]]*\]\(assets/results/(?P<name>[\w.-]+\.png)\)")

HEADERS = {
    "dataset": "dataset", "model": "model", "micro_f1": "micro-F1", "macro_f1": "macro-F1", "p_at_1": "P@1", "p_at_3": "P@3",
    "p_at_5": "P@5", "ndcg_at_5": "nDCG@5", "psp_at_5": "PSP@5", "macro_f1_tail_0": "macro 0", "macro_f1_tail_1": "macro 1",
    "macro_f1_tail_2_5": "macro 2-5", "macro_f1_tail_1_5": "macro 1-5", "macro_f1_tail_gt5": "macro >5",
    "cluster_micro_f1": "cluster micro-F1", "n_new_labels": "new labels", "train_s": "train s", "seconds": "train + eval s",
    "tag_s_per_1k": "tag s / 1k docs", "loop_s": "training loop s", "n_docs": "test docs", "threshold": "threshold",
    "dev_micro_f1": "dev micro-F1",
}
"""Column headers of the ``rows`` view."""


def fmt(key: str, value: object) -> str:
    """One cell: counts as integers, seconds to one decimal (whole seconds above 100), metrics to three decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if key in ("n_new_labels", "n_docs", "requests", "errors", "processes"):
        return f"{value:,.0f}"
    if key.endswith("_s") or key in ("seconds", "tag_s_per_1k"):
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:.3f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)])


def load(name: str) -> object:
    return json.loads((RESULTS / name).read_text())


def rows_of(data: object) -> list[dict]:
    return data if isinstance(data, list) else data["rows"]  # type: ignore[index]


# --------------------------------------------------------------------------------------------- views


def view_rows(opts: dict[str, str]) -> str:
    """A file's rows: ``columns`` (keys), ``models`` (``;``-separated, in that order; default every row),
    ``label=model`` (the row name column), ``ratio=key:model`` (a column of ``key`` over that row's)."""
    rows = rows_of(load(opts["file"]))
    columns = opts["columns"].split(",")
    if "models" in opts:
        by = {}
        for r in rows:
            by.setdefault(r["model"], r)
        wanted = opts["models"].split(";")
        missing = [m for m in wanted if m not in by]
        if missing:
            raise ValueError(f"{opts['file']}: no rows {missing}")
        rows = [by[m] for m in wanted]
    header = [HEADERS.get(c, c) for c in columns]
    ratio_key = ratio_ref = None
    if "ratio" in opts:
        ratio_key, ratio_ref = opts["ratio"].split(":", 1)
        ref = next(r for r in rows_of(load(opts["file"])) if r["model"] == ratio_ref)[ratio_key]
        header.append(f"x {ratio_ref}")
    out = []
    for r in rows:
        cells = [fmt(c, r.get(c)) for c in columns]
        if ratio_key:
            cells.append(f"{r[ratio_key] / ref:.2f}")
        out.append(cells)
    return table(header, out)


def view_inference(opts: dict[str, str]) -> str:
    """benchmarks/inference.py's own tables."""
    from benchmarks.inference import markdown

    saved = load(opts["file"])
    text = markdown(saved["results"], argparse.Namespace(**saved["args"]))  # type: ignore[index]
    return text.strip()


def view_active_learning(opts: dict[str, str]) -> str:
    """benchmarks/active_learning.py's tables: the curves' summary, then what each strategy selected."""
    from xlgen.active.curves import format_selection_table, format_table, summarize

    results = {k: v for k, v in load(opts["file"]).items() if k != "provenance"}  # type: ignore[union-attr]
    if "datasets" in opts:
        results = {k: results[k] for k in opts["datasets"].split(";")}
    for result in results.values():  # recomputed, as the script does, so that older runs get every column
        result["summary"] = summarize(result["curves"], result["full_data"].get("micro_f1"), result["full_data"].get("macro_f1"))
    tables = [format_table(result, name) for name, result in results.items()]
    text = "\n".join([tables[0], *[t.split("\n", 2)[2] for t in tables[1:]]])
    if opts.get("selection", "yes") == "yes":
        text += "".join("\n\n" + format_selection_table(r, n) for n, r in results.items() if r.get("selection"))
    return text


def view_new_labels(opts: dict[str, str]) -> str:
    """xlgen simulate-new-labels' table, at the answer counts of ``answers`` (default every point)."""
    from xlgen.training.new_labels import format_table

    lines = format_table(load(opts["file"])).split("\n")  # type: ignore[arg-type]
    if "answers" not in opts:
        return "\n".join(lines)
    keep = set(opts["answers"].split(","))
    return "\n".join(lines[:2] + [x for x in lines[2:] if x.split(" | ")[1].strip() in keep])


def view_encoder_speed(opts: dict[str, str]) -> str:
    """benchmarks/encoder_speed.py's table."""
    from benchmarks.encoder_speed import markdown

    return markdown(rows_of(load(opts["file"])))


def view_pipeline(opts: dict[str, str]) -> str:
    """benchmarks/inference_retrieval.py's rows: documents per second and the ratio to generate alone."""
    data = load(opts["file"])
    return table(["setup", "docs/s", "x generate alone"],
                 [[r["setup"], f"{r['docs_per_s']:,.1f}", f"{r['ratio_to_generate']:.2f}"] for r in rows_of(data)])


def view_service_load(opts: dict[str, str]) -> str:
    """benchmarks/service_load.py's rows."""
    return table(["batching", "requests", "errors", "req/s", "texts/s", "p50 ms", "p99 ms", "mean texts per model call"],
                 [[r["batching"], str(r["requests"]), str(r["errors"]), f"{r['rps']:.1f}", f"{r['texts_per_s']:.1f}",
                   f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['mean_batch']:.1f}"] for r in rows_of(load(opts["file"]))])


def view_select_stream(opts: dict[str, str]) -> str:
    """benchmarks/select_stream.py's rows."""
    return table(["processes", "pool", "sample", "narrow", "wall s", "read + reservoir sample s", "narrowing s", "scoring s",
                  "peak RSS MB"],
                 [[str(r["processes"]), f"{r['pool']:,}", f"{r['sample']:,}", str(r["narrow"]), f"{r['wall_s']:.1f}",
                   f"{r['read_s']:.1f}", f"{r['narrow_s']:.1f}", f"{r['score_s']:.1f}", f"{r['peak_rss_mb']:,}"]
                  for r in rows_of(load(opts["file"]))])


HEADLINE = (
    ("goemotions", "quality_goemotions_encoder_generator.json", "quality_goemotions.json", "tfidf+logreg"),
    ("reuters21578", "quality_reuters21578_encoder_generator.json", "quality_reuters21578.json", "tfidf+logreg"),
    ("stackexchange3", "quality_stackexchange3_fused.json", "quality_stackexchange3_baselines.json",
     "tfidf+logreg (L-BFGS, 100 iterations)"),
)
"""(dataset, file of the served model's run, file of the baseline, its row) of the headline table."""
HEADLINE_SPEED = ("tagging_speed_goemotions_t1_b32.json", "tagging_speed_reuters21578_t1_b32.json")
"""The headline's tagging-speed runs (benchmarks/tagging_speed.py, one thread, batch 32)."""
SERVED_ROWS = ("fused, generator on the sentence encoder (as served, dev gate auto)", "fused (retrieval variant as served)")
"""The row of the model as served, in the files of either backbone (the first that a file holds)."""


def served_row(rows: list[dict]) -> dict:
    """The model as served: the fused row, or the retriever stage where the dev gate turned the generator off."""
    by = {r["model"]: r for r in rows}
    fused = next(by[m] for m in SERVED_ROWS if m in by)
    if fused.get("gate_serves_generator", 1.0) == 0.0:
        return by[GOAL_ROWS["stage"]]
    return fused


def view_tagging_speed(opts: dict[str, str]) -> str:
    """benchmarks/tagging_speed.py's runs (``files``, comma-separated): one line per dataset, threads and batch, the
    seconds per 1k documents of each setup and the served ones' speed-ups over the naive pipeline."""
    out = []
    for name in opts["files"].split(","):
        rows = rows_of(load(name))
        naive, served, stage, encoder, ratio = rows[0], rows[1], rows[2], rows[3], rows[4]
        same = served.get("same_top_label_as_naive")
        out.append([naive["dataset"], str(naive["threads"]), str(naive["batch"]), f"{naive['s_per_1k']:.1f}", f"{served['s_per_1k']:.1f}",
                    f"{served['speedup']:.2f}x", f"{stage['s_per_1k']:.1f}", f"{stage['speedup']:.2f}x", f"{encoder['s_per_1k']:.1f}",
                    f"{ratio['ratio']:.2f}x", "-" if same is None else f"{same:.1%}"])
    return table(["dataset", "threads", "batch", "naive s / 1k", "served, generator on, s / 1k", "x naive", "retriever stage s / 1k",
                  "x naive", "encoder pass s / 1k", "generator on / stage", "same top label as naive"], out)


def view_service_attack(opts: dict[str, str]) -> str:
    """benchmarks/service_attack.py's runs (``files``, comma-separated, each named in the first column by its
    ``labels`` entry): per phase, the one-word tag requests sent meanwhile, their errors and latency."""
    files = opts["files"].split(",")
    labels = opts.get("labels", "").split(";") if opts.get("labels") else files
    out = []
    for name, label in zip(files, labels, strict=True):
        d = load(name)
        assert isinstance(d, dict)
        idle = d["idle"]
        phases = [("alone", "nothing", d["alone"]),
                  ("idle", f"{idle['idle_connections']:,} idle connections held {idle['hold_s']:.0f} s ({idle['reopened']:,} reopened "
                           "after the server closed them); 200 one-word tags from 8 clients", idle),
                  ("sampling", f"64 x 'a' sampled 256 times at temperature 100 (4 clients), the largest allowed "
                               f"({d['sampling_allowed_texts']} texts, 2 clients)", d["sampling"]["light"]),
                  ("predict", f"/predict of 5,000 tasks (2 clients) and of the most allowed ({d['predict_allowed_tasks']:,}, "
                              "2 clients), each leaving after 5 s", d["predict"]["light"])]
        for phase, what, r in phases:
            n = r.get("requests", r.get("tags"))
            out.append([label, phase, what, str(n), str(r["errors"]), f"{r['p50_ms']:.0f}", f"{r['p99_ms']:.0f}", f"{r['max_ms']:.0f}"])
    return table(["server", "phase", "what the attacker does", "one-word tags", "errors", "p50 ms", "p99 ms", "max ms"], out)


GOAL_ROWS = {
    "stage": "fused without generator (retriever stage)",
    "generator": "generator on the sentence encoder (own beam mass)",
    "fused": "fused, generator on the sentence encoder (as served, dev gate auto)",
    "without": "fused without the sentence-encoder generator, stage refitted on dev: counts",
}
"""The rows of a ``benchmarks/quality.py`` encoder-generator run that the generator's goal compares."""


def view_generator_goal(opts: dict[str, str]) -> str:
    """Per run (``files``, comma-separated): the retriever stage, the generator on the sentence encoder alone and
    fused, the fused gain over the stage and over the same calibration without the generator (goal: +0.015 micro
    and +0.02 macro-F1), the generator alone against the stage (goal: within 0.05 micro-F1) and the dev gate."""
    out = []
    for name in opts["files"].split(","):
        rows = {r["model"]: r for r in rows_of(load(name))}
        missing = [m for m in GOAL_ROWS.values() if m not in rows]
        if missing:
            raise ValueError(f"{name}: no rows {missing}")
        stage, gen, fused, without = (rows[GOAL_ROWS[k]] for k in ("stage", "generator", "fused", "without"))
        d_mi, d_ma = fused["micro_f1"] - stage["micro_f1"], fused["macro_f1"] - stage["macro_f1"]
        c_mi, c_ma = fused["micro_f1"] - without["micro_f1"], fused["macro_f1"] - without["macro_f1"]
        g_mi = gen["micro_f1"] - stage["micro_f1"]
        met = "yes" if d_mi >= 0.015 and d_ma >= 0.02 else "no"
        served = fused.get("gate_serves_generator")
        gate = "-" if served is None else ("generator served" if served else "retriever stage served")
        out.append([stage["dataset"], f"{stage['micro_f1']:.3f} / {stage['macro_f1']:.3f}", f"{gen['micro_f1']:.3f} / {gen['macro_f1']:.3f}",
                    f"{g_mi:+.3f}", f"{fused['micro_f1']:.3f} / {fused['macro_f1']:.3f}", f"{d_mi:+.3f} / {d_ma:+.3f}", met,
                    f"{c_mi:+.3f} / {c_ma:+.3f}", f"{fused.get('gate_dev_gain_micro', float('nan')):+.4f}", gate])
    return table(["dataset", "retriever stage micro / macro", "generator alone", "alone - stage (micro; goal > -0.05)",
                  "fused (generator on)", "fused - stage", "goal +0.015 / +0.02 met", "fused - same calibration without it",
                  "gate: dev micro gain", "gate"], out)


def view_headline(opts: dict[str, str]) -> str:
    """The README's table: the served model against TF-IDF + LR and the best single retriever source on each dataset,
    and the served tagging speed against the naive pipeline doing the same work."""
    out = []
    for dataset, served_file, base_file, base_row in HEADLINE:
        rows = rows_of(load(served_file))
        served = served_row(rows)
        base = next(r for r in rows_of(load(base_file)) if r["model"] == base_row)
        linear = next(r for r in rows if r["model"].startswith("retriever: linear"))
        out.append([dataset, f"{served['micro_f1']:.3f} / {served['macro_f1']:.3f}", f"{base['micro_f1']:.3f} / {base['macro_f1']:.3f}",
                    f"{served['micro_f1'] / base['micro_f1']:.2f}x / {served['macro_f1'] / base['macro_f1']:.2f}x",
                    f"{linear['micro_f1']:.3f} / {linear['macro_f1']:.3f}"])
    text = table(["test split", "xlgen (as served): micro / macro-F1", "TF-IDF + LR", "xlgen / TF-IDF + LR",
                  "TF-IDF ⊕ encoder ranker alone"], out)
    speed = []
    for file in HEADLINE_SPEED:
        naive, served, stage = rows_of(load(file))[:3]
        speed.append([naive["dataset"], f"{naive['s_per_1k']:.1f}", f"{served['s_per_1k']:.1f}", f"{served['speedup']:.2f}x",
                      f"{stage['s_per_1k']:.1f}", f"{stage['speedup']:.2f}x"])
    return text + "\n\n" + table(["tagging, one CPU thread, batch 32", "naive pipeline, s / 1k docs", "xlgen served, generator on",
                                  "speed-up", "retriever stage alone (gate off)", "speed-up"], speed)


VIEWS: dict[str, Callable[[dict[str, str]], str]] = {
    "rows": view_rows, "inference": view_inference, "active_learning": view_active_learning, "new_labels": view_new_labels,
    "encoder_speed": view_encoder_speed, "pipeline": view_pipeline, "service_load": view_service_load,
    "select_stream": view_select_stream, "headline": view_headline, "tagging_speed": view_tagging_speed,
    "generator_goal": view_generator_goal, "service_attack": view_service_attack,
}


# ---------------------------------------------------------------------------------------- provenance


def provenance(name: str) -> dict[str, str]:
    """The command, date, machine and commit of a results file."""
    data = load(name)
    if isinstance(data, dict) and "provenance" in data:
        return data["provenance"]
    legacy = json.loads((RESULTS / "provenance.json").read_text())
    if name not in legacy:
        raise ValueError(f"{name} records no provenance and benchmarks/results/provenance.json has none for it")
    return legacy[name]


def source_line(files: list[str]) -> str:
    """The line under a table: for each file, its command, date, machine and commit."""
    parts = []
    for name in files:
        p = provenance(name)
        parts.append(f"`{p['command']}` · {p['date']} · {p['machine']} · commit {p['commit']} · `benchmarks/results/{name}`")
    return "<small>" + "<br>".join(parts) + "</small>"


def files_of(view: str, opts: dict[str, str]) -> list[str]:
    if view == "headline":
        return sorted({f for row in HEADLINE for f in (row[1], row[2])} | set(HEADLINE_SPEED))
    if view in ("tagging_speed", "generator_goal", "service_attack"):
        return opts["files"].split(",")
    return [opts["file"]]


# ------------------------------------------------------------------------------------------- render


def render_text(text: str) -> str:
    """``text`` with every directive's table rendered anew."""

    def one(m: re.Match[str]) -> str:
        opts = dict(part.split("=", 1) for part in shlex.split(m["args"]))  # key=value, values quoted where they hold spaces
        view = m["view"]
        if view not in VIEWS:
            raise ValueError(f"unknown table view {view!r}; the views are {', '.join(VIEWS)}")
        body = VIEWS[view](opts).rstrip("\n")
        return f"<!-- table {view}{m['args']} -->\n{body}\n\n{source_line(files_of(view, opts))}\n<!-- /table -->\n"

    return DIRECTIVE.sub(one, text)


def pictures(text: str) -> list[str]:
    return sorted({m["name"] for m in PICTURE.finditer(text)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a rendered file or picture is stale")
    args = parser.parse_args(argv)
    stale = []
    for target in TARGETS:
        text = target.read_text()
        rendered = render_text(text)
        if rendered != text:
            stale.append(str(target.relative_to(ROOT)))
            if not args.check:
                target.write_text(rendered)
        for name in pictures(text):
            src, dst = RESULTS / name, ASSETS / name
            if not dst.is_file() or dst.read_bytes() != src.read_bytes():
                stale.append(str(dst.relative_to(ROOT)))
                if not args.check:
                    ASSETS.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run python benchmarks/render.py", file=sys.stderr)
        return 1
    print(("up to date" if not stale else "rendered " + ", ".join(stale)) if not args.check else "up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
