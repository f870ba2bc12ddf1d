"""Shared fixtures: a tiny data slice and a tiny model trained once per session, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from xlgen.data import read_documents, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

torch.set_num_threads(2)


def shared_dataset(name: str) -> Path:
    """A dataset of ../shared/data; the integration tests need it, as the CI provides it."""
    path = SHARED / name
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests read the shared datasets from ../shared/data")
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train 400 / dev 60 / test 60 documents of the bundled data/goemotions as a dataset folder."""
    out = tmp_path_factory.mktemp("tiny_data")
    source = ROOT / "data" / "goemotions"
    for split, n in (("train", 400), ("dev", 60), ("test", 60)):
        write_jsonl(read_documents(source / f"{split}.jsonl.gz")[:n], out / f"{split}.jsonl")
    return out


@pytest.fixture(scope="session")
def trained_tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the tiny preset trained for a few steps through the real entry point."""
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(
        data=str(tiny_data), output_dir=str(out), preset="tiny", max_steps=40, eval_every=20,
        batch_size=16, lr=3e-2, max_target_length=16, max_input_length=48, progress=False,
    )
    run(cfg)
    return out


@pytest.fixture()
def tiny_model_dir(trained_tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model directory."""
    dst = tmp_path / "model"
    shutil.copytree(trained_tiny_run / "model", dst)
    return dst


@pytest.fixture()
def tiny_model(tiny_model_dir: Path):
    from xlgen.decoding import DecodingConfig
    from xlgen.model import XLGenModel

    m = XLGenModel.load(tiny_model_dir)
    m.decoding = DecodingConfig(max_new_tokens=16)
    return m


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests skip, with the reason, on a machine without CUDA (as CI is)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
