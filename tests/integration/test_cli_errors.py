"""Every user error of every ``xlgen`` subcommand is one line on standard error and exit status 2,
never a traceback: run in subprocesses, as a user runs the command."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from xlgen.backends import installed

# Runs ``xlgen.service.cli.main`` once per case, as the ``xlgen`` console script does, and reports each
# case's exit status and standard error; ``blocked`` modules are made unimportable for that case
# (an optional package that is not installed). An exception escaping ``main`` prints its traceback.
DRIVER = r"""
import contextlib, io, json, sys, traceback
from xlgen.service.cli import main
results = []
for argv, blocked in json.loads(sys.argv[1]):
    saved = {name: sys.modules.get(name) for name in blocked}
    sys.modules.update({name: None for name in blocked})
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException:
            traceback.print_exc()
            code = 1
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    results.append({"argv": argv, "code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def bad(trained_tiny_run: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Bad inputs beside a good model and a good dataset."""
    from xlgen.model import export_model

    d = tmp_path_factory.mktemp("bad")
    model = d / "model"
    shutil.copytree(trained_tiny_run / "model", model)
    paths = {"model": str(model), "data": str(tiny_data), "pool": str(tiny_data / "test.jsonl"), "dir": str(d)}
    (d / "bad.jsonl").write_text('{"id": "1", "text": "fine", "labels": ["a"]}\nnot json\n')
    (d / "latin1.jsonl").write_bytes('{"id": "1", "text": "caf\u00e9"}\n'.encode("latin-1"))
    (d / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    (d / "file.txt").write_text("a file, not a folder")
    for name, edit in {
        "not_json": lambda m: "{",
        "no_decoding": lambda m: json.dumps({k: v for k, v in m.items() if k != "decoding"}),
        "unknown_setting": lambda m: json.dumps({**m, "settings": {**m["settings"], "colour": "red"}}),
    }.items():
        shutil.copytree(model, d / name, ignore=shutil.ignore_patterns("*.safetensors"))
        (d / name / "xlgen.json").write_text(edit(json.loads((model / "xlgen.json").read_text())))
        paths[name] = str(d / name)
    for name, content in {"corrupt_weights": b"garbage", "no_weights": None}.items():
        shutil.copytree(model, d / name)
        if content is None:
            (d / name / "model.safetensors").unlink()
        else:
            (d / name / "model.safetensors").write_bytes(content)
        paths[name] = str(d / name)
    if installed("ctranslate2"):
        shutil.copytree(model, d / "exported")
        export_model(d / "exported", "ctranslate2")
        paths["exported"] = str(d / "exported")
        shutil.copytree(d / "exported", d / "stale")
        manifest = d / "stale" / "ct2" / "backend.json"
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "weights": "0" * 24}))  # made from other weights
        paths["stale"] = str(d / "stale")
    return paths


