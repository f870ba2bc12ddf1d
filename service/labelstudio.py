"""The Label Studio ML-backend protocol (``/health``, ``/setup``, ``/predict``, ``/train``, ``/webhook``), so
that annotators can label in Label Studio with this service pre-filling the choices.

A labeling config with a ``<Text name=.. value="$field"/>`` and a multiple ``<Choices name=..
toName=..>`` is expected; predictions carry the multi-label ``choices`` result (only labels among the
config's ``<Choice>`` values) and a confidence ``score`` (the best sequence's probability per token:
low = annotate first, as Label Studio sorts). A task without its text gets an empty result.

Webhook annotation events are stored as annotations (document id ``ls-<task id>`` unless the task
data has an ``id``) under their Label Studio annotation id, so that ``ANNOTATIONS_DELETED`` withdraws
them; ``START_TRAINING`` and ``/train`` start a retraining job and answer its id as ``job`` (the
running job's, with 200, when one runs: Label Studio marks a backend that answers an error as failed).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from litestar import get, post
from litestar.exceptions import ClientException, ValidationException
from litestar.status_codes import HTTP_200_OK

from xlgen.decoding import cut
from xlgen.service.auth import WRITE
from xlgen.service.errors import errors
from xlgen.service.jobs import JobConflict
from xlgen.service.labelstudio_protocol import (
    ANNOTATION_DELETES,
    ANNOTATION_WRITES,
    START_TRAINING,
    LabelConfig,
    LSAnnotation,
    LSTask,
    PredictRequest,
    SetupRequest,
    TrainRequest,
    WebhookEvent,
    annotator_of,
    chosen_labels,
    external_id,
    parse_label_config,
    project_label_config,
)
from xlgen.service.runtime import Runtime

ID_MAX = 256


class Skip(Exception):
    """An annotation that cannot be stored: ``key`` names the field, the message says why."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def task_text(task: LSTask, cfg: LabelConfig, max_chars: int, key: str) -> str:
    """The task's text, as the labeling config names it.

    Raises:
        Skip: If it is missing, not a string, empty or longer than ``max_chars``.
    """
    text = task.data.get(cfg.data_key)
    field = f"{key}.data.{cfg.data_key}"
    if not isinstance(text, str) or not text.strip():
        raise Skip(field, "missing or empty text")
    if len(text) > max_chars:
        raise Skip(field, f"{len(text)} characters; at most {max_chars} per text")
    return text


def document_id(task: LSTask, key: str) -> str:
    """``task.data.id`` (a string or an integer), else ``ls-<task id>``.

    Raises:
        Skip: If ``data.id`` is of another type or longer than 256 characters, or there is no id at all.
    """
    given = task.data.get("id")
    if given is not None and given != "":
        if isinstance(given, bool) or not isinstance(given, str | int):
            raise Skip(f"{key}.data.id", f"must be a string or an integer, not {type(given).__name__}")
        doc_id = str(given)
    elif task.id is not None:
        doc_id = f"ls-{task.id}"
    else:
        raise Skip(f"{key}.id", "the task has no id (and its data no id)")
    if len(doc_id) > ID_MAX:
        raise Skip(f"{key}.data.id", f"{len(doc_id)} characters; at most {ID_MAX}")
    return doc_id


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _pairs(annotations: list[LSAnnotation], tasks: list[LSTask], bulk: bool) -> list[tuple[str, str, LSTask | None, LSAnnotation]]:
    """``(annotation key, task key, task, annotation)``: each annotation with its task (by ``annotation.task``,
    else by position)."""
    by_id = {str(t.id): (j, t) for j, t in enumerate(tasks) if t.id is not None}
    out = []
    for i, ann in enumerate(annotations):
        ref = ann.task.get("id") if isinstance(ann.task, dict) else ann.task
        j, task = by_id.get(str(ref), (None, None)) if ref is not None else (None, None)
        if task is None and len(tasks) in (1, len(annotations)):
            j = 0 if len(tasks) == 1 else i
            task = tasks[j]
        akey = f"annotation[{i}]" if bulk else "annotation"
        tkey = f"task[{j}]" if bulk and isinstance(j, int) else "task"
        out.append((akey, tkey, task, ann))
    return out


