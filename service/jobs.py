"""Retraining jobs: the training entry point in a separate process, on the base training data plus
the stored annotations; progress from its ``train_log.jsonl``; the result swapped in if it is not
worse on dev micro-F1 than the served model (or if forced).

A job is a database record (``queued`` -> ``running`` -> ``succeeded`` / ``failed`` / ``cancelled``)
that holds the training lock while it has not ended, so one training runs at a time across workers,
replicas and restarts. The record names the trainer's process group and the server process running
it; that server refreshes ``updated_at`` every second. The trainer runs in a process group of its own
and is SIGKILLed by the kernel when its server dies (:mod:`xlgen.service.trainer_process`). A job whose
server is gone (a dead process on this host, or no heartbeat for a minute from another host) is
*reaped* when any server next looks at it (at start-up, on a read, or when a job is asked for): its
trainer's process group is killed if it still runs on this host, the job is marked failed and the lock
released. A restarted server thus never adopts a trainer that outlived its server; it kills it, since
a model trained without its server's supervision cannot be checked and swapped in safely.
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

from xlgen.data import Document, find_split, read_documents, write_jsonl
from xlgen.service import trainer_process
from xlgen.service.storage import ACTIVE, FINISHED, JobLocked, Storage

log = logging.getLogger("xlgen.service")

SECRETS = ("XLGEN_API_KEY", "XLGEN_READ_KEY", "XLGEN_LLM_KEY")
"""Variables of the server's environment the trainer does not get: it needs none of the keys."""
HEARTBEAT_S = 1.0
STALE_S = 60.0
CANCEL_WAIT_S = 15.0
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def trainer_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The trainer's environment: the server's without the keys of :data:`SECRETS`, with the project root on
    ``PYTHONPATH``."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in SECRETS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


class TrainingFailed(Exception):
    """The trainer exited with an error: ``message`` for everyone, ``detail`` (its output's tail) for the API key."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


class JobConflict(Exception):
    """A retraining job is already running.

    Attributes:
        job_id: The running job.
    """

    def __init__(self, job_id: str) -> None:
        super().__init__(f"retraining job {job_id} is already running")
        self.job_id = job_id


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
    document replaces a base document of the same id) as JSON Lines. A yes to a new-label question adds
    the label to the document's annotation; a document not annotated enters with its yes-labels only.

    Returns:
        Counts: ``base``, ``annotated`` (documents with annotations or yes-answers), ``positives`` (yes-answers),
        ``total``.
    """
    base = read_documents(find_split(train_data, "train"))
    annotated = {i: Document(i, text, tuple(labels)) for i, text, labels in storage.labelled_documents() if labels}
    # yes-answers to new-label questions: the label joins the document's annotation, or the document enters with it
    positives = [(a["document_id"], a["label"]) for a in storage.answers() if a["answer"]]
    texts = storage.get_documents(sorted({doc_id for doc_id, _ in positives}))
    for doc_id, label in positives:
        if doc_id not in texts:
            continue
        doc = annotated.get(doc_id, Document(doc_id, texts[doc_id], ()))
        if label not in doc.labels:
            annotated[doc_id] = Document(doc_id, doc.text, (*doc.labels, label))
    docs = [d for d in base if d.id not in annotated] + list(annotated.values())
    write_jsonl(docs, out)
    return {"base": len(base), "annotated": len(annotated), "positives": len(positives), "total": len(docs)}


def write_answers(storage: Storage, out: Path) -> dict[str, int]:
    """Writes every yes/no answer to a new-label question whose document is in the pool as JSON Lines
    ``{"id", "text", "label", "answer"}`` (what ``xlgen.training.train --encoder-answers`` reads).

    Returns:
        Counts: ``yes``, ``no``.
    """
    answers = storage.answers()
    texts = storage.get_documents(sorted({a["document_id"] for a in answers}))
    rows = [{"id": a["document_id"], "text": texts[a["document_id"]], "label": a["label"], "answer": bool(a["answer"])}
            for a in answers if a["document_id"] in texts]
    write_jsonl_records(rows, out)
    return {"yes": sum(r["answer"] for r in rows), "no": sum(not r["answer"] for r in rows)}


