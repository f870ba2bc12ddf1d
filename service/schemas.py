"""Request and response bodies (msgspec structs: validated on the way in, documented in OpenAPI).

Unknown fields are refused, so a typo is a 400 naming the field rather than a silently ignored
option. Limits that come from the settings (texts per request, characters per text) are checked by
the handlers, also as 400s naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

NonEmpty = Annotated[str, Meta(min_length=1)]
Id = Annotated[str, Meta(min_length=1, max_length=256)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies."""


# ----------------------------------------------------------------------------------------- tagging


class TagItem(Body):
    """A text with an id that the result echoes."""

    id: Id
    text: NonEmpty


class TagRequest(Body):
    """Texts to tag and how."""

    texts: Annotated[list[NonEmpty | TagItem], Meta(min_length=1, description="texts, or {id, text} objects")]
    threshold: Probability | None = msgspec.field(default=None)
    top_k: Annotated[int, Meta(ge=1)] | None = None
    strategy: Literal["greedy", "beam", "sample"] | None = None
    num_beams: Annotated[int, Meta(ge=1, le=64)] | None = None
    num_samples: Annotated[int, Meta(ge=1, le=256)] | None = None
    temperature: Annotated[float, Meta(gt=0.0)] | None = None
    keep_new_labels: bool | None = None
    min_labels: Annotated[int, Meta(ge=0)] | None = None


class LabelScore(msgspec.Struct):
    label: str
    score: float
    new: bool


class TagResult(msgspec.Struct):
    id: str | None
    labels: list[LabelScore]


class TagResponse(msgspec.Struct):
    model_version: str
    threshold: float
    results: list[TagResult]


# ----------------------------------------------------------------------------------------- model


class ModelInfo(msgspec.Struct):
    version: str
    path: str
    label_count: int
    variant: str
    threshold: float
    metrics: dict[str, Any]
    decoding: dict[str, Any]
    device: str
    dtype: str
    loaded_at: float
    backend: str = "torch"
    clusters: int | None = None


class SwapRequest(Body):
    """A model to serve: a finished job's model or a model directory on the server."""

    job_id: str | None = None
    model_dir: str | None = None
    force: bool = msgspec.field(default=False)


# ----------------------------------------------------------------------------------- pool and AL


class PoolDocumentIn(Body):
    id: Id
    text: NonEmpty


class PoolRequest(Body):
    documents: Annotated[list[PoolDocumentIn], Meta(min_length=1)]


class PoolResponse(msgspec.Struct):
    added: int
    existing: int
    pool_size: int


class NextBatchRequest(Body):
    strategy: str | None = msgspec.field(default=None)  # acquisition strategy name; default: beam margin
    size: Annotated[int, Meta(ge=1, le=1000)] = 10
    annotator: Annotated[str, Meta(max_length=256)] = ""


class NextBatchDocument(msgspec.Struct):
    id: str
    text: str
    score: float
    suggested: list[LabelScore]


class NextBatchResponse(msgspec.Struct):
    claim_id: str
    expires_at: float
    strategy: str
    model_version: str
    documents: list[NextBatchDocument]


class AnnotationRequest(Body):
    document_id: Id
    labels: list[NonEmpty]
    round: Annotated[int, Meta(ge=0)] = 0
    annotator: Annotated[str, Meta(max_length=256)] = ""
    text: NonEmpty | None = None


class AnnotationResponse(msgspec.Struct):
    document_id: str
    round: int
    labels: list[str]
    annotator: str
    writes: int
    updated_at: float


# ------------------------------------------------------------------------------------ retraining


class RetrainRequest(Body):
    """Options of the retraining run (the rest: the server's XLGEN_RETRAIN_ARGS and training defaults)."""

    force: bool = False
    max_steps: Annotated[int, Meta(ge=1)] | None = None
    epochs: Annotated[float, Meta(gt=0)] | None = None
    batch_size: Annotated[int, Meta(ge=1)] | None = None
    lr: Annotated[float, Meta(gt=0)] | None = None
    eval_every: Annotated[int, Meta(ge=0)] | None = None
    preset: str | None = None
    seed: int | None = None


class Job(msgspec.Struct):
    id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    created_at: float
    updated_at: float
    params: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]
    model_dir: str
    swapped: bool
    message: str
