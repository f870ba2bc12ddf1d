"""End-to-end tests of the training entry point on the tiny preset."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from xlgen.model import XLGenModel
from xlgen.training.config import TrainConfig
from xlgen.training.train import TrainingError, run

ROOT = Path(__file__).resolve().parents[2]


def _cfg(data, out, **kw):
    base = dict(data=str(data), output_dir=str(out), preset="tiny", max_steps=30, eval_every=10, batch_size=16,
                lr=5e-3, max_target_length=16, max_input_length=48, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_run_writes_model_log_and_metrics(trained_tiny_run):
    out = trained_tiny_run
    assert not (out / "checkpoint").exists() and not (out / "best").exists()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if "step" in r]
    assert [r["step"] for r in evals] == [20, 40]
    assert all(0.0 <= r["dev_micro_f1"] <= 1.0 and r["loss"] > 0 for r in evals)
    assert log[-1]["final"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_micro_f1"] <= 1.0 and metrics["test_n_docs"] == 60
    # the tiny model learns the majority label at least: better than nothing on dev
    assert metrics["dev_micro_f1"] > 0.1
    model = XLGenModel.load(out / "model")
    assert model.threshold == metrics["dev_threshold"]
    assert len(model.label_space) > 10


def test_refuses_to_overwrite_a_finished_run(trained_tiny_run, tiny_data):
    with pytest.raises(TrainingError, match="already holds a finished model"):
        run(_cfg(tiny_data, trained_tiny_run))


def test_config_validation():
    with pytest.raises(ValueError, match="needs --base-model"):
        TrainConfig(lora=True)
    with pytest.raises(ValueError, match="deficit"):
        TrainConfig(deficit_rate=1.5)


def _train_cmd(data, out, *extra):
    return [sys.executable, "-m", "xlgen.training.train", "--data", str(data), "--output-dir", str(out), "--preset", "tiny",
            "--max-steps", "40", "--eval-every", "5", "--batch-size", "16", "--lr", "5e-3", "--max-target-length", "16",
            "--max-input-length", "48", "--no-progress", "--threads", "1", *extra]


def test_resume_after_kill_matches_uninterrupted_run(tiny_data, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(tiny_data, interrupted), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state = interrupted / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["state"]["global_step"] >= 15:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["state"]["global_step"]
    assert 15 <= killed_at < 40
    resumed = subprocess.run(_train_cmd(tiny_data, interrupted), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming at step {killed_at}" in resumed.stdout + resumed.stderr
    straight = tmp_path / "straight"
    once = subprocess.run(_train_cmd(tiny_data, straight), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert once.returncode == 0, once.stderr[-2000:]
    a = load_file(interrupted / "model" / "model.safetensors")
    b = load_file(straight / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] - b[k]).abs().max() < 1e-5 for k in a), "a resumed run must end where an uninterrupted one does"


def test_distributed_two_cpu_processes_agree(tiny_data, tmp_path):
    """The unchanged script under ``accelerate launch`` with two CPU processes (gloo)."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           str(ROOT / "tests" / "integration" / "ddp_worker.py"), str(tiny_data), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    digests = [(out / f"rank{r}.digest").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    assert (out / "model" / "xlgen.json").is_file()
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["final"] is True


def test_bf16_on_a_cpu_trains_under_autocast_and_saves_float32(tiny_data, tmp_path):
    """``--mixed-precision bf16`` on a CPU runs the steps in bfloat16 (the weights leave a float32 run of
    the same seed), saves float32 weights, and one process may train in either precision in turn."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    runs = {p: run(_cfg(tiny_data, tmp_path / p, max_steps=6, eval_every=6, mixed_precision=p)) for p in ("no", "bf16")}
    assert runs["no"].weights_digest != runs["bf16"].weights_digest
    again = run(_cfg(tiny_data, tmp_path / "again", max_steps=6, eval_every=6, mixed_precision="no"))
    assert again.weights_digest == runs["no"].weights_digest
    saved = load_file(tmp_path / "bf16" / "model" / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}
    assert XLGenModel.load(tmp_path / "bf16" / "model").predict(["I am so happy today"])[0].all_scores


def test_fp16_on_a_cpu_is_refused_by_name(tiny_data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    with pytest.raises(TrainingError, match="--mixed-precision fp16 needs a CUDA device"):
        run(_cfg(tiny_data, tmp_path / "fp16", mixed_precision="fp16"))


def test_bf16_on_a_cpu_without_bfloat16_instructions_warns(monkeypatch, caplog):
    import xlgen.training.train as train_module

    monkeypatch.setattr(train_module, "cpu_bf16_native", lambda: False)
    with caplog.at_level("WARNING", logger="xlgen.train"):
        assert train_module._mixed_precision(TrainConfig(mixed_precision="bf16"), "cpu") == "bf16"
    assert "emulated" in caplog.text
    assert train_module._mixed_precision(TrainConfig(), "cpu") == "no"
