"""The Label Studio ML-backend protocol (``/health``, ``/setup``, ``/predict``, ``/webhook``), so that
annotators can label in Label Studio with this service pre-filling the choices.

A labeling config with a ``<Text name=.. value="$field"/>`` and a multiple ``<Choices name=..
toName=..>`` is expected; predictions carry the multi-label ``choices`` result and a confidence
``score`` (the best sequence's probability per token: low = annotate first, as Label Studio sorts).
Webhook annotation events are stored as annotations (document id ``ls-<task id>`` unless the task
data has an ``id``); ``START_TRAINING`` starts a retraining job.
"""

from __future__ import annotations

import asyncio
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from litestar import get, post
from litestar.exceptions import ClientException
from litestar.status_codes import HTTP_200_OK

from service.auth import WRITE
from service.inference import labels_of
from service.jobs import JobConflict
from service.routes import bad_request, check_texts
from service.runtime import Runtime

ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")


@dataclass(frozen=True)
class LabelConfig:
    """The names a labeling config gives the text and the choices.

    Attributes:
        from_name: The ``Choices`` tag's name.
        to_name: The tag it labels.
        data_key: The task data field holding the text.
    """

    from_name: str = "label"
    to_name: str = "text"
    data_key: str = "text"


def parse_label_config(xml: str | None) -> LabelConfig:
    """The first ``Choices`` and the ``Text`` it points to; defaults when absent or unparsable."""
    if not xml:
        return LabelConfig()
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return LabelConfig()
    choices = next(root.iter("Choices"), None)
    if choices is None:
        return LabelConfig()
    to_name = choices.get("toName", "text")
    text = next((t for t in root.iter() if t.get("name") == to_name), None)
    value = text.get("value", "$text") if text is not None else "$text"
    return LabelConfig(choices.get("name", "label"), to_name, value.lstrip("$") or "text")


def document_id(task: dict[str, Any]) -> str:
    data = task.get("data") or {}
    return str(data["id"]) if data.get("id") not in (None, "") else f"ls-{task.get('id')}"


def chosen_labels(result: list[dict[str, Any]], from_name: str | None = None) -> list[str]:
    """The choices of an annotation's result list (of every ``choices`` region, or of ``from_name``'s)."""
    out: list[str] = []
    for region in result or []:
        if region.get("type") != "choices" or (from_name and region.get("from_name") != from_name):
            continue
        for label in region.get("value", {}).get("choices", []):
            if isinstance(label, str) and label.strip() and label not in out:
                out.append(label)
    return out


@get("/health", tags=["label studio"], summary="Label Studio ML backend health")
async def ls_health(rt: Runtime) -> dict[str, Any]:
    served = rt.holder.current
    return {"status": "UP" if served else "DOWN", "model_class": "XLGen", "model_version": served.version if served else None}


@post("/setup", tags=["label studio"], status_code=HTTP_200_OK, summary="Label Studio ML backend setup")
async def ls_setup(data: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    served = rt.require_model()
    return {"model_version": served.version}


@post("/predict", tags=["label studio"], status_code=HTTP_200_OK,
      summary="Label Studio predictions: multi-label choices with a confidence score (low = annotate first)")
async def ls_predict(data: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    served = rt.require_model()
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise bad_request("tasks", "must be a list of task objects")
    cfg = parse_label_config(data.get("label_config") or (data.get("project") or {}).get("label_config"))
    texts = []
    for i, task in enumerate(tasks):
        text = (task.get("data") or {}).get(cfg.data_key)
        if not isinstance(text, str):
            raise bad_request(f"tasks[{i}].data.{cfg.data_key}", "missing or not a string")
        texts.append(text)
    if not texts:
        return {"results": [], "model_version": served.version}
    check_texts(rt, texts, "tasks")
    tagged = await rt.tag(texts, served.model.decoding)
    results = []
    for t in tagged:
        best = max((c.norm_logprob for c in t.prediction.candidates), default=-math.inf)
        labels = [x for x, _, _ in labels_of(t, None, None, served.model.decoding.min_labels)]
        results.append({
            "model_version": t.served.version,
            "score": round(math.exp(best), 6),
            "result": [{"from_name": cfg.from_name, "to_name": cfg.to_name, "type": "choices", "value": {"choices": labels}}],
        })
    return {"results": results, "model_version": served.version}


@post("/webhook", tags=["label studio"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      summary="Label Studio webhook: annotation events are stored, START_TRAINING starts retraining")
async def ls_webhook(data: dict[str, Any], rt: Runtime) -> dict[str, Any]:
    action = data.get("action")
    if action in ANNOTATION_EVENTS:
        task, annotation = data.get("task") or {}, data.get("annotation") or {}
        cfg = parse_label_config((data.get("project") or {}).get("label_config"))
        text = (task.get("data") or {}).get(cfg.data_key)
        if not isinstance(text, str) or not text.strip():
            raise bad_request(f"task.data.{cfg.data_key}", "missing or empty text")
        labels = chosen_labels(annotation.get("result") or [])
        who = str(annotation.get("completed_by", "")) if not isinstance(annotation.get("completed_by"), dict) else \
            str(annotation["completed_by"].get("email", ""))
        ann = await asyncio.to_thread(rt.storage.annotate, document_id(task), labels, 0, who, text)
        rt.metrics.annotations.inc()
        return {"status": "ok", "document_id": ann.document_id, "labels": ann.labels}
    if action == "START_TRAINING":
        try:
            job_id = await rt.jobs.start({"force": False, "source": "label studio"})
        except (JobConflict, ValueError) as e:
            raise ClientException(status_code=409, detail=str(e)) from None
        return {"status": "ok", "job_id": job_id}
    return {"status": "ignored", "action": action}


ROUTES = [ls_health, ls_setup, ls_predict, ls_webhook]
