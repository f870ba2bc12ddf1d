"""The package as a user installs it: a wheel whose one top-level name is ``xlgen`` and that carries its data
files, installed without any extra in a fresh virtual environment (torch from its pinned wheel, everything else
at the versions of constraints.txt), where ``xlgen train`` and ``xlgen predict`` work and ``xlgen serve`` names
the extra it needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _run(cmd: list[str], timeout: float = 900, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this checkout (setuptools from the project's environment, no download)."""
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    (path,) = out.glob("xlgen-*.whl")
    return path


def test_the_wheel_installs_one_top_level_package_with_its_data(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"xlgen"}, top
    for folder in ("service", "training", "clustering"):
        assert f"xlgen/{folder}/__init__.py" in names
    assert "xlgen/service/migrations/script.py.mako" in names
    assert any(n.startswith("xlgen/service/migrations/versions/0001") for n in names)
    web = ROOT / "service" / "web"
    for path in (*web.glob("templates/*.html"), *web.glob("static/*")):
        assert f"xlgen/service/web/{path.relative_to(web)}" in names, path
    dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
    top_level = [n for n in names if n == f"{dist_info}/top_level.txt"]
    if top_level:
        assert zipfile.ZipFile(wheel).read(top_level[0]).decode().split() == ["xlgen"]


@pytest.fixture(scope="module")
def core_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel and its core dependencies only."""
    venv = tmp_path_factory.mktemp("core") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    _run([*pip, "torch==2.13.0"])
    _run([*pip, str(wheel)])
    return venv


def test_the_core_install_trains_predicts_and_names_missing_extras(core_venv: Path, tiny_data: Path, tmp_path: Path):
    xlgen = str(core_venv / "bin" / "xlgen")
    env = {**os.environ, "XLGEN_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)
    # nothing of an extra was installed
    listed = _run([str(core_venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"]).stdout
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert not installed & {"litestar", "uvicorn", "sqlalchemy", "alembic", "openai", "ctranslate2", "onnx", "matplotlib",
                            "datasets", "faiss-cpu", "psycopg", "onnxruntime", "prometheus-client"}, installed
    assert "serve" in _run([xlgen, "--help"], env=env, cwd=tmp_path).stdout
    assert "--variant" in _run([xlgen, "train", "--help"], env=env, cwd=tmp_path).stdout
    _run([xlgen, "train", "--data", str(tiny_data), "--output-dir", str(tmp_path / "run"), "--preset", "tiny", "--max-steps", "10",
          "--eval-every", "10", "--batch-size", "16", "--max-target-length", "16", "--max-input-length", "48", "--no-evaluate-test"],
         env=env, cwd=tmp_path)
    model = tmp_path / "run" / "model"
    out = _run([xlgen, "predict", "--model", str(model), "--max-new-tokens", "16", "thanks a lot!"], env=env, cwd=tmp_path).stdout
    assert json.loads(out.splitlines()[0])["labels"]
    metrics = json.loads(_run([xlgen, "evaluate", "--model", str(model), "--data", str(tiny_data), "--split", "test",
                               "--max-new-tokens", "16"], env=env, cwd=tmp_path).stdout)
    assert {"ndcg_at_5", "psp_at_5"} <= set(metrics)
    r = subprocess.run([xlgen, "serve", "--model", str(model)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and r.stderr == "xlgen serve: error: xlgen serve needs the serve extra: pip install 'xlgen[serve]'\n"
    r = subprocess.run([xlgen, "export", "--model", str(model), "--backend", "ctranslate2"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "pip install 'xlgen[fast]'" in r.stderr
