"""Request and response bodies (msgspec structs: validated on the way in, documented in OpenAPI).

Unknown fields are refused, so a typo is a 400 naming the field rather than a silently ignored
option. Limits that come from the settings (texts per request, characters per text) are checked by
the handlers, also as 400s naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import Meta

from xlgen.active.acquisition import DEFAULT_STRATEGY, STRATEGIES
from xlgen.config import request_fields
from xlgen.decoding import DecodingConfig

MAX_ID_CHARS = 256
"""Characters of an id, a label or an annotator name (the storage's column width)."""
MAX_INT32 = 2**31 - 1
"""Largest annotation round (a 32-bit integer column in PostgreSQL)."""

VISIBLE = r"[^\s\x1c-\x1f\x85\ufeff]"
r"""A character other than whitespace, alike for Python's regex (msgspec) and ECMAScript's (OpenAPI
clients): their ``\s`` differ on \x1c-\x1f, \x85 and \ufeff, so all of those are named. Both search
the pattern anywhere in the string: a string matches unless it is whitespace only."""

NonEmpty = Annotated[str, Meta(min_length=1, pattern=VISIBLE)]
Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=VISIBLE)]
Label = Annotated[str, Meta(min_length=1, max_length=MAX_ID_CHARS, pattern=VISIBLE)]
Name = Annotated[str, Meta(max_length=MAX_ID_CHARS)]

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Round = Annotated[int, Meta(ge=0, le=MAX_INT32)]


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies."""


# ----------------------------------------------------------------------------------------- tagging


class TagItem(Body):
    """A text with an id that the result echoes."""

    id: Id
    text: NonEmpty


class TagOptions(Body):
    """Texts to tag, the threshold and how many labels to return."""

    texts: Annotated[list[NonEmpty | TagItem], Meta(min_length=1, description="texts, or {id, text} objects")]
    threshold: Probability | None = msgspec.field(default=None)
    top_k: Annotated[int, Meta(ge=1, le=10_000, description="return at most this many labels per text")] | None = None


DECODING_FIELDS = request_fields(DecodingConfig)
"""The decoding options a tagging request may override: generated from :class:`DecodingConfig`'s field
metadata, so the command line, the request schema and the model's settings never disagree."""

TagRequest = msgspec.defstruct(
    "TagRequest", [(name, tp | None, None) for name, tp in DECODING_FIELDS], bases=(TagOptions,), kw_only=True,
    forbid_unknown_fields=True, module=__name__)
TagRequest.__doc__ = "Texts to tag and how (decoding options default to the model's saved settings)."


class LabelScore(msgspec.Struct):
    label: str
    score: float
    new: bool
    sources: list[str] = msgspec.field(default_factory=list)
    """What proposed the label: ``generator``, and for a retrieval model the retriever's sources
    (``knn``, ``label_text``, ``linear``, ``biencoder``) whose candidates held it."""


class TagResult(msgspec.Struct):
    id: str | None
    labels: list[LabelScore]


class TagResponse(msgspec.Struct):
    model_version: str
    threshold: float
    results: list[TagResult]


# ----------------------------------------------------------------------------------------- model


class ModelInfo(msgspec.Struct):
    """The served model; ``path`` (its directory on the server) only for the API key."""

    version: str
    path: str | None
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
    backbone: str = "t5"
    generator: dict[str, Any] | None = None
    """Whether default tagging runs the generator (``serve``), how that was decided (``mode``, ``reason``) and
    the dev numbers behind it; absent for a model without a retriever stage to serve alone."""


class SwapRequest(Body):
    """A model to serve: a finished job's model or a model directory on the server."""

    __json_schema_extra__: ClassVar[dict[str, Any]] = {"oneOf": [
        {"required": ["job_id"], "properties": {"job_id": {"type": "string"}}},
        {"required": ["model_dir"], "properties": {"model_dir": {"type": "string"}}},
    ], "description": "A model to serve: a finished job's model (job_id) or a model directory on the server (model_dir), "
                      "exactly one of them."}

    job_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    model_dir: Annotated[str, Meta(min_length=1, max_length=4096)] | None = None
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


StrategyName = Literal[tuple(sorted(STRATEGIES))]  # type: ignore[valid-type]
"""An acquisition strategy of the registry (:data:`xlgen.active.acquisition.STRATEGIES`): the one list
the request schema, its validation and the scoring share."""


class NextBatchRequest(Body):
    """Which documents to claim: the fields of :class:`xlgen.active.selection.SelectionConfig`."""

    strategy: StrategyName = DEFAULT_STRATEGY  # type: ignore[valid-type]
    size: Annotated[int, Meta(ge=1, le=1000, description="documents to claim; at most XLGEN_MAX_CLAIMS_PER_ANNOTATOR held at once")] = 10
    annotator: Name = ""
    diversity: bool = msgspec.field(default=False)
    """Cluster the best candidates' encoder embeddings and claim the most uncertain per cluster."""
    candidate_factor: Annotated[int, Meta(ge=1, le=20)] = 5
    pool_sample: Annotated[int, Meta(ge=1, le=1_000_000)] | None = None
    drop_top: Annotated[float, Meta(ge=0.0, lt=1.0)] = 0.0
    seed: Annotated[int, Meta(ge=0, le=MAX_INT32)] = 0


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