def cases(p: dict[str, str]) -> dict[str, list[tuple[list[str], str, tuple[str, ...]]]]:
    """Per subcommand: ``(arguments, expected part of the error line, modules to block)``."""
    d, m, data, pool = p["dir"], p["model"], p["data"], p["pool"]
    out = f"{d}/out"
    train = ["train", "--data", data, "--output-dir", out, "--preset", "tiny", "--max-steps", "1"]
    evaluate = ["evaluate", "--model", m, "--data", data]
    predict = ["predict", "--model", m, "hello"]
    select = ["select", "--model", m, "--pool", pool]
    return {
        "train": [
            (["train", "--data", f"{d}/nowhere", "--output-dir", out], "no train split", ()),
            (["train", "--data", data, "--train-file", f"{d}/bad.jsonl", "--output-dir", out], "bad.jsonl:2: not valid JSON", ()),
            ([*train, "--lr", "-1"], "--lr must be positive", ()),
            ([*train, "--threads", "0"], "--threads must be positive", ()),
            ([*train, "--max-input-length", "2"], "--max-input-length must be at least 4", ()),
            ([*train, "--label-order", "alphabetical"], "invalid choice", ()),
            ([*train, "--batch-size", "many"], "invalid int value", ()),
            ([*train, "--base-model", f"{d}/no-such-t5"], "no such directory", ()),
            ([*train, "--lora"], "--lora needs --base-model", ()),
            ([*train, "--variant", "bcl", "--clusters", f"{d}/nowhere"], "no label clustering", ()),
            (["train", "--data", data, "--output-dir", f"{d}/file.txt/run", "--preset", "tiny"], "file.txt", ()),
        ],
        "evaluate": [
            (["evaluate", "--model", f"{d}/nowhere", "--data", data], "not a model directory", ()),
            (["evaluate", "--model", p["not_json"], "--data", data], "xlgen.json: not valid JSON", ()),
            (["evaluate", "--model", p["no_decoding"], "--data", data], "missing field 'decoding'", ()),
            (["evaluate", "--model", p["unknown_setting"], "--data", data], "colour", ()),
            ([*evaluate, "--backend", "onnxruntime"], "no onnxruntime export", ()),
            ([*evaluate, "--split", "nope"], "no nope split", ()),
            ([*evaluate, "--num-beams", "0"], "must be positive", ()),
            ([*evaluate, "--device", "cuda:99"], "cuda:99", ()),
            ([*evaluate, "--device", "toaster"], "unknown device 'toaster'", ()),
            (["evaluate", "--model", m, "--data", f"{d}/nowhere.jsonl"], "no such file", ()),
        ],
        "predict": [
            (["predict", "--model", m, "--input", f"{d}/nowhere.jsonl"], "no such file", ()),
            (["predict", "--model", m, "--input", f"{d}/latin1.jsonl"], "cannot read", ()),
            (["predict", "--model", m, "--input", f"{d}/broken.jsonl.gz"], "cannot read", ()),
            (["predict", "--model", m, "--input", d], "a folder", ()),
            (["predict", "--model", m, "--input", f"{d}/bad.jsonl"], "bad.jsonl:2", ()),
            ([*predict, "--temperature", "0"], "temperature must lie in", ()),
            ([*predict, "--strategy", "best"], "invalid choice", ()),
            (["predict", "--model", p["corrupt_weights"], "hello"], "cannot load the model weights", ()),
            (["predict", "--model", p["no_weights"], "hello"], "cannot load the model weights", ()),
            ([*predict, "--output", f"{d}/nowhere/out.jsonl"], "No such file or directory", ()),
        ],
        "cluster": [
            (["cluster", "--data", f"{d}/nowhere", "--output", f"{d}/c"], "nowhere", ()),
            (["cluster", "--data", data, "--output", f"{d}/c", "--n-clusters", "0"], "--n-clusters", ()),
            (["cluster", "--data", data, "--output", f"{d}/c", "--features", "encoder"], "--features-model", ()),
            (["cluster", "--data", data, "--output", f"{d}/file.txt/c"], "file.txt", ()),
        ],
        "select": [
            (["select", "--model", m, "--pool", f"{d}/nowhere.jsonl"], "no such file", ()),
            (["select", "--model", m, "--pool", f"{d}/latin1.jsonl"], "cannot read", ()),
            (["select", "--model", m, "--pool", f"{d}/bad.jsonl"], "not valid JSON", ()),
            ([*select, "--batch-size", "-1"], "must be positive", ()),
            ([*select, "--drop-top", "2"], "drop_top", ()),
            ([*select, "--strategy", "psychic"], "invalid choice", ()),
            ([*select, "--device", "toaster"], "unknown device", ()),
        ],
        "simulate-al": [
            (["simulate-al", "--data", f"{d}/nowhere", "--output-dir", out], "no train split", ()),
            (["simulate-al", "--data", data, "--output-dir", out, "--rounds", "0"], "must be positive", ()),
            (["simulate-al", "--data", data, "--output-dir", out, "--strategies", "bogus"], "unknown strategies bogus", ()),
        ],
        "serve": [
            (["serve", "--model", f"{d}/nowhere"], "not a model directory", ()),
            (["serve", "--model", p["not_json"]], "not valid JSON", ()),
            (["serve", "--model", m, "--port", "99999"], "not a port", ()),
            (["serve", "--model", m, "--workers", "0"], "not a positive number", ()),
            (["serve", "--model", m, "--device", "toaster"], "unknown device", ()),
            (["serve", "--model", m, "--max-texts", "-1"], "MAX_TEXTS", ()),
        ],
        "export": [
            (["export", "--model", f"{d}/nowhere", "--backend", "ctranslate2"], "not a model directory", ()),
            (["export", "--model", p["not_json"], "--backend", "ctranslate2"], "not valid JSON", ()),
            (["export", "--model", m, "--backend", "tensorrt"], "invalid choice", ()),
            (["export", "--model", m, "--backend", "onnxruntime"], "pip install", ("onnxruntime",)),
            (["export", "--model", m, "--backend", "ctranslate2"], "the ctranslate2 backend needs ctranslate2: pip install 'xlgen[fast]'", ("ctranslate2",)),
        ],
    }


