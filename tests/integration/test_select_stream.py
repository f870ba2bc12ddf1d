"""``xlgen select`` on a streamed pool: sub-sampled, narrowed by the label retriever, and scored by one process or
by two CPU processes under ``torch.distributed.run`` (the same selection either way)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.conftest import build_tiny_sentence_model
from xlgen.data import read_documents, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from xlgen.training.config import TrainConfig
    from xlgen.training.train import run

    root = tmp_path_factory.mktemp("select")
    mp = pytest.MonkeyPatch()
    mp.setenv("XLGEN_CACHE_DIR", str(root / "cache"))
    encoder = build_tiny_sentence_model(root / "encoder")
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 300), ("dev", 50)):
        write_jsonl(read_documents(ROOT / "data" / "goemotions" / f"{split}.jsonl.gz")[:n], data / f"{split}.jsonl")
    run(TrainConfig(data=str(data), output_dir=str(root / "run"), preset="tiny", max_steps=6, eval_every=6, batch_size=16,
                    max_target_length=16, max_input_length=64, progress=False, variant="retrieval", encoder=str(encoder),
                    candidates_in_input=4))
    pool = root / "pool.jsonl"
    with open(pool, "w", encoding="utf-8") as fh:  # ids and texts only, as an application sends them
        for d in read_documents(ROOT / "data" / "goemotions" / "test.jsonl.gz")[:400]:
            fh.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
    yield {"root": root, "model": root / "run" / "model", "pool": pool}
    mp.undo()


def _select(setup: dict, out: Path, *extra: str, processes: int = 1) -> subprocess.CompletedProcess:
    args = ["select", "--model", str(setup["model"]), "--pool", str(setup["pool"]), "--strategy", "margin", "--batch-size", "15",
            "--pool-sample", "300", "--narrow", "8", "--output", str(out), "--backend", "torch", *extra]
    launcher = [sys.executable] if processes == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29533"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XLGEN_CACHE_DIR": str(setup["root"] / "cache")}
    return subprocess.run([*launcher, "-m", "xlgen.service.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_two_processes_select_what_one_does(setup: dict) -> None:
    one = _select(setup, setup["root"] / "one.jsonl")
    assert one.returncode == 0, one.stderr[-3000:]
    assert "of 400 documents ranked by margin" in one.stderr and "1 process(es)" in one.stderr
    two = _select(setup, setup["root"] / "two.jsonl", processes=2)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    assert "2 process(es)" in two.stderr
    a = [json.loads(x) for x in (setup["root"] / "one.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (setup["root"] / "two.jsonl").read_text().splitlines()]
    assert len(a) == 15 and [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["score"] for r in a] == pytest.approx([r["score"] for r in b], abs=1e-4)
    assert all(r["labels"] for r in a)


def test_a_strategy_that_needs_the_whole_pool_is_refused_while_narrowing(setup: dict) -> None:
    out = _select(setup, setup["root"] / "x.jsonl", "--strategy", "coreset")
    assert out.returncode != 0 and "needs the whole pool at once" in out.stderr