class ReleaseRequest(Body):
    """Claims to release: a next-batch claim (by its id), or an annotator's; only ``document_ids`` when given."""

    __json_schema_extra__: ClassVar[dict[str, Any]] = {"oneOf": [
        {"required": ["claim_id"], "properties": {"claim_id": {"type": "string"}}},
        {"required": ["annotator"], "properties": {"annotator": {"type": "string"}}},
    ], "description": "The claims of a next-batch call (claim_id) or of an annotator (annotator, optionally only "
                      "document_ids), exactly one of claim_id and annotator."}

    claim_id: str | None = None
    annotator: Name | None = None
    document_ids: list[Id] | None = None


class ReleaseResponse(msgspec.Struct):
    released: int


class AnnotationRequest(Body):
    document_id: Id
    labels: Annotated[list[Label], Meta(max_length=1000)]
    round: Round = 0
    annotator: Name = ""
    text: NonEmpty | None = None
    seconds: Annotated[float, Meta(ge=0.0, le=86_400.0, description="time the annotator spent on the document")] | None = None


class AnnotationResponse(msgspec.Struct):
    document_id: str
    round: int
    labels: list[str]
    annotator: str
    writes: int
    updated_at: float
    seconds: float | None = None


# ------------------------------------------------------------------------------------ retraining


class RetrainRequest(Body):
    """Options of the retraining run (the rest: the server's XLGEN_RETRAIN_ARGS and training defaults)."""

    force: bool = False
    max_steps: Annotated[int, Meta(ge=1, le=10_000_000)] | None = None
    epochs: Annotated[float, Meta(gt=0, le=1000)] | None = None
    batch_size: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    lr: Annotated[float, Meta(gt=0, le=10)] | None = None
    eval_every: Annotated[int, Meta(ge=0, le=10_000_000)] | None = None
    preset: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    seed: Annotated[int, Meta(ge=0, le=2**32 - 1)] | None = None


class Job(msgspec.Struct):
    """A retraining job; ``pgid`` is the trainer's process group on ``host`` while it runs. ``message`` is one
    line for every reader; ``detail`` (the trainer's command line, the tail of its output), ``model_dir``,
    ``host``, ``pid`` and ``pgid`` name the server and are shown to the API key only (empty for the read key)."""

    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    created_at: float
    updated_at: float
    params: dict[str, Any]
    progress: dict[str, Any]
    metrics: dict[str, Any]
    model_dir: str
    swapped: bool
    message: str
    host: str = ""
    pid: int | None = None
    pgid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    detail: str = ""


# ------------------------------------------------------------------------------------ new labels


class NewLabelRequest(Body):
    """A label added by name, with an optional description and example phrases."""

    name: Label
    description: Annotated[str, Meta(max_length=2000)] | None = None
    examples: Annotated[list[Annotated[str, Meta(min_length=1, max_length=2000, pattern=VISIBLE)]], Meta(max_length=50)] = msgspec.field(
        default_factory=list)
    annotator: Name = ""


class NewLabel(msgspec.Struct):
    name: str
    description: str | None
    examples: list[str]
    questions: int
    answered: int
    positives: int


class NewLabelsResponse(msgspec.Struct):
    labels: list[NewLabel]


class QuestionsRequest(Body):
    annotator: Name = ""
    size: Annotated[int, Meta(ge=1, le=100, description="questions to claim")] = 10


class Question(msgspec.Struct):
    document_id: str
    label: str
    text: str
    score: float


class QuestionsResponse(msgspec.Struct):
    questions: list[Question]


class AnswerRequest(Body):
    """Whether document ``document_id`` carries label ``label``."""

    document_id: Id
    label: Label
    answer: bool
    annotator: Name = ""
    seconds: Annotated[float, Meta(ge=0.0, le=86_400.0, description="time spent on the question")] | None = None


# ------------------------------------------------------------------------------ annotators, page


class AnnotatorRequest(Body):
    """An annotator to give a token to (a new token replaces the annotator's earlier one)."""

    name: Id


class AnnotatorToken(msgspec.Struct):
    name: str
    token: str


class WhoAmI(msgspec.Struct):
    """Who the presented credentials are: ``admin`` (the API key), ``reader`` (the read key) or an annotator's token."""

    role: Literal["admin", "reader", "annotator"]
    annotator: str | None
    auth_required: bool


class AnnotatorProgress(msgspec.Struct):
    annotator: str
    documents: int
    questions: int
    positives: int
    median_seconds: float | None
    total_seconds: float


class JobPoint(msgspec.Struct):
    """A retraining job on the progress plot."""

    id: str
    status: str
    created_at: float
    finished_at: float | None
    dev_micro_f1: float | None
    dev_macro_f1: float | None
    swapped: bool
    message: str
    train_docs: int | None


class ProgressResponse(msgspec.Struct):
    documents: int
    questions: int
    pool_size: int
    annotators: list[AnnotatorProgress]
    jobs: list[JobPoint]
    model_version: str | None
    model_path: str | None
    model_dev_micro_f1: float | None
    model_dev_macro_f1: float | None


class LabelSpaceResponse(msgspec.Struct):
    labels: list[str]
    total: int