def run_cases(argv_list: list[tuple[list[str], tuple[str, ...]]], cwd: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XLGEN_MODEL": "", "XLGEN_API_KEY": ""}
    out = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(argv_list)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=900)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "cluster", "select", "simulate-al", "serve", "export"])
def test_user_errors_are_one_line_and_exit_2(command: str, bad: dict[str, str], tmp_path: Path):
    todo = cases(bad)[command]
    if command in ("evaluate", "select") and "stale" in bad:
        docs = ["--data", bad["data"]] if command == "evaluate" else ["--pool", bad["pool"]]
        # a stale export named with --backend; a valid one whose library is not installed
        todo.append(([command, "--model", bad["stale"], *docs, "--backend", "ctranslate2"], "exported from other weights", ()))
        todo.append(([command, "--model", bad["exported"], *docs, "--backend", "ctranslate2"], "needs the ctranslate2 package",
                     ("ctranslate2",)))
    results = run_cases([(argv, blocked) for argv, _, blocked in todo], tmp_path)
    for (argv, expected, _), r in zip(todo, results, strict=True):
        err = r["stderr"]
        last = err.strip().splitlines()[-1] if err.strip() else ""
        assert "Traceback" not in err, (argv, err)
        assert r["code"] == 2, (argv, r["code"], err)
        assert last.startswith(f"xlgen {command}: error: ") and expected in last, (argv, err)
        assert not [line for line in err.strip().splitlines() if line.startswith("xlgen") and line != last], (argv, err)


def test_console_entry_point_reports_a_stale_export_in_one_line(bad: dict[str, str], tmp_path: Path):
    """The real command, ``python -m xlgen.service.cli``, as ``scripts/main.sh`` runs ``xlgen``."""
    if "stale" not in bad:
        pytest.skip("ctranslate2 is not installed")
    out = subprocess.run([sys.executable, "-m", "xlgen.service.cli", "predict", "--model", bad["stale"], "--backend", "ctranslate2", "hi"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("xlgen predict: error: ") and "export again" in out.stderr


def test_interrupt_exits_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    import xlgen.service.cli as cli

    def interrupted(args):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_predict", interrupted)
    assert cli.main(["predict", "--model", "x", "hi"]) == 130
    assert "xlgen predict: interrupted" in capsys.readouterr().err


def test_bad_gzip_and_encoding_are_data_errors(tmp_path: Path):
    from xlgen.data import DataError, read_documents

    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(b'{"id": "1", "text": "\xff"}\n'))
    with pytest.raises(DataError, match="cannot read"):
        read_documents(tmp_path / "a.jsonl.gz", require_labels=False)
