"""Retraining jobs: the training entry point in a separate process, on the base training data plus
the stored annotations; progress from its ``train_log.jsonl``; the result swapped in if it is not
worse on dev micro-F1 than the served model (or if forced).

A job's state lives in the database, so any worker or replica can report it; the worker that runs
it refreshes ``updated_at`` while it runs, and a job whose heartbeat stops (its server died) is
reported as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from service.storage import Storage
from xlgen.data import Document, find_split, read_documents, write_jsonl

log = logging.getLogger("xlgen.service")

HEARTBEAT_S = 1.0
STALE_S = 60.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]


class JobConflict(Exception):
    """A retraining job is already running."""


def read_progress(run_dir: Path) -> dict[str, Any]:
    """The last line of ``train_log.jsonl`` and how many evaluations it holds."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return {"evaluations": 0}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):  # the last line may be half written
            records.append(json.loads(line))
    evals = [r for r in records if not r.get("final")]
    out: dict[str, Any] = {"evaluations": len(evals)}
    if evals:
        last = evals[-1]
        out.update({k: last[k] for k in ("step", "epoch", "loss", "elapsed_s", "dev_micro_f1") if k in last})
    out["finished"] = any(r.get("final") for r in records)
    return out


def build_train_file(storage: Storage, train_data: str, out: Path) -> dict[str, int]:
    """Writes the base train split plus every annotated document (its latest labels; an annotated
    document replaces a base document of the same id) as JSON Lines.

    Returns:
        Counts: ``base``, ``annotated``, ``total``.
    """
    base = read_documents(find_split(train_data, "train"))
    annotated = {i: Document(i, text, tuple(labels)) for i, text, labels in storage.labelled_documents() if labels}
    docs = [d for d in base if d.id not in annotated] + list(annotated.values())
    write_jsonl(docs, out)
    return {"base": len(base), "annotated": len(annotated), "total": len(docs)}


