"""The Label Studio ML-backend protocol (``/health``, ``/setup``, ``/predict``, ``/train``, ``/webhook``), so
that annotators can label in Label Studio with this service pre-filling the choices.

A labeling config with a ``<Text name=.. value="$field"/>`` and a multiple ``<Choices name=..
toName=..>`` is expected; predictions carry the multi-label ``choices`` result (only labels among the
config's ``<Choice>`` values) and a confidence ``score`` (the best sequence's probability per token:
low = annotate first, as Label Studio sorts). A task without its text gets an empty result.

Webhook annotation events are stored as annotations (document id ``ls-<task id>`` unless the task
data has an ``id``, which names a pool document) under their Label Studio annotation id, so that
``ANNOTATIONS_DELETED`` withdraws them. A task whose text differs from the stored document's is refused
(409; in a bulk event, skipped), so labels never attach to another text; with ``XLGEN_LABELSTUDIO_PROJECTS``
set, events of other projects are refused (403). ``START_TRAINING`` and ``/train`` start a retraining job
and answer its id as ``job`` (the running job's, with 200, when one runs: Label Studio marks a backend that
answers an error as failed).

``/predict`` is one tag request as a whole: all its tasks within ``XLGEN_MAX_REQUEST_WORK`` (else 400 naming
``tasks``) and ``XLGEN_REQUEST_TIMEOUT_S``, cut into chunks that take turns with other requests, its work
stopped when Label Studio disconnects.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from litestar import Request, get, post
from litestar.exceptions import ClientException, ValidationException
from litestar.status_codes import HTTP_200_OK

from xlgen.decoding import cut
from xlgen.service.auth import TAG, WRITE, forbidden
from xlgen.service.disconnect import until_disconnected
from xlgen.service.errors import bad_request, conflict, errors
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
    project_id,
    project_label_config,
)
from xlgen.service.runtime import Runtime
from xlgen.service.storage import Conflict

ID_MAX = 256


class Skip(Exception):
    """An annotation that cannot be stored: ``key`` names the field, the message says why; ``conflict`` when the
    stored state refuses it (a text that differs from its document's), not its shape."""

    def __init__(self, key: str, message: str, conflict: bool = False) -> None:
        super().__init__(message)
        self.key = key
        self.conflict = conflict


def check_project(rt: Runtime, project: Any) -> None:
    """403 naming ``project`` for an event of a project outside ``XLGEN_LABELSTUDIO_PROJECTS`` (when it is set)."""
    allowed = rt.settings.projects
    if not allowed:
        return
    given = project_id(project)
    if given not in allowed:
        raise forbidden("project", f"project {given or '(none)'} is not one of XLGEN_LABELSTUDIO_PROJECTS ({', '.join(sorted(allowed))}): "
                                   "its events are not stored")


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
                 if_changed: bool) -> tuple[list[dict[str, Any]], list[Skip]]:
    """Stores each annotation; returns what was stored and what was skipped."""
    stored: list[dict[str, Any]] = []
    skipped: list[Skip] = []
    for akey, tkey, task, ann in pairs:
        try:
            if ann.was_cancelled:
                raise Skip(f"{akey}.was_cancelled", "a skipped task has no labels")
            if task is None:
                raise Skip(tkey, "no task for this annotation")
            doc_id = document_id(task, tkey)
            text = task_text(task, cfg, rt.settings.max_chars, tkey)
            labels = chosen_labels(ann.result, cfg.from_name if cfg.named else None)
            ext = external_id(ann.id) if ann.id is not None else None
            try:
                saved = await asyncio.to_thread(rt.storage.annotate, doc_id, labels, 0, annotator_of(ann), text, ext, if_changed,
                                                text_key=f"{tkey}.data.{cfg.data_key}")
            except Conflict as e:
                raise Skip(e.key, str(e), conflict=True) from None
        except Skip as e:
            skipped.append(e)
            continue
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


def _skips(skipped: list[Skip]) -> list[dict[str, str]]:
    return [{"key": s.key, "message": str(s)} for s in skipped]