def write_label_texts(storage: Storage, served: str | None, out: Path) -> int:
    """Writes the label texts a retraining keeps as a label file: the served retriever's labels that have a
    description or examples, and every label added by name (its description and examples), so that the
    retrained retriever matches them as the served one does, answered or not.

    Returns:
        The number of labels written (0: no file is needed).
    """
    from xlgen.encoders.label_texts import LabelText, read_label_file, write_label_file

    texts: dict[str, LabelText] = {}
    served_labels = Path(served or "") / "guidance" / "retriever" / "labels.jsonl"
    if served and served_labels.is_file():
        texts.update({k: t for k, t in read_label_file(served_labels).items() if t.description or t.examples})
    for rec in storage.new_labels():
        texts[rec["name"]] = LabelText(rec["name"], rec["description"] or None, tuple(rec["examples"] or ()))
    if texts:
        write_label_file(texts.values(), out)
    return len(texts)


def write_jsonl_records(rows: list[dict[str, Any]], out: Path) -> None:
    """JSON Lines, written to a temporary file and renamed: whole or absent."""
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, out)


class RetrainManager:
    """Starts, watches, cancels and reaps retraining jobs.

    Args:
        storage: Where job state goes.
        work_dir: Jobs run in ``work_dir/jobs/<id>`` (an absolute path: the trainer runs there).
        train_data: Base dataset folder (train/dev[/test]), absolute.
        extra_args: Options added to every ``python -m xlgen.training.train`` call.
        serving_f1: The served model's dev micro-F1 (read when a job finishes).
        install: ``install(model_dir)`` loads and swaps in a finished model.
        serving_path: The served model's directory, if any: a ``bcl`` / ``mcg`` model is retrained
            as the same variant over its own label clustering (labels new since then go to their
            nearest cluster), unless ``extra_args`` say otherwise.
        fine_tune_encoder: ``auto`` / ``always`` / ``never``: whether retraining a ``retrieval`` model
            fine-tunes its sentence encoder on the answers to new-label questions (``auto``: when there
            are some); the retrained model carries the fine-tuned encoder, and the next retraining
            starts from it.
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
        fine_tune_encoder: str = "auto",
    ) -> None:
        self.storage = storage
        self.work_dir = Path(work_dir).resolve()
        self.train_data = str(Path(train_data).resolve()) if train_data else ""
        self.extra_args = shlex.split(extra_args)
        self.serving_f1 = serving_f1
        self.install = install
        self.serving_path = serving_path
        self.fine_tune_encoder = fine_tune_encoder
        self.owner = uuid.uuid4().hex[:12]
        self.host = trainer_process.HOST
        self.server = trainer_process.identity()
        self._mine: set[str] = set()  # jobs this manager runs, registered before their record exists
        self._tasks: dict[str, asyncio.Task] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    # ------------------------------------------------------------------------------ orphans

    def _orphaned(self, job: dict[str, Any]) -> bool:
        """Whether a job that has not ended has lost the server that runs it."""
        if job["status"] not in ACTIVE:
            return False
        if job["owner"] == self.owner:
            return job["id"] not in self._mine
        if job["host"] == self.host and job["server"]:
            return not trainer_process.alive(job["server"])
        return time.time() - job["updated_at"] > STALE_S  # another host (or a record without a server): its heartbeat

    def _reap(self, job: dict[str, Any], status: str, message: str) -> bool:
        """Kills the trainer's process group of an orphaned job if it still runs here, and ends the job."""
        if job["host"] == self.host and job["pgid"]:
            trainer_process.kill_group(job["pgid"], job["proc_start"])
        ended = self.storage.finish_job(job["id"], status, message=message)
        if ended:
            log.warning("retraining job reaped", extra={"fields": {"job": job["id"], "status": status, "pgid": job["pgid"]}})
        return ended

    def recover(self) -> list[str]:
        """Reaps every orphaned job and clears a lock left by a job that ended (at start-up).

        Returns:
            The ids of the jobs reaped.
        """
        reaped = [job["id"] for job in self.storage.active_jobs()
                  if self._orphaned(job) and self._reap(job, "failed", "the server running this job stopped; its trainer was killed")]
        self._clear_stale_lock()
        return reaped

    def _clear_stale_lock(self) -> None:
        holder = self.storage.lock_holder()
        if holder is None:
            return
        job = self.storage.get_job(holder)
        if job is None or job["status"] in FINISHED:
            self.storage.release_lock(holder)
        elif self._orphaned(job):
            self._reap(job, "failed", "the server running this job stopped; its trainer was killed")

    def job_view(self, job_id: str) -> dict[str, Any] | None:
        """The job's record; an orphaned job is reaped first."""
        job = self.storage.get_job(job_id)
        if job is not None and self._orphaned(job):
            self._reap(job, "failed", "the server running this job stopped; its trainer was killed")
            job = self.storage.get_job(job_id)
        return job

    # ------------------------------------------------------------------------------- start

    async def start(self, params: dict[str, Any]) -> str:
        """Starts a job; returns its id.

        Raises:
            JobConflict: If a job is running already (here, on another worker or replica).
            ValueError: If retraining is not configured.
        """
        if not self.train_data:
            raise ValueError("retraining needs the base training data: set XLGEN_TRAIN_DATA (xlgen serve --train-data)")
        job_id = uuid.uuid4().hex[:12]
        self._mine.add(job_id)

        def create() -> None:
            try:
                self.storage.create_job(params, self.owner, host=self.host, server=self.server, job_id=job_id)
            except JobLocked:
                self._clear_stale_lock()
                self.storage.create_job(params, self.owner, host=self.host, server=self.server, job_id=job_id)

        try:
            await asyncio.to_thread(create)
        except JobLocked as e:
            self._mine.discard(job_id)
            raise JobConflict(e.job_id) from None
        except BaseException:
            self._mine.discard(job_id)
            raise
        self._tasks[job_id] = asyncio.get_running_loop().create_task(self._run(job_id, params), name=f"job-{job_id}")
        return job_id

    def _command(self, job_dir: Path, params: dict[str, Any], files: dict[str, int] | None = None) -> list[str]:
        cmd = [sys.executable, "-m", "xlgen.training.train", "--data", self.train_data, "--train-file", str(job_dir / "train.jsonl"),
               "--no-progress", *self.extra_args]
        for key in ("max_steps", "epochs", "batch_size", "lr", "eval_every", "preset", "seed"):
            if params.get(key) is not None:
                cmd += ["--" + key.replace("_", "-"), str(params[key])]
        cmd += self._guidance_args(job_dir, files or {})
        return [*cmd, "--output-dir", str(job_dir / "run")]  # last, so that no option can move it

    def _given(self, flag: str) -> bool:
        return any(a == flag or a.startswith(flag + "=") for a in self.extra_args)

    def _value(self, flag: str) -> str | None:
        """The value ``extra_args`` give ``flag`` (``--flag V`` or ``--flag=V``; the last one wins), if any."""
        value = None
        for i, a in enumerate(self.extra_args):
            if a == flag and i + 1 < len(self.extra_args):
                value = self.extra_args[i + 1]
            elif a.startswith(flag + "="):
                value = a.split("=", 1)[1]
        return value

    def _guidance_args(self, job_dir: Path | None = None, files: dict[str, int] | None = None) -> list[str]:
        """``--variant`` and ``--clusters`` of the served model, when it has label clusters; for a
        ``retrieval`` model, its retriever's encoder (the copy in the model directory when it carries
        one), encoder numerics, sources and candidate count, so that the retrained model embeds as the
        served one does; for a generator on the sentence encoder, that backbone and the served generator's shape. When the retrained model is a ``retrieval`` one (the served model's variant or
        the operator's ``--variant``): the label file of the job (``files["labels"]`` labels in
        ``job_dir/labels.jsonl``), and the encoder's fine-tuning on the answers (``files["answers"]`` in
        ``job_dir/answers.jsonl``) as ``fine_tune_encoder`` says. Options in ``extra_args`` win."""
        served = self.serving_path()
        files = files or {}
        served_variant = served_backbone = None
        if served and (Path(served) / "xlgen.json").is_file():
            settings = json.loads((Path(served) / "xlgen.json").read_text())["settings"]
            served_variant, served_backbone = settings.get("variant", "base"), settings.get("backbone", "t5")
        own = self._given("--variant")
        variant = self._value("--variant") if own else served_variant
        args = ["--variant", served_variant] if served_variant not in (None, "base") and not own else []
        given: dict[str, Any] = {}
        if served_backbone == "sentence-encoder" and variant == "retrieval" and not self._given("--backbone"):
            # the generator on the sentence encoder, of the served one's shape (its T5 config)
            args += ["--backbone", "sentence-encoder"]
            t5 = json.loads((Path(served or "") / "config.json").read_text()) if (Path(served or "") / "config.json").is_file() else {}
            given.update({"--reader-layers": t5.get("num_layers"), "--decoder-layers": t5.get("num_decoder_layers"),
                          "--decoder-heads": t5.get("num_heads"), "--decoder-ff": t5.get("d_ff")})
        retriever = Path(served or "") / "guidance" / "retriever" / "retriever.json"
        if variant == "retrieval" and served_variant == "retrieval" and retriever.is_file():
            meta = json.loads(retriever.read_text())
            rcfg = meta.get("config", {})
            bundled = (meta.get("encoder") or {}).get("bundled")
            given.update({"--encoder": str(retriever.parent / bundled) if bundled else rcfg.get("encoder"),
                          "--encoder-quantization": rcfg.get("encoder_quantization"), "--retriever-candidates": rcfg.get("candidates")})
            if rcfg.get("sources") and not self._given("--retriever-sources"):
                args += ["--retriever-sources", *map(str, rcfg["sources"])]
        if variant == "retrieval" and job_dir is not None:
            if files.get("labels"):
                given["--label-file"] = str(job_dir / "labels.jsonl")
            tune = self.fine_tune_encoder == "always" or (self.fine_tune_encoder == "auto" and files.get("answers", 0) > 0)
            if tune and not self._given("--fine-tune-encoder") and not self._given("--no-fine-tune-encoder"):
                args.append("--fine-tune-encoder")
                if files.get("answers"):
                    given["--encoder-answers"] = str(job_dir / "answers.jsonl")
        for flag, value in given.items():
            if value is not None and not self._given(flag):
                args += [flag, str(value)]
        if served and not own:
            for sub in ("guidance", "clusters"):  # model directory formats 2 and 1
                if (Path(served) / sub / "clusters.json").is_file() and not self._given("--clusters"):
                    args += ["--clusters", str(Path(served) / sub)]
                    break
        return args

    # --------------------------------------------------------------------------------- run

    async def _run(self, job_id: str, params: dict[str, Any]) -> None:
        job_dir = self.work_dir / "jobs" / job_id
        proc: asyncio.subprocess.Process | None = None
        leader_start = ""
        try:
            job_dir.mkdir(parents=True, exist_ok=True)
            counts = await asyncio.to_thread(build_train_file, self.storage, self.train_data, job_dir / "train.jsonl")
            answered = await asyncio.to_thread(write_answers, self.storage, job_dir / "answers.jsonl")
            n_labels = await asyncio.to_thread(write_label_texts, self.storage, self.serving_path(), job_dir / "labels.jsonl")
            cmd = self._command(job_dir, params, {"answers": answered["yes"] + answered["no"], "labels": n_labels})
            progress: dict[str, Any] = {"train_docs": counts, "evaluations": 0}
            record = await asyncio.to_thread(self.storage.heartbeat, job_id, progress=progress)
            if record is None or record["cancel_requested"]:
                await asyncio.to_thread(self.storage.finish_job, job_id, "cancelled", message="cancelled before training started")
                return
            with open(job_dir / "train.out", "wb") as out:
                # forked here, on the event loop's thread, which lives as long as the server (the death signal's parent)
                proc = await asyncio.create_subprocess_exec(*trainer_process.wrap(cmd), stdout=out, stderr=asyncio.subprocess.STDOUT,
                                                            env=trainer_env(), cwd=str(job_dir), process_group=0)
            self._procs[job_id] = proc
            leader_start = trainer_process.start_time(proc.pid) or ""
            # the command line names server paths: the detail, for the API key; the message is for everyone
            record = await asyncio.to_thread(self.storage.heartbeat, job_id, status="running", pid=proc.pid, pgid=proc.pid,
                                             proc_start=leader_start, started_at=time.time(),
                                             message=f"training on {counts['total']} documents", detail=shlex.join(cmd))
            log.info("retraining started", extra={"fields": {"job": job_id, "pid": proc.pid, **counts}})
            while proc.returncode is None:
                if record is None or record["cancel_requested"]:  # cancelled, here or by another worker, or reaped
                    trainer_process.kill_group(proc.pid, leader_start, wait_s=0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), HEARTBEAT_S)
                progress = {"train_docs": counts, **read_progress(job_dir / "run")}
                record = await asyncio.to_thread(self.storage.heartbeat, job_id, progress=progress)
            record = await asyncio.to_thread(self.storage.get_job, job_id)
            if record is None or record["status"] not in ACTIVE:
                return  # ended elsewhere
            if record["cancel_requested"]:
                await asyncio.to_thread(self.storage.finish_job, job_id, "cancelled", message="cancelled", progress=progress)
                log.info("retraining cancelled", extra={"fields": {"job": job_id}})
                return
            if proc.returncode != 0:
                tail = (job_dir / "train.out").read_text(errors="replace")[-2000:]
                raise TrainingFailed(f"training exited with {proc.returncode}", f"{record['detail'] if record else ''}\n{tail}")
            await self._finish(job_id, job_dir / "run", bool(params.get("force")), counts)
        except asyncio.CancelledError:  # the server shuts down
            if proc is not None and proc.returncode is None:
                trainer_process.kill_group(proc.pid, leader_start, wait_s=0)
            await asyncio.to_thread(self.storage.finish_job, job_id, "failed", message="the server shut down during training")
            raise
        except TrainingFailed as e:
            log.error("retraining failed", extra={"fields": {"job": job_id, "message": str(e)}})
            await asyncio.to_thread(self.storage.finish_job, job_id, "failed", message=str(e), detail=e.detail)
        except Exception as e:  # an error of the server's (an unreadable file, a database error): its text may name paths
            log.exception("retraining failed", extra={"fields": {"job": job_id}})
            await asyncio.to_thread(self.storage.finish_job, job_id, "failed", message=f"retraining failed: {type(e).__name__}",
                                    detail=f"{type(e).__name__}: {e}")
        finally:
            if proc is not None:  # nothing of the trainer outlives its job
                await asyncio.to_thread(trainer_process.kill_group, proc.pid, leader_start)
            self._procs.pop(job_id, None)
            self._tasks.pop(job_id, None)
            self._mine.discard(job_id)

    async def _finish(self, job_id: str, run_dir: Path, force: bool, counts: dict[str, int]) -> None:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        new_f1, old_f1 = float(metrics.get("dev_micro_f1", -1.0)), self.serving_f1()
        model_dir = str((run_dir / "model").resolve())
        progress = {"train_docs": counts, **read_progress(run_dir)}
        record = await asyncio.to_thread(self.storage.get_job, job_id)
        if record is None or record["status"] not in ACTIVE or record["cancel_requested"]:
            await asyncio.to_thread(self.storage.finish_job, job_id, "cancelled", message="cancelled; its model was not swapped in",
                                    metrics=metrics, model_dir=model_dir, progress=progress)
            return
        if force or new_f1 >= old_f1:
            version = await self.install(model_dir)
            message = f"swapped in as {version}: dev micro-F1 {new_f1:.4f} vs {old_f1:.4f}" + (" (forced)" if force else "")
            swapped = True
        else:
            message = f"kept the served model: dev micro-F1 {new_f1:.4f} is worse than {old_f1:.4f} (force to swap anyway)"
            swapped = False
        await asyncio.to_thread(self.storage.finish_job, job_id, "succeeded", metrics=metrics, model_dir=model_dir,
                                swapped=swapped, message=message, progress=progress)
        log.info("retraining finished", extra={"fields": {"job": job_id, "swapped": swapped, "dev_micro_f1": new_f1}})

    # ------------------------------------------------------------------------------ cancel

    async def cancel(self, job_id: str) -> tuple[dict[str, Any] | None, bool]:
        """Cancels a job: kills its trainer's process group and marks it ``cancelled``.

        A job of this manager is ended here; one of another worker on this host has its trainer killed
        here and is ended by its worker; one on another host is ended by its server at its next heartbeat.
        Waits up to ``CANCEL_WAIT_S`` for the job to end.

        Returns:
            ``(record, asked)``: the job's record (None if there is no such job), and whether it had not
            ended when asked.
        """
        job = await asyncio.to_thread(self.storage.get_job, job_id)
        if job is None or job["status"] in FINISHED:
            return job, False
        if not await asyncio.to_thread(self.storage.request_cancel, job_id):
            return await asyncio.to_thread(self.storage.get_job, job_id), False
        task, proc = self._tasks.get(job_id), self._procs.get(job_id)
        if task is not None:
            if proc is not None and proc.returncode is None:
                trainer_process.kill_group(proc.pid, trainer_process.start_time(proc.pid) or "", wait_s=0)
            await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
        elif self._orphaned(job):
            await asyncio.to_thread(self._reap, job, "cancelled", "cancelled; the server running it had stopped")
        else:
            if job["host"] == self.host and job["pgid"]:
                await asyncio.to_thread(trainer_process.kill_group, job["pgid"], job["proc_start"])
            deadline = time.monotonic() + CANCEL_WAIT_S
            while (job := await asyncio.to_thread(self.storage.get_job, job_id)) and job["status"] in ACTIVE \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
        return await asyncio.to_thread(self.storage.get_job, job_id), True

    async def stop(self) -> None:
        """Kills this manager's training processes and marks their jobs failed (server shutdown)."""
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
