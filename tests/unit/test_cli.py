"""The ``xlgen`` command line: help texts, evaluate and predict on the tiny model, clean errors."""

import json

import pytest

from xlgen.service.cli import build_parser, main


@pytest.mark.parametrize("command", ["train", "evaluate", "predict"])
def test_every_option_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    parser = build_parser(only=command)
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"
    assert "--" in out


def test_evaluate_and_predict(tiny_model_dir, tiny_data, tmp_path, capsys):
    out_json = tmp_path / "m.json"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tiny_data), "--split", "dev",
                 "--max-new-tokens", "16", "--output", str(out_json)]) == 0
    metrics = json.loads(out_json.read_text())
    assert metrics["n_docs"] == 60 and "macro_f1_note" in metrics and "p_at_5" in metrics
    capsys.readouterr()
    assert main(["predict", "--model", str(tiny_model_dir), "--strategy", "greedy", "--max-new-tokens", "16",
                 "thanks a lot!", "that is so sad"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["thanks a lot!", "that is so sad"]
    assert all(x["labels"] and {"label", "score", "new"} == set(x["labels"][0]) for x in lines)


def test_bad_input_is_a_clean_error(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "fine"}\n{"id": "2", "labels": []}\n')
    assert main(["predict", "--model", str(tiny_model_dir), "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: missing field 'text'" in err and "Traceback" not in err
    assert main(["evaluate", "--model", str(tmp_path / "nope"), "--data", str(bad)]) == 2
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "no train split" in capsys.readouterr().err


COMMANDS = ["train", "evaluate", "predict", "cluster", "select", "simulate-al", "serve", "export"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_each_default_once(command, capsys):
    import re

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert not re.search(r"\(default: [^)]*\)\s*\(default:", text), text
    parser = build_parser(only=command)
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices[command]
    formatter = sub._get_formatter()
    for action in sub._actions:
        if action.help and action.option_strings:
            rendered = formatter._expand_help(action)
            assert len(re.findall(r"default[: ]", rendered.lower())) <= 1, (command, action.option_strings, rendered)
            if action.required:
                assert "default" not in rendered, (command, action.option_strings, rendered)
    shown = {"train": "(default: cpu)", "evaluate": "(default: auto)", "predict": "(default: auto)", "cluster": "(default: tfidf)",
             "select": "(default: vote)", "simulate-al": "(default: 0 1)", "serve": "(default: 127.0.0.1)", "export": "(default: float32)"}
    assert shown[command] in text


def _reference_ndcg_psp(gold: list[tuple[str, ...]], scores: list[dict[str, float]], counts: dict[str, int], n: int, k: int):
    """nDCG@k and normalised PSP@k written out from their definitions (Jain et al., 2016: A = 0.55, B = 1.5)."""
    import math

    def q(label: str) -> float:
        return 1 + (math.log(n) - 1) * (1.5 + 1) ** 0.55 * (counts.get(label, 0) + 1.5) ** -0.55

    ndcg, psp, best = [], 0.0, 0.0
    for g, s in zip(gold, scores, strict=True):
        top = [x for x, _ in sorted(s.items(), key=lambda kv: (-kv[1], kv[0]))][:k]
        dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(top) if x in g)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(set(g)))))
        ndcg.append(dcg / ideal if ideal else 0.0)
        psp += sum(q(x) for x in top if x in g) / k
        best += sum(sorted((q(x) for x in set(g)), reverse=True)[:k]) / k
    return sum(ndcg) / len(ndcg), psp / best


def test_evaluate_prints_ndcg_and_psp(tiny_model_dir, tiny_data, capsys):
    """The metrics ``xlgen evaluate`` prints equal the definitions applied to the model's own label scores."""
    from dataclasses import replace

    from xlgen.data import read_documents
    from xlgen.model import XLGenModel

    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tiny_data), "--split", "dev", "--max-new-tokens", "16"]) == 0
    printed = json.loads(capsys.readouterr().out)
    model = XLGenModel.load(tiny_model_dir)
    assert model.label_space.n_documents == 400  # the tiny train split
    docs = read_documents(tiny_data / "dev.jsonl")
    preds = model.predict([d.text for d in docs], replace(model.decoding, max_new_tokens=16), threshold=0.0)
    counts = dict(zip(model.label_space.labels, model.label_space.counts, strict=True))
    ndcg, psp = _reference_ndcg_psp([d.labels for d in docs], [p.all_scores for p in preds], counts, 400, 5)
    assert printed["ndcg_at_5"] == pytest.approx(ndcg) and printed["psp_at_5"] == pytest.approx(psp)
    assert 0 < printed["psp_at_5"] < 1 and 0 < printed["ndcg_at_5"] < 1