async def _store(rt: Runtime, pairs: Sequence[tuple[str, str, LSTask | None, LSAnnotation]], cfg: LabelConfig,
                 if_changed: bool) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Stores each annotation; returns what was stored and what was skipped (``key``, ``message``)."""
    stored: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for akey, tkey, task, ann in pairs:
        try:
            if ann.was_cancelled:
                raise Skip(f"{akey}.was_cancelled", "a skipped task has no labels")
            if task is None:
                raise Skip(tkey, "no task for this annotation")
            doc_id = document_id(task, tkey)
            text = task_text(task, cfg, rt.settings.max_chars, tkey)
        except Skip as e:
            skipped.append({"key": e.key, "message": str(e)})
            continue
        labels = chosen_labels(ann.result, cfg.from_name if cfg.named else None)
        ext = external_id(ann.id) if ann.id is not None else None
        saved = await asyncio.to_thread(rt.storage.annotate, doc_id, labels, 0, annotator_of(ann), text, ext, if_changed)
        rt.metrics.annotations.inc()
        stored.append({"document_id": saved.document_id, "labels": saved.labels, "annotation": ann.id})
    return stored, skipped


async def _train(rt: Runtime) -> dict[str, Any]:
    """Starts a retraining job, or reports the one running; ``job`` is what Label Studio reads."""
    rt.require_model()
    try:
        job_id = await rt.jobs.start({"force": False, "source": "label studio"})
        state = "started"
    except JobConflict as e:
        job_id, state = e.job_id, "running"
    except ValueError as e:  # retraining is not configured
        raise ClientException(status_code=409, detail=str(e)) from None
    return {"status": "ok", "job": job_id, "job_status": state}


def _missing(key: str, message: str = "missing") -> ValidationException:
    return ValidationException(detail=f"{key}: {message}", extra=[{"key": key, "message": message}])


def _stored_or_400(stored: list[dict[str, Any]], skipped: list[dict[str, str]]) -> dict[str, Any]:
    if skipped and not stored:
        raise ValidationException(detail="; ".join(f"{s['key']}: {s['message']}" for s in skipped), extra=skipped)
    return {"status": "ok", "stored": stored, "skipped": skipped}


@get("/health", tags=["label studio"], summary="Label Studio ML backend health")
async def ls_health(rt: Runtime) -> dict[str, Any]:
    served = rt.holder.current
    return {"status": "UP" if served else "DOWN", "model_class": "XLGen", "model_version": served.version if served else None}


@post("/setup", tags=["label studio"], status_code=HTTP_200_OK, responses=errors(503), summary="Label Studio ML backend setup")
async def ls_setup(data: SetupRequest, rt: Runtime) -> dict[str, Any]:
    served = rt.require_model()
    return {"model_version": served.version}


@post("/predict", tags=["label studio"], status_code=HTTP_200_OK, responses=errors(503, 504),
      summary="Label Studio predictions: multi-label choices with a confidence score (low = annotate first)",
      description="One result per task, in order; a task without its text (or with a text over XLGEN_MAX_CHARS) gets an empty one.")
async def ls_predict(data: PredictRequest, rt: Runtime) -> dict[str, Any]:
    served = rt.require_model()
    cfg = parse_label_config(data.label_config or project_label_config(data.project))
    results: list[dict[str, Any]] = [{"model_version": served.version, "score": None, "result": []} for _ in data.tasks]
    usable = []
    for i, task in enumerate(data.tasks):
        try:
            usable.append((i, task_text(task, cfg, rt.settings.max_chars, f"tasks[{i}]")))
        except Skip:
            continue
    step = rt.settings.max_texts
    for start in range(0, len(usable), step):
        chunk = usable[start:start + step]
        tagged = await rt.tag([text for _, text in chunk], served.model.decoding)
        for (i, _), t in zip(chunk, tagged, strict=True):
            model = t.served.model
            scores = {k: v for k, v in t.prediction.all_scores.items() if cfg.choices is None or k in cfg.choices}
            labels = [k for k, _ in cut(scores, model.threshold, model.decoding.min_labels)]
            best = max((c.norm_logprob for c in t.prediction.candidates), default=-math.inf)
            results[i] = {
                "model_version": t.served.version,
                "score": round(math.exp(best), 6),
                "result": [{"from_name": cfg.from_name, "to_name": cfg.to_name, "type": "choices", "value": {"choices": labels}}],
            }
    return {"results": results, "model_version": served.version}


@post("/train", tags=["label studio"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK, responses=errors(409, 503),
      summary="Label Studio training request: stores the annotations it carries, starts retraining",
      description="Answers the job's id as `job`; while a job runs, that job's (200, not 409).")
async def ls_train(data: TrainRequest, rt: Runtime) -> dict[str, Any]:
    cfg = parse_label_config(data.label_config or project_label_config(data.project))
    pairs = [(f"annotations[{j}].annotations[{i}]", f"annotations[{j}]", task, ann)
             for j, task in enumerate(data.annotations) for i, ann in enumerate(task.annotations)]
    stored, skipped = await _store(rt, pairs, cfg, if_changed=True)
    return {**await _train(rt), "stored": len(stored), "skipped": skipped}


@post("/webhook", tags=["label studio"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK, responses=errors(409, 503),
      summary="Label Studio webhook: annotations created, updated or deleted; START_TRAINING starts retraining",
      description="Every annotation of a bulk event that can be stored is; the others are listed under `skipped` "
                  "(a 400 when none could be stored).")
async def ls_webhook(data: WebhookEvent, rt: Runtime) -> dict[str, Any]:
    action = data.action
    if action in ANNOTATION_WRITES:
        annotations, tasks = _as_list(data.annotation), _as_list(data.task)
        if not annotations:
            raise _missing("annotation")
        cfg = parse_label_config(project_label_config(data.project))
        bulk = isinstance(data.annotation, list) or isinstance(data.task, list)
        return _stored_or_400(*await _store(rt, _pairs(annotations, tasks, bulk), cfg, if_changed=False))
    if action in ANNOTATION_DELETES:
        for i, ref in enumerate(data.annotations or []):
            if ref.id is None:
                raise _missing(f"annotations[{i}].id")
        ids = [a.id for a in data.annotations or [] if a.id is not None] + [a.id for a in _as_list(data.annotation) if a.id is not None]
        if not ids:
            raise _missing("annotations", "no annotation ids")
        deleted = await asyncio.to_thread(rt.storage.delete_external, [external_id(i) for i in ids])
        return {"status": "ok", "deleted": [{"document_id": d, "round": r} for d, r in deleted]}
    if action == START_TRAINING:
        return await _train(rt)
    return {"status": "ignored", "action": action}


ROUTES = [ls_health, ls_setup, ls_predict, ls_train, ls_webhook]
