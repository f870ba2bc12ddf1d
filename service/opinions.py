"""Second opinions on suggested labels from an OpenAI-compatible chat model.

``POST /v1/opinions`` sends a document's text and its candidate labels (say, the model's suggestions) to the chat
endpoint of ``XLGEN_LLM_URL`` (OpenAI, vLLM, llama.cpp's server, Ollama, ...) and asks it to rate each label:
0 not relevant, 1 partly or possibly relevant, 2 clearly relevant, with a one-sentence explanation. The answer is
parsed leniently (JSON in code fences or with text around it, a bare list, relevance as a string), checked strictly
(only candidate labels, only relevance 0, 1 or 2), stored per document and label, and returned with the candidates
the model left unrated. ``GET /v1/opinions`` lists the stored opinions and ``GET /v1/opinions/agreement`` measures
how well they agree with the annotators' labels. The feature is off (409) while ``XLGEN_LLM_URL`` is empty.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import msgspec
from litestar import get, post
from litestar.exceptions import ClientException, HTTPException, NotFoundException
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK
from msgspec import Meta

from xlgen import extras
from xlgen.service.auth import ANNOTATE, READ
from xlgen.service.errors import bad_request, errors
from xlgen.service.runtime import Runtime
from xlgen.service.schemas import MAX_ID_CHARS, Body, Id, Label, NonEmpty
from xlgen.service.settings import Settings
from xlgen.service.storage import Annotation, latest_annotations

try:  # the llm extra; without it second opinions answer 409 naming it
    import openai
except ImportError:  # pragma: no cover - exercised by the extras test in a subprocess
    openai = None  # type: ignore[assignment]
if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger("xlgen.service")

MAX_PROMPT_CHARS = 4000
"""Characters of the document sent to the chat model; a longer text is cut, and the prompt says so."""
MAX_LABELS = 100
"""Candidate labels per request."""
MAX_EXPLANATION_CHARS = 500
"""Characters of an explanation kept (whitespace collapsed)."""
MAX_DETAIL_CHARS = 300
"""Characters of what the endpoint answered quoted in a 502."""
RELEVANCE = (0, 1, 2)

SYSTEM_PROMPT = (
    "You check the labels suggested for a document. For each candidate label, rate how relevant it is to the document: "
    "0 = not relevant, 1 = partly or possibly relevant, 2 = clearly relevant, and explain the rating in one sentence. "
    "Rate every candidate label, spelled exactly as given, and no other label. "
    'Answer ONLY with JSON of this form: {"labels": [{"label": "...", "relevance": 0, "explanation": "..."}]}'
)


class OpinionParseError(ValueError):
    """The chat model's answer holds no usable rating of the candidate labels."""


class Opinion(NamedTuple):
    """A chat model's rating of one candidate label."""

    label: str
    relevance: int
    explanation: str


# ------------------------------------------------------------------------------------------- prompt


def prompt(text: str, labels: Sequence[str], max_chars: int = MAX_PROMPT_CHARS) -> list[ChatCompletionMessageParam]:
    """The chat messages asking for a rating of every label in ``labels`` for ``text``.

    Args:
        text: The document; cut after ``max_chars`` characters, with a note saying so.
        labels: Candidate labels, listed one a line as JSON strings (so that any spelling reads unambiguously).
        max_chars: Characters of the text sent.

    Returns:
        A system message (the rating scale and the answer format) and a user message (the text and the labels).
    """
    cut = len(text) > max_chars
    shown = text[:max_chars] if cut else text
    note = f"\n[The document is cut here: these are its first {max_chars:,} of {len(text):,} characters.]" if cut else ""
    candidates = "\n".join(f"- {json.dumps(label, ensure_ascii=False)}" for label in labels)
    user = (f'Document:\n"""\n{shown}\n"""{note}\n\n'
            f"Candidate labels ({len(labels)}):\n{candidates}\n\n"
            'Rate each candidate label. Answer ONLY with JSON: {"labels": [{"label": "...", "relevance": 0|1|2, "explanation": "..."}]}')
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# ------------------------------------------------------------------------------------------- parser

