"""Annotators and what they have done: per-annotator tokens, who the presented credentials are, the label
space for autocompletion, and the progress view (documents labelled in total and per annotator, time
spent, retraining jobs with their dev scores, the served model).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED

from xlgen.service.auth import MEMBERS, WRITE, has_api_key, has_read_key, token_annotator
from xlgen.service.errors import errors
from xlgen.service.runtime import Runtime
from xlgen.service.schemas import (
    AnnotatorProgress,
    AnnotatorRequest,
    AnnotatorToken,
    JobPoint,
    LabelSpaceResponse,
    ProgressResponse,
    WhoAmI,
)


@post("/v1/annotators", tags=["annotators"], guards=WRITE, security=[{"apiKey": []}], status_code=HTTP_201_CREATED,
      summary="Give an annotator a token (shown once; a new one replaces the old)",
      description="With the token in the X-API-Key header (or as a bearer token) the annotator may claim documents, "
                  "annotate the pool documents nobody else holds or annotated, add labels and answer questions, always under "
                  "their own name, and read the progress view; the pool, the annotation export, jobs, retraining and model "
                  "swaps stay with the API key (reading with the read key too). Only the token's SHA-256 is stored.")
async def create_annotator(data: AnnotatorRequest, rt: Runtime) -> AnnotatorToken:
    name = data.name.strip()
    token = await asyncio.to_thread(rt.storage.create_annotator, name)
    assert token is not None  # an Id has a visible character
    return AnnotatorToken(name=name, token=token)


@get("/v1/whoami", tags=["annotators"], responses=errors(401),
     summary="Who the presented key or token is (the page's sign-in check)")
async def whoami(rt: Runtime, request: Request) -> WhoAmI:
    from litestar.exceptions import NotAuthorizedException

    if has_api_key(request):
        return WhoAmI(role="admin", annotator=None, auth_required=True)
    if has_read_key(request):
        return WhoAmI(role="reader", annotator=None, auth_required=True)
    name = await token_annotator(request)
    if name is None:
        raise NotAuthorizedException("wrong API key or annotator token")
    return WhoAmI(role="annotator", annotator=name, auth_required=True)


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    """``metrics[key]`` when it is a number, else None."""
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) else None


def _job_point(j: dict[str, Any]) -> JobPoint:
    metrics = j.get("metrics") or {}
    docs = (j.get("progress") or {}).get("train_docs") or {}
    return JobPoint(id=j["id"], status=j["status"], created_at=j["created_at"], finished_at=j.get("finished_at"),
                    dev_micro_f1=_number(metrics, "dev_micro_f1"), dev_macro_f1=_number(metrics, "dev_macro_f1"), swapped=bool(j.get("swapped")),
                    message=j.get("message") or "", train_docs=docs.get("total"))


@get("/v1/progress", tags=["annotators"], guards=MEMBERS, security=[{"apiKey": []}],
     summary="Labelled documents in total and per annotator, retraining jobs, the served model",
     description="For the API key, the read key or an annotator's token; the served model's directory for the API key only.")
async def progress(rt: Runtime, request: Request) -> ProgressResponse:
    done = await asyncio.to_thread(rt.storage.progress)
    jobs = await asyncio.to_thread(rt.storage.jobs)
    served = rt.holder.current
    metrics = dict(served.model.metrics) if served is not None else {}
    return ProgressResponse(documents=done["documents"], questions=done["questions"], pool_size=done["pool_size"],
                            annotators=[AnnotatorProgress(**a) for a in done["annotators"]], jobs=[_job_point(j) for j in jobs],
                            model_version=served.version if served else None,
                            model_path=served.path if served and has_api_key(request) else None,
                            model_dev_micro_f1=_number(metrics, "dev_micro_f1"), model_dev_macro_f1=_number(metrics, "dev_macro_f1"))


@get("/v1/label-space", tags=["annotators"], guards=MEMBERS, security=[{"apiKey": []}],
     summary="Labels matching q (prefix matches first), for autocompletion",
     description="The served model's label space plus the labels added by name.")
async def label_space(rt: Runtime, q: Annotated[str, Parameter(max_length=256)] = "",
                      limit: Annotated[int, Parameter(ge=1, le=1000)] = 20) -> LabelSpaceResponse:
    served = rt.require_model()
    added = [r["name"] for r in await asyncio.to_thread(rt.storage.new_labels)]
    labels = list(dict.fromkeys([*served.model.label_space.labels, *added]))
    needle = q.strip().lower()
    if needle:
        prefix = [x for x in labels if x.lower().startswith(needle)]
        inside = [x for x in labels if needle in x.lower() and not x.lower().startswith(needle)]
        labels = sorted(prefix, key=str.lower) + sorted(inside, key=str.lower)
    return LabelSpaceResponse(labels=labels[:limit], total=len(labels))


ROUTES = [create_annotator, whoami, progress, label_space]
