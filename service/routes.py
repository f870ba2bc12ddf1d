"""The REST handlers: thin, each validating its input and calling the runtime, storage or jobs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar import Request, Response, delete, get, post, put
from litestar.exceptions import ClientException, NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED, HTTP_503_SERVICE_UNAVAILABLE

from xlgen.active.acquisition import get_strategy
from xlgen.active.selection import SelectionConfig, unsupported
from xlgen.config import overrides
from xlgen.data import Document
from xlgen.decoding import DecodingConfig
from xlgen.service.auth import ANNOTATE, READ, TAG, WRITE, acting_annotator, forbidden, has_api_key, token_of
from xlgen.service.disconnect import until_disconnected
from xlgen.service.errors import bad_request, conflict, errors
from xlgen.service.inference import ServedModel, Tagged, labels_of
from xlgen.service.jobs import JobConflict
from xlgen.service.runtime import Runtime
from xlgen.service.schemas import (
    MAX_INT32,
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
    ReleaseRequest,
    ReleaseResponse,
    RetrainRequest,
    SwapRequest,
    TagItem,
    TagOptions,
    TagRequest,
    TagResponse,
    TagResult,
)
from xlgen.service.storage import Annotation, Conflict, PoolDocument


def _scores(items: list[tuple[str, float, bool, list[str]]]) -> list[LabelScore]:
    return [LabelScore(label, round(score, 6), new, sources) for label, score, new, sources in items]


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
    return Response({"status": "ready", "model_version": served.version, "schema_version": rt.storage.schema_version},
                    status_code=HTTP_200_OK)


@get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=True, media_type="text/plain")
async def metrics(rt: Runtime) -> Response[bytes]:
    return Response(rt.metrics.render(), media_type=rt.metrics.content_type)


# ----------------------------------------------------------------------------------------- tagging


def decoding_for(served: ServedModel, data: TagOptions) -> DecodingConfig:
    """The served model's decoding settings with the request's overrides."""
    try:
        return dataclasses.replace(served.model.decoding, **overrides(DecodingConfig, data))
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


@post("/v1/tag", tags=["tagging"], guards=TAG, status_code=HTTP_200_OK, responses=errors(503, 504),
      summary="Labels with scores for a batch of texts",
      description="Labels scoring at least the threshold (the model's tuned one unless given), best first, at most top_k; "
                  "labels outside the label space are kept and flagged new when keep_new_labels is on. "
                  "A request costs the sum over its texts of their input tokens (at most the model's maximum input length) "
                  "plus the model's max_new_tokens, times the sequences decoded per text (1 greedy, num_beams, num_samples); "
                  "above XLGEN_MAX_REQUEST_WORK it is refused with 400. Its work stops when the client disconnects. Open "
                  "without credentials while XLGEN_OPEN_TAGGING is on.")
async def tag(data: TagRequest, rt: Runtime, request: Request) -> TagResponse:  # type: ignore[valid-type]
    body: TagOptions = data  # the generated TagRequest is a TagOptions with the decoding fields
    served = rt.require_model()
    ids = [x.id if isinstance(x, TagItem) else None for x in body.texts]
    texts = [x.text if isinstance(x, TagItem) else x for x in body.texts]
    check_texts(rt, texts)
    cfg = decoding_for(served, body)
    count = {"beam": "num_beams", "sample": "num_samples"}.get(cfg.strategy)
    field = count if count and getattr(data, count) is not None else "texts"
    tagged: list[Tagged] = await until_disconnected(request, rt.tag(texts, cfg, field=field))
    results = [TagResult(i, _scores(labels_of(t, body.threshold, body.top_k, cfg.min_labels))) for i, t in zip(ids, tagged, strict=True)]
    model = tagged[0].served
    threshold = model.model.threshold if body.threshold is None else body.threshold
    return TagResponse(model_version=model.version, threshold=threshold, results=results)


# ------------------------------------------------------------------------------------------- model


def model_info(served: ServedModel, admin: bool) -> ModelInfo:
    """The served model's description; its directory on the server only for the API key (``admin``)."""
    m = served.model
    return ModelInfo(version=served.version, path=served.path if admin else None, label_count=len(m.label_space),
                     variant=m.settings.variant,
                     threshold=m.threshold, metrics=dict(m.metrics), decoding=dataclasses.asdict(m.decoding),
                     device=served.device, dtype=served.dtype, loaded_at=served.loaded_at, backend=served.backend,
                     clusters=getattr(m.guidance, "clusters", None) and m.guidance.clusters.n_clusters,  # type: ignore[union-attr]
                     backbone=m.settings.backbone, generator=m.generator_gate.to_dict() if m.generator_gate is not None else None)


