"""The active-learning simulation: summary arithmetic, one round end to end, and ``xlgen select``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xlgen.active.curves import (
    area_under_curve,
    deficiency,
    format_selection_table,
    format_table,
    selection_stats,
    share_to_reach,
    summarize,
)
from xlgen.data import read_documents, write_jsonl
from xlgen.service.cli import main as xlgen
from xlgen.training.active_learning import SimulationConfig


def test_area_deficiency_and_share():
    assert area_under_curve([0.1, 0.2, 0.3], [0.2, 0.4, 0.4]) == pytest.approx(0.35)
    assert deficiency([0.5, 0.7], [0.4, 0.6], reference=0.8) == pytest.approx(0.4 / 0.6)
    assert deficiency([0.5], [0.8], reference=0.8) is None
    assert share_to_reach([0.1, 0.2, 0.3], [0.2, 0.5, 0.6], 0.5) == 0.2
    assert share_to_reach([0.1, 0.2], [0.2, 0.3], 0.5) is None


def test_summarize_against_random():
    def curve(*f1):
        return [{"share": 0.1 * (i + 1), "micro_f1": y, "acq_s": 1.0, "n_scored": 500} for i, y in enumerate(f1)]

    curves = {"random": {"0": curve(0.2, 0.3, 0.4)}, "vote": {"0": curve(0.2, 0.4, 0.5)}}
    s = summarize(curves, full_f1=0.5)
    assert s["vote"]["deficiency"] < 1 and s["random"]["deficiency"] == pytest.approx(1.0)
    assert s["vote"]["share_to_100"] == pytest.approx(0.3) and s["random"]["share_to_100"] is None
    assert s["vote"]["share_to_95"] == pytest.approx(0.3)
    assert s["vote"]["acq_s_per_1000"] == pytest.approx(2.0)
    assert s["vote"]["auc_mean"] > s["random"]["auc_mean"]


def test_summarize_macro_shares_and_the_reference_row():
    def curve(micro, macro):
        return [{"share": 0.1 * (i + 1), "micro_f1": y, "macro_f1": m, "acq_s": 0.0, "n_scored": 10}
                for i, (y, m) in enumerate(zip(micro, macro, strict=True))]

    curves = {"random": {"0": curve((0.2, 0.3, 0.4), (0.1, 0.2, 0.2)), "1": curve((0.2, 0.3, 0.4), (0.1, 0.2, 0.4))},
              "beal": {"0": curve((0.2, 0.5, 0.5), (0.1, 0.3, 0.3)), "1": curve((0.2, 0.5, 0.5), (0.1, 0.1, 0.3))}}
    s = summarize(curves, full_f1=0.5, full_macro_f1=0.3)
    assert s["beal"]["share_to_100"] == pytest.approx(0.2)
    assert s["beal"]["share_to_100_macro"] == pytest.approx(0.3)  # seed means 0.1, 0.2, 0.3
    assert s["beal"]["share_to_95_macro"] == pytest.approx(0.3)  # 0.285 first reached at 0.3
    assert s["random"]["share_to_100_macro"] == pytest.approx(0.3)  # seed means 0.1, 0.2, 0.3
    assert s["random"]["final_macro_f1_mean"] == pytest.approx(0.3)
    assert s["random"]["macro_auc_std"] > 0 and s["beal"]["macro_auc_std"] > 0
    table = format_table({"summary": s, "full_data": {"micro_f1": 0.5, "macro_f1": 0.3}, "pool_size": 3000}, "toy")
    assert "| toy | reference: the whole pool (3,000 documents) | - | 0.500 | - | 0.300 |" in table
    assert "| toy | beal | 0.425 ± 0.000 | 0.500 | 0.200 ± 0.050 | 0.300 |" in table
    assert "20% / 20% | 30% / 30% |" in table


def test_selection_stats_coverage_overlap_and_paired_test():
    labels = [("a",), ("b",), ("c",), ("a", "d"), ("e",), ("a",), ("b",), ("f",)]

    def curve(selected, f1s):
        return [{"share": 0.1 * (i + 1), "micro_f1": y, "selected": sel} for i, (sel, y) in enumerate(zip(selected, f1s, strict=True))]

    curves = {
        "random": {"0": curve([[0], [5, 6]], [0.2, 0.3]), "1": curve([[1], [0, 5]], [0.2, 0.25])},
        "vote": {"0": curve([[0], [3, 7]], [0.2, 0.5]), "1": curve([[1], [3, 4]], [0.2, 0.4])},
    }
    st = selection_stats(curves, labels)
    # seed 0: initial {a}, vote adds d and f: {a, d, f} of 6 labels; seed 1: initial {b}, vote adds a, d, e
    assert st["vote"]["coverage"] == pytest.approx((3 / 6 + 4 / 6) / 2) and st["vote"]["new_labels"] == pytest.approx(2.5)
    assert st["random"]["coverage"] == pytest.approx((2 / 6 + 2 / 6) / 2)
    assert st["vote"]["overlap"]["random"] == pytest.approx(0.0) == st["random"]["overlap"]["vote"]
    assert st["random"]["p_vs_random"] is None and 0.0 < st["vote"]["p_vs_random"] < 0.2
    table = format_selection_table({"selection": st}, "x")
    assert "| x | vote | 0.583 | 2.5 |" in table and "overlap with random" in table
    one_seed = selection_stats({k: {"0": v["0"]} for k, v in curves.items()}, labels)
    assert one_seed["vote"]["p_vs_random"] is None
    assert format_selection_table({}) == ""


def test_config_validation():
    with pytest.raises(ValueError, match="unknown strategies"):
        SimulationConfig(strategies=("nope",))
    with pytest.raises(ValueError, match="pool"):
        SimulationConfig(pool_size=100, initial=50, batch=30, rounds=2)
    assert SimulationConfig(strategies=("vote",)).all_strategies == ("random", "vote")


def test_one_round_end_to_end(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "al"
    rc = xlgen(["simulate-al", "--data", str(tiny_data), "--output-dir", str(out), "--strategies", "margin", "--seeds", "0",
                "--pool-size", "120", "--initial", "30", "--batch", "20", "--rounds", "1", "--preset", "tiny",
                "--vocab-size", "600", "--max-input-length", "32", "--max-target-length", "12", "--initial-steps", "4",
                "--round-steps", "3", "--dev-size", "20", "--test-size", "20", "--full-data-steps", "3", "--no-progress"])
    assert rc == 0 and "| margin |" in capsys.readouterr().out
    saved = json.loads((out / "active_learning.json").read_text())
    assert (out / "active_learning.png").stat().st_size > 0
    assert not (out / "work").exists()
    assert saved["config"]["seeds"] == [0] and set(saved["curves"]) == {"random", "margin"}
    for name in ("random", "margin"):
        points = saved["curves"][name]["0"]
        assert [p["labelled"] for p in points] == [30, 50]
        assert all(0.0 <= p["micro_f1"] <= 1.0 for p in points)
    assert saved["curves"]["margin"]["0"][0] == saved["curves"]["random"]["0"][0]  # round 0 is shared
    assert saved["curves"]["margin"]["0"][1]["n_scored"] == 90 and saved["curves"]["margin"]["0"][1]["acq_s"] > 0
    assert 0.0 <= saved["full_data"]["micro_f1"] <= 1.0
    assert set(saved["summary"]["margin"]) >= {"auc_mean", "deficiency", "share_to_95", "share_to_100", "acq_s_per_1000"}
    assert 0.0 < saved["selection"]["margin"]["coverage"] <= 1.0 and "random" in saved["selection"]["margin"]["overlap"]


def test_select_command_writes_ranked_jsonl(tiny_model_dir: Path, tiny_data: Path, tmp_path: Path):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(read_documents(tiny_data / "test.jsonl")[:10], pool)
    out = tmp_path / "next.jsonl"
    rc = xlgen(["select", "--model", str(tiny_model_dir), "--pool", str(pool), "--strategy", "random",
                "--batch-size", "4", "--output", str(out), "--device", "cpu"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rc == 0 and [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert all(r["labels"] and {"label", "score"} <= set(r["labels"][0]) for r in rows)


def test_cluster_strategy_simulation_on_bcl(tiny_data: Path, tmp_path: Path):
    """A bcl simulation ranks by cluster uncertainty; labels revealed after the first round's
    clustering join their nearest cluster instead of stopping the run."""
    from xlgen.training.active_learning import simulate

    with pytest.raises(ValueError, match="bcl or mcg"):
        SimulationConfig(strategies=("cluster",))
    cfg = SimulationConfig(data=str(tiny_data), output_dir=str(tmp_path / "al"), strategies=("cluster",), seeds=(0,),
                           pool_size=120, initial=20, batch=20, rounds=1, preset="tiny", variant="bcl", vocab_size=600,
                           max_input_length=32, max_target_length=12, initial_steps=4, round_steps=3, dev_size=20,
                           test_size=20, full_data_steps=0, progress=False)
    result = simulate(cfg)
    points = result["curves"]["cluster"]["0"]
    assert [p["labelled"] for p in points] == [20, 40] and points[1]["n_scored"] == 100


def test_a_strategy_keeps_its_colour_across_panels(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xlgen.active.acquisition import STRATEGIES
    from xlgen.active.curves import plot, strategy_color

    assert len({strategy_color(n) for n in STRATEGIES}) == len(STRATEGIES)  # every registered strategy its own
    assert strategy_color("not registered") == strategy_color("not registered")

    def curves(names: list[str]) -> dict:
        point = [{"share": 0.1 * (r + 1), "micro_f1": 0.3 + 0.1 * r} for r in range(2)]
        return {"curves": {n: {"0": point} for n in names}, "full_data": {}}

    fig, axes = plt.subplots(1, 2)
    plot(curves(["random", "beal", "cvirs"]), tmp_path / "a.png", ax=axes[0])
    plot(curves(["beal", "random"]), tmp_path / "b.png", ax=axes[1])  # another order, fewer strategies
    colours = [{line.get_label(): line.get_color() for line in ax.get_lines()} for ax in axes]
    plt.close(fig)
    assert colours[0]["beal"] == colours[1]["beal"] and colours[0]["random"] == colours[1]["random"]
    assert colours[0]["beal"] != colours[0]["random"] != colours[0]["cvirs"]