_THINKING = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)```", re.S)


def excerpt(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters, quoted."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


def _json_value(answer: str) -> Any:
    """The JSON value in an answer: the whole answer, a fenced block, or the outermost ``{...}`` or ``[...]``."""
    text = _THINKING.sub("", answer).strip()
    spans = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    brackets = sorted(((text.find(a), text.rfind(b)) for a, b in (("{", "}"), ("[", "]"))), key=lambda span: span[0])
    spans += [text[i:j + 1] for i, j in brackets if 0 <= i < j]
    for span in spans:
        try:
            return json.loads(span)
        except ValueError:
            continue
    raise OpinionParseError(f"no JSON in the answer {excerpt(answer)}")


def _items(value: Any, answer: str) -> list[Any]:
    """The list of ratings of a parsed answer: its ``labels`` (or ``ratings``, ``opinions``), a bare list, or one rating."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in ("labels", "ratings", "opinions"):
            if isinstance(value.get(key), list):
                return list(value[key])
        if "label" in value:
            return [value]
    raise OpinionParseError(f'expected {{"labels": [...]}} or a list of ratings, got {excerpt(answer)}')


def relevance_of(value: Any) -> int | None:
    """``value`` as a relevance 0, 1 or 2 (an int, an integral float such as ``2.0``, or a string of one such as ``"2"``);
    None for anything else (out of range, fractional, a boolean, not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if isinstance(value, int) and value in RELEVANCE else None


def _explanation(value: Any) -> str:
    if value is None:
        return ""
    flat = " ".join(str(value).split())
    return flat if len(flat) <= MAX_EXPLANATION_CHARS else flat[:MAX_EXPLANATION_CHARS] + "..."


def parse_opinions(answer: str, labels: Sequence[str]) -> list[Opinion]:
    """The ratings of the candidate ``labels`` in a chat model's answer, in the candidates' order.

    The JSON may stand alone, in code fences or with text around it (the outermost ``{...}`` or ``[...]`` is taken),
    as ``{"labels": [...]}`` or a bare list. A rating names its label exactly or up to case (mapped back to the
    candidate's spelling); a label that is no candidate is dropped, as is a rating whose relevance is not 0, 1 or 2
    (so that no rating is invented), and of two ratings of one label the first is kept. Candidates without a rating
    are left out (see :func:`unrated`).

    Args:
        answer: The message content the chat model answered.
        labels: The candidate labels asked about.

    Raises:
        OpinionParseError: No JSON, JSON of another shape, or no usable rating of any candidate.
    """
    items = _items(_json_value(answer), answer)
    exact = set(labels)
    folded: dict[str, str] = {}
    for label in labels:
        folded.setdefault(label.strip().casefold(), label)
    found: dict[str, Opinion] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("label"), str):
            continue
        name = item["label"]
        candidate = name if name in exact else folded.get(name.strip().casefold())
        relevance = relevance_of(item.get("relevance"))
        if candidate is None or relevance is None or candidate in found:
            continue
        found[candidate] = Opinion(candidate, relevance, _explanation(item.get("explanation", item.get("reason"))))
    if not found:
        raise OpinionParseError(f"none of the {len(items)} ratings in the answer rates a candidate label 0, 1 or 2: {excerpt(answer)}")
    return [found[label] for label in labels if label in found]


def unrated(labels: Sequence[str], opinions: Iterable[Opinion]) -> list[str]:
    """The candidate labels that ``opinions`` do not rate, in their order."""
    rated = {o.label for o in opinions}
    return [label for label in labels if label not in rated]


# -------------------------------------------------------------------------------------- chat call


def _content(completion: Any) -> str:
    """The message content of a chat completion."""
    try:
        choice = completion.choices[0]
        content, finish = choice.message.content, choice.finish_reason
    except (AttributeError, IndexError, TypeError):
        raise OpinionParseError(f"the endpoint answered something that is not a chat completion: {excerpt(str(completion))}") from None
    if not isinstance(content, str) or not content.strip():
        raise OpinionParseError(f"the chat model answered an empty message (finish reason {finish!r})")
    return content


async def second_opinion(settings: Settings, text: str, labels: Sequence[str]) -> list[Opinion]:
    """The chat model's ratings of ``labels`` for ``text``, asked at ``settings.llm_url``.

    Args:
        settings: The endpoint (``llm_url``), model name, key and timeout.
        text: The document.
        labels: Candidate labels (distinct).

    Returns:
        ``(label, relevance, explanation)`` of each candidate rated, in the candidates' order.

    Raises:
        TimeoutError: No answer within ``settings.llm_timeout_s`` (also :class:`openai.APITimeoutError`).
        openai.APIError: The endpoint is unreachable or answered an HTTP error.
        OpinionParseError: The answer holds no usable rating.
    """
    client = openai.AsyncOpenAI(base_url=settings.llm_url, api_key=settings.llm_key or "none", timeout=settings.llm_timeout_s,
                                max_retries=0)
    try:
        async with asyncio.timeout(settings.llm_timeout_s):
            completion = await client.chat.completions.create(model=settings.llm_model, messages=prompt(text, labels), temperature=0)
    finally:
        await client.close()
    return parse_opinions(_content(completion), labels)


# ------------------------------------------------------------------------------------- agreement


class Scores(msgspec.Struct):
    """Agreement of "relevance >= min_relevance" with "an annotator chose the label" (None where undefined)."""

    min_relevance: int
    accuracy: float | None
    precision: float | None
    recall: float | None
    kappa: float | None


class RelevanceShare(msgspec.Struct):
    """How often annotators chose the labels the chat model rated ``relevance``."""

    relevance: int
    count: int
    chosen: int
    share: float | None


class AgreementResponse(msgspec.Struct):
    """Agreement of stored opinions with the annotations, over (document, label) pairs with both."""

    n: int
    documents: int
    relevant: Scores
    clearly_relevant: Scores
    by_relevance: list[RelevanceShare]


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def scores(pairs: Sequence[tuple[int, bool]], min_relevance: int) -> Scores:
    """Accuracy, precision, recall and Cohen's kappa of the calls "relevance >= min_relevance" against the human choice.

    Args:
        pairs: ``(relevance, chosen by the annotator)``.
        min_relevance: 1 (relevant at least partly) or 2 (clearly relevant).
    """
    n = len(pairs)
    tp = sum(r >= min_relevance and chosen for r, chosen in pairs)
    fp = sum(r >= min_relevance and not chosen for r, chosen in pairs)
    fn = sum(r < min_relevance and chosen for r, chosen in pairs)
    tn = n - tp - fp - fn
    if not n:
        return Scores(min_relevance, None, None, None, None)
    accuracy = (tp + tn) / n
    called, human = (tp + fp) / n, (tp + fn) / n
    expected = called * human + (1 - called) * (1 - human)  # chance agreement of two raters with these rates
    kappa = None if expected == 1 else (accuracy - expected) / (1 - expected)
    return Scores(min_relevance, accuracy, _ratio(tp, tp + fp), _ratio(tp, tp + fn), kappa)


def latest_labels(annotations: Iterable[Annotation]) -> dict[str, set[str]]:
    """Each annotated document's labels of its latest round."""
    return {doc: set(a.labels) for doc, a in latest_annotations(annotations).items()}


def agreement(opinions: Iterable[tuple[str, str, int]], human: Mapping[str, Collection[str]]) -> AgreementResponse:
    """Agreement of the chat model's ratings with the annotators' labels.

    Only (document, label) pairs with both a rating and an annotated document count: a label an annotator chose that
    the chat model was not asked about is in no pair, so recall is over the labels asked about.

    Args:
        opinions: ``(document_id, label, relevance)`` of the stored opinions.
        human: Each annotated document's labels (its latest round's).
    """
    rated = [(doc, label, int(r)) for doc, label, r in opinions if doc in human]
    pairs = [(r, label in human[doc]) for doc, label, r in rated]
    by_relevance = []
    for r in RELEVANCE:
        picked = [chosen for rel, chosen in pairs if rel == r]
        by_relevance.append(RelevanceShare(r, len(picked), sum(picked), _ratio(sum(picked), len(picked))))
    return AgreementResponse(n=len(pairs), documents=len({doc for doc, _, _ in rated}), relevant=scores(pairs, 1), clearly_relevant=scores(pairs, 2),
                             by_relevance=by_relevance)


# ----------------------------------------------------------------------------------------- routes


class OpinionRequest(Body):
    """Candidate labels of a document to ask the chat model about; the text is the pool document's unless given."""

    document_id: Id
    labels: Annotated[list[Label], Meta(min_length=1, max_length=MAX_LABELS)]
    text: NonEmpty | None = None


class LabelOpinion(msgspec.Struct):
    label: str
    relevance: int
    explanation: str


class SecondOpinion(msgspec.Struct):
    document_id: str
    model: str
    opinions: list[LabelOpinion]
    missing: list[str]
    """Candidate labels the chat model left unrated (or rated off the 0-2 scale)."""


class StoredOpinion(msgspec.Struct):
    document_id: str
    label: str
    relevance: int
    explanation: str
    model: str
    created_at: float


class OpinionsResponse(msgspec.Struct):
    opinions: list[StoredOpinion]


def _failed(status: int, detail: str, document_id: str) -> HTTPException:
    log.warning("second opinion failed", extra={"fields": {"status": status, "document_id": document_id, "detail": detail}})
    return HTTPException(status_code=status, detail=detail)


@post("/v1/opinions", tags=["second opinions"], guards=ANNOTATE, security=[{"apiKey": []}], status_code=HTTP_200_OK,
      responses=errors(404, 409, 502, 504, e409="Second opinions are off: XLGEN_LLM_URL is not set",
                       e504="No answer from the chat endpoint within XLGEN_LLM_TIMEOUT_S; nothing is stored"),
      summary="Ask the chat model of XLGEN_LLM_URL to rate a document's candidate labels (0, 1 or 2, with an explanation)",
      description="The text is the pool document's unless given. The ratings are stored per document and label (a later "
                  "one replaces an earlier) with the model's name; candidates the model did not rate on the 0-2 scale come "
                  "back as missing. 409 when XLGEN_LLM_URL is not set; 502 when the endpoint cannot be reached, answers an "
                  "HTTP error or an answer without a usable rating; 504 after XLGEN_LLM_TIMEOUT_S seconds.")
async def ask_opinion(data: OpinionRequest, rt: Runtime) -> SecondOpinion:
    s = rt.settings
    if s.llm_url and openai is None:
        raise ClientException(status_code=409, detail=extras.message("second opinions", "llm"))
    if not s.llm_url:
        raise ClientException(status_code=409, detail="second opinions are off: set XLGEN_LLM_URL to the base URL of an "
                                                      "OpenAI-compatible endpoint (and XLGEN_LLM_MODEL, and XLGEN_LLM_KEY where "
                                                      "it needs one)")
    labels = list(dict.fromkeys(label.strip() for label in data.labels))
    text = data.text
    if text is None:
        text = (await asyncio.to_thread(rt.storage.get_documents, [data.document_id])).get(data.document_id)
        if text is None:
            message = f"no document {data.document_id!r} in the pool (add it, or give its text)"
            raise NotFoundException(detail=f"document_id: {message}", extra=[{"key": "document_id", "message": message}])
    elif len(text) > s.max_chars:
        raise bad_request("text", f"{len(text)} characters; at most {s.max_chars}")
    try:
        opinions = await second_opinion(s, text, labels)
    except (TimeoutError, openai.APITimeoutError):
        raise _failed(504, f"the chat endpoint {s.llm_url} gave no answer within {s.llm_timeout_s:g} s", data.document_id) from None
    except openai.APIStatusError as e:
        raise _failed(502, f"the chat endpoint {s.llm_url} answered HTTP {e.status_code}: {excerpt(e.message)}", data.document_id) from None
    except openai.APIConnectionError as e:
        raise _failed(502, f"the chat endpoint {s.llm_url} cannot be reached: {excerpt(str(e.__cause__ or e))}", data.document_id) from None
    except openai.APIError as e:
        raise _failed(502, f"the chat endpoint {s.llm_url} answered something that does not read as a chat completion: "
                           f"{excerpt(str(e))}", data.document_id) from None
    except OpinionParseError as e:
        raise _failed(502, f"the chat model's answer does not parse: {e}", data.document_id) from None
    await asyncio.to_thread(rt.storage.save_opinions, data.document_id, opinions, s.llm_model)
    return SecondOpinion(document_id=data.document_id, model=s.llm_model, opinions=[LabelOpinion(*o) for o in opinions],
                         missing=unrated(labels, opinions))


@get("/v1/opinions", tags=["second opinions"], guards=READ, security=[{"apiKey": []}], summary="Stored second opinions: all, or one document's",
     description="By document and label; each with the chat model that gave it and when.")
async def list_opinions(rt: Runtime,
                        document_id: Annotated[str | None, Parameter(min_length=1, max_length=MAX_ID_CHARS)] = None) -> OpinionsResponse:
    rows = await asyncio.to_thread(rt.storage.opinions, document_id)
    return OpinionsResponse([StoredOpinion(r["document_id"], r["label"], int(r["relevance"]), r["explanation"], r["model"],
                                           float(r["created_at"])) for r in rows])


@get("/v1/opinions/agreement", tags=["second opinions"], guards=READ, security=[{"apiKey": []}],
     summary="Agreement of the stored second opinions with the annotators' labels",
     description="Over (document, label) pairs where the document is annotated (its latest round's labels) and the chat "
                 "model rated the label: accuracy, precision, recall and Cohen's kappa of the calls relevance >= 1 "
                 "(relevant) and relevance == 2 (clearly_relevant) against the annotator's choice, and per relevance how "
                 "many pairs there are and the share the annotator chose. Without pairs: n 0 and nulls.")
async def opinion_agreement(rt: Runtime) -> AgreementResponse:
    def compute() -> AgreementResponse:
        human = latest_labels(rt.storage.annotations())
        return agreement([(r["document_id"], r["label"], r["relevance"]) for r in rt.storage.opinions()], human)

    return await asyncio.to_thread(compute)


ROUTES = [ask_opinion, list_opinions, opinion_agreement]