@get("/v1/model", tags=["model"], responses=errors(503), summary="The served model: version, label count, variant, backbone, threshold, metrics, the generator gate",
     description="Its directory on the server (path) only with the API key.")
async def get_model(rt: Runtime, request: Request) -> ModelInfo:
    return model_info(rt.require_model(), admin=has_api_key(request))


@put("/v1/model", tags=["model"], guards=WRITE, security=[{"apiKey": []}], responses=errors(404, 409, 503),
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
        try:
            is_model = (Path(path) / "xlgen.json").is_file()
        except OSError:  # a name too long for the file system, a folder it may not read
            is_model = False
        if not is_model:
            raise bad_request("model_dir", f"{path} is not a model directory on the server")
    field = "job_id" if data.job_id is not None else "model_dir"
    try:
        meta = json.loads(await asyncio.to_thread((Path(path) / "xlgen.json").read_text))
        metrics = meta.get("metrics") or {}
        new_f1 = float(metrics.get("dev_micro_f1", -1.0))
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise bad_request(field, f"{path}/xlgen.json does not read as a model's metadata: {e}") from None
    if not data.force and new_f1 < served.dev_micro_f1:
        raise ClientException(status_code=409, detail=f"dev micro-F1 {new_f1:.4f} is worse than the served {served.dev_micro_f1:.4f}; "
                                                      "pass force to swap anyway")
    try:
        await rt.install(path)
    except Exception as e:  # the served model stays; the directory is what is wrong
        raise bad_request(field, f"{path} does not load as a model: {type(e).__name__}: {e}") from None
    return model_info(rt.require_model(), admin=True)


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


@post("/v1/al/next-batch", tags=["active learning"], guards=ANNOTATE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      responses=errors(503),
      summary="Claim the next documents to annotate by an acquisition strategy",
      description="Scores up to XLGEN_POOL_SCAN unannotated, unclaimed pool documents; returns the best `size` with their "
                  "acquisition score and suggested labels, claimed for XLGEN_CLAIM_TTL_S seconds so that no other "
                  "annotator gets them. One annotator holds at most XLGEN_MAX_CLAIMS_PER_ANNOTATOR claimed documents at once "
                  "(fewer come back when the cap is reached, none at once at the cap); annotating a document or "
                  "POST /v1/al/release frees its claim. The scoring runs in pieces of about XLGEN_CHUNK_WORK that take turns "
                  "with tag requests, one call at a time per annotator, and stops when the client disconnects. "
                  "Selection is the acquisition library's (diversity, pool_sample, drop_top as in `xlgen select`); the "
                  "suggested labels are the model's own prediction, each with the sources that proposed it.")
async def next_batch(data: NextBatchRequest, rt: Runtime, request: Request) -> NextBatchResponse:
    annotator = acting_annotator(request, data.annotator)
    served = rt.require_model()
    if why := unsupported(served.model, data.strategy):
        raise bad_request("strategy", why)
    s = rt.settings

    def nothing() -> NextBatchResponse:
        return NextBatchResponse(claim_id="", expires_at=time.time(), strategy=data.strategy, model_version=served.version, documents=[])

    async with rt.annotator_lock(annotator):  # one at a time per annotator, so the cap below counts what earlier calls took
        room = min(data.size, s.max_claims_per_annotator - await asyncio.to_thread(rt.storage.claims_held, annotator))
        if room <= 0:  # at the cap: answered at once, nothing scored
            return nothing()
        docs = await asyncio.to_thread(rt.storage.candidates, s.pool_scan)
        if not docs:
            return nothing()
        # a few more than asked, best first, in case another annotator claims some of them meanwhile
        cfg = SelectionConfig(strategy=data.strategy, batch_size=min(len(docs), 2 * room), diversity=data.diversity,
                              candidate_factor=data.candidate_factor, pool_sample=data.pool_sample, drop_top=data.drop_top,
                              seed=data.seed)
        strategy = get_strategy(data.strategy)
        labelled = ([Document(i, t, tuple(x)) for i, t, x in await asyncio.to_thread(rt.storage.labelled_documents)]
                    if strategy.uses_labelled else [])
        selection = await until_disconnected(request, rt.select(served, [Document(d.id, d.text) for d in docs], cfg, labelled))
        claim_id, claimed = await asyncio.to_thread(rt.storage.claim, selection.ids, annotator, s.claim_ttl_s, room,
                                                    s.max_claims_per_annotator)
    score = dict(zip(selection.ids, selection.scores, strict=True))
    text = {d.id: d.text for d in docs}
    # the suggestions by the model's own decoding, through the micro-batcher like any tag request
    tagged = await rt.tag([text[i] for i in claimed], served.model.decoding, check_budget=False) if claimed else []
    out = [
        NextBatchDocument(id=doc_id, text=text[doc_id], score=float(np.nan_to_num(score[doc_id], nan=-1e9, posinf=1e9, neginf=-1e9)),
                          suggested=_scores(labels_of(t, None, None, served.model.decoding.min_labels)))
        for doc_id, t in zip(claimed, tagged, strict=True)
    ]
    return NextBatchResponse(claim_id=claim_id, expires_at=time.time() + s.claim_ttl_s, strategy=data.strategy,
                             model_version=served.version, documents=out)


@post("/v1/al/release", tags=["active learning"], guards=ANNOTATE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      summary="Release claimed documents: a next-batch claim by its id, or an annotator's (only document_ids when given)")
async def release(data: ReleaseRequest, rt: Runtime, request: Request) -> ReleaseResponse:
    if (data.claim_id is None) == (data.annotator is None):
        raise bad_request("claim_id", "give exactly one of claim_id and annotator")
    # with a token only the token's annotator's claims (of claim_id, when given); with the key those of annotator
    acting = acting_annotator(request, data.annotator or "")
    annotator = acting if token_of(request) is not None or data.annotator is not None else None
    n = await asyncio.to_thread(rt.storage.release_claims, data.claim_id, annotator=annotator, document_ids=data.document_ids)
    return ReleaseResponse(released=n)


@post("/v1/annotations", tags=["active learning"], guards=ANNOTATE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      responses=errors(404, 409),
      summary="Store the labels of a document (idempotent by document and round; the last write wins, all are kept in history)",
      description="Answered only once the write is committed to the database. The document must be in the pool unless text is "
                  "given (with the API key); a text that differs from the stored document's is a 409. An annotator's token "
                  "annotates round 0 of a pool document that nobody else holds claimed and nobody else annotated (else 409), "
                  "and sets neither text nor round (403).")
async def annotate(data: AnnotationRequest, rt: Runtime, request: Request) -> AnnotationResponse:
    annotator = acting_annotator(request, data.annotator)
    token = token_of(request) is not None
    if token and data.text is not None:
        raise forbidden("text", "an annotator's token annotates pool documents; documents are added with the API key")
    if token and data.round != 0:
        raise forbidden("round", "an annotator's token annotates round 0; other rounds are written with the API key")
    if data.text is not None:
        check_texts(rt, [data.text], "text")
    try:
        ann = await asyncio.to_thread(lambda: rt.storage.annotate(data.document_id, data.labels, data.round, annotator, data.text,
                                                                  seconds=data.seconds, own_only=token))
    except KeyError:
        raise NotFoundException(f"document_id: no document {data.document_id!r} in the pool (add it, or give its text)") from None
    except Conflict as e:
        raise conflict(e.key, str(e)) from None
    except ValueError as e:  # a label empty after trimming
        key, _, message = str(e).partition(": ")
        raise bad_request(key, message) from None
    rt.metrics.annotations.inc()
    return AnnotationResponse(document_id=ann.document_id, round=ann.round, labels=ann.labels, annotator=ann.annotator,
                              writes=ann.writes, updated_at=ann.updated_at, seconds=ann.seconds)


@get("/v1/annotations", tags=["active learning"], guards=READ, security=[{"apiKey": []}], media_type="application/x-ndjson",
     summary="Export annotations as JSON Lines (the last write per document and round; history=true for every write and deletion)")
async def export_annotations(rt: Runtime, history: bool = False,
                             round: Annotated[int | None, Parameter(ge=0, le=MAX_INT32)] = None) -> Response[bytes]:
    def lines() -> bytes:
        return b"".join((json.dumps(export_line(a, history), ensure_ascii=False) + "\n").encode()
                        for a in rt.storage.annotations(history=history, round_=round))

    return Response(await asyncio.to_thread(lines), media_type="application/x-ndjson")


def export_line(a: Annotation, history: bool) -> dict[str, Any]:
    """One line of the annotation export."""
    line: dict[str, Any] = {"id": a.document_id, "text": a.text, "labels": a.labels, "round": a.round, "annotator": a.annotator,
                            "updated_at": a.updated_at}
    if history:
        line["action"] = a.action
    else:
        line["writes"] = a.writes
    if a.external_id is not None:
        line["external_id"] = a.external_id
    if a.seconds is not None:
        line["seconds"] = a.seconds
    return line


# ------------------------------------------------------------------------------------- retraining


SERVER_FIELDS = {"host": "", "pid": None, "pgid": None, "model_dir": "", "detail": ""}
"""What a job's record says of the server (its host, the trainer's process, paths, command line, output): the
API key's alone."""


def job_of(record: dict[str, Any], admin: bool = True) -> Job:
    """The job as the API key (``admin``) sees it, or without :data:`SERVER_FIELDS`."""
    values: dict[str, Any] = {f: record[f] if admin or f not in SERVER_FIELDS else SERVER_FIELDS[f] for f in Job.__struct_fields__}
    return Job(**values)


@post("/v1/retrain", tags=["retraining"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_202_ACCEPTED,
      responses=errors(409, 503),
      summary="Start retraining on the base training data plus the stored annotations",
      description="Runs the training entry point in a separate process; the result is swapped in when its dev micro-F1 is not "
                  "worse than the served model's, or when force. 409 while another job runs (on any worker or replica).")
async def retrain(data: RetrainRequest, rt: Runtime) -> Job:
    rt.require_model()
    params = msgspec.to_builtins(data)
    try:
        job_id = await rt.jobs.start(params)
    except JobConflict as e:
        raise ClientException(status_code=409, detail=str(e), extra={"job_id": e.job_id}) from None
    except ValueError as e:
        raise ClientException(status_code=409, detail=str(e)) from None
    return job_of(await asyncio.to_thread(rt.jobs.job_view, job_id))  # type: ignore[arg-type]


@get("/v1/jobs/{job_id:str}", tags=["retraining"], guards=READ, security=[{"apiKey": []}], responses=errors(404),
     summary="A retraining job: status, progress, metrics, whether it was swapped in",
     description="With the read key without the server's side: host, process, model directory, command line and output.")
async def get_job(job_id: str, rt: Runtime, request: Request) -> Job:
    record = await asyncio.to_thread(rt.jobs.job_view, job_id)
    if record is None:
        raise NotFoundException(f"no job {job_id!r}")
    return job_of(record, admin=has_api_key(request))


@delete("/v1/jobs/{job_id:str}", tags=["retraining"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
        summary="Cancel a retraining job: its trainer's process group is killed and the job marked cancelled",
        description="200 with the job once cancelled; 202 while a server on another host has yet to stop it; 409 if it had ended.",
        responses={202: ResponseSpec(data_container=Job, description="cancel requested; the job's server stops it at its next heartbeat"),
                   **errors(404, 409)})
async def cancel_job(job_id: str, rt: Runtime) -> Response[Job]:
    record, asked = await rt.jobs.cancel(job_id)
    if record is None:
        raise NotFoundException(f"no job {job_id!r}")
    if not asked:
        raise ClientException(status_code=409, detail=f"job {job_id} has ended ({record['status']}); nothing to cancel")
    return Response(job_of(record), status_code=HTTP_202_ACCEPTED if record["status"] in ("queued", "running") else HTTP_200_OK)


ROUTES = [live, ready, metrics, tag, get_model, swap_model, add_pool, next_batch, release, annotate, export_annotations, retrain,
          get_job, cancel_job]
