"""Optional extras: a command whose extra is missing says, in one line, which extra to install; the fast paths
fall back to what the core has. A package is hidden by a ``None`` entry in ``sys.modules``, which makes both
``import`` and ``importlib.util.find_spec`` see it as absent (tests/integration/test_install.py installs the
core alone in a fresh virtual environment)."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tomllib

import numpy as np
import pytest

from tests.conftest import ROOT
from xlgen import extras
from xlgen.service.cli import main


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


@pytest.mark.parametrize(("argv", "module", "extra"), [
    (["serve", "--help"], "litestar", "serve"),
    (["serve", "--model", "m"], "uvicorn", "serve"),
    (["simulate-al", "--help"], "matplotlib", "plots"),
    (["simulate-new-labels", "--help"], "matplotlib", "plots"),
])
def test_a_missing_extra_is_one_line_naming_it(argv, module, extra, monkeypatch, capsys):
    hide(monkeypatch, module)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"xlgen {argv[0]}: error: xlgen {argv[0]} needs the {extra} extra: pip install 'xlgen[{extra}]'\n"


def test_commands_of_the_core_need_no_extra(monkeypatch, capsys):
    hide(monkeypatch, *{m for mods in extras.EXTRAS.values() for m in mods})
    for command in ("train", "predict", "evaluate", "select", "cluster"):
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0, command
    assert "--variant" in capsys.readouterr().out


def test_serve_names_the_postgres_and_llm_extras(tiny_model_dir, monkeypatch, capsys):
    hide(monkeypatch, "psycopg")
    assert main(["serve", "--model", str(tiny_model_dir), "--db-url", "postgresql+psycopg://u@127.0.0.1/db"]) == 2
    assert "a PostgreSQL --db-url needs the postgres extra: pip install 'xlgen[postgres]'" in capsys.readouterr().err
    hide(monkeypatch, "openai")
    monkeypatch.setenv("XLGEN_LLM_URL", "http://127.0.0.1:9/v1")
    assert main(["serve", "--model", str(tiny_model_dir)]) == 2
    assert "needs the llm extra: pip install 'xlgen[llm]'" in capsys.readouterr().err


def test_the_encoder_runs_on_torch_without_ctranslate2(monkeypatch):
    from xlgen.encoders import ct2_encoder

    hide(monkeypatch, "ctranslate2")
    assert ct2_encoder.unsupported_reason(object()) == "ctranslate2 is not installed (the fast extra: pip install 'xlgen[fast]')"


def test_knn_search_is_exact_without_faiss(tmp_path, monkeypatch):
    from xlgen.encoders.index import ExactIndex, build_index, load_index

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hide(monkeypatch, "faiss")
    index = build_index(vectors, exact_limit=10)
    assert isinstance(index, ExactIndex)
    (tmp_path / "index.json").write_text('{"kind": "hnsw", "m": 32, "ef_construction": 200, "ef_search": 128}')
    loaded = load_index(tmp_path, vectors)  # a saved HNSW graph, read where faiss is missing
    assert loaded.kind == "exact"
    assert loaded.search(vectors[:3], 1)[1][:, 0].tolist() == [0, 1, 2]


def test_message_for_onnx_runtime_names_both_flavours():
    assert "'xlgen[cpu]'" in extras.message("the onnxruntime backend", "cpu") and "never both" in extras.message("x", "gpu")
    with pytest.raises(ValueError, match="no extra"):
        extras.require("nope", "x")


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)).lower()  # type: ignore[union-attr]


def test_the_registry_matches_pyproject():
    """Every extra of xlgen/extras.py is one of pyproject.toml's, and its modules come from that extra's packages."""
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    providers = importlib.metadata.packages_distributions()
    for extra, modules in extras.EXTRAS.items():
        assert extra in optional, extra
        if extra == "gpu":  # onnxruntime-gpu is not installed beside the cpu flavour; its module has the same name
            assert modules == extras.EXTRAS["cpu"]
            continue
        declared = {_name(r) for r in optional[extra]}
        for module in modules:
            dists = {_name(d) for d in providers.get(module, [])}
            # litestar[jinja] brings jinja2: a module of a declared package's own extra counts
            assert dists & declared or module == "jinja2", (extra, module, dists)
    assert set(optional) - set(extras.EXTRAS) == {"dev", "all"}
    everything = set(optional) - {"dev", "all", "cpu", "gpu", "docs"}
    assert optional["all"] == [f"xlgen[{','.join(x for x in optional if x in everything)}]"]