def _stored_or_4xx(stored: list[dict[str, Any]], skipped: list[Skip]) -> dict[str, Any]:
    """The answer to an annotation event: what was stored and skipped; 400 when nothing could be stored (409
    when a text that differs from its document's was among the reasons)."""
    if skipped and not stored:
        if any(s.conflict for s in skipped):
            first = next(s for s in skipped if s.conflict)
            error = conflict(first.key, str(first))
            error.extra = _skips(skipped)
            raise error
        raise ValidationException(detail="; ".join(f"{s.key}: {s}" for s in skipped), extra=_skips(skipped))
    return {"status": "ok", "stored": stored, "skipped": _skips(skipped)}


@get("/health", tags=["label studio"], summary="Label Studio ML backend health")
async def ls_health(rt: Runtime) -> dict[str, Any]:
    served = rt.holder.current
    return {"status": "UP" if served else "DOWN", "model_class": "XLGen", "model_version": served.version if served else None}


@post("/setup", tags=["label studio"], status_code=HTTP_200_OK, responses=errors(503), summary="Label Studio ML backend setup")
async def ls_setup(data: SetupRequest, rt: Runtime) -> dict[str, Any]:
    served = rt.require_model()
    return {"model_version": served.version}


@post("/predict", tags=["label studio"], guards=TAG, status_code=HTTP_200_OK, responses=errors(503, 504),
      summary="Label Studio predictions: multi-label choices with a confidence score (low = annotate first)",
      description="One result per task, in order; a task without its text (or with a text over XLGEN_MAX_CHARS) gets an empty one. "
                  "The call as a whole is held to XLGEN_MAX_REQUEST_WORK (400 naming tasks above it: ask for fewer tasks at "
                  "once) and XLGEN_REQUEST_TIMEOUT_S; its work stops when the client disconnects.")
async def ls_predict(data: PredictRequest, rt: Runtime, request: Request) -> dict[str, Any]:
    served = rt.require_model()
    cfg = parse_label_config(data.label_config or project_label_config(data.project))
    results: list[dict[str, Any]] = [{"model_version": served.version, "score": None, "result": []} for _ in data.tasks]
    usable = []
    for i, task in enumerate(data.tasks):
        try:
            usable.append((i, task_text(task, cfg, rt.settings.max_chars, f"tasks[{i}]")))
        except Skip:
            continue
    if len(usable) > rt.settings.max_queue:
        raise bad_request("tasks", f"{len(usable)} tasks with text; at most {rt.settings.max_queue} (XLGEN_MAX_QUEUE) per call")
    if not usable:
        return {"results": results, "model_version": served.version}
    # one request for the micro-batcher: one budget, one timeout, its chunks taking turns with other requests
    tagged = await until_disconnected(request, rt.tag([text for _, text in usable], served.model.decoding, field="tasks"))
    for (i, _), t in zip(usable, tagged, strict=True):
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


@post("/train", tags=["label studio"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      responses=errors(403, 409, 503),
      summary="Label Studio training request: stores the annotations it carries, starts retraining",
      description="Answers the job's id as `job`; while a job runs, that job's (200, not 409).")
async def ls_train(data: TrainRequest, rt: Runtime) -> dict[str, Any]:
    check_project(rt, data.project)
    cfg = parse_label_config(data.label_config or project_label_config(data.project))
    pairs = [(f"annotations[{j}].annotations[{i}]", f"annotations[{j}]", task, ann)
             for j, task in enumerate(data.annotations) for i, ann in enumerate(task.annotations)]
    stored, skipped = await _store(rt, pairs, cfg, if_changed=True)
    return {**await _train(rt), "stored": len(stored), "skipped": _skips(skipped)}


@post("/webhook", tags=["label studio"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      responses=errors(403, 409, 503),
      summary="Label Studio webhook: annotations created, updated or deleted; START_TRAINING starts retraining",
      description="Every annotation of a bulk event that can be stored is; the others are listed under `skipped` "
                  "(a 400 when none could be stored).")
async def ls_webhook(data: WebhookEvent, rt: Runtime) -> dict[str, Any]:
    action = data.action
    if action in (*ANNOTATION_WRITES, *ANNOTATION_DELETES, START_TRAINING):
        check_project(rt, data.project)
    if action in ANNOTATION_WRITES:
        annotations, tasks = _as_list(data.annotation), _as_list(data.task)
        if not annotations:
            raise _missing("annotation")
        cfg = parse_label_config(project_label_config(data.project))
        bulk = isinstance(data.annotation, list) or isinstance(data.task, list)
        return _stored_or_4xx(*await _store(rt, _pairs(annotations, tasks, bulk), cfg, if_changed=False))
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
