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
