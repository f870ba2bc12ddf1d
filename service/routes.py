"""The REST handlers: thin, each validating its input and calling the runtime, storage or jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from litestar import Response, get, post, put
from litestar.exceptions import ClientException, NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from service import acquisition_adapter
from service.auth import WRITE
from service.inference import ServedModel, Tagged, labels_of
from service.jobs import JobConflict
from service.runtime import Runtime
from service.schemas import (
    AnnotationRequest,
    AnnotationResponse,
    Job,
    LabelScore,
    ModelInfo,
    NextBatchDocument,
    NextBatchRequest,
    NextBatchResponse,
    PoolRequest,
    PoolResponse,
    RetrainRequest,
    SwapRequest,
    TagItem,
    TagRequest,
    TagResponse,
    TagResult,
)
from service.storage import PoolDocument
from xlgen.decoding import DecodingConfig


def bad_request(key: str, message: str) -> ValidationException:
    """A 400 whose ``extra`` names the offending field."""
    return ValidationException(detail=f"{key}: {message}", extra=[{"key": key, "message": message}])


def _scores(items: list[tuple[str, float, bool]]) -> list[LabelScore]:
    return [LabelScore(label, round(score, 6), new) for label, score, new in items]


# ------------------------------------------------------------------------------------------ health


@get("/health/live", tags=["health"], summary="The process answers")
async def live() -> dict[str, str]:
    return {"status": "alive"}


@get("/health/ready", tags=["health"], summary="200 once the model is loaded, else 503",
     responses={503: ResponseSpec(data_container=dict[str, str], description="the model is loading or failed to load")})
async def ready(rt: Runtime) -> Response[dict[str, Any]]:
    served = rt.holder.current
    if served is None:
        body = {"status": "failed" if rt.holder.error else "loading", "error": rt.holder.error}
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response({"status": "ready", "model_version": served.version}, status_code=HTTP_200_OK)


@get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=True, media_type="text/plain")
async def metrics(rt: Runtime) -> Response[bytes]:
    return Response(rt.metrics.render(), media_type=rt.metrics.content_type)


# ----------------------------------------------------------------------------------------- tagging


def decoding_for(served: ServedModel, data: TagRequest) -> DecodingConfig:
    overrides = {k: getattr(data, k) for k in ("strategy", "num_beams", "num_samples", "temperature", "keep_new_labels", "min_labels")
                 if getattr(data, k) is not None}
    try:
        return dataclasses.replace(served.model.decoding, **overrides)
    except ValueError as e:
        raise bad_request("decoding", str(e)) from None


def check_texts(rt: Runtime, texts: list[str], field: str = "texts", limit: int | None = None) -> None:
    """400 naming the field for too many texts (default limit: XLGEN_MAX_TEXTS), an empty or a too long text."""
    s = rt.settings
    limit = s.max_texts if limit is None else limit
    if len(texts) > limit:
        raise bad_request(field, f"{len(texts)} texts; at most {limit} per request")
    for i, t in enumerate(texts):
        if not t.strip():
            raise bad_request(f"{field}[{i}]", "empty text")
        if len(t) > s.max_chars:
            raise bad_request(f"{field}[{i}]", f"{len(t)} characters; at most {s.max_chars} per text")


@post("/v1/tag", tags=["tagging"], status_code=HTTP_200_OK,
      summary="Labels with scores for a batch of texts",
      description="Labels scoring at least the threshold (the model's tuned one unless given), best first, at most top_k; "
                  "labels outside the label space are kept and flagged new when keep_new_labels is on.")
async def tag(data: TagRequest, rt: Runtime) -> TagResponse:
    served = rt.require_model()
    ids = [x.id if isinstance(x, TagItem) else None for x in data.texts]
    texts = [x.text if isinstance(x, TagItem) else x for x in data.texts]
    check_texts(rt, texts)
    cfg = decoding_for(served, data)
    tagged: list[Tagged] = await rt.tag(texts, cfg)
    results = [TagResult(i, _scores(labels_of(t, data.threshold, data.top_k, cfg.min_labels))) for i, t in zip(ids, tagged, strict=True)]
    model = tagged[0].served
    threshold = model.model.threshold if data.threshold is None else data.threshold
    return TagResponse(model_version=model.version, threshold=threshold, results=results)


# ------------------------------------------------------------------------------------------- model


def model_info(served: ServedModel) -> ModelInfo:
    m = served.model
    return ModelInfo(version=served.version, path=served.path, label_count=len(m.label_space), variant=m.settings.variant,
                     threshold=m.threshold, metrics=dict(m.metrics), decoding=dataclasses.asdict(m.decoding),
                     device=served.device, dtype=served.dtype, loaded_at=served.loaded_at, backend=served.backend,
                     clusters=m.clusters.n_clusters if m.clusters is not None else None)


@get("/v1/model", tags=["model"], summary="The served model: version, label count, variant, threshold, metrics")
async def get_model(rt: Runtime) -> ModelInfo:
    return model_info(rt.require_model())


@put("/v1/model", tags=["model"], guards=WRITE, security=[{"apiKey": []}],
     summary="Swap in another model (a finished job's, or a directory on the server)",
     description="Refused (409) when its dev micro-F1 is worse than the served model's, unless force.")
async def swap_model(data: SwapRequest, rt: Runtime) -> ModelInfo:
    served = rt.require_model()
    if (data.job_id is None) == (data.model_dir is None):
        raise bad_request("job_id", "give exactly one of job_id and model_dir")
    path: str
    if data.job_id is not None:
        job = await asyncio.to_thread(rt.jobs.job_view, data.job_id)
        if job is None:
            raise NotFoundException(f"no job {data.job_id!r}")
        if job["status"] != "succeeded":
            raise ClientException(status_code=409, detail=f"job {data.job_id} is {job['status']}, it has no model")
        path = job["model_dir"]
    else:
        path = str(data.model_dir)
        if not (Path(path) / "xlgen.json").is_file():
            raise bad_request("model_dir", f"{path} is not a model directory on the server")
    meta = json.loads(await asyncio.to_thread((Path(path) / "xlgen.json").read_text))
    new_f1 = float(meta.get("metrics", {}).get("dev_micro_f1", -1.0))
    if not data.force and new_f1 < served.dev_micro_f1:
        raise ClientException(status_code=409, detail=f"dev micro-F1 {new_f1:.4f} is worse than the served {served.dev_micro_f1:.4f}; "
                                                      "pass force to swap anyway")
    await rt.install(path)
    return model_info(rt.require_model())


# ------------------------------------------------------------------------------------ pool and AL


@post("/v1/pool", tags=["active learning"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      summary="Add unlabeled documents to the pool (idempotent by id: known ids are left unchanged)")
async def add_pool(data: PoolRequest, rt: Runtime) -> PoolResponse:
    texts = [d.text for d in data.documents]
    check_texts(rt, texts, "documents", rt.settings.max_pool_docs)
    docs = list({d.id: PoolDocument(d.id, d.text) for d in data.documents}.values())
    added = await asyncio.to_thread(rt.storage.add_documents, docs)
    size = await asyncio.to_thread(rt.storage.pool_size)
    return PoolResponse(added=added, existing=len(docs) - added, pool_size=size)


@post("/v1/al/next-batch", tags=["active learning"], status_code=HTTP_200_OK,
      summary="Claim the next documents to annotate by an acquisition strategy",
      description="Scores up to XLGEN_POOL_SCAN unannotated, unclaimed pool documents; returns the best `size` with their "
                  "acquisition score and suggested labels, claimed for XLGEN_CLAIM_TTL_S seconds so that no other "
                  "annotator gets them.")
async def next_batch(data: NextBatchRequest, rt: Runtime) -> NextBatchResponse:
    served = rt.require_model()
    strategy = data.strategy or acquisition_adapter.default_name()
    if strategy not in acquisition_adapter.names():
        raise bad_request("strategy", f"unknown strategy {strategy!r}; choose one of {', '.join(acquisition_adapter.names())}")
    if why := acquisition_adapter.unsupported(served.model, strategy):
        raise bad_request("strategy", why)
    s = rt.settings
    docs = await asyncio.to_thread(rt.storage.candidates, s.pool_scan)
    if not docs:
        return NextBatchResponse(claim_id="", expires_at=time.time(), strategy=strategy, model_version=served.version, documents=[])
    scores, suggestions = await rt.rank_pool(served, [(d.id, d.text) for d in docs], strategy)  # (n_docs,)
    order = np.argsort(-scores, kind="stable")
    claim_id, claimed = await asyncio.to_thread(rt.storage.claim, [docs[i].id for i in order], data.annotator, s.claim_ttl_s, data.size)
    position = {d.id: i for i, d in enumerate(docs)}
    if claimed and not any(suggestions[position[i]] for i in claimed):  # a strategy that decodes nothing (random)
        for i, p in zip(claimed, await rt.suggest(served, [docs[position[i]].text for i in claimed]), strict=True):
            suggestions[position[i]] = p
    space = served.model.label_space
    out = [
        NextBatchDocument(id=doc_id, text=docs[position[doc_id]].text, score=float(scores[position[doc_id]]),
                          suggested=_scores([(x, sc, x not in space) for x, sc in suggestions[position[doc_id]]]))
        for doc_id in claimed
    ]
    return NextBatchResponse(claim_id=claim_id, expires_at=time.time() + s.claim_ttl_s, strategy=strategy,
                             model_version=served.version, documents=out)


@post("/v1/annotations", tags=["active learning"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      summary="Store the labels of a document (idempotent by document and round; the last write wins, all are kept in history)",
      description="Answered only once the write is committed to the database. The document must be in the pool unless text is given.")
async def annotate(data: AnnotationRequest, rt: Runtime) -> AnnotationResponse:
    if data.text is not None:
        check_texts(rt, [data.text], "text")
    try:
        ann = await asyncio.to_thread(rt.storage.annotate, data.document_id, data.labels, data.round, data.annotator, data.text)
    except KeyError:
        raise NotFoundException(f"document_id: no document {data.document_id!r} in the pool (add it, or give its text)") from None
    rt.metrics.annotations.inc()
    return AnnotationResponse(document_id=ann.document_id, round=ann.round, labels=ann.labels, annotator=ann.annotator,
                              writes=ann.writes, updated_at=ann.updated_at)


@get("/v1/annotations", tags=["active learning"], media_type="application/x-ndjson",
     summary="Export annotations as JSON Lines (the last write per document and round; history=true for every write)")
async def export_annotations(rt: Runtime, history: bool = False, round: int | None = None) -> Response[bytes]:
    def lines() -> bytes:
        return b"".join(
            (json.dumps({"id": a.document_id, "text": a.text, "labels": a.labels, "round": a.round, "annotator": a.annotator,
                         "updated_at": a.updated_at, **({} if history else {"writes": a.writes})}, ensure_ascii=False) + "\n").encode()
            for a in rt.storage.annotations(history=history, round_=round))

    return Response(await asyncio.to_thread(lines), media_type="application/x-ndjson")


# ------------------------------------------------------------------------------------- retraining


def job_of(record: dict[str, Any]) -> Job:
    keys = ("id", "status", "created_at", "updated_at", "params", "progress", "metrics", "model_dir", "swapped", "message")
    return Job(**{k: record[k] for k in keys})


@post("/v1/retrain", tags=["retraining"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_202_ACCEPTED,
      summary="Start retraining on the base training data plus the stored annotations",
      description="Runs the training entry point in a separate process; the result is swapped in when its dev micro-F1 is not "
                  "worse than the served model's, or when force. 409 while another job runs.")
async def retrain(data: RetrainRequest, rt: Runtime) -> Job:
    rt.require_model()
    params = msgspec.to_builtins(data)
    try:
        job_id = await rt.jobs.start(params)
    except JobConflict as e:
        raise ClientException(status_code=409, detail=str(e)) from None
    except ValueError as e:
        raise ClientException(status_code=409, detail=str(e)) from None
    return job_of(await asyncio.to_thread(rt.jobs.job_view, job_id))  # type: ignore[arg-type]


@get("/v1/jobs/{job_id:str}", tags=["retraining"], summary="A retraining job: status, progress, metrics, whether it was swapped in")
async def get_job(job_id: str, rt: Runtime) -> Job:
    record = await asyncio.to_thread(rt.jobs.job_view, job_id)
    if record is None:
        raise NotFoundException(f"no job {job_id!r}")
    return job_of(record)


ROUTES = [live, ready, metrics, tag, get_model, swap_model, add_pool, next_batch, annotate, export_annotations, retrain, get_job]
