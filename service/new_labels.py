"""Labels added by name, and their binary questions (cold-start active learning for new labels).

``POST /v1/labels`` adds a label to the served model's label retriever at once (scored by its label-text
source, so ``/v1/tag`` can return it before any retraining), records it, and asks about the pool
documents most similar to it; ``POST /v1/labels/questions`` claims questions for an annotator, greedily
spread over the new labels; ``POST /v1/labels/answers`` stores a yes or no, and every yes moves the
label's vector towards its positives (the normalised mean of its name, description, examples and
positive documents). Labels and answers live in the database, so a restart or a model swap re-applies
them. The model must have a label retriever (``xlgen train --variant retrieval``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from litestar import Request, get, post
from litestar.exceptions import ClientException, NotFoundException
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from xlgen.service.auth import ANNOTATE, MEMBERS, acting_annotator
from xlgen.service.errors import errors
from xlgen.service.inference import ServedModel
from xlgen.service.runtime import Runtime
from xlgen.service.schemas import (
    AnswerRequest,
    NewLabel,
    NewLabelRequest,
    NewLabelsResponse,
    Question,
    QuestionsRequest,
    QuestionsResponse,
)


def retriever_of(served: ServedModel) -> Any:
    """The served model's label retriever (409 when it has none)."""
    retriever = getattr(served.model.guidance, "retriever", None)
    if retriever is None:
        raise ClientException(status_code=409, detail="labels are added by name through the label retriever: serve a model "
                                                       f"trained with --variant retrieval (this one is {served.model.settings.variant})")
    return retriever


def _info(rec: dict[str, Any]) -> NewLabel:
    return NewLabel(rec["name"], rec["description"], list(rec["examples"]), rec["questions"], rec["answered"], len(rec["positives"]))


@post("/v1/labels", tags=["new labels"], guards=ANNOTATE, security=[{"apiKey": []}], status_code=HTTP_201_CREATED,
      responses=errors(409, 503),
      summary="Add a label by name: taggable at once, and binary questions about its most similar pool documents",
      description="409 when the label exists (in the model's label space or added before) or the served model has no label "
                  "retriever. The pool's unannotated documents are ranked by similarity to the label's text; the best "
                  "XLGEN_NEW_LABEL_QUESTIONS become questions.")
async def add_label(data: NewLabelRequest, rt: Runtime, request: Request) -> NewLabel:
    annotator = acting_annotator(request, data.annotator)
    served = rt.require_model()
    retriever = retriever_of(served)
    name = data.name.strip()
    if name in served.model.label_space or name in retriever.labels:
        raise ClientException(status_code=409, detail=f"label {name!r} exists already", extra={"name": name})
    if not await asyncio.to_thread(rt.storage.add_new_label, name, data.description, data.examples, annotator):
        raise ClientException(status_code=409, detail=f"label {name!r} was added before", extra={"name": name})
    docs = await asyncio.to_thread(rt.storage.candidates, rt.settings.pool_scan)

    def run() -> list[tuple[str, float]]:  # on the model thread: the retriever is the served model's
        retriever.add_label(name, data.description, data.examples)
        if not docs:
            return []
        vectors = retriever.embed([d.text for d in docs])  # (n_docs, dim)
        scores = vectors @ retriever.label_vectors[retriever.labels.index(name)]  # (n_docs,)
        order = np.argsort(-scores, kind="stable")[: rt.settings.new_label_questions]
        return [(docs[i].id, float(scores[i])) for i in order]

    ranked = await asyncio.get_running_loop().run_in_executor(rt.executor, run)
    await asyncio.to_thread(rt.storage.add_questions, name, ranked)
    rec = next(r for r in await asyncio.to_thread(rt.storage.new_labels) if r["name"] == name)
    return _info(rec)


@get("/v1/labels", tags=["new labels"], guards=MEMBERS, security=[{"apiKey": []}],
     summary="Labels added by name, with their questions, answers and positives")
async def list_labels(rt: Runtime) -> NewLabelsResponse:
    return NewLabelsResponse([_info(r) for r in await asyncio.to_thread(rt.storage.new_labels)])


@post("/v1/labels/questions", tags=["new labels"], guards=ANNOTATE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      summary="Claim binary questions about new labels, spread greedily over them",
      description="A new label drawn uniformly among those with open questions, then its most similar unasked document, "
                  "repeated; claimed for XLGEN_CLAIM_TTL_S seconds so that no other annotator gets the same question.")
async def claim_questions(data: QuestionsRequest, rt: Runtime, request: Request) -> QuestionsResponse:
    annotator = acting_annotator(request, data.annotator)
    got = await asyncio.to_thread(rt.storage.claim_questions, annotator, data.size, rt.settings.claim_ttl_s)
    return QuestionsResponse([Question(g["document_id"], g["label"], g["text"], round(g["score"], 6)) for g in got])


@post("/v1/labels/answers", tags=["new labels"], guards=ANNOTATE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      responses=errors(404), summary="Answer a binary question: does the document carry the label?",
      description="Stored with the annotator and the seconds spent; a yes moves the label's vector towards the document.")
async def answer(data: AnswerRequest, rt: Runtime, request: Request) -> NewLabel:
    annotator = acting_annotator(request, data.annotator)
    if not await asyncio.to_thread(rt.storage.answer_question, data.document_id, data.label, data.answer, annotator,
                                   data.seconds):
        raise NotFoundException(detail=f"no question about label {data.label!r} for document {data.document_id!r}")
    rec = next(r for r in await asyncio.to_thread(rt.storage.new_labels) if r["name"] == data.label)
    served = rt.holder.current
    retriever = getattr(served.model.guidance, "retriever", None) if served is not None else None
    if data.answer and retriever is not None:
        await asyncio.get_running_loop().run_in_executor(
            rt.executor, lambda: retriever.add_label(rec["name"], rec["description"], [*rec["examples"], *rec["positives"]]))
    return _info(rec)


ROUTES = [add_label, list_labels, claim_questions, answer]
