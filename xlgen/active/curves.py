"""Summaries of active-learning curves: area under the curve, deficiency against random, the share
of the pool needed to reach the full-pool reference, a Markdown table and a plot.

A curve is a list of points, one per round, each a dict with at least ``share`` (labelled share of
the pool), ``micro_f1``, ``acq_s`` and ``n_scored``; ``curves`` maps strategy -> seed -> curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


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


def summarize(curves: dict[str, dict[str, list[dict]]], full_f1: float | None, full_macro_f1: float | None = None) -> dict[str, dict]:
    """Per strategy: micro- and macro-F1 AUC (mean, std over seeds), final micro- and macro-F1 (seed means),
    deficiency against random, the shares needed to reach 95% and 100% of the full-pool reference's
    micro-F1 (``full_f1``) and macro-F1 (``full_macro_f1``) on the seed-mean curves (``None``: not within
    the simulation), and acquisition seconds per 1,000 scored documents."""
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
        has_macro = all("macro_f1" in by_seed[s][0] for s in seeds)
        macro_curves = [[p["macro_f1"] for p in by_seed[s]] for s in seeds] if has_macro else []
        macro = [area_under_curve(share, c) for c in macro_curves]
        macro_mean = np.mean(macro_curves, axis=0) if macro_curves else None  # (n_rounds + 1,)
        reach_macro = macro_mean is not None and bool(full_macro_f1)
        out[name] = {
            "auc_mean": float(np.mean(aucs)),
            "auc_std": float(np.std(aucs)),
            "final_f1_mean": float(mean[-1]),
            "macro_auc_mean": float(np.mean(macro)) if macro else None,
            "macro_auc_std": float(np.std(macro)) if macro else None,
            "final_macro_f1_mean": float(macro_mean[-1]) if macro_mean is not None else None,
            "deficiency": float(np.mean(valid)) if valid else None,
            "share_to_95": share_to_reach(share, mean, 0.95 * full_f1) if full_f1 else None,
            "share_to_100": share_to_reach(share, mean, full_f1) if full_f1 else None,
            "share_to_95_macro": share_to_reach(share, macro_mean, 0.95 * full_macro_f1) if reach_macro else None,  # type: ignore[arg-type, operator]
            "share_to_100_macro": share_to_reach(share, macro_mean, full_macro_f1) if reach_macro else None,  # type: ignore[arg-type]
            "acq_s_per_1000": 1000 * acq / scored if scored else 0.0,
        }
    return out


def selection_stats(curves: dict[str, dict[str, list[dict]]], pool_labels: Sequence[Sequence[str]]) -> dict[str, dict]:
    """What each strategy selected, beside how well it learned (as the XMC AL study reports it).

    Per strategy, means over seeds: ``coverage``, the share of the pool's labels that the labelled set
    holds after the last round (the initial set included, the same for every strategy); ``new_labels``,
    how many labels the selected documents brought that the initial set lacked; ``overlap``, per other
    strategy, the Jaccard overlap of the two strategies' selected documents (the initial set excluded);
    and ``p_vs_random``, the paired t-test (over seeds) of the micro-F1 AUC against random's (None with
    fewer than two seeds, or for random itself).

    Args:
        curves: ``{strategy: {seed: [point per round]}}``, each point with its ``selected`` pool indices.
        pool_labels: The pool's label sets, indexed like ``selected``.
    """
    from scipy.stats import ttest_rel

    every = {x for labels in pool_labels for x in labels}
    chosen = {name: {s: [i for p in pts[1:] for i in p["selected"]] for s, pts in by_seed.items()} for name, by_seed in curves.items()}
    out: dict[str, dict] = {}
    for name, by_seed in curves.items():
        seeds = list(by_seed)
        cov, new = [], []
        for s in seeds:
            initial = {x for i in by_seed[s][0]["selected"] for x in pool_labels[i]}
            held = initial | {x for i in chosen[name][s] for x in pool_labels[i]}
            cov.append(len(held) / max(len(every), 1))
            new.append(len(held - initial))
        overlap = {}
        for other in curves:
            if other != name:
                jac = [len(set(chosen[name][s]) & set(chosen[other][s])) / max(len(set(chosen[name][s]) | set(chosen[other][s])), 1)
                       for s in seeds if s in chosen[other]]
                overlap[other] = float(np.mean(jac)) if jac else None
        p_value = None
        if name != "random" and "random" in curves and len(seeds) >= 2:
            mine = [area_under_curve([p["share"] for p in by_seed[s]], [p["micro_f1"] for p in by_seed[s]]) for s in seeds]
            theirs = [area_under_curve([p["share"] for p in curves["random"][s]], [p["micro_f1"] for p in curves["random"][s]])
                      for s in seeds]
            diff = np.subtract(mine, theirs)
            p_value = 1.0 if np.allclose(diff, 0.0) else float(ttest_rel(mine, theirs).pvalue)
        out[name] = {"coverage": float(np.mean(cov)), "new_labels": float(np.mean(new)), "overlap": overlap, "p_vs_random": p_value}
    return out


def format_selection_table(result: dict, dataset: str = "") -> str:
    """:func:`selection_stats` as a Markdown table (empty when the result has none)."""
    stats = result.get("selection") or {}
    if not stats:
        return ""
    names = list(stats)
    rows = ["| dataset | strategy | label coverage | labels new to the initial set | p (AUC vs random, paired t) | "
            + " | ".join(f"overlap with {n}" for n in names) + " |", "|---" * (5 + len(names)) + "|"]
    for name, st in stats.items():
        p = "-" if st["p_vs_random"] is None else f"{st['p_vs_random']:.3f}"
        cells = ["-" if n == name or st["overlap"].get(n) is None else f"{st['overlap'][n]:.2f}" for n in names]
        rows.append(f"| {dataset} | {name} | {st['coverage']:.3f} | {st['new_labels']:.1f} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def format_table(result: dict, dataset: str = "") -> str:
    """The summary as a Markdown table, the full-pool reference's own F1 in its first row."""
    def cell(v: float | None, pct: bool = False) -> str:
        if v is None:
            return "not reached" if pct else "-"
        return f"{100 * v:.0f}%" if pct else f"{v:.3f}"

    def spread(mean: float | None, std: float | None) -> str:
        return "-" if mean is None else f"{mean:.3f} ± {std or 0.0:.3f}"

    rows = ["| dataset | strategy | micro-F1 AUC (mean ± std) | final micro-F1 | macro-F1 AUC (mean ± std) | final macro-F1 "
            "| deficiency vs random | share to 95% / 100% of micro | share to 95% / 100% of macro | acq. s / 1k docs |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    full = result.get("full_data") or {}
    if full:
        n = result.get("pool_size")
        rows.append(f"| {dataset} | reference: the whole pool{f' ({n:,} documents)' if n else ''} | - | {cell(full.get('micro_f1'))} | - "
                    f"| {cell(full.get('macro_f1'))} | - | 100% | 100% | - |")
    for name, s in result["summary"].items():
        rows.append(f"| {dataset} | {name} | {spread(s['auc_mean'], s['auc_std'])} | {s['final_f1_mean']:.3f} | "
                    f"{spread(s.get('macro_auc_mean'), s.get('macro_auc_std'))} | {cell(s.get('final_macro_f1_mean'))} | "
                    f"{cell(s['deficiency'])} | {cell(s['share_to_95'], True)} / {cell(s['share_to_100'], True)} | "
                    f"{cell(s.get('share_to_95_macro'), True)} / {cell(s.get('share_to_100_macro'), True)} | "
                    f"{s['acq_s_per_1000']:.1f} |")
    return "\n".join(rows)


def strategy_color(name: str) -> tuple[float, float, float, float]:
    """One colour per strategy, the same in every panel and plot: its place in the registry on matplotlib's
    tab10 then Dark2 palettes (18 distinct colours); an unregistered name by its hash."""
    import zlib

    import matplotlib

    from xlgen.active.acquisition import STRATEGIES

    palette = [matplotlib.colormaps["tab10"](i) for i in range(10)] + [matplotlib.colormaps["Dark2"](i) for i in range(8)]
    names = list(STRATEGIES)
    k = names.index(name) if name in names else zlib.crc32(name.encode())
    return tuple(palette[k % len(palette)])  # type: ignore[return-value]


def plot(result: dict, path: Path, title: str = "", ax=None) -> None:  # type: ignore[no-untyped-def]
    """Mean test micro-F1 per strategy against the labelled share, min-max over seeds shaded; a
    strategy has the same colour in every plot (:func:`strategy_color`)."""
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
        color = strategy_color(name)
        ax.plot(x, y.mean(0), marker="o", label=name, linestyle="--" if name == "random" else "-", color=color)
        ax.fill_between(x, y.min(0), y.max(0), alpha=0.15, color=color)
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
