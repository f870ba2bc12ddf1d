"""The benchmark tables of docs/benchmarks.md and the README are rendered from benchmarks/results/, never typed:
the rendered files are up to date, a changed cell is caught, and every table names its command, date, machine and
commit."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks import render
from benchmarks.provenance import provenance, stamped


def test_the_rendered_files_are_up_to_date(capsys):
    assert render.main(["--check"]) == 0, capsys.readouterr().err


def test_a_typed_or_stale_cell_is_rewritten():
    text = (render.ROOT / "docs" / "benchmarks.md").read_text()
    cell = "| 0.578 |"
    assert cell in text
    tampered = text.replace(cell, "| 0.999 |", 1)
    assert render.render_text(tampered) == text


def test_every_results_file_has_provenance():
    for path in sorted(render.RESULTS.glob("*.json")):
        if path.name == "provenance.json":
            continue
        p = render.provenance(path.name)
        assert set(p) >= {"command", "date", "machine", "commit"}, path.name
        assert re.fullmatch(r"\d{4}-\d\d-\d\d", p["date"]) and p["command"], path.name


def test_every_table_is_followed_by_its_source():
    text = (render.ROOT / "docs" / "benchmarks.md").read_text()
    blocks = render.DIRECTIVE.findall(text)
    assert len(blocks) > 40
    for m in render.DIRECTIVE.finditer(text):
        assert "<small>`" in m["body"] and " · commit " in m["body"], m.group(0)[:200]


def test_a_directive_for_missing_rows_fails():
    with pytest.raises(ValueError, match="no rows"):
        render.render_text('<!-- table rows file=quality_goemotions.json columns=model models="no such model" -->\n<!-- /table -->\n')
    with pytest.raises(ValueError, match="unknown table view"):
        render.render_text("<!-- table nope file=x.json -->\n<!-- /table -->\n")


def test_new_results_carry_their_provenance(tmp_path):
    p = provenance(["benchmarks/quality.py", "--dataset", "goemotions", "--skip", "a b"])
    assert p["command"] == "python benchmarks/quality.py --dataset goemotions --skip 'a b'"
    assert "cores" in p["machine"] and p["commit"]
    assert stamped({"rows": []}, ["x.py"])["provenance"]["command"] == "python x.py"
    assert stamped([{"a": 1}], ["x.py"])["rows"] == [{"a": 1}]
    # a file that records it needs no entry in the legacy table
    path = render.RESULTS / "provenance.json"
    assert "quality_goemotions.json" in json.loads(path.read_text())


def test_the_generator_goal_is_computed_from_the_rows(tmp_path, monkeypatch):
    def row(model: str, micro: float, macro: float, **extra: float) -> dict:
        return {"dataset": "toy", "model": model, "micro_f1": micro, "macro_f1": macro, **extra}

    rows = [row(render.GOAL_ROWS["stage"], 0.60, 0.40), row(render.GOAL_ROWS["generator"], 0.52, 0.30),
            row(render.GOAL_ROWS["fused"], 0.62, 0.41, gate_serves_generator=1.0, gate_dev_gain_micro=0.012),
            row(render.GOAL_ROWS["without"], 0.605, 0.395)]
    (tmp_path / "q.json").write_text(json.dumps({"rows": rows}))
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    line = render.view_generator_goal({"files": "q.json"}).splitlines()[2]
    cells = [c.strip() for c in line.strip("|").split("|")]
    # stage, alone, alone - stage, fused, fused - stage, goal, fused - same calibration, gate gain, gate
    assert cells[1:] == ["0.600 / 0.400", "0.520 / 0.300", "-0.080", "0.620 / 0.410", "+0.020 / +0.010", "no",
                         "+0.015 / +0.015", "+0.0120", "generator served"]
    rows[2]["macro_f1"] = 0.43
    (tmp_path / "q.json").write_text(json.dumps({"rows": rows}))
    assert "| yes |" in render.view_generator_goal({"files": "q.json"})
    (tmp_path / "q.json").write_text(json.dumps({"rows": rows[:2]}))
    with pytest.raises(ValueError, match="no rows"):
        render.view_generator_goal({"files": "q.json"})