class RetrainManager:
    """Starts and watches retraining jobs of this worker.

    Args:
        storage: Where job state goes.
        work_dir: Jobs run in ``work_dir/jobs/<id>``.
        train_data: Base dataset folder (train/dev[/test]).
        extra_args: Options added to every ``python -m training.train`` call.
        serving_f1: The served model's dev micro-F1 (read when a job finishes).
        install: ``install(model_dir)`` loads and swaps in a finished model.
        serving_path: The served model's directory, if any: a ``bcl`` / ``mcg`` model is retrained
            as the same variant over its own label clustering (labels new since then go to their
            nearest cluster), unless ``extra_args`` say otherwise.
    """

    def __init__(
        self,
        storage: Storage,
        work_dir: str | Path,
        train_data: str,
        extra_args: str,
        serving_f1: Callable[[], float],
        install: Callable[[str], Awaitable[str]],
        serving_path: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.storage = storage
        self.work_dir = Path(work_dir)
        self.train_data = train_data
        self.extra_args = shlex.split(extra_args)
        self.serving_f1 = serving_f1
        self.install = install
        self.serving_path = serving_path
        self.owner = uuid.uuid4().hex[:12]
        self._tasks: dict[str, asyncio.Task] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        """The job's record; a running job without heartbeat is marked failed first."""
        job = self.storage.get_job(job_id)
        if job and job["status"] in ("queued", "running") and job_id not in self._tasks and time.time() - job["updated_at"] > STALE_S:
            self.storage.update_job(job_id, status="failed", message="the server running this job stopped")
            job = self.storage.get_job(job_id)
        return job

    def _busy(self) -> bool:
        return any(self.job_view(j["id"])["status"] in ("queued", "running") for j in self.storage.active_jobs())  # type: ignore[index]

    async def start(self, params: dict[str, Any]) -> str:
        """Starts a job; returns its id.

        Raises:
            JobConflict: If a job is running already (here or on another worker).
            ValueError: If retraining is not configured.
        """
        if not self.train_data:
            raise ValueError("retraining needs the base training data: set XLGEN_TRAIN_DATA (xlgen serve --train-data)")
        if await asyncio.to_thread(self._busy):
            raise JobConflict("a retraining job is already running")
        job_id = await asyncio.to_thread(self.storage.create_job, params, self.owner)
        self._tasks[job_id] = asyncio.get_running_loop().create_task(self._run(job_id, params), name=f"job-{job_id}")
        return job_id

    def _command(self, job_dir: Path, params: dict[str, Any]) -> list[str]:
        cmd = [sys.executable, "-m", "training.train", "--data", self.train_data, "--train-file", str(job_dir / "train.jsonl"),
               "--no-progress", *self.extra_args]
        for key in ("max_steps", "epochs", "batch_size", "lr", "eval_every", "preset", "seed"):
            if params.get(key) is not None:
                cmd += ["--" + key.replace("_", "-"), str(params[key])]
        cmd += self._guidance_args()
        return [*cmd, "--output-dir", str(job_dir / "run")]  # last, so that no option can move it

    def _guidance_args(self) -> list[str]:
        """``--variant`` and ``--clusters`` of the served model, when it has label clusters."""
        served = self.serving_path()
        if not served or "--variant" in self.extra_args or not (Path(served) / "xlgen.json").is_file():
            return []
        variant = json.loads((Path(served) / "xlgen.json").read_text())["settings"].get("variant", "base")
        if variant == "base":
            return []
        args = ["--variant", variant]
        if (Path(served) / "clusters" / "clusters.json").is_file() and "--clusters" not in self.extra_args:
            args += ["--clusters", str(Path(served) / "clusters")]
        return args

    async def _run(self, job_id: str, params: dict[str, Any]) -> None:
        job_dir = self.work_dir / "jobs" / job_id
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            counts = await asyncio.to_thread(build_train_file, self.storage, self.train_data, job_dir / "train.jsonl")
            cmd = self._command(job_dir, params)
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
            with open(job_dir / "train.out", "wb") as out:
                proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=str(job_dir))
            self._procs[job_id] = proc
            await asyncio.to_thread(self.storage.update_job, job_id, status="running",
                                    progress={"train_docs": counts, "evaluations": 0}, message=shlex.join(cmd))
            log.info("retraining started", extra={"fields": {"job": job_id, "pid": proc.pid, **counts}})
            while proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), HEARTBEAT_S)
                progress = {"train_docs": counts, **read_progress(job_dir / "run")}
                await asyncio.to_thread(self.storage.update_job, job_id, progress=progress)
            if proc.returncode != 0:
                tail = (job_dir / "train.out").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"training exited with {proc.returncode}: {tail}")
            await self._finish(job_id, job_dir / "run", bool(params.get("force")), counts)
        except asyncio.CancelledError:
            proc_ = self._procs.get(job_id)
            if proc_ and proc_.returncode is None:
                proc_.kill()
            await asyncio.to_thread(self.storage.update_job, job_id, status="failed", message="cancelled (server shutdown)")
            raise
        except Exception as e:
            log.exception("retraining failed", extra={"fields": {"job": job_id}})
            await asyncio.to_thread(self.storage.update_job, job_id, status="failed", message=str(e))
        finally:
            self._procs.pop(job_id, None)
            self._tasks.pop(job_id, None)

    async def _finish(self, job_id: str, run_dir: Path, force: bool, counts: dict[str, int]) -> None:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        new_f1, old_f1 = float(metrics.get("dev_micro_f1", -1.0)), self.serving_f1()
        model_dir = str((run_dir / "model").resolve())
        progress = {"train_docs": counts, **read_progress(run_dir)}
        if force or new_f1 >= old_f1:
            version = await self.install(model_dir)
            message = f"swapped in as {version}: dev micro-F1 {new_f1:.4f} vs {old_f1:.4f}" + (" (forced)" if force else "")
            swapped = True
        else:
            message = f"kept the served model: dev micro-F1 {new_f1:.4f} is worse than {old_f1:.4f} (force to swap anyway)"
            swapped = False
        await asyncio.to_thread(self.storage.update_job, job_id, status="succeeded", metrics=metrics, model_dir=model_dir,
                                swapped=swapped, message=message, progress=progress)
        log.info("retraining finished", extra={"fields": {"job": job_id, "swapped": swapped, "dev_micro_f1": new_f1}})

    async def stop(self) -> None:
        """Kills running training processes and marks their jobs failed."""
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
